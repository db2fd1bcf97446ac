"""Training-loop helpers: deterministic set-up, one log line per epoch, timings, evaluation."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np

log = logging.getLogger("tl.training")

# Validation is a forward pass only: its batch size changes neither the updates nor val_accuracy
# (a count), only the float summation order of val_loss. Larger batches mean fewer Python steps;
# the saving is measured in benchmarks/README.md (per-step settings).
VALIDATION_BATCH_SIZE = 1024


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

    Each fit (one graph of replicas, include/replicas.py) runs its ops on one thread: the seed's
    layers are small (batch 32, 100 units), and a second intra-op thread bought nothing in
    benchmarks/README.md. A task keeps the machine busy by running independent fits side by side
    instead. Usable cores come from the CPU affinity mask (containers, taskset); with several
    mapped tasks in parallel on one box, TL_TF_THREADS=1 keeps them from oversubscribing it.
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


def make_epoch_logger(phase: str, epoch_offset: int = 0) -> Any:
    import keras

    class EpochLogger(keras.callbacks.Callback):
        """One line per epoch through logging, instead of Keras' progress bar."""

        def __init__(self) -> None:
            super().__init__()
            self.records: list[dict[str, float]] = []
            self._t0 = 0.0

        def on_train_begin(self, logs: Any = None) -> None:
            self._t0 = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            logs = logs or {}
            rec = {k: float(v) for k, v in logs.items() if k in ("loss", "accuracy", "val_loss", "val_accuracy")}
            rec["epoch"] = epoch_offset + epoch + 1
            rec["elapsed_s"] = time.perf_counter() - self._t0
            self.records.append(rec)
            log.info("%s epoch %d: loss=%.4f accuracy=%.4f val_loss=%.4f val_accuracy=%.4f (%.1fs)",
                     phase, rec["epoch"], rec.get("loss", float("nan")), rec.get("accuracy", float("nan")),
                     rec.get("val_loss", float("nan")), rec.get("val_accuracy", float("nan")), rec["elapsed_s"])

    return EpochLogger()


def fit(model: Any, x: np.ndarray, y: np.ndarray, validation: tuple[np.ndarray, np.ndarray], epochs: int,
        batch_size: int, phase: str, epoch_offset: int = 0) -> dict[str, Any]:
    """Fit silently (verbose=0) with the epoch logger; return per-epoch records and wall time."""
    logger = make_epoch_logger(phase, epoch_offset)
    t0 = time.perf_counter()
    model.fit(np.asarray(x), np.asarray(y), epochs=epochs, batch_size=batch_size, validation_data=validation,
              validation_batch_size=max(batch_size, VALIDATION_BATCH_SIZE), shuffle=True, verbose=0,
              callbacks=[logger])
    wall = time.perf_counter() - t0
    return {"phase": phase, "epochs": logger.records, "wall_seconds": wall, "epochs_run": len(logger.records)}


def evaluate(model: Any, x: np.ndarray, y: np.ndarray, batch_size: int = 1024) -> dict[str, Any]:
    """Test loss, accuracy and predicted labels (for McNemar and confusion matrices) from ONE forward pass.

    Each batch goes once through the compiled model and its compiled loss, as in model.evaluate, and the
    figures are aggregated as Keras aggregates them (float32; the loss as a batch-size-weighted Mean),
    so they equal what model.evaluate reports. Labels follow Keras' accuracy metrics: BinaryAccuracy
    counts a sigmoid output as positive when it is above 0.5 (not at it), SparseCategoricalAccuracy
    takes the argmax. Accuracy is counted from these labels, so saved predictions and reported
    accuracy cannot disagree.
    """
    import keras
    import tensorflow as tf

    @tf.function
    def forward(xb: Any, yb: Any) -> tuple[Any, Any]:
        # Loss and output in one graph: Keras computes the loss of a sigmoid/softmax output from its logits,
        # as model.evaluate does; a loss of predict()'s bare probabilities differs in float32's last bits.
        probs = model(xb, training=False)
        return probs, model.compute_loss(y=yb, y_pred=probs, training=False)

    x, y = np.asarray(x), np.asarray(y)
    binary = model.output_shape[-1] == 1
    targets = y.reshape(-1, 1) if binary else y
    loss, outputs = keras.metrics.Mean(), []
    for i in range(0, len(y), batch_size):
        probs, batch_loss = forward(x[i:i + batch_size], targets[i:i + batch_size])
        loss.update_state(batch_loss, sample_weight=len(probs))
        outputs.append(probs.numpy())
    probs = np.concatenate(outputs)
    pred = (probs[:, 0] > 0.5) if binary else probs.argmax(axis=-1)
    pred = pred.astype(np.int32)
    accuracy = np.float32((pred == y).sum()) / np.float32(len(y))
    return {"loss": float(loss.result()), "accuracy": float(accuracy), "predictions": pred}


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
