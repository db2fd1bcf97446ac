"""`airflow standalone` with a clean Ctrl-C (used by `make airflow` and `make run`), after creating the
DAG's training pool if it is missing.

A terminal sends Ctrl-C to its whole foreground process group. Delivered to every Airflow component
at once, it leaves LocalExecutor worker processes (they ignore SIGINT) holding the scheduler's output
pipe, and standalone then waits on that pipe forever. Here standalone runs in a session of its own
and alone gets the interrupt, so it stops its components itself, as designed (a few seconds).
Anything of its session still running after GRACE_S is terminated, then killed.

While it runs, AIRFLOW_HOME/make-airflow.json says where (pid, URL), so that `make run` can use it
instead of starting components of its own (scripts/make_run.py checks that it is healthy first).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from deploy.processes import start  # the Makefile puts the repository on PYTHONPATH

GRACE_S = 30
STRAGGLER_GRACE_S = 10
STATE_FILE = "make-airflow.json"  # read by scripts/make_run.py


def record(home: Path) -> Path:
    """Where this `make airflow` serves, written atomically (a reader never sees half of it)."""
    state = home / STATE_FILE
    tmp = state.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
    port = os.environ.get("AIRFLOW__API__PORT", "8080")
    tmp.write_text(json.dumps({"pid": os.getpid(), "url": f"http://127.0.0.1:{port}"}))
    os.replace(tmp, state)
    return state


def ensure_pool() -> None:
    """The DAG's training pool, created if missing: Airflow creates none, and a task in a missing pool
    is never queued (include/operations.py). The Makefile has migrated the database already."""
    done = subprocess.run([sys.executable, "-m", "include.operations"], capture_output=True, text=True)
    print(done.stdout.strip() or f"Could not create the training pool:\n{done.stderr[-2000:]}", flush=True)


def main() -> int:
    airflow = Path(sys.executable).with_name("airflow")
    home = Path(os.environ["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    state = record(home)
    ensure_pool()
    try:
        return run(airflow)
    finally:
        with contextlib.suppress(FileNotFoundError):
            state.unlink()


def run(airflow: Path) -> int:
    standalone = start("airflow standalone", [str(airflow), "standalone"], stdin=None)  # output to our terminal
    stop_requested: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        if not stop_requested and standalone.alive():
            standalone.popen.send_signal(signal.SIGINT)  # standalone's own shutdown path
        stop_requested.append(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    while standalone.alive() and not stop_requested:
        with contextlib.suppress(subprocess.TimeoutExpired):
            standalone.popen.wait(timeout=1)  # a timed wait: the handler runs between waits
    if stop_requested:
        try:
            standalone.popen.wait(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            print(f"standalone did not stop within {GRACE_S}s: terminating its processes", file=sys.stderr)
    # Whatever is left of its session (e.g. idle LocalExecutor workers): terminated, then killed.
    standalone.stop(STRAGGLER_GRACE_S)
    return 0 if stop_requested else standalone.popen.returncode


if __name__ == "__main__":
    sys.exit(main())
