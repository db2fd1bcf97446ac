"""`make e2e-compose`: the project's docker-compose.yaml, run for real under Podman.

No container registry is reachable here, so the images compose would pull are replaced by stand-ins
built locally from Debian packages and PyPI (deploy/compose/standins/), through the override file
deploy/compose/e2e.override.yaml and the Dockerfile's AIRFLOW_BASE_IMAGE build argument. Podman
serves the Docker API on a socket of this run; Debian's docker-compose drives it. Health checks run
only when something runs `podman healthcheck run` (no systemd): a thread here does, with Docker's
timing. The script proves, and prints, each claim of docs/deployment.md ("What make e2e-compose
proves"); it starts and stops only what it created (compose project TL_E2E_PROJECT, its podman
service process) and keeps the images, so the next run on this machine reuses them.

Environment: TL_E2E_PORT (api-server's host port, default 18150), TL_E2E_PROJECT (default
tl-e2e-compose), TL_E2E_CACHE (base root file system cache, default ~/.cache/tl-e2e-compose),
TL_E2E_KEEP=1 (leave the stack up on failure, for inspection).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deploy import processes  # the Makefile puts the repository on PYTHONPATH

REPO = Path(__file__).resolve().parent.parent

COMPOSE_DIR = REPO / "deploy" / "compose"
PROJECT = os.environ.get("TL_E2E_PROJECT", "tl-e2e-compose")
PORT = int(os.environ.get("TL_E2E_PORT", "18150"))
MLFLOW_PORT = int(os.environ.get("TL_E2E_MLFLOW_PORT", str(PORT + 1)))
AIRFLOW_VERSION = "3.3.2"
IMAGES = {
    "base": "localhost/tl-e2e/debian:bookworm",
    "airflow": f"localhost/tl-e2e/airflow:slim-{AIRFLOW_VERSION}-python3.11",
    "postgres": "localhost/tl-e2e/postgres:standin",
    "redis": "localhost/tl-e2e/redis:standin",
    "project": f"localhost/tl-e2e/fashion-mnist-tl-airflow:{AIRFLOW_VERSION}",
    "mlflow": "localhost/tl-e2e/fashion-mnist-tl-mlflow:3.17.2",
}
SECRETS = ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET",
           "AIRFLOW_API_SECRET_KEY", "AIRFLOW_ADMIN_PASSWORD")
LONG_RUNNING = ("postgres", "redis", "mlflow", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                "airflow-triggerer", "airflow-worker")
WORKERS = 2
# Docker (25+) checks every 5 s during a container's start period, then at the configured interval.
START_INTERVAL_S = 5
TOOLS = {"podman": "podman runc", "docker-compose": "docker-compose", "debootstrap": "debootstrap"}


class E2EError(RuntimeError):
    """A claim did not hold, or the engine could not do its part; the message says which."""


def say(text: str) -> None:
    print(text, flush=True)


# -- preflight: one clear line for what a user can fix ---------------------------------------------
def preflight(port: int = PORT) -> None:
    missing = [tool for tool in TOOLS if not shutil.which(tool)]
    if missing:
        packages = " ".join(TOOLS[t] for t in missing)
        raise E2EError(f"{', '.join(missing)} not found: install with `sudo apt-get install {packages}` "
                       "(Debian/Ubuntu), then rerun `make e2e-compose`.")
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            raise E2EError(f"port {port} is in use: stop what listens there or pick another one with "
                           f"TL_E2E_PORT=<free port> make e2e-compose.") from None
    probe = subprocess.run(["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"], env=engine_env(),
                           capture_output=True, text=True)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        raise E2EError(f"podman does not run here ({last}): check `podman info` as this user, then rerun.")


def engine_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(COMPOSE_DIR / "containers.conf"), **(extra or {})}


def sh(cmd: list[str], *, env: dict[str, str] | None = None, check: bool = True, quiet: bool = True,
       timeout: float | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, env=env or engine_env(), capture_output=quiet, text=True, timeout=timeout)
    if check and r.returncode != 0:
        out = ((r.stdout or "") + (r.stderr or ""))[-3000:] if quiet else ""
        raise E2EError(f"`{' '.join(cmd[:6])} ...` exited {r.returncode}\n{out}")
    return r


class Timer:
    def __init__(self) -> None:
        self.start = time.monotonic()
        self.steps: list[tuple[str, float]] = []

    def step(self, name: str, fn: Callable[[], Any]) -> Any:
        say(f"\n== {name}")
        t0 = time.monotonic()
        result = fn()
        self.steps.append((name, time.monotonic() - t0))
        say(f"   ({time.monotonic() - t0:.0f} s)")
        return result


# -- the engine: podman's Docker API service, started and stopped by this run -----------------------
class PodmanService:
    """`podman system service` on a socket of this run, started and stopped (its process tree) by pid."""

    def __init__(self, workdir: Path) -> None:
        self.sock = workdir / "podman.sock"
        self.log = workdir / "podman-service.log"
        self.proc: processes.Started | None = None

    def __enter__(self) -> PodmanService:
        self.proc = processes.start("podman system service",
                                    ["podman", "system", "service", "--time=0", f"unix://{self.sock}"],
                                    log=self.log, env=engine_env())
        try:
            processes.wait_until(self._ping, 60, f"podman system service on {self.sock}", watch=[self.proc])
        except processes.ProcessError as exc:
            self.proc.stop()
            raise E2EError(f"podman does not serve its API here: {exc}") from None
        return self

    def _ping(self) -> bool:
        r = subprocess.run(["curl", "-sf", "--unix-socket", str(self.sock), "http://d/_ping"],
                           capture_output=True, text=True)
        return r.returncode == 0 and r.stdout.strip() == "OK"

    def __exit__(self, *exc: Any) -> None:
        if self.proc:
            self.proc.stop()


class Compose:
    """docker-compose on this project, with the override file, against the run's podman socket."""

    def __init__(self, service: PodmanService, env: dict[str, str], env_file: Path) -> None:
        self.env = engine_env({**env, "DOCKER_HOST": f"unix://{service.sock}", "COMPOSE_DOCKER_CLI_BUILD": "0"})
        self.base = ["docker-compose", "--project-name", PROJECT, "--project-directory", str(REPO),
                     "--env-file", str(env_file), "-f", str(REPO / "docker-compose.yaml"),
                     "-f", str(COMPOSE_DIR / "e2e.override.yaml")]

    def __call__(self, *args: str, check: bool = True, quiet: bool = True, env: dict[str, str] | None = None,
                 timeout: float | None = None) -> subprocess.CompletedProcess:
        return sh([*self.base, *args], env={**self.env, **(env or {})}, check=check, quiet=quiet, timeout=timeout)


