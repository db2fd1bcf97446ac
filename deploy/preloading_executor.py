"""Airflow's LocalExecutor, with worker processes that import TensorFlow and the other heavy libraries once.

The LocalExecutor runs each task in a process that one of its long-lived worker processes forks
(`supervise`). A forked task inherits every module its worker has imported, so a task whose worker
imported TensorFlow beforehand does not pay the import again: 3-4 s of a core per training task on
the machines of benchmarks/README.md.

`make run` and `make airflow` select it with
`AIRFLOW__CORE__EXECUTOR=deploy.preloading_executor.LocalExecutor`. The class keeps Airflow's name:
Airflow tells local executors from distributed ones by the class name (SimpleAuthManager, for one,
warns about a "production shape" otherwise). What is preloaded, and why it is safe:

- Third-party libraries only. The project's own modules (`include`, `tasks`, the DAG) are imported
  by each task as before, so an edited file takes effect on the next task of a running `make airflow`.
- Importing starts no TensorFlow runtime: its thread pools start at a task's first op, after the fork,
  so `configure_tensorflow` sizes them per task as before and results are bit-identical.
- One import per worker, and the LocalExecutor forks `[core] parallelism` workers (Airflow's default
  32): about 300 MB of private memory and 4 s of a core each. So it preloads only where parallelism is at most
  the usable cores (never under 2), as `make run` and `make airflow` set it; otherwise it logs why not.
- Linux only by default (TL_WORKER_PRELOAD=auto). macOS forks badly after some frameworks have
  loaded (the Objective-C runtime aborts the child), so there each task imports its own, as plain
  LocalExecutor does. TL_WORKER_PRELOAD=1 forces it on, 0 off.
- A library that fails to import is logged and skipped: the task then imports it itself and reports
  the real error there, in its own log.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import sys
import time

from airflow.executors import local_executor

from deploy.processes import local_workers, usable_cores

# What the tasks import (tasks/, include/): TensorFlow and Keras dominate; the rest is about a
# second per task (scikit-learn's splits and metrics, SciPy's statistics, matplotlib for figures).
PRELOAD = ("tensorflow", "keras", "sklearn.model_selection", "sklearn.metrics", "scipy.stats",
           "matplotlib", "matplotlib.pyplot")


def preload_enabled(setting: str | None = None, platform: str = sys.platform) -> bool:
    """TL_WORKER_PRELOAD: `auto` (default: on on Linux), `1` on, `0` off."""
    value = (os.environ.get("TL_WORKER_PRELOAD", "auto") if setting is None else setting).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    if value == "auto":
        return platform.startswith("linux")
    raise ValueError(f"TL_WORKER_PRELOAD={value!r}: use auto, 1 or 0.")


def preload(modules: tuple[str, ...] = PRELOAD) -> dict[str, float | str]:
    """Import `modules` in this process; returns each one's import seconds, or its error."""
    # Read by TensorFlow's C++ logging at import: quiet as configure_tensorflow makes it for tasks.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Figures are files: the headless backend, as include/report/figures.py selects it.
    os.environ.setdefault("MPLBACKEND", "Agg")
    took: dict[str, float | str] = {}
    for name in modules:
        start = time.perf_counter()
        try:
            importlib.import_module(name)
        except Exception as exc:  # the task imports it again and fails there, in its own log
            took[name] = f"{type(exc).__name__}: {exc}"
        else:
            took[name] = round(time.perf_counter() - start, 2)
    return took


def _run_preloaded_worker(**kwargs) -> None:
    import structlog

    log = structlog.get_logger(kwargs["logger_name"])
    took = preload()
    log.info("Worker preloaded libraries for its tasks", pid=os.getpid(), seconds=took)
    local_executor._run_worker(**kwargs)


class LocalExecutor(local_executor.LocalExecutor):
    """Airflow's LocalExecutor; its workers import PRELOAD before their first task (module doc)."""

    def start(self) -> None:
        self._preload = preload_enabled()
        if self._preload and self.parallelism > local_workers():
            self._preload = False
            self.log.warning(
                "Not preloading TensorFlow in the LocalExecutor's workers: [core] parallelism is %d, so %d "
                "workers would import it (about 300 MB each) for %d cores. Set AIRFLOW__CORE__PARALLELISM=%d "
                "(make run and make airflow do) to preload, or TL_WORKER_PRELOAD=0 to silence this.",
                self.parallelism, self.parallelism, usable_cores(), local_workers())
        super().start()

    def _spawn_worker(self) -> None:
        if not getattr(self, "_preload", False):
            super()._spawn_worker()
            return
        # LocalExecutor._spawn_worker, with the preloading target.
        p = multiprocessing.Process(
            target=_run_preloaded_worker,
            kwargs={
                "logger_name": self.log.name,
                "input": self.activity_queue,
                "output": self.result_queue,
                "unread_messages": self._unread_messages,
                "team_conf": self.conf,
            },
        )
        p.start()
        self.workers[p.pid] = p
