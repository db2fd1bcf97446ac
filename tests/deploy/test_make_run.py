"""`make run` for real: a tiny run through the Makefile target, then its task logs through `make airflow`.

`make run` runs the DAG through Airflow's scheduler (scripts/make_run.py says why), so each task
writes its log where the api-server reads it. This runs the target on tiny synthetic data with its
own AIRFLOW_HOME, checks the non-terminal progress lines, the verdict and the report path, then
starts `make airflow` on the same home and reads a mapped task's log through the REST API
(`GET .../taskInstances/{task}/logs/{try}?map_index=...`), which must hold that task's epoch lines,
and runs `make run` again, which must use that `make airflow` instead of starting its own.
Cost: about 4-5 minutes on 2 cores (two Airflow start-ups, two tiny runs).

Ctrl-C: a tiny make run interrupted while a task runs stops every process it started within 10 s
(the issue's bound; make_run.py kills what is left after 5 s), and the run is marked failed as the
UI's "Mark as failed" does (its teardown left for the next scheduler). Cost: about a minute.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from deploy.preloading_executor import preload_enabled
from deploy.processes import Started, start, tree, wait_until
from include.artifacts import safe_run_id
from tests.deploy.airflow_api import AirflowApi, label
from tests.deploy.test_ui_standalone import Standalone
from tests.synthetic import TINY_CONF

pytestmark = [pytest.mark.slow, pytest.mark.airflow, pytest.mark.services, pytest.mark.training]

ROOT = Path(__file__).resolve().parents[2]


def test_make_run_task_logs_are_readable_through_the_rest_api(tmp_path: Path, tiny_data: Path) -> None:
    home, artifacts = tmp_path / "airflow-home", tmp_path / "run-artifacts"
    artifacts.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "_AIRFLOW", "TL_", "MAKE", "MFLAGS"))}
    env.update({"AIRFLOW_HOME": str(home), "TL_ARTIFACT_ROOT": str(artifacts)})
    env.pop("VERBOSE", None)
    conf = {**TINY_CONF, "seeds": [42], "fractions": [0.5], "data_dir": str(tiny_data)}
    # -o data: the tiny synthetic data is enough; `make test` checks the real files elsewhere.
    res = subprocess.run(["make", "--no-print-directory", "-o", "data", "run", f"RUN_CONF={json.dumps(conf)}"],
                         cwd=ROOT, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=1200)
    out = res.stdout
    print(out[-3000:])
    assert res.returncode == 0, out[-4000:] + res.stderr[-4000:]

    # Not a terminal: plain progress lines, the full log's path first and last, the verdict and the report.
    run_id = re.search(r"^Triggered (\S+) with conf", out, re.M).group(1)
    full_log = home / "make-run" / f"{run_id}.log"
    lines = [line for line in out.splitlines() if line.strip()]
    starts = [i for i, line in enumerate(lines) if line == f"Full log: {full_log}"]
    assert starts and starts[0] < 3 and starts[-1] > len(lines) - 4, out
    assert re.search(r"^\[\d+:\d\d\] tasks 0/\d+ done, elapsed", out, re.M), out
    last = re.findall(r"^\[\d+:\d\d\] tasks (\d+)/(\d+) done, elapsed .*; running: (.*)$", out, re.M)[-1]
    assert last[0] == last[1] and int(last[0]) >= 7 and last[2] == "-", out
    metrics = json.loads((artifacts / "reports" / safe_run_id(run_id) / "metrics.json").read_text())
    assert f"Run {run_id}: success after" in out
    assert f"Verdict: {metrics['verdict']['text']}" in out
    assert f"Report:  {artifacts / 'reports' / safe_run_id(run_id) / 'report.html'}" in out
    assert re.search(r"\[pretrain\[0\]\] .*pretrain\[seeds?=42\] epoch 1: ", full_log.read_text())  # task lines
    assert "\x1b[" not in out  # no terminal codes when stdout is not a terminal

    # `make airflow` afterwards, on the same AIRFLOW_HOME: the run and its task logs, through the REST API.
    af = Standalone(tmp_path)
    try:
        af.wait_ready()
        password = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
        api = AirflowApi(af.url, "admin", password, check_alive=af.check_alive)
        tis = api.task_instances(run_id)
        assert {"split_data", "pretrain[0]", "train_scratch[0]", "transfer.head[0]", "transfer.finetune[0]",
                "compare_report", "promote_champion"} <= {label(t) for t in tis}
        assert int(last[1]) == len(tis)  # the progress view counted every task of the run
        assert all(t["state"] in ("success", "skipped") for t in tis), [(label(t), t["state"]) for t in tis]
        mapped = next(t for t in tis if t["task_id"] == "transfer.finetune")
        log = api.task_log(run_id, mapped)  # GET .../logs/{try}?map_index=0
        # The epoch lines (include/models/replicas.py): "<phase>[seed(s)=42,fraction=0.5] epoch N: ...".
        assert re.search(r"transfer\.finetune\[seeds?=42,fraction=0\.5\] epoch 2: ", log), log[-2000:]
        assert "Log file not found" not in log
        # Forked from a LocalExecutor worker that had imported TensorFlow (deploy/preloading_executor.py;
        # on by default on Linux only, and make run's environment here leaves TL_WORKER_PRELOAD unset).
        preloaded = "TensorFlow was already imported in this process: preloaded by its Airflow worker" in log
        assert preloaded is preload_enabled("auto"), log[-2000:]
        scratch = api.task_log(run_id, next(t for t in tis if t["task_id"] == "train_scratch"))
        assert re.search(r"scratch\[seeds?=42,fraction=0\.5\] epoch 1: ", scratch), scratch[-2000:]
        assert re.search(r"scratch\[seeds?=42,fraction=1\] epoch 1: ", scratch), scratch[-2000:]

        # A second make run while make airflow runs: it uses it (starts and stops nothing) and its tasks
        # run in make airflow's scheduler, so their artifacts go to make airflow's artifact root.
        again = subprocess.run(["make", "--no-print-directory", "-o", "data", "run", f"RUN_CONF={json.dumps(conf)}"],
                               cwd=ROOT, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                               timeout=1200)
        print(again.stdout[-2000:])
        assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
        assert f"Using the running make airflow at {af.url}" in again.stdout
        assert "Starting Airflow" not in again.stdout and "Stopping" not in again.stdout
        second = re.search(r"^Triggered (\S+) with conf", again.stdout, re.M).group(1)
        run = api("GET", f"/dags/fashion_mnist_transfer_learning/dagRuns/{second}")
        assert run["state"] == "success" and run["conf"] == conf
        assert run["triggered_by"] == "rest_api"  # through make airflow's API: no Airflow import in make run
        assert f"Report:  {af.artifacts / 'reports' / safe_run_id(second) / 'report.html'}" in again.stdout
        # A conf the DAG's Params refuse: Airflow's own message, through the API, and no run.
        bad = subprocess.run(["make", "--no-print-directory", "-o", "data", "run", 'RUN_CONF={"seeds": "42"}'],
                             cwd=ROOT, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
        assert bad.returncode != 0 and "make run: the run was not started: " in bad.stderr, bad.stdout + bad.stderr
        assert "seeds" in bad.stderr.split("the run was not started: ", 1)[1], bad.stderr
        assert len(api("GET", "/dags/fashion_mnist_transfer_learning/dagRuns")["dag_runs"]) == 2
        af.check_alive()  # make airflow still runs after make run ended
    finally:
        af.stop()


def _processes_of(make: Started) -> list[psutil.Process]:
    """make, everything it started, and every member of a session one of them leads: make_run.py,
    the components (each in a session of its own) and what they started, task processes included.
    (Not by environment: setproctitle overwrites /proc/<pid>/environ of the api-server and workers.)"""
    return tree(make.pid)


def test_ctrl_c_during_make_run_stops_everything_it_started_and_fails_the_run(tmp_path: Path, tiny_data: Path) -> None:
    home, artifacts = tmp_path / "airflow-home", tmp_path / "run-artifacts"
    artifacts.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "_AIRFLOW", "TL_", "MAKE", "MFLAGS"))}
    env.update({"AIRFLOW_HOME": str(home), "TL_ARTIFACT_ROOT": str(artifacts)})
    env.pop("VERBOSE", None)
    conf = {**TINY_CONF, "seeds": [42], "fractions": [0.5], "data_dir": str(tiny_data)}
    # In a session of its own, as in a terminal: Ctrl-C goes to make's whole process group.
    make = start("make run", ["make", "--no-print-directory", "-o", "data", "run", f"RUN_CONF={json.dumps(conf)}"],
                 tmp_path / "make-run.out", cwd=ROOT, env=env)
    try:
        def triggered() -> str | None:
            m = re.search(r"^Triggered (\S+) with conf", make.tail(200), re.M)
            return m.group(1) if m else None

        run_id = wait_until(triggered, 600, "the run to be triggered", watch=[make], interval=0.5)

        def running_task() -> bool:
            with sqlite3.connect(f"file:{home / 'airflow.db'}?mode=ro", uri=True, timeout=5) as conn:
                return conn.execute("SELECT count(*) FROM task_instance WHERE run_id = ? AND state = 'running'",
                                    (run_id,)).fetchone()[0] > 0

        wait_until(running_task, 300, "a task to run", watch=[make], interval=0.2, errors=(sqlite3.Error,))
        started = _processes_of(make)
        titles = [" ".join(p.cmdline()) for p in started]
        assert any("scheduler" in t for t in titles) and any("api_server" in t or "api-server" in t for t in titles)
        assert any(t.startswith("airflow worker -- ") and not t.endswith("<idle>") for t in titles), titles  # a task
        t0 = time.monotonic()
        os.killpg(make.pid, signal.SIGINT)
        # make is the test's child: Popen reaps it (its exit code is checked below), psutil does not.
        others = [p for p in started if p.pid != make.pid]
        gone, alive = psutil.wait_procs(others, timeout=10)  # the bound: everything stopped within 10 s
        print(f"stopped {len(gone)} processes in {time.monotonic() - t0:.1f}s")
        assert not alive, [(p.pid, p.cmdline()) for p in alive]
        make.popen.wait(timeout=60)
        assert [p for p in others if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
    finally:
        make.stop(timeout=10)
    out = make.tail(200)
    assert make.popen.returncode != 0, out
    assert f"Marked {run_id} failed: it was interrupted." in out and f"Run {run_id}: interrupted after" in out, out
    # "Mark as failed": no task left running or pending to hold the next run, except the teardown
    # (apply_retention), which the next scheduler runs and which then ends the run. (A task running at
    # the Ctrl-C may have finished meanwhile: the scheduler lets it end within the stop's grace time.)
    with sqlite3.connect(home / "airflow.db") as conn:
        states = dict(conn.execute("SELECT task_id || '[' || map_index || ']', state FROM task_instance "
                                   "WHERE run_id = ? AND task_id != 'apply_retention'", (run_id,)).fetchall())
    assert set(states.values()) <= {"success", "failed", "skipped", "upstream_failed"}, states