def project_containers(all_states: bool = False) -> list[dict[str, Any]]:
    cmd = ["podman", "ps", "--format", "json", "--filter", f"label=com.docker.compose.project={PROJECT}"]
    return json.loads(sh([*cmd, *(["-a"] if all_states else [])]).stdout or "[]")


def inspect(cid: str) -> dict[str, Any]:
    return json.loads(sh(["podman", "inspect", cid]).stdout)[0]


def service_of(c: dict[str, Any]) -> str:
    return c["Labels"]["com.docker.compose.service"]


def health_of(info: dict[str, Any]) -> str:
    state = info["State"]
    return (state.get("Health") or state.get("Healthcheck") or {}).get("Status", "")


class HealthDriver(threading.Thread):
    """Runs the containers' health checks with Docker's timing, since no systemd timer does here.

    Checks run concurrently (one slow `airflow jobs check` must not delay the others). As Docker does,
    a container is checked every START_INTERVAL_S during its start period until it passes, and at its
    own interval otherwise, so `retries` failures take retries x interval after the start period.
    """

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.next_due: dict[str, float] = {}
        self.interval: dict[str, float | None] = {}
        self.start_period: dict[str, float] = {}
        self.first_seen: dict[str, float] = {}
        self.passed: set[str] = set()
        self.running: set[str] = set()
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.stop.wait(1):
            try:
                containers = [c for c in project_containers() if c.get("State") == "running"]
            except (E2EError, json.JSONDecodeError, subprocess.SubprocessError):
                continue  # the service is busy or a container went away: next tick
            now = time.monotonic()
            for c in containers:
                cid = c["Id"]
                with self.lock:
                    self.first_seen.setdefault(cid, now)
                    if cid in self.running or now < self.next_due.get(cid, 0):
                        continue
                    self.running.add(cid)
                threading.Thread(target=self._check, args=(cid,), daemon=True).start()

    def _interval(self, cid: str) -> float | None:
        if cid not in self.interval:
            check = inspect(cid)["Config"].get("Healthcheck") or {}
            has = bool(check.get("Test")) and check["Test"][0] != "NONE"
            self.interval[cid] = (check.get("Interval") or 30_000_000_000) / 1e9 if has else None
            self.start_period[cid] = (check.get("StartPeriod") or 0) / 1e9
        return self.interval[cid]

    def _check(self, cid: str) -> None:
        try:
            interval = self._interval(cid)
            if interval is None:
                due = float("inf")
            else:
                ok = sh(["podman", "healthcheck", "run", cid], check=False, timeout=400).returncode == 0
                if ok:
                    self.passed.add(cid)
                now = time.monotonic()
                starting = cid not in self.passed and now < self.first_seen[cid] + self.start_period[cid]
                due = now + (START_INTERVAL_S if starting else interval)
        except (E2EError, json.JSONDecodeError, subprocess.SubprocessError, IndexError):
            due = time.monotonic() + START_INTERVAL_S
        with self.lock:
            self.next_due[cid] = due
            self.running.discard(cid)


