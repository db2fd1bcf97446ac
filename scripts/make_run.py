"""`make run`: one run of the DAG through Airflow's own scheduler, followed with a compact progress view.

Why not `airflow dags test`: it runs tasks in its own process and writes no task log files, so the
UI and the REST API answer "Log file not found" for every task of such a run. Here the run goes
through `airflow standalone` (scheduler, LocalExecutor, api-server, dag-processor; the same set-up as
`make airflow`, on the same SQLite database and AIRFLOW_HOME), is triggered through the REST API and
followed through it. Every task therefore writes its log where the api-server reads it, and
`make airflow` afterwards shows the run with its logs, like any triggered run. The price is the
components' start-up (about half a minute) before the first task.

Output: a live summary (Rich) on a terminal; plain periodic lines otherwise (CI); VERBOSE=1 streams
the components' output and every task log line. Everything also goes to a log file whose path is
printed at the start and the end.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# The Makefile puts the repository on PYTHONPATH.
from deploy.processes import ProcessError, free_port, start, wait_until

ROOT = Path(__file__).resolve().parent.parent

DAG_ID = "fashion_mnist_transfer_learning"
START_TIMEOUT_S = 300
PLAIN_EVERY_S = 30  # without a terminal: one summary line this often (and at every finished task)
# The training code's one line per epoch: "<phase> epoch <n>: ..." (include/training.py, include/replicas.py).
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
class Components:
    """`airflow standalone` through scripts/airflow_standalone.py (clean stop on SIGTERM), output to a file."""

    def __init__(self, home: Path, full_log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ,
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
               "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
               "AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(self.port),
               "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
               # Ports of our own: a `make airflow` or another Airflow on this machine may hold the defaults.
               "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
               "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
               # Only the run asked for: no nightly run even if make run spans 02:00 UTC.
               "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"}
        self.proc = start("Airflow's components", [sys.executable, str(ROOT / "scripts" / "airflow_standalone.py")],
                          full_log, env=env)

    def stop(self) -> None:
        """SIGTERM to the wrapper alone, which stops standalone and its session; by force after a grace time."""
        self.proc.stop(timeout=60, group_only=True)


class Api:
    def __init__(self, url: str, home: Path) -> None:
        self.url, self.home, self._token = url, home, None

    def token(self) -> str:
        import httpx

        if self._token is None:
            passwords = json.loads((self.home / "simple_auth_manager_passwords.json.generated").read_text())
            user, password = next(iter(passwords.items()))
            r = httpx.post(f"{self.url}/auth/token", json={"username": user, "password": password}, timeout=30)
            r.raise_for_status()
            self._token = r.json()["access_token"]
        return self._token

    def __call__(self, method: str, path: str, **kw: Any) -> Any:
        import httpx

        r = httpx.request(method, f"{self.url}/api/v2{path}", headers={"Authorization": f"Bearer {self.token()}"},
                          timeout=30, **kw)
        if r.status_code >= 300:
            raise RunError(f"{method} /api/v2{path} -> {r.status_code}: {r.text[:1500]}")
        return r.json()


def wait_ready(components: Components, api: Api) -> None:
    """Healthy components and the DAG parsed; a dead component or an import error ends it at once."""
    import httpx

    def ready() -> bool:
        health = httpx.get(f"{components.url}/api/v2/monitor/health", timeout=5).json()
        if not all((health.get(p) or {}).get("status") == "healthy" for p in ("metadatabase", "scheduler")):
            return False
        r = httpx.get(f"{components.url}/api/v2/dags/{DAG_ID}", timeout=10,
                      headers={"Authorization": f"Bearer {api.token()}"})
        if r.status_code == 200:
            return True
        if errors := api("GET", "/importErrors")["import_errors"]:
            raise RunError("The DAG file does not import:\n" + "\n".join(e["stack_trace"] for e in errors))
        return False

    wait_until(ready, START_TIMEOUT_S, "Airflow's components to be ready", watch=[components.proc], interval=2,
               errors=(httpx.HTTPError, ValueError, OSError))


def running_scheduler(home: Path) -> str | None:
    """Heartbeat time of a live scheduler on this SQLite database (e.g. `make airflow`), else None.

    Two schedulers on one SQLite file would fight over it: the run is then triggered from that UI instead.
    """
    import sqlite3

    db = home / "airflow.db"
    if not db.is_file():
        return None
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            row = conn.execute("SELECT max(latest_heartbeat) FROM job WHERE job_type = 'SchedulerJob' "
                               "AND state = 'running'").fetchone()
    except sqlite3.Error:
        return None
    if not row or not row[0]:
        return None
    beat = datetime.fromisoformat(row[0]).replace(tzinfo=UTC)
    return row[0] if (datetime.now(UTC) - beat).total_seconds() < 60 else None


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
def follow(api: Api, run_id: str, logs: TaskLogs, view: Any, started: float,
           components: Components) -> tuple[str, Progress]:
    import httpx

    def ended() -> tuple[str, Progress] | None:
        state = api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")["state"]
        tis = api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", params={"limit": 1000})["task_instances"]
        logs.poll()
        progress = Progress([TaskView(label(ti), ti["state"] or "none", parse_time(ti["start_date"]),
                                      parse_time(ti["end_date"]), logs.epoch.get(label(ti), "")) for ti in tis])
        view.update(progress, time.monotonic() - started, time.time())
        return (state, progress) if state in ("success", "failed") else None

    # No time limit: the run's tasks have their own timeouts; dead components end it at once. A request
    # that times out on a busy machine is asked again at the next poll.
    return wait_until(ended, math.inf, f"run {run_id} to end", watch=[components.proc], interval=2,
                      errors=(httpx.TransportError,))


def report_lines(run_id: str) -> list[str]:
    from include.artifacts import RunPaths

    metrics = RunPaths.for_run(run_id).reports / "metrics.json"
    if not metrics.is_file():
        return [f"No report: the run did not reach compare_report ({metrics} missing)."]
    m = json.loads(metrics.read_text())
    return [f"Verdict: {m['verdict']['text']}", f"Report:  {metrics.parent / 'report.html'}", f"Metrics: {metrics}"]


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

    if beat := running_scheduler(home):
        print(f"make run: a scheduler is already running on {home / 'airflow.db'} (heartbeat {beat} UTC), "
              "probably `make airflow`: trigger the run from its UI, or stop it (Ctrl-C) and run make run again.",
              file=sys.stderr)
        return 2

    stamp = datetime.now(UTC)
    run_id = f"manual__make_run_{stamp:%Y%m%dT%H%M%SZ}"
    full_log = home / "make-run" / f"{run_id}.log"
    full_log.parent.mkdir(parents=True, exist_ok=True)
    print(f"Full log: {full_log}", flush=True)
    started = time.monotonic()
    with full_log.open("a", buffering=1) as out:
        def emit(line: str) -> None:  # VERBOSE=1 echoes the file (tail below), so this only writes it
            out.write(line + "\n")

        tail = None
        if verbose:  # the components write to the log file; echo it while it grows
            tail = start("tail -f", ["tail", "-n", "+1", "-f", str(full_log)])
        components = Components(home, full_log)
        view: Any = None
        state, progress, logs = "not started", Progress(), None
        try:
            api = Api(components.url, home)
            print(f"Starting Airflow (scheduler, LocalExecutor, api-server on {components.url}) ...", flush=True)
            wait_ready(components, api)
            if api("GET", f"/dags/{DAG_ID}")["is_paused"]:  # a paused DAG would leave the run queued
                api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
                print(f"Unpaused {DAG_ID} (it was paused) so that the run can start.", flush=True)
            api("POST", f"/dags/{DAG_ID}/dagRuns", json={"dag_run_id": run_id, "logical_date": None, "conf": conf})
            print(f"Triggered {run_id} with conf {json.dumps(conf)}", flush=True)
            logs = TaskLogs(home / "logs", run_id, emit)
            view = LiveView(run_id) if sys.stdout.isatty() and not verbose else PlainView()
            state, progress = follow(api, run_id, logs, view, started, components)
        except KeyboardInterrupt:
            state = "interrupted"
        except (RunError, ProcessError) as exc:  # ProcessError: a component died, or never got ready
            state = "error"
            print(f"make run: {exc}", file=sys.stderr)
        finally:
            if view is not None:
                view.close()
            components.stop()
            if logs is not None:
                logs.poll()  # the lines written since the last poll, so the full log is complete
            if tail is not None:
                tail.stop(timeout=5)
    print(f"\nRun {run_id}: {state} after {clock(time.monotonic() - started)}")
    if state == "success":
        print("\n".join(report_lines(run_id)))
    for task in progress.failed:
        lines = logs.last.get(task.label, []) if logs else []
        print(f"--- {task.label}: {task.state}; its last log lines ---\n" + "\n".join(lines))
    print(f"Full log: {full_log}")
    print(f"Task logs and the run in the UI: make airflow (run {run_id}).")
    return 0 if state == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
