"""What the training tasks need around the trainer: threads, seeding, shuffle orders, replica groups,
fits side by side, and time to accuracy.

Each replica keeps what makes it a seed:
- its initial weights: built right after seeding every RNG with the seed, exactly as a single-model
  task builds it (include/models/replicas.py copies them into its graph and back);
- its shuffle order: `epoch_orders` draws it from the replica's own seed, one permutation per epoch.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")
R = TypeVar("R")


def worker_slots() -> int:
    """Tasks this machine's Airflow worker runs at once: a Celery worker's worker_concurrency, else 1."""
    try:
        from airflow.sdk.configuration import conf

        if "CeleryExecutor" in conf.get("core", "executor", fallback=""):
            return max(1, conf.getint("celery", "worker_concurrency", fallback=1))
    except Exception:  # outside Airflow (benchmarks, plain scripts): one task
        pass
    return 1


def tf_threads() -> int:
    """Fits one task runs at once: TL_TF_THREADS, else the usable cores divided by the worker's task
    slots (so a Celery worker with two slots runs two tasks of half its cores each, never twice its
    cores).

    Each op runs on one thread: the seed's layers are small (batch 32, 100 units), and a second
    intra-op thread bought nothing in benchmarks/README.md. A task keeps the machine busy by running
    independent graphs side by side instead. Usable cores come from the CPU affinity mask
    (containers, taskset); with several mapped tasks in parallel on one box, TL_TF_THREADS=1 keeps
    them from oversubscribing it.
    """
    env = os.environ.get("TL_TF_THREADS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"TL_TF_THREADS={env!r}: use a whole number >= 1, e.g. TL_TF_THREADS=1.")
        return int(env)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // worker_slots())


def configure_tensorflow(seed: int) -> None:
    """Seed every RNG, size TensorFlow's thread pools for one task and quiet TF's C++ logging.

    One intra-op thread (each op's arithmetic is then fixed: reruns are bit-identical whatever the
    machine), and one inter-op thread per fit that runs at once. Pool sizes only take effect
    before TensorFlow's runtime starts (the environment variables cover an import elsewhere
    first); later calls in the same process, e.g. the next task under in-process `airflow dags
    test`, keep the first value.
    """
    threads = tf_threads()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", str(threads))
    import keras
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass  # runtime already initialised in this process: the first task's setting stays
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)


def epoch_orders(seed: int, stream: str, n: int, epochs: int) -> np.ndarray:
    """(epochs, n) shuffle orders for one replica, drawn from its seed and a named stream.

    `stream` keeps the phases apart (e.g. "scratch:0.3"): the same seed draws independent orders in
    each fit, and the same (seed, stream) always draws the same ones, whatever graph it runs in.
    """
    rng = np.random.default_rng([seed, zlib.crc32(stream.encode())])
    if not n:
        return np.zeros((epochs, 0), np.int32)
    return np.stack([rng.permutation(n) for _ in range(epochs)]).astype(np.int32)


def replica_groups(n: int, max_per_graph: int) -> list[list[int]]:
    """Indices 0..n-1 in as few graphs as `max_per_graph` allows, sizes as even as possible
    (5 by 3: [0, 1, 2], [3, 4]). A replica's result does not depend on its group, so this only
    decides how many graphs can run side by side."""
    n_groups = -(-n // max(1, max_per_graph))
    size, extra = divmod(n, max(n_groups, 1))
    sizes = [size + (g < extra) for g in range(n_groups)]  # the larger groups first
    starts = np.cumsum([0, *sizes])
    return [list(range(int(a), int(b))) for a, b in zip(starts[:-1], starts[1:])]


def map_parallel(fn: Callable[[T], R], items: Sequence[T], workers: int,
                 cost: Callable[[T], float] | None = None) -> list[R]:
    """fn over items on `workers` threads, results in the items' order; the first error is raised.

    Independent fits overlap: TensorFlow releases the GIL inside a graph call. The costliest items
    start first (`cost`), so a long fit does not start last on an otherwise idle machine. Each
    fit's arithmetic does not depend on which thread runs it (one intra-op thread per op), so the
    results are the same for any number of workers.
    """
    if workers <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor

    order = sorted(range(len(items)), key=lambda i: -cost(items[i])) if cost else list(range(len(items)))
    with ThreadPoolExecutor(max_workers=min(workers, len(items)), thread_name_prefix="fit") as pool:
        futures = {i: pool.submit(fn, items[i]) for i in order}
        return [futures[i].result() for i in range(len(items))]


def time_to_accuracy(records: list[dict[str, float]], target: float) -> dict[str, Any]:
    """Epochs and seconds to first reach `target` val accuracy, and to the best val accuracy."""
    hit = next((r for r in records if r.get("val_accuracy", 0.0) >= target), None)
    best = max(records, key=lambda r: r.get("val_accuracy", 0.0)) if records else None
    return {
        "target": target,
        "epochs_to_target": hit["epoch"] if hit else None,
        "seconds_to_target": hit["elapsed_s"] if hit else None,
        "best_val_accuracy": best.get("val_accuracy") if best else None,
        "epochs_to_best": best["epoch"] if best else None,
        "seconds_to_best": best["elapsed_s"] if best else None,
    }
