"""deploy/preloading_executor.py for real: the LocalExecutor's worker processes hold TensorFlow before any task.

A task process is forked from one of these workers (Airflow's `supervise`), so what the worker has
loaded, the task has without importing it. Seen here from outside, in /proc/<pid>/maps: TensorFlow's
shared library is mapped into each worker. The tasks' own side (their log line, their results) is
checked by tests/deploy/test_make_run.py, whose runs go through this executor.
"""

from __future__ import annotations

import sys
from pathlib import Path

import psutil
import pytest

from deploy.processes import wait_until

pytestmark = [pytest.mark.airflow, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]


def _maps_tensorflow(pid: int) -> bool:
    return "_pywrap_tensorflow" in Path(f"/proc/{pid}/maps").read_text()


def test_each_worker_has_tensorflow_loaded_before_its_first_task(monkeypatch: pytest.MonkeyPatch) -> None:
    from deploy.preloading_executor import LocalExecutor

    monkeypatch.setenv("TL_WORKER_PRELOAD", "auto")
    executor = LocalExecutor(parallelism=2)
    executor.start()
    pids = list(executor.workers)
    try:
        assert len(pids) == 2
        wait_until(lambda: all(_maps_tensorflow(pid) for pid in pids), 180, "both workers to load TensorFlow")
        assert all(executor.workers[pid].is_alive() for pid in pids)  # and then wait for tasks
    finally:
        executor.end()  # the poison pill: each worker leaves its loop once its preload is done
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)
