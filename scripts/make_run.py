"""`make run`: one run of the DAG through Airflow's own scheduler, followed with a compact progress view.

Why not `airflow dags test`: it runs tasks in its own process and writes no task log files, so the
UI and the REST API answer "Log file not found" for every task of such a run. Here the run goes
through Airflow's scheduler with LocalExecutor, on the same SQLite database and AIRFLOW_HOME as
`make airflow`: every task writes its log where the api-server reads it, and `make airflow`
afterwards shows the run with its logs, like any triggered run.

The components (api-server for the tasks' execution API, scheduler, dag-processor) start at once,
each as a process of its own (`Components`); a running, healthy `make airflow` on the same home is
used instead. The run is triggered through Airflow in this process (as `airflow dags trigger`
does) and followed by reading the database and the task log files, which costs no request to
the components. Ctrl-C (or SIGTERM) stops every component started here and marks the run failed.

Output: a live summary (Rich) on a terminal; plain periodic lines otherwise (CI); VERBOSE=1 streams
the components' output and every task log line. Everything also goes to a log file whose path is
printed at the start and the end, with `[make run] <event> <time>` milestones for the benchmark.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

# The Makefile puts the repository on PYTHONPATH.
from deploy.processes import ProcessError, Started, free_port, local_workers, start, tree, wait_until

ROOT = Path(__file__).resolve().parent.parent

DAG_ID = "fashion_mnist_transfer_learning"
EXECUTOR = "deploy.preloading_executor.LocalExecutor"  # also `make airflow`'s (Makefile)
START_TIMEOUT_S = 300
POLL_S = 0.5  # the run's state and task log files, read from disk: cheap
POLL_BUSY_S = 0.2  # a poll's wait on SQLite's write lock (Database): Ctrl-C must not queue behind it
MARK = "[make run]"  # a milestone line in the full log: "[make run] <event> <ISO time>"
AIRFLOW_STATE = "make-airflow.json"  # written by scripts/airflow_standalone.py while `make airflow` runs
PLAIN_EVERY_S = 30  # without a terminal: one summary line this often (and at every finished task)
# The training code's one line per epoch: "<phase> epoch <n>: ..." (include/models/replicas.py).
EPOCH_LINE = re.compile(r"(\S+) epoch (\d+): ")
FINISHED = {"success", "failed", "skipped", "upstream_failed", "removed"}


class RunError(RuntimeError):
    """A failure with a message meant for the user; no traceback."""


# -- what the run is doing ------------------------------------------------------------------------
@dataclass
class TaskView:
    label: str
    state: str
    started: float | None = None  # epoch seconds
    ended: float | None = None
    epoch: str = ""  # the newest per-epoch log line's "phase epoch N", while it runs


@dataclass
class Progress:
    """Tasks done out of total, what runs now, and an estimate of what is left."""

    tasks: list[TaskView] = field(default_factory=list)

    @property
    def done(self) -> int:
        return sum(t.state in FINISHED for t in self.tasks)

    @property
    def failed(self) -> list[TaskView]:
        return [t for t in self.tasks if t.state in ("failed", "upstream_failed")]

    @property
    def running(self) -> list[TaskView]:
        return [t for t in self.tasks if t.state == "running"]

    def seconds_left(self, now: float) -> float | None:
        """Remaining work / throughput so far. Work per task: mean duration of finished tasks with the
        same task id (mapped siblings), else of all finished tasks. None until something finished."""
        finished = [t for t in self.tasks if t.state == "success" and t.started is not None and t.ended is not None]
        if not finished:
            return None
        by_id: dict[str, list[float]] = {}
        for t in finished:
            by_id.setdefault(t.label.split("[")[0], []).append(t.ended - t.started)
        overall = sum(t.ended - t.started for t in finished) / len(finished)

        def cost(t: TaskView) -> float:
            same = by_id.get(t.label.split("[")[0])
            return sum(same) / len(same) if same else overall

        starts = [t.started for t in self.tasks if t.started is not None]
        busy = max(now - min(starts), 1e-6)
        throughput = sum(t.ended - t.started for t in finished) / busy  # >1 when tasks overlap
        left = sum(cost(t) for t in self.tasks if t.state not in FINISHED)
        left -= sum(min(now - t.started, cost(t)) for t in self.running if t.started is not None)
        return max(left, 0.0) / max(throughput, 1e-6)

    def summary(self, elapsed: float, now: float) -> str:
        left = self.seconds_left(now)
        parts = [f"tasks {self.done}/{len(self.tasks) or '?'} done", f"elapsed {clock(elapsed)}",
                 f"~{clock(left)} left" if left is not None else "estimating time left"]
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        return ", ".join(parts)

    def now_running(self) -> str:
        return "; ".join(f"{t.label} {t.epoch}".strip() for t in self.running) or "-"


def clock(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def parse_time(stamp: str | None) -> float | None:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else None


def label(ti: dict[str, Any]) -> str:
    return ti["task_id"] + (f"[{ti['map_index']}]" if ti.get("map_index", -1) >= 0 else "")


# -- task log files, read as they grow ------------------------------------------------------------
class TaskLogs:
    """Follows the run's task log files (JSON lines) under AIRFLOW_HOME/logs; remembers the newest
    epoch line per task and hands every new line to `emit`."""

    def __init__(self, logs_root: Path, run_id: str, emit: Callable[[str], None]) -> None:
        self.folder = logs_root / f"dag_id={DAG_ID}" / f"run_id={run_id}"
        self.emit = emit
        self.offsets: dict[Path, int] = {}
        self.epoch: dict[str, str] = {}
        self.last: dict[str, deque[str]] = {}  # the newest lines per task, shown when it failed

    def poll(self) -> None:
        for path in sorted(self.folder.glob("task_id=*/**/attempt=*.log")):
            size = path.stat().st_size
            start = self.offsets.get(path, 0)
            if size <= start:
                continue
            with path.open("rb") as fh:
                fh.seek(start)
                chunk = fh.read(size - start)
            complete = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits for the next poll
            self.offsets[path] = start + len(complete)
            task = self._label(path)
            for raw in complete.decode(errors="replace").splitlines():
                text = log_text(raw)
                if m := EPOCH_LINE.search(text):
                    self.epoch[task] = f"{m.group(1)} epoch {m.group(2)}"
                self.last.setdefault(task, deque(maxlen=20)).append(text)
                self.emit(f"[{task}] {text}")

    def _label(self, path: Path) -> str:
        rel = path.relative_to(self.folder).parts
        task = rel[0].removeprefix("task_id=")
        mapped = [p for p in rel if p.startswith("map_index=")]
        return task + (f"[{mapped[0].removeprefix('map_index=')}]" if mapped else "")


def log_text(raw: str) -> str:
    try:
        item = json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(item, dict):
        return raw
    return " ".join(str(item[k]) for k in ("timestamp", "level", "event") if item.get(k))


# -- the components -------------------------------------------------------------------------------
def component_env(home: Path, port: int) -> dict[str, str]:
    """The settings of a one-off local run: `make airflow`'s, plus intervals that suit one run."""
    return {**os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            # LocalExecutor whose workers import TensorFlow once, not each task (deploy/preloading_executor.py).
            "AIRFLOW__CORE__EXECUTOR": EXECUTOR,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            # Ports of our own: a `make airflow` or another Airflow on this machine may hold the defaults.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            # Only the run asked for: no nightly run even if make run spans 02:00 UTC.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            # LocalExecutor forks this many workers at start (default 32); more tasks than cores at once
            # only share the cores. Tasks' results do not depend on it.
            "AIRFLOW__CORE__PARALLELISM": str(local_workers()),
            # The DAG file is parsed once at start; re-parsing it every 30 s during the run costs a core
            # for a second each time and changes nothing.
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "3600",
            # A finished task's successor is queued sooner (default 1 s idle sleep between loops).
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
            # A task's supervisor waits in select() for up to this long, also once the task has closed its
            # sockets but has not been reaped yet: about one task in three then held its worker 5 s
            # (the default) after it ended, and the scheduler's stop waited for it. 1 s bounds that wait;
            # heartbeats go every second instead of every 5 (one small write each).
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1"}


class Components:
    """The api-server (execution API only: tasks report to it), the scheduler and the dag-processor
    (parses the DAG, runs its failure callback), each a process in a session of its own, all started
    at once. The scheduler serves no task logs: they are files on this disk.

    Not `airflow standalone`: it also starts the full UI (twice the api-server's import time) and a
    triggerer this DAG does not need, and it stops its components one after the other, each through
    its interpreter's exit, which spends seconds collecting garbage (the api-server's most): the
    issue measured 37 s, its wrapper's 30 s timeout included. Here a component is killed as soon as
    its own shutdown is done (`stop`).
    """

    STOP_GRACE_S = 5  # the components' own shutdown takes under 1 s; what is left after this is killed

    def __init__(self, home: Path, full_log: Path, parse_in_background: bool = False) -> None:
        """`parse_in_background`: the DAG's last parse is current, so the dag-processor (failure
        callbacks, a re-parse) starts at a lower CPU priority, off the way to the first task."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.started_at = datetime.now(UTC)
        self.home = home
        env = component_env(home, self.port)
        airflow = str(Path(sys.executable).with_name("airflow"))
        self.procs: list[Started] = []
        try:
            for name, args in (("api-server", ["api-server", "--apps", "execution"]),
                               ("scheduler", ["scheduler", "--skip-serve-logs"]), ("dag-processor", ["dag-processor"])):
                nice = ["nice", "-n", "10"] if name == "dag-processor" and parse_in_background else []
                self.procs.append(start(name, [*nice, airflow, *args], full_log, env=env))
        except BaseException:  # e.g. Ctrl-C between two starts: nothing is left behind
            self.stop()
            raise

    def stop(self) -> list[str]:
        """SIGTERM to the scheduler and the dag-processor, then to the api-server: the scheduler waits
        for its LocalExecutor workers, whose last calls go to the api-server (stopped first, they
        retried for seconds). Once a component has done its own shutdown (the scheduler's and the
        dag-processor's job rows ended, the api-server logged that it finished), what is left is its
        interpreter's exit, which spends seconds collecting garbage: it is killed then. Whatever is
        left after STOP_GRACE_S is killed too; returns a line per such process."""
        deadline = time.monotonic() + self.STOP_GRACE_S
        left = list(self.procs)
        for wave in (("scheduler", "dag-processor"), ("api-server",)):
            procs = [p for p in left if p.name in wave]
            for proc in procs:
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.send_signal(signal.SIGTERM)
            while procs and time.monotonic() < deadline:
                for proc in [p for p in procs if not p.alive() or self.finished(p)]:
                    proc.stop(timeout=2, sig=signal.SIGKILL)  # reaps it and ends what it may have left
                    procs.remove(proc)
                    left.remove(proc)
                time.sleep(0.1)
        # Past the grace period: SIGKILL at once, all of them (a further SIGTERM and wait per process
        # took the whole stop past 10 s when the scheduler was still waiting for a running task).
        forced = []
        for proc in left:
            for p in tree(proc.pid, session_only=proc.popen.poll() is not None):
                with contextlib.suppress(psutil.Error):
                    forced.append(f"pid {p.pid}: {' '.join(p.cmdline())}")
            proc.stop(timeout=2, sig=signal.SIGKILL)
        return forced

    def finished(self, proc: Started) -> bool:
        """Whether the component has completed its shutdown (only its interpreter's exit is left)."""
        if proc.name == "api-server":
            with contextlib.suppress(OSError), proc.log.open("rb") as fh:
                fh.seek(max(fh.seek(0, os.SEEK_END) - 65536, 0))
                return f"Finished server process [{proc.pid}]".encode() in fh.read()
            return False
        job_type = {"scheduler": "SchedulerJob", "dag-processor": "DagProcessorJob"}[proc.name]
        with contextlib.suppress(Exception):  # sqlite3.Error; a row being written is read at the next poll
            rows = Database(self.home, POLL_BUSY_S).rows("SELECT state FROM job WHERE job_type = ? AND start_date >= ? "
                                            "ORDER BY id DESC LIMIT 1", job_type, db_stamp(self.started_at))
            return bool(rows) and rows[0][0] not in (None, "running")
        return False


class Database:
    """The run and its tasks, read from Airflow's SQLite file with the standard library (cheap to poll;
    no Airflow import); the run is triggered through Airflow itself (`trigger`)."""

    def __init__(self, home: Path, busy_timeout: float = 5.0) -> None:
        self.path = home / "airflow.db"
        # How long a read waits on a writer's lock. Polls use a short one: SQLite's wait is a C call that
        # Ctrl-C cannot cut short, and a poll that meets the lock is simply tried again.
        self.busy_timeout = busy_timeout

    def rows(self, sql: str, *args: Any) -> list[tuple]:
        import sqlite3

        with contextlib.closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                                timeout=self.busy_timeout)) as conn:
            return conn.execute(sql, args).fetchall()

    def scheduler_beat(self, since: datetime | None = None) -> str | None:
        """Heartbeat time of a live scheduler on this database (one that beat in the last minute, or
        since `since`), else None."""
        row = self.rows("SELECT max(latest_heartbeat) FROM job WHERE job_type = 'SchedulerJob' AND state = 'running'")
        if not row or not row[0][0]:
            return None
        beat = datetime.fromisoformat(row[0][0]).replace(tzinfo=UTC)
        floor = since or datetime.now(UTC) - timedelta(seconds=60)
        return row[0][0] if beat >= floor else None

    def dag(self) -> tuple[bool, datetime | None] | None:
        """(is_paused, last_parsed_time) of the DAG, None while it is unknown."""
        row = self.rows("SELECT is_paused, last_parsed_time FROM dag WHERE dag_id = ?", DAG_ID)
        if not row:
            return None
        return bool(row[0][0]), datetime.fromisoformat(row[0][1]).replace(tzinfo=UTC) if row[0][1] else None

    def parsed_since(self, when: datetime) -> bool:
        """Whether the DAG's last parse (e.g. by an earlier make run) is not older than `when`."""
        import sqlite3

        try:
            dag = self.dag()
        except sqlite3.Error:  # no database yet
            return False
        return dag is not None and dag[1] is not None and dag[1] >= when

    def import_errors(self) -> list[str]:
        return [r[0] for r in self.rows("SELECT stacktrace FROM import_error WHERE filename LIKE ?", f"%{DAG_ID}%")]

    def metrics_path(self, run_id: str) -> Path | None:
        """compare_report's metrics.json path, from its XCom: the artifact root of whichever Airflow ran
        the tasks (a running make airflow may write elsewhere than this process's TL_ARTIFACT_ROOT)."""
        rows = self.rows("SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = 'compare_report' "
                         "AND key = 'return_value'", DAG_ID, run_id)
        try:
            return Path(json.loads(rows[0][0])["metrics_path"])
        except (IndexError, TypeError, ValueError, KeyError):
            return None

    def run(self, run_id: str) -> tuple[str | None, list[TaskView]]:
        state = self.rows("SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", DAG_ID, run_id)
        tis = self.rows("SELECT task_id, map_index, state, start_date, end_date FROM task_instance "
                        "WHERE dag_id = ? AND run_id = ? ORDER BY task_id, map_index", DAG_ID, run_id)
        views = [TaskView(task + (f"[{idx}]" if idx >= 0 else ""), st or "none", db_time(t0), db_time(t1))
                 for task, idx, st, t0, t1 in tis]
        return (state[0][0] if state else None), views


def db_stamp(when: datetime) -> str:
    """A time as Airflow's SQLite columns hold it (naive UTC, compared as text)."""
    return when.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")


def db_time(stamp: str | None) -> float | None:
    """Airflow's SQLite timestamps are naive UTC strings."""
    return datetime.fromisoformat(stamp).replace(tzinfo=UTC).timestamp() if stamp else None


def trigger(run_id: str, conf: dict[str, Any]) -> None:
    """Unpause the DAG if needed and create the run, as `airflow dags trigger` does (the run's conf is
    checked against the DAG's Params there: a bad value ends make run with Airflow's message)."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunTriggeredByType

    from include.operations import ensure_training_pool

    # The training tasks' pool: Airflow creates none, and a task in a missing pool waits forever.
    ensure_training_pool()
    with create_session() as session:  # a paused DAG would leave the run queued
        dag = session.get(DagModel, DAG_ID)
        if dag.is_paused:
            dag.is_paused = False
            print(f"Unpaused {DAG_ID} (it was paused) so that the run can start.", flush=True)
    try:
        trigger_dag(DAG_ID, run_id=run_id, conf=conf, triggered_by=DagRunTriggeredByType.CLI)
    except (ValueError, TypeError) as exc:  # ParamValidationError is a ValueError
        raise RunError(f"the run was not started: {exc}") from exc


def trigger_through_api(url: str, home: Path, run_id: str, conf: dict[str, Any]) -> bool:
    """Trigger on a running make airflow through its REST API, as its UI would: this process then needs
    no Airflow import (seconds of make run's fixed cost). False when it cannot log in (e.g. another auth
    manager): the caller then triggers through Airflow itself. A conf the DAG's Params refuse ends it."""
    import httpx

    try:
        password = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
        token = httpx.post(f"{url}/auth/token", json={"username": "admin", "password": password}, timeout=10)
        token.raise_for_status()
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    except (OSError, ValueError, KeyError, TypeError, httpx.HTTPError):
        return False
    try:
        dag = httpx.get(f"{url}/api/v2/dags/{DAG_ID}", headers=headers, timeout=30)
        if dag.status_code == 200 and dag.json().get("is_paused"):
            httpx.patch(f"{url}/api/v2/dags/{DAG_ID}", json={"is_paused": False}, headers=headers,
                        timeout=30).raise_for_status()
            print(f"Unpaused {DAG_ID} (it was paused) so that the run can start.", flush=True)
        r = httpx.post(f"{url}/api/v2/dags/{DAG_ID}/dagRuns", headers=headers, timeout=30,
                       json={"dag_run_id": run_id, "logical_date": None, "conf": conf})
    except httpx.HTTPError as exc:  # it went away or failed after the login
        raise RunError(f"make airflow at {url} did not take the run ({exc.__class__.__name__}: {exc})") from exc
    if r.status_code >= 400:
        try:
            detail = r.json().get("detail", r.text)
        except ValueError:
            detail = r.text
        raise RunError(f"the run was not started: {detail}")
    return True


def mark_failed(run_id: str) -> None:
    """The UI's "Mark as failed" for the interrupted run, once its scheduler is gone: running tasks
    failed, pending ones skipped. Its teardown (apply_retention) is left to run at the next start of a
    scheduler, which then ends the run failed. Left as it was, its tasks would stay "running" and
    hold the next run (max_active_runs=1) until Airflow timed them out, minutes later."""
    from airflow.api.common.mark_tasks import set_dag_run_state_to_failed
    from airflow.models.dagbag import DBDagBag
    from airflow.utils.session import create_session

    with create_session() as session:
        dag = DBDagBag().get_latest_version_of_dag(DAG_ID, session=session)
        set_dag_run_state_to_failed(dag=dag, run_id=run_id, commit=True, session=session)


def code_changed_at() -> datetime:
    """The newest change to the code the DAG file is built from (dags/, tasks/, include/). A parse
    after it is current: a run may start on it without waiting for a new one."""
    newest = max(f.stat().st_mtime for folder in ("dags", "tasks", "include") for f in (ROOT / folder).rglob("*.py"))
    return datetime.fromtimestamp(newest, UTC)


def wait_ready(db: Database, components: Components | None, parsed_after: datetime,
               mark: Callable[[str], None] = lambda _event: None) -> None:
    """The execution API answers, a scheduler started here beats, and the DAG was parsed after
    `parsed_after`; a dead component or an import error ends it at once. `mark` hears each of the
    three the first time it holds."""
    import httpx

    seen: set[str] = set()

    def holds(event: str, check: Callable[[], Any]) -> bool:
        if event not in seen and check():
            seen.add(event)
            mark(event)
        return event in seen

    def ready() -> bool:
        if components is not None:
            api = holds("execution API up", lambda: httpx.get(f"{components.url}/execution/health",
                                                               timeout=5).status_code == 200)
            scheduler = holds("scheduler up", lambda: db.scheduler_beat(components.started_at))
        else:
            api = scheduler = True
        if holds("DAG parsed", lambda: db.parsed_since(parsed_after)):
            return api and scheduler
        if errors := db.import_errors():
            raise RunError("The DAG file does not import:\n" + "\n".join(errors))
        return False

    import sqlite3

    wait_until(ready, START_TIMEOUT_S, "Airflow's components to be ready",
               watch=components.procs if components else [], interval=0.25,
               errors=(httpx.HTTPError, sqlite3.Error, OSError))


# -- a running `make airflow` ---------------------------------------------------------------------
def found_make_airflow(home: Path) -> dict[str, Any] | None:
    """What scripts/airflow_standalone.py recorded about a `make airflow` on this AIRFLOW_HOME, if its
    process is alive; None otherwise."""
    try:
        found = json.loads((home / AIRFLOW_STATE).read_text())
        return found if psutil.pid_exists(int(found["pid"])) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def health_problem(url: str) -> str | None:
    """None when its scheduler, dag-processor, database and execution API are healthy, else what is not."""
    import httpx

    try:
        health = httpx.get(f"{url}/api/v2/monitor/health", timeout=5).json()
        httpx.get(f"{url}/execution/health", timeout=5).raise_for_status()
    except (httpx.HTTPError, ValueError) as exc:
        return f"{url} does not answer ({exc.__class__.__name__})"
    parts = ("metadatabase", "scheduler", "dag_processor")
    bad = [p for p in parts if (health.get(p) or {}).get("status") != "healthy"]
    return f"{', '.join(bad)} not healthy" if bad else None


# -- views ----------------------------------------------------------------------------------------
class PlainView:
    """No terminal: a line at every finished task and at least every PLAIN_EVERY_S seconds."""

    def __init__(self) -> None:
        self.last_done, self.last_at = -1, 0.0

    def update(self, progress: Progress, elapsed: float, now: float) -> None:
        if progress.done != self.last_done or now - self.last_at >= PLAIN_EVERY_S:
            self.last_done, self.last_at = progress.done, now
            print(f"[{clock(elapsed)}] {progress.summary(elapsed, now)}; running: {progress.now_running()}", flush=True)

    def close(self) -> None:
        pass


class LiveView:
    """A terminal: one compact summary redrawn in place by Rich."""

    def __init__(self, run_id: str) -> None:
        from rich.console import Console
        from rich.live import Live

        self.run_id = run_id
        self.live = Live(console=Console(), refresh_per_second=2, transient=False)
        self.live.start()

    def update(self, progress: Progress, elapsed: float, now: float) -> None:
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        # Text, not markup strings: labels such as "pretrain[seed=7]" would be read as Rich markup tags.
        grid = Table.grid(padding=(0, 1))
        grid.add_row(Text("make run", style="bold"), Text(self.run_id))
        grid.add_row("", ProgressBar(total=max(len(progress.tasks), 1), completed=progress.done, width=40))
        grid.add_row("", Text(progress.summary(elapsed, now)))
        grid.add_row("now", Text(progress.now_running()))
        self.live.update(grid)

    def close(self) -> None:
        self.live.stop()


# -- the run --------------------------------------------------------------------------------------
def follow(db: Database, run_id: str, logs: TaskLogs, view: Any, started: float,
           components: Components | None) -> tuple[str, Progress]:
    import sqlite3

    def ended() -> tuple[str, Progress] | None:
        state, tasks = db.run(run_id)
        logs.poll()
        for t in tasks:
            t.epoch = logs.epoch.get(t.label, "")
        progress = Progress(tasks)
        view.update(progress, time.monotonic() - started, time.time())
        return (state, progress) if state in ("success", "failed") else None

    # No time limit: the run's tasks have their own timeouts; dead components end it at once. A read
    # that meets the scheduler's write lock is tried again at the next poll (SQLite: one file, cheap).
    return wait_until(ended, math.inf, f"run {run_id} to end", watch=components.procs if components else [],
                      interval=POLL_S, errors=(sqlite3.OperationalError,))


def report_lines(db: Database, run_id: str) -> list[str]:
    from include.artifacts import RunPaths

    metrics = db.metrics_path(run_id) or RunPaths.for_run(run_id).reports / "metrics.json"
    if not metrics.is_file():
        return [f"No report: the run did not reach compare_report ({metrics} missing)."]
    m = json.loads(metrics.read_text())
    return [f"Verdict: {m['verdict']['text']}", f"Report:  {metrics.parent / 'report.html'}", f"Metrics: {metrics}"]


def use_make_airflow(home: Path) -> dict[str, Any] | None:
    """A healthy `make airflow` on this AIRFLOW_HOME (what it recorded), else None; a found one that is
    unhealthy is not used, and make run says so."""
    if (found := found_make_airflow(home)) is None:
        return None
    if problem := health_problem(found["url"]):
        print(f"Found make airflow (pid {found['pid']}, {found['url']}) but it is unhealthy ({problem}): "
              "not using it.", flush=True)
        return None
    print(f"Using the running make airflow at {found['url']} (pid {found['pid']}): no start-up.", flush=True)
    return found


def interrupt_on_sigterm() -> None:
    """`kill` (SIGTERM) takes the same clean-up path as Ctrl-C."""
    def handler(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main() -> int:
    home = Path(os.environ["AIRFLOW_HOME"])
    verbose = os.environ.get("VERBOSE", "") not in ("", "0")
    try:
        conf = json.loads(os.environ.get("RUN_CONF") or "{}")
        if not isinstance(conf, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        print(f"make run: RUN_CONF is not a JSON object ({exc}); e.g. RUN_CONF='{{\"seeds\": [42]}}'", file=sys.stderr)
        return 2
    home.mkdir(parents=True, exist_ok=True)
    lock = (home / "make-run.lock").open("a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        print(f"make run: another make run is running on {home}: wait for it to end, or stop it (Ctrl-C).",
              file=sys.stderr)
        return 2
    found = use_make_airflow(home)
    if found is None and (beat := Database(home).scheduler_beat()):
        # Two schedulers on one SQLite file would fight over it.
        print(f"make run: a scheduler is already running on {home / 'airflow.db'} (heartbeat {beat} UTC) that "
              "make run cannot use: stop it (Ctrl-C) and run make run again, or trigger the run from its UI.",
              file=sys.stderr)
        return 2
    interrupt_on_sigterm()

    stamp = datetime.now(UTC)
    run_id = f"manual__make_run_{stamp:%Y%m%dT%H%M%SZ}"
    full_log = home / "make-run" / f"{run_id}.log"
    full_log.parent.mkdir(parents=True, exist_ok=True)
    print(f"Full log: {full_log}", flush=True)
    started = time.monotonic()
    db = Database(home)
    with full_log.open("a", buffering=1) as out:
        def emit(line: str) -> None:  # VERBOSE=1 echoes the file (tail below), so this only writes it
            out.write(line + "\n")

        def mark(event: str) -> None:  # milestones of make run's own cost (benchmarks/run_benchmark.py reads them)
            emit(f"{MARK} {event} {datetime.now(UTC).isoformat()}")

        mark("start")

        tail = None
        if verbose:  # the components write to the log file; echo it while it grows
            tail = start("tail -f", ["tail", "-n", "+1", "-f", str(full_log)])
        components: Components | None = None
        view: Any = None
        state, progress, logs, triggered = "not started", Progress(), None, False
        try:
            # The run starts on the last parse if no code changed since; else on the dag-processor's
            # next parse (a fresh one at its start; within min_file_process_interval for make airflow's).
            parsed_after = code_changed_at()
            if found is None:
                components = Components(home, full_log, parse_in_background=db.parsed_since(parsed_after))
                mark("components started")
                print(f"Starting Airflow (api-server on {components.url}, scheduler with LocalExecutor, "
                      "dag-processor) ...", flush=True)
            # Airflow in this process (to trigger the run): the same database; its INFO lines are not for
            # the user. Set after the components got their environment. The import (~3 s) runs while they
            # start; beside a running make airflow the run is triggered through its REST API instead.
            os.environ.update({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
                               "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING"})
            if found is None:
                import airflow.api.common.trigger_dag  # noqa: F401

            wait_ready(db, components, parsed_after, mark)
            mark("ready")
            if found is None or not trigger_through_api(found["url"], home, run_id, conf):
                trigger(run_id, conf)
            triggered = True
            mark("triggered")
            print(f"Triggered {run_id} with conf {json.dumps(conf)}", flush=True)
            logs = TaskLogs(home / "logs", run_id, emit)
            view = LiveView(run_id) if sys.stdout.isatty() and not verbose else PlainView()
            state, progress = follow(Database(home, POLL_BUSY_S), run_id, logs, view, started, components)
            mark("run ended")
        except KeyboardInterrupt:
            state = "interrupted"
        except (RunError, ProcessError) as exc:  # ProcessError: a component died, or never got ready
            state = "error"
            print(f"make run: {exc}", file=sys.stderr)
        finally:
            # A second Ctrl-C must not cut the clean-up short: it ends within STOP_GRACE_S anyway.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if view is not None:
                view.close()
            if components is not None:
                for line in components.stop():
                    print(f"make run: killed after {Components.STOP_GRACE_S}s: {line}", file=sys.stderr)
                mark("stopped")
                if triggered and state not in ("success", "failed"):  # e.g. interrupted
                    try:
                        mark_failed(run_id)
                        print(f"Marked {run_id} failed: it was {state}. Its teardown (apply_retention) runs at the "
                              "next start of make run or make airflow.", flush=True)
                    except Exception as exc:  # the clean-up goes on; the user learns what is left
                        print(f"make run: could not mark {run_id} failed ({exc}); mark it in the UI "
                              "(make airflow), or the next run waits for it to time out.", file=sys.stderr)
            elif state == "interrupted" and triggered:
                print("The run goes on in make airflow; stop it there if you want it stopped.", flush=True)
            if logs is not None:
                logs.poll()  # the lines written since the last poll, so the full log is complete
            if tail is not None:
                tail.stop(timeout=5)
    print(f"\nRun {run_id}: {state} after {clock(time.monotonic() - started)}")
    if state == "success":
        print("\n".join(report_lines(db, run_id)))
    for task in progress.failed:
        lines = logs.last.get(task.label, []) if logs else []
        print(f"--- {task.label}: {task.state}; its last log lines ---\n" + "\n".join(lines))
    print(f"Full log: {full_log}")
    print(f"Task logs and the run in the UI: make airflow (run {run_id}).")
    return 0 if state == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
