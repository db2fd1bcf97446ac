"""The docker-compose services as local processes: Airflow's distributed mode on this machine.

`LocalStack` runs `api-server`, `scheduler`, `dag-processor`, `triggerer` and N `celery worker`s as
separate processes with CeleryExecutor, against the machine's PostgreSQL (a fresh database per stack,
dropped afterwards) and Redis (a queue of its own per stack). Every process gets the settings of
deploy/airflow.env, the file docker-compose.yaml also reads, plus the LOCATION_KEYS that the compose
file sets for its containers. Everything started here is stopped by process id.

Service addresses come from TL_E2E_POSTGRES_URL / TL_E2E_REDIS_URL (defaults: the local servers).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from deploy.processes import NotReady, Started, free_port, port_open, start, wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_ENV_FILE = Path(__file__).with_name("airflow.env")
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

# Settings that depend on where the stack runs. docker-compose.yaml sets exactly these keys for its
# containers (tests/deploy/test_compose.py holds the two to the same set); values differ by place.
LOCATION_KEYS = (
    "AIRFLOW_HOME",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__API__PORT",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT",
    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT",
    "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT",
    "AIRFLOW__OPERATORS__DEFAULT_QUEUE",
    "AIRFLOW__CORE__DAGS_FOLDER",
    "AIRFLOW__CORE__PLUGINS_FOLDER",
    "AIRFLOW__LOGGING__BASE_LOG_FOLDER",
    "PYTHONPATH",
    "TL_ARTIFACT_ROOT",
)
# Operator settings (alerts, threads per task, MLflow): each deployment passes them through from its own
# environment, `.env` for compose, the caller's environment here; unset or empty means the default.
OPERATOR_KEYS = (
    "AIRFLOW__API__BASE_URL",
    "TL_ALERT_EMAIL_TO",
    "TL_ALERT_EMAIL_FROM",
    "AIRFLOW_CONN_TL_ALERT_SMTP",
    "TL_ALERT_WEBHOOK_URL",
    "TL_TF_THREADS",
    "MLFLOW_TRACKING_URI",
    "TL_MLFLOW_MAX_MODEL_MB",
)


class StackError(RuntimeError):
    """The local stack could not start or a component died; the message says which and why."""


def read_env_file(path: Path = SHARED_ENV_FILE) -> dict[str, str]:
    """KEY=VALUE lines (the docker-compose env_file format without quoting); # starts a comment."""
    env: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{path}:{n}: expected KEY=VALUE, got {line!r}")
        env[key.strip()] = value.strip()
    return env


def _is_local(host: str | None) -> bool:
    return host in (None, "", "localhost", "127.0.0.1", "::1")


def _run(cmd: list[str]) -> bool:
    return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def _starters(name: str, port: int) -> list[list[str]]:
    """Ways to start a local server on `port`, most conventional first."""
    if name == "Redis":  # the system service listens on the default port only
        service = [["service", "redis-server", "start"]] if port == 6379 else []
        # No persistence: a broker for test stacks, and no dump.rdb left in the working folder.
        return [*service, ["redis-server", "--port", str(port), "--daemonize", "yes", "--save", ""]]
    clusters = sorted(Path("/etc/postgresql").glob("*/main"))
    return [["service", "postgresql", "start"],
            *(["pg_ctlcluster", "--skip-systemctl-redirect", c.parent.name, "main", "start"] for c in clusters)]


def _answers_within(host: str, port: int, timeout: float) -> bool:
    try:
        return wait_until(lambda: port_open(host, port), timeout, f"{host}:{port} to answer", interval=0.3)
    except NotReady:
        return False


def ensure_services(postgres_url: str, redis_url: str, say: Callable[[str], None] = print) -> None:
    """Make sure PostgreSQL and Redis answer; start (or, as root on Debian, install) local ones if not."""
    for name, url, default_port, packages, variable in (
        ("PostgreSQL", postgres_url, 5432, ["postgresql"], "TL_E2E_POSTGRES_URL"),
        ("Redis", redis_url, 6379, ["redis-server"], "TL_E2E_REDIS_URL"),
    ):
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or default_port
        if port_open(host, port):
            continue
        if not _is_local(host):
            raise StackError(f"{name} at {host}:{port} does not answer. Start it, or point {variable} elsewhere.")
        say(f"{name} is not running at {host}:{port}: starting it.")
        servers = ("redis-server", "pg_ctlcluster")
        if not any(shutil.which(s) for s in servers) and os.geteuid() == 0 and shutil.which("apt-get"):
            say(f"{name} is not installed: installing {' '.join(packages)} with apt-get (as root).")
            _run(["apt-get", "install", "-y", "-qq", *packages]) or (
                _run(["apt-get", "update", "-qq"]) and _run(["apt-get", "install", "-y", "-qq", *packages]))
        started = None
        for cmd in _starters(name, port):  # e.g. the system service may run, but on another port
            if shutil.which(cmd[0]) and _run(cmd) and _answers_within(host, port, 15):
                started = " ".join(cmd)
                break
        if started is None:
            raise StackError(f"{name} is not running at {host}:{port} and could not be started here. Start it "
                             f"(e.g. `service {packages[0]} start`) or point {variable} at a running one.")
        say(f"{name} started at {host}:{port} with `{started}`; it is a machine service and is left running.")



