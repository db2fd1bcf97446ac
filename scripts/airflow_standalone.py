"""`airflow standalone` with a clean Ctrl-C (used by `make airflow`).

A terminal sends Ctrl-C to its whole foreground process group. Delivered to every Airflow component
at once, it leaves LocalExecutor worker processes (they ignore SIGINT) holding the scheduler's output
pipe, and standalone then waits on that pipe forever. Here standalone runs in a session of its own
and alone gets the interrupt, so it stops its components itself, as designed (a few seconds).
Anything still running after GRACE_S is terminated, then killed, by its process group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

GRACE_S = 30


def main() -> int:
    airflow = Path(sys.executable).with_name("airflow")
    proc = subprocess.Popen([str(airflow), "standalone"], start_new_session=True)
    stop_requested: list[float] = []

    def forward(signum: int, _frame: object) -> None:
        if not stop_requested:
            stop_requested.append(time.monotonic())
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # standalone's own shutdown path

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    while proc.poll() is None:
        if stop_requested and time.monotonic() - stop_requested[0] > GRACE_S:
            print(f"standalone did not stop within {GRACE_S}s: terminating its processes", file=sys.stderr)
            _kill_session(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            break
        try:
            proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass
    _kill_session(proc, signal.SIGKILL)  # stragglers of our session (e.g. idle LocalExecutor workers)
    proc.wait()
    return 0 if stop_requested else proc.returncode


def _kill_session(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # start_new_session: the group id is standalone's pid
    except ProcessLookupError:
        pass


if __name__ == "__main__":
    sys.exit(main())