# -- images ---------------------------------------------------------------------------------------
def build_standins() -> None:
    sh(["bash", str(REPO / "scripts" / "e2e_compose_base.sh"), IMAGES["base"]], quiet=False)
    with tempfile.TemporaryDirectory() as ctx:  # the Airflow stand-in resolves with the project's constraints
        for f in (COMPOSE_DIR / "standins" / "airflow").iterdir():
            shutil.copy2(f, ctx)
        shutil.copy2(REPO / "constraints.txt", ctx)
        for name, context in (("airflow", ctx), ("postgres", COMPOSE_DIR / "standins" / "postgres"),
                              ("redis", COMPOSE_DIR / "standins" / "redis")):
            t0 = time.monotonic()
            sh(["podman", "build", "--quiet", "--build-arg", f"BASE_IMAGE={IMAGES['base']}",
                "--build-arg", f"AIRFLOW_VERSION={AIRFLOW_VERSION}", "-t", IMAGES[name], str(context)])
            say(f"   stand-in {IMAGES[name]}: {time.monotonic() - t0:.0f} s")


# -- the run --------------------------------------------------------------------------------------
def make_env(workdir: Path, data_dir: Path) -> dict[str, str]:
    from cryptography.fernet import Fernet

    env = {name: secrets.token_hex(16) for name in SECRETS}
    env.update(AIRFLOW_FERNET_KEY=Fernet.generate_key().decode(), AIRFLOW_UID="50000",
               AIRFLOW_ADMIN_USERNAME="admin", TL_API_HOST_PORT=str(PORT), TL_DATASET_DIR=str(data_dir),
               AIRFLOW__API__BASE_URL=f"http://localhost:{PORT}",
               TL_IMAGE_NAME=IMAGES["project"], TL_E2E_AIRFLOW_BASE=IMAGES["airflow"],
               TL_E2E_POSTGRES_IMAGE=IMAGES["postgres"], TL_E2E_REDIS_IMAGE=IMAGES["redis"],
               TL_E2E_BASE_IMAGE=IMAGES["base"], TL_MLFLOW_IMAGE_NAME=IMAGES["mlflow"],
               TL_MLFLOW_HOST_PORT=str(MLFLOW_PORT))
    return env


def write_env_file(path: Path, env: dict[str, str]) -> None:
    path.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    path.chmod(0o600)


def check_missing_secret(compose: Compose) -> None:
    r = compose("up", "-d", check=False, env={"REDIS_PASSWORD": ""})
    out = r.stdout + r.stderr
    if r.returncode == 0 or "REDIS_PASSWORD" not in out:
        raise E2EError(f"compose started without REDIS_PASSWORD, or did not name it:\n{out[-2000:]}")
    if project_containers(all_states=True):
        raise E2EError("compose created containers although a secret was missing")
    say(f"   REDIS_PASSWORD empty: compose exited {r.returncode} before creating anything: "
        f"{next(line for line in out.splitlines() if 'REDIS_PASSWORD' in line).strip()}")