def services_missing(postgres_url: str, redis_url: str, say: Callable[[str], None] = print) -> str | None:
    """None when PostgreSQL and Redis answer (started here if need be); otherwise one line saying what is
    missing and how to provide it, for the services test tier to skip with (or fail with, under CI)."""
    try:
        ensure_services(postgres_url, redis_url, say)
    except StackError as exc:
        return (f"services tier skipped: {exc} Install and start PostgreSQL (trust auth for user postgres) and "
                "Redis locally, or set TL_E2E_POSTGRES_URL / TL_E2E_REDIS_URL to running ones.")
    return None

@dataclass
class LocalStack:
    """Use as a context manager; `base_url`, `username` and `password` reach its REST API."""

    workdir: Path
    workers: int = 1
    postgres_url: str = field(default_factory=lambda: os.environ.get("TL_E2E_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    redis_url: str = field(default_factory=lambda: os.environ.get("TL_E2E_REDIS_URL", DEFAULT_REDIS_URL))
    say: Callable[[str], None] = print
    # Extra settings for every process of this stack only (e.g. a test switching off the cron schedule).
    overrides: dict[str, str] = field(default_factory=dict)
    components: list[Started] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        self.stack_id = f"tl_e2e_{os.getpid()}_{secrets.token_hex(3)}"
        self.db_name = self.stack_id
        # Ports picked once: every component of this stack must agree on them.
        self.api_port, self.scheduler_health_port, self.log_port, self.trigger_log_port = (
            free_port() for _ in range(4))
        self.username = "admin"
        self.password = secrets.token_urlsafe(18)  # per run, never written to the repo
        self.artifact_root = self.workdir / "artifacts"
        self.airflow = Path(sys.executable).with_name("airflow")
        self.base_url = f"http://127.0.0.1:{self.api_port}"
        self._db_created = False
        self.cli_calls: list[list[str]] = []  # argv of every CLI command run, for the secrets check
        from cryptography.fernet import Fernet

        # Fresh secrets per stack, shared by its components (the JWT secret signs task tokens).
        self._secrets = {"fernet": Fernet.generate_key().decode(), "jwt": secrets.token_urlsafe(32),
                         "api": secrets.token_urlsafe(32)}

    # -- environment --------------------------------------------------------------------------
    def _airflow_db_url(self) -> str:
        p = urlsplit(self.postgres_url)
        return urlunsplit(("postgresql+psycopg2", p.netloc, f"/{self.db_name}", p.query, ""))

    def location_env(self) -> dict[str, str]:
        db = self._airflow_db_url()
        env = {
            "AIRFLOW_HOME": str(self.workdir / "airflow-home"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db,
            "AIRFLOW__CELERY__BROKER_URL": self.redis_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + db.replace("+psycopg2", "", 1),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            "AIRFLOW__CORE__FERNET_KEY": self._secrets["fernet"],
            "AIRFLOW__API_AUTH__JWT_SECRET": self._secrets["jwt"],
            "AIRFLOW__API__SECRET_KEY": self._secrets["api"],
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(self.scheduler_health_port),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.log_port),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.trigger_log_port),
            # A queue of our own on the shared Redis: no other stack's worker takes our tasks.
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": self.stack_id,
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.workdir / "logs"),
            "PYTHONPATH": str(REPO_ROOT),
            "TL_ARTIFACT_ROOT": str(self.artifact_root),
        }
        assert set(env) == set(LOCATION_KEYS), "LOCATION_KEYS and location_env() must name the same keys"
        return env

    def env(self, **overrides: str) -> dict[str, str]:
        # Start clean: the Makefile's SQLite/LocalExecutor settings must not leak into this stack.
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("AIRFLOW", "_AIRFLOW", "TL_")) and k != "PYTHONPATH"}
        base["PATH"] = f"{self.airflow.parent}{os.pathsep}{base.get('PATH', '')}"
        base.update({k: os.environ[k] for k in OPERATOR_KEYS if os.environ.get(k)})
        return {**base, **read_env_file(), **self.location_env(), **self.overrides, **overrides}

    # -- database -----------------------------------------------------------------------------
    def _admin_sql(self, sql: str) -> None:
        import psycopg2

        try:
            conn = psycopg2.connect(self.postgres_url, connect_timeout=10)
        except psycopg2.OperationalError as exc:
            raise StackError(f"Cannot connect to PostgreSQL at {self.postgres_url} ({exc}). Set TL_E2E_POSTGRES_URL "
                             "to a URL of a role that may create databases.") from exc
        conn.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    def _cli(self, *args: str, timeout: float = 300, stdin_text: str | None = None) -> None:
        """Run one `airflow` CLI command. Secrets go in `stdin_text`, never in argv (`ps` shows argv to
        every user). A new session has no controlling terminal, so getpass reads them from stdin."""
        log = self.workdir / "logs" / f"cli-{args[0]}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        self.cli_calls.append([str(self.airflow), *args])
        with open(log, "wb") as out:
            rc = subprocess.run([str(self.airflow), *args], env=self.env(), stdout=out, stderr=subprocess.STDOUT,
                                timeout=timeout, cwd=str(REPO_ROOT), start_new_session=True,
                                input=stdin_text.encode() if stdin_text is not None else None).returncode
        if rc != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
            raise StackError(f"`airflow {args[0]} {args[1] if len(args) > 1 else ''}` failed (exit {rc}):\n{tail}")

    # -- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> LocalStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        ensure_services(self.postgres_url, self.redis_url, self.say)
        self.artifact_root.mkdir(parents=True, exist_ok=True)
        self._admin_sql(f'CREATE DATABASE "{self.db_name}"')
        self._db_created = True
        self.say(f"fresh database {self.db_name} on {urlsplit(self.postgres_url).netloc}; "
                 f"Redis {self.redis_url}, queue {self.stack_id}")
        t0 = time.monotonic()
        self._cli("db", "migrate")
        # No --password: the FAB CLI asks twice through getpass, answered on stdin.
        self._cli("users", "create", "--username", self.username, "--role", "Admin", "--firstname", "E2E",
                  "--lastname", "Admin", "--email", "admin@example.invalid",
                  stdin_text=f"{self.password}\n{self.password}\n")
        subprocess.run([sys.executable, "-m", "include.operations"], env=self.env(), cwd=str(REPO_ROOT), check=True,
                       stdout=subprocess.DEVNULL, timeout=300)  # the training pool (Airflow creates none)
        self.say(f"database migrated, admin user and training pool created in {time.monotonic() - t0:.0f}s")

        logs = self.workdir / "logs"
        specs = [("api-server", ["api-server", "--workers", "1", "--host", "127.0.0.1"], {}),
                 ("scheduler", ["scheduler"], {}),
                 ("dag-processor", ["dag-processor"], {}),
                 ("triggerer", ["triggerer"], {})]
        for i in range(1, self.workers + 1):
            # Each worker serves its task logs on a port of its own, like one container each.
            specs.append((f"celery-worker-{i}", ["celery", "worker", "--celery-hostname", f"worker{i}@%h"],
                          {"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())}))
        for name, args, extra in specs:
            comp = start(name, [str(self.airflow), *args], logs / f"{name}.log", env=self.env(**extra),
                         cwd=str(REPO_ROOT))
            self.components.append(comp)
            self.say(f"started {name:16} pid {comp.pid}")
        self.wait_healthy()

    def stop(self) -> None:
        for comp in reversed(self.components):
            was_alive = comp.alive()
            comp.stop()  # with whatever it started (celery pool, task supervisors)
            self.say(f"stopped {comp.name:16} pid {comp.pid}" + ("" if was_alive else " (had exited)"))
        self.components.clear()
        if self._db_created:
            try:
                self._admin_sql(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
                self.say(f"dropped database {self.db_name}")
            except Exception as exc:  # cleanup must not hide the test's own failure; say what is left
                self.say(f"could not drop database {self.db_name}: {exc}")
            self._db_created = False
        try:
            import redis

            redis.Redis.from_url(self.redis_url, socket_timeout=5).delete(self.stack_id)
        except Exception as exc:
            self.say(f"could not delete Redis queue {self.stack_id}: {exc}")

    def check_alive(self) -> None:
        dead = [c for c in self.components if not c.alive()]
        if dead:
            raise StackError("\n\n".join(f"{c.name} (pid {c.pid}) exited with {c.popen.returncode}; "
                                         f"last lines of {c.log}:\n{c.tail()}" for c in dead))

    def tails(self, lines: int = 20) -> str:
        return "\n".join(f"--- {c.name} (last {lines} lines of {c.log}) ---\n{c.tail(lines)}" for c in self.components)

    def wait_healthy(self, timeout: float = 180) -> dict[str, Any]:
        """The compose health checks, locally: API health for scheduler, dag-processor and triggerer,
        the scheduler's /health endpoint, and every celery worker's 'ready' line."""
        import httpx

        last: dict[str, Any] = {}

        def healthy() -> dict[str, Any] | None:
            self.check_alive()
            health = httpx.get(f"{self.base_url}/api/v2/monitor/health", timeout=5).json()
            sched = httpx.get(f"http://127.0.0.1:{self.scheduler_health_port}/health", timeout=5).status_code
            workers_ready = all(" ready." in c.log.read_text(errors="replace") for c in self.components
                                if c.log and c.name.startswith("celery-worker"))
            last.update({"api": health, "scheduler /health": sched, "workers ready": workers_ready})
            parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
            ok = sched == 200 and workers_ready and all((health.get(p) or {}).get("status") == "healthy" for p in parts)
            return health if ok else None

        try:
            health = wait_until(healthy, timeout, "all components to be healthy", interval=2,
                                errors=(httpx.HTTPError, ValueError, OSError))
        except NotReady as exc:
            raise StackError(f"{exc}; last health: {json.dumps(last)}\n{self.tails(15)}") from exc
        self.say("all components healthy: " + ", ".join(c.name for c in self.components))
        return health
