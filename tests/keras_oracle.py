"""The Keras fit/compile oracle: the seed's recipe through Keras' own `compile` and `fit`.

The pipeline never runs this: it trains with include/models/replicas.py. Tests (and benchmarks)
use it as the reference the batched trainer must agree with, step for step.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

log = logging.getLogger("tl.training")

# Validation is a forward pass only: its batch size changes neither the updates nor val_accuracy
# (a count), only the float summation order of val_loss. Larger batches mean fewer Python steps;
# the saving is measured in benchmarks/README.md (per-step settings).
VALIDATION_BATCH_SIZE = 1024


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


def compile_model(model: Any, learning_rate: float, steps_per_execution: int = 1) -> Any:
    """The seed's compile: SGD(learning_rate), binary or sparse categorical cross-entropy, accuracy."""
    import keras

    binary = model.output_shape[-1] == 1
    model.compile(
        loss="binary_crossentropy" if binary else "sparse_categorical_crossentropy",
        optimizer=keras.optimizers.SGD(learning_rate=learning_rate),
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    return model