def wait_until(what: str, predicate: Callable[[], Any], timeout: float, every: float = 3) -> Any:
    """Poll `predicate`; a slow or refused API call (a loaded api-server) counts as "not yet"."""
    import httpx

    try:
        return processes.wait_until(predicate, timeout, what, interval=every,
                                    errors=(OSError, httpx.TransportError))
    except processes.NotReady as exc:
        raise E2EError(str(exc)) from None


def services_table() -> dict[str, list[dict[str, Any]]]:
    by_service: dict[str, list[dict[str, Any]]] = {}
    for c in project_containers(all_states=True):
        by_service.setdefault(service_of(c), []).append(inspect(c["Id"]))
    return by_service


def check_services() -> dict[str, str]:
    """airflow-init exited 0 and every long-running container is healthy; returns hostname -> container."""
    def all_healthy() -> dict | None:
        table = services_table()
        ok = all(len(table.get(s, [])) == (WORKERS if s == "airflow-worker" else 1) and
                 all(health_of(i) == "healthy" for i in table[s]) for s in LONG_RUNNING)
        return table if ok else None

    table = wait_until("every long-running service to report healthy", all_healthy, timeout=900)
    init = table["airflow-init"][0]
    if init["State"]["Status"] != "exited" or init["State"]["ExitCode"] != 0:
        raise E2EError(f"airflow-init: {init['State']['Status']} exit {init['State']['ExitCode']}")
    init_log = sh(["podman", "logs", init["Id"]]).stdout + sh(["podman", "logs", init["Id"]]).stderr
    resources = next((line for line in init_log.splitlines() if line.startswith("Resources:")), None)
    if resources is None:
        raise E2EError(f"airflow-init did not run the resource checks:\n{init_log[-2000:]}")
    say(f"   airflow-init: exited 0; {resources}")
    hosts = {}
    for service in LONG_RUNNING:
        for info in table[service]:
            say(f"   {info['Name']:42} {info['State']['Status']:8} {health_of(info)}")
            hosts[info["Config"]["Hostname"]] = info["Name"]
    redis = table["redis"][0]
    uid = sh(["podman", "exec", redis["Id"], "sh", "-c", "awk '/^Uid:/ {print $2}' /proc/1/status"]).stdout.strip()
    user = sh(["podman", "exec", redis["Id"], "sh", "-c", f"getent passwd {uid} | cut -d: -f1"]).stdout.strip()
    if uid in ("", "0"):
        raise E2EError(f"redis-server runs as uid {uid!r}: the entry point did not drop root")
    say(f"   redis-server (pid 1) runs as {user} (uid {uid}), not root")
    # The Keras download cache is one volume: a file one worker puts there, the other one sees.
    first, second = (info["Id"] for info in table["airflow-worker"])
    probe = "/home/airflow/.keras/e2e-probe"
    sh(["podman", "exec", first, "sh", "-c", f"hostname > {probe}"])
    seen = sh(["podman", "exec", second, "cat", probe]).stdout.strip()
    sh(["podman", "exec", second, "rm", probe])
    if seen != table["airflow-worker"][0]["Config"]["Hostname"]:
        raise E2EError(f"the Keras cache is not shared between the workers (read {seen!r})")
    say("   ~/.keras is the shared volume tl-keras-cache: written on one worker, read on the other")
    return hosts


def container_of(hosts: dict[str, str], hostname: str) -> str:
    """The container a task instance's hostname names (Airflow may report the FQDN)."""
    return hosts.get(hostname) or hosts.get(hostname.split(".")[0]) or hostname


# Which task reads which task's files (split arrays, models, predictions): the DAG's edges that carry
# artifacts. Every task but apply_retention is on one connected path of them.
ARTIFACT_EDGES = (("split_data", "pretrain"), ("split_data", "train_scratch"), ("pretrain", "transfer.head"),
                  ("transfer.head", "transfer.finetune"), ("train_scratch", "compare_report"),
                  ("transfer.finetune", "compare_report"), ("compare_report", "promote_champion"))


def cross_worker_reads(tis: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(writer, reader) task labels of the artifact edges whose two ends ran on different hosts;
    mapped tasks pair up by map index. Celery picks the workers, so which edges cross varies, but
    once both workers ran tasks some edge must (the edges connect the tasks), so this is never empty."""
    from tests.deploy.airflow_api import label

    out = []
    for a, b in ARTIFACT_EDGES:
        for wa in (ti for ti in tis if ti["task_id"] == a):
            for rb in (ti for ti in tis if ti["task_id"] == b):
                same_chunk = wa["map_index"] < 0 or rb["map_index"] < 0 or wa["map_index"] == rb["map_index"]
                if same_chunk and wa["hostname"] != rb["hostname"]:
                    out.append((label(wa), label(rb)))
    return out


def restart_counts() -> dict[str, int]:
    return {i["Name"]: int(i.get("RestartCount", 0)) for infos in services_table().values() for i in infos}


# -- MLflow, through its REST API ------------------------------------------------------------------
def mlflow_api(method: str, endpoint: str, **kw: Any) -> dict[str, Any]:
    import httpx

    r = httpx.request(method, f"http://127.0.0.1:{MLFLOW_PORT}/api/2.0/mlflow/{endpoint}", timeout=30, **kw)
    r.raise_for_status()
    return r.json()


def mlflow_problems(runs: list[dict[str, Any]], history: list[dict[str, Any]], seeds: list[int],
                    alias: dict[str, Any] | None) -> list[str]:
    """What is wrong with one Airflow run's record in MLflow: its runs (by tag), the metric history of the
    headline transfer accuracy (one point per seed) and the champion alias."""
    problems = []
    if len(runs) != 1:
        problems.append(f"{len(runs)} MLflow runs for the Airflow run, expected 1")
    steps = sorted(int(h["step"]) for h in history)
    if steps != sorted(seeds):
        problems.append(f"test accuracy logged for seeds {steps}, expected each of {sorted(seeds)} once")
    if runs and not {t["key"] for t in runs[0]["data"].get("tags", [])} >= {"verdict.kind", "pooled.verdict.kind"}:
        problems.append("the run lacks tonight's or the pooled verdict")
    if not alias or not alias.get("version"):
        problems.append("no model version has the alias champion")
    return problems


def check_mlflow(run_folder: str, seeds: list[int], fraction: float) -> str:
    from include import tracking

    exps = mlflow_api("POST", "experiments/search", json={
        "filter": f"name LIKE '{tracking.EXPERIMENT_PREFIX}/%'", "max_results": 100}).get("experiments", [])
    runs = mlflow_api("POST", "runs/search", json={
        "experiment_ids": [e["experiment_id"] for e in exps],
        "filter": f"tags.`{tracking.RUN_TAG}` = '{run_folder}'"}).get("runs", []) if exps else []
    history = mlflow_api("GET", "metrics/get-history", params={
        "run_id": runs[0]["info"]["run_id"], "metric_key": f"test_accuracy.transfer.f{fraction:g}"}
        ).get("metrics", []) if runs else []
    try:
        alias = mlflow_api("GET", "registered-models/alias", params={
            "name": tracking.REGISTERED_MODEL, "alias": tracking.ALIAS})["model_version"]
    except Exception:
        alias = None
    problems = mlflow_problems(runs, history, seeds, alias)
    if problems:
        raise E2EError(f"MLflow for {run_folder}: " + "; ".join(problems))
    files = mlflow_api("GET", "artifacts/list", params={"run_id": runs[0]["info"]["run_id"], "path": "report"})
    names = sorted(Path(f["path"]).name for f in files.get("files", []))
    if "report.html" not in names:
        raise E2EError(f"MLflow run of {run_folder} lacks the report files: {names}")
    return (f"MLflow run {runs[0]['info']['run_id'][:8]} in experiment {runs[0]['info']['experiment_id']}: "
            f"seeds {sorted(seeds)} once each, files {names}; {tracking.REGISTERED_MODEL}@champion = "
            f"version {alias['version']}")


def history_lines(worker_id: str, run_folder: str) -> list[dict[str, Any]]:
    out = sh(["podman", "exec", worker_id, "cat", "/opt/airflow/artifacts/reports/history.jsonl"]).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip() and json.loads(line).get("run") == run_folder]


def wait_for_run(api: Any, run_id: str, timeout: float) -> tuple[str, list[dict[str, Any]]]:
    from tests.deploy.airflow_api import DAG_ID

    def ended() -> tuple[str, list] | None:
        state = api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")["state"]
        return (state, api.task_instances(run_id)) if state in ("success", "failed") else None

    return wait_until(f"run {run_id} to end", ended, timeout)


def main() -> int:
    from include.artifacts import safe_run_id
    from include.data import HOW_TO_PROVIDE
    from tests.deploy.airflow_api import DAG_ID, AirflowApi, label, print_run
    from tests.synthetic import TINY_CONF, write_tiny_fashion_mnist

    preflight()
    timer = Timer()
    workdir = Path(tempfile.mkdtemp(prefix="tl-e2e-compose-"))
    workdir.chmod(0o755)
    data_dir = write_tiny_fashion_mnist(workdir / "tiny-fashion-mnist")
    env = make_env(workdir, data_dir)
    env_file = workdir / "e2e.env"
    write_env_file(env_file, env)
    up = False
    health = HealthDriver()
    with PodmanService(workdir) as service:
        compose = Compose(service, env, env_file)
        try:
            timer.step("a missing secret stops compose before any container starts",
                       lambda: check_missing_secret(compose))
            timer.step("stand-in images (base root file system cached in ~/.cache/tl-e2e-compose)", build_standins)
            timer.step("docker-compose build (project Dockerfile FROM the Airflow stand-in)",
                       lambda: compose("build", quiet=False))
            health.start()
            up = True
            timer.step(f"docker-compose up -d --scale airflow-worker={WORKERS}",
                       lambda: compose("up", "-d", "--scale", f"airflow-worker={WORKERS}", quiet=False, timeout=900))
            hosts = timer.step("airflow-init completed; every long-running service healthy", check_services)
            workers = {name for name in hosts.values() if "airflow-worker" in name}
            api = AirflowApi(f"http://127.0.0.1:{PORT}", "admin", env["AIRFLOW_ADMIN_PASSWORD"])
            timer.step("the DAG is parsed (REST API, logged in)", lambda: api.wait_for_dag(timeout=300))
            stamp = int(time.time())

            def failing_run() -> None:
                worker = services_table()["airflow-worker"][0]
                empty = "/opt/airflow/artifacts/e2e-empty-dataset"
                sh(["podman", "exec", worker["Id"], "mkdir", "-p", empty])
                before = restart_counts()
                run_id = f"e2e_compose_no_idx__{stamp}"
                # data_format idx: the IDX reader's own message (auto-detection says "not a dataset").
                api.trigger(run_id, {**TINY_CONF, "data_dir": empty, "data_format": "idx"})
                state, tis = wait_for_run(api, run_id, 300)
                print_run(run_id, state, tis)
                split = next(ti for ti in tis if ti["task_id"] == "split_data")
                if state != "failed" or split["state"] != "failed" or split["try_number"] != 1:
                    raise E2EError(f"expected the run to fail in split_data on its first try: {state}, {split}")
                log = api.task_log(run_id, split)
                if "file not found in the data folder" not in log or HOW_TO_PROVIDE[:60] not in log:
                    raise E2EError(f"split_data's log lacks the how-to message:\n{log[-3000:]}")
                say("   split_data's log through GET .../logs/1: "
                    + next(line for line in log.splitlines() if "file not found" in line).strip()[:220])
                if restart_counts() != before:
                    raise E2EError(f"a container restarted during the failing run: {before} -> {restart_counts()}")
                say("   no retry, no container restarted")

            timer.step("a run on a dataset folder without IDX files fails in split_data", failing_run)

            def tiny_run() -> None:
                run_id = f"e2e_compose_tiny__{stamp}"
                # One seed per training task: four training tasks at once, more than one worker's two slots.
                api.trigger(run_id, {**TINY_CONF, "fractions": [0.5], "seeds_per_task": 1})
                state, tis = wait_for_run(api, run_id, 600)
                print_run(run_id, state, tis)
                if state != "success":
                    api.fail_with_logs(run_id, tis, f"tiny run ended {state}")
                ran_on = {container_of(hosts, ti["hostname"]) for ti in tis}
                say(f"   tasks ran on: {', '.join(sorted(ran_on))}")
                if ran_on != workers:
                    raise E2EError(f"tasks ran on {sorted(ran_on)}, not on both workers {sorted(workers)}")
                by = {label(ti): ti for ti in tis}
                crossed = cross_worker_reads(tis)
                if not crossed:  # both workers ran tasks, and every task is on a path of artifacts
                    raise E2EError("no artifact was read on another worker than the one that wrote it")
                for writer, reader in crossed:
                    say(f"   artifacts written by {writer} on {container_of(hosts, by[writer]['hostname'])}, "
                        f"read by {reader} on {container_of(hosts, by[reader]['hostname'])}")
                # The report through the api-server's reports view: logged in, and not.
                url = f"http://127.0.0.1:{PORT}/transfer-learning-reports/report/{safe_run_id(run_id)}/report.html"
                import httpx

                ok = httpx.get(url, headers={"Authorization": f"Bearer {api.token()}"}, timeout=30)
                anon = httpx.get(url, timeout=30)
                if ok.status_code != 200 or run_id not in ok.text or anon.status_code not in (401, 403) \
                        or run_id in anon.text:
                    raise E2EError(f"reports view: logged in {ok.status_code}, anonymous {anon.status_code}")
                say(f"   GET {url}: logged in {ok.status_code} ({len(ok.text)} bytes, names the run); "
                    f"without login {anon.status_code}")

                say("   " + check_mlflow(safe_run_id(run_id), TINY_CONF["seeds"], 0.5))
                # The run's own page: the plugin's dag_run view sends it to this report.
                view = httpx.get(f"http://127.0.0.1:{PORT}/transfer-learning-reports/run/{DAG_ID}/{run_id}",
                                 headers={"Authorization": f"Bearer {api.token()}"}, timeout=30)
                if view.status_code != 303 or not view.headers["location"].endswith(
                        f"/report/{safe_run_id(run_id)}/report.html"):
                    raise E2EError(f"the run page's Report view answered {view.status_code}")
                say(f"   the run page's Report view: {view.status_code} -> {view.headers['location']}")

            timer.step("a tiny-data run on both workers; the report through the reports view and the run's "
                       "page; metrics and the champion alias in MLflow", tiny_run)

            def restarts_run() -> None:
                run_id = f"e2e_compose_restarts__{stamp}"
                seeds = TINY_CONF["seeds"]
                # Long training tasks: the run is still going after the scheduler is back.
                api.trigger(run_id, {**TINY_CONF, "fractions": [0.5], "pretrain_epochs": 400, "scratch_epochs": 200,
                                     "head_epochs": 200, "finetune_epochs": 400})

                def running(task_ids: tuple[str, ...]) -> Any:
                    def ti_running() -> dict | None:
                        tis = api.task_instances(run_id)
                        if ti := next((t for t in tis if t["task_id"] in task_ids and t["state"] == "running"), None):
                            return ti
                        state = api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")["state"]
                        if state in ("success", "failed"):
                            print_run(run_id, state, tis)
                            raise E2EError(f"the run ended {state} before {' or '.join(task_ids)} was seen running: "
                                           "nothing left to restart a service under; give those tasks more epochs")
                        return None
                    return ti_running

                # PostgreSQL goes down under a task that the restarted scheduler queued (train_scratch may be
                # the one that ran beside pretrain), and at once: waiting for the scheduler's health check
                # first (up to one 30 s interval) let a tiny run end before it could be caught mid-run.
                later = ("transfer.head", "transfer.finetune", "compare_report")
                for task_ids, service in ((("pretrain",), "airflow-scheduler"), (later, "postgres")):
                    ti = wait_until(f"{' or '.join(task_ids)} to run", running(task_ids), 600, every=1)
                    victim = services_table()[service][0]
                    sh(["podman", "restart", "--time", "10", victim["Id"]])
                    say(f"   podman restart {victim['Name']} while {label(ti)} ran")
                for service in ("airflow-scheduler", "postgres"):
                    wait_until(f"{service} healthy again", lambda s=service: all(
                        health_of(inspect(c["Id"])) == "healthy" for c in services_table()[s]), 300, every=3)
                state, tis = wait_for_run(api, run_id, 900)
                print_run(run_id, state, tis)
                if state != "success":
                    api.fail_with_logs(run_id, tis, f"the run across restarts ended {state}")
                worker = services_table()["airflow-worker"][0]["Id"]
                lines = history_lines(worker, safe_run_id(run_id))
                if len(lines) != 1 or lines[0]["n_seeds"] != len(seeds):
                    raise E2EError(f"history.jsonl holds {len(lines)} lines for the run: {lines}")
                champion = json.loads(sh(["podman", "exec", worker, "cat",
                                          "/opt/airflow/artifacts/models/champion/champion.json"]).stdout)
                say(f"   history: one line, {len(seeds)} seeds; champion.json parses (run {champion['run']}, "
                    f"seed {champion['seed']})")
                say("   " + check_mlflow(safe_run_id(run_id), seeds, 0.5))

            timer.step("the scheduler, then PostgreSQL, restarted mid-run: the run completes; history, champion "
                       "and MLflow hold each seed once", restarts_run)

            def killed_worker_run() -> None:
                run_id = f"e2e_compose_kill__{stamp}"
                # Long enough pretraining that the kill lands mid-task.
                api.trigger(run_id, {**TINY_CONF, "seeds": [42], "fractions": [0.5], "pretrain_epochs": 300})

                def running_pretrain() -> dict | None:
                    return next((ti for ti in api.task_instances(run_id)
                                 if ti["task_id"] == "pretrain" and ti["state"] == "running" and ti["hostname"]), None)

                ti = wait_until("pretrain to run", running_pretrain, 300, every=1)
                victim = container_of(hosts, ti["hostname"])
                sh(["podman", "kill", victim])
                say(f"   podman kill {victim} while {label(ti)} ran there (try {ti['try_number']})")
                state, tis = wait_for_run(api, run_id, 900)
                print_run(run_id, state, tis)
                pre = next(t for t in tis if t["task_id"] == "pretrain")
                if state != "success" or pre["try_number"] < 2:
                    raise E2EError(f"run {state}; pretrain try {pre['try_number']}: the kill was not recovered")
                say(f"   pretrain succeeded on try {pre['try_number']} on {container_of(hosts, pre['hostname'])}")

            timer.step("a worker killed mid-task: Airflow retries, the run succeeds", killed_worker_run)
        except BaseException:
            if os.environ.get("TL_E2E_KEEP") == "1":
                say(f"TL_E2E_KEEP=1: the stack stays up (project {PROJECT}, socket {service.sock})")
                raise
            if up:
                say("\n== failure: last lines of each container")
                for c in project_containers(all_states=True):
                    tail = sh(["podman", "logs", "--tail", "15", c["Id"]], check=False)
                    say(f"--- {c['Names'][0]}\n{tail.stdout}{tail.stderr}")
                    checks = (inspect(c["Id"])["State"].get("Health") or {}).get("Log") or []
                    for check in checks[-3:]:
                        say(f"    health check {check['Start'][:19]}: exit {check['ExitCode']}, "
                            f"{check['Output'].strip()[-200:]}")
            raise
        finally:
            health.stop.set()
            if up:
                timer.step("docker-compose down -v", lambda: compose("down", "-v", "--remove-orphans", timeout=300))
        left = {kind: sh(["podman", kind, "ls" if kind != "ps" else "-a", "--format", "{{.Names}}" if kind == "ps"
                          else "{{.Name}}", "--filter", f"label=com.docker.compose.project={PROJECT}"]).stdout.split()
                for kind in ("ps", "volume", "network")}
        if any(left.values()):
            raise E2EError(f"down -v left behind: {left}")
        say("   no container, volume or network of the project is left")
    shutil.rmtree(workdir, ignore_errors=True)
    total = time.monotonic() - timer.start
    say("\n== e2e-compose passed")
    for name, seconds in timer.steps:
        say(f"   {seconds:6.0f} s  {name}")
    say(f"   {total:6.0f} s  total, on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except E2EError as exc:
        print(f"e2e-compose: {exc}", file=sys.stderr)
        sys.exit(1)
