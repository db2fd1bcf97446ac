"""The batched graph of K stacked MLP replicas: its variables, forward pass, traced epoch and evaluation.

Every Dense kernel of the K replicas is stacked into one (K, in, out) variable and a batch of the
K replicas' inputs is one (K, B, in) tensor, so K small latency-bound SGD steps become one step of
K times the work. The replicas share no weight, and the loss is the sum of the K per-replica batch
means, so each replica's gradient is its own: its training is the same computation as training it
alone (tests/unit/test_replicas.py checks a replica of a chunk of 3 against the same seed alone).

One graph call trains one epoch of every replica (a `tf.while_loop` over the steps): one log line
per epoch per chunk, and no retracing across epochs, fractions or chunk sizes of the same shape.
Plain SGD (`w -= lr * grad`), as the seed's `keras.optimizers.SGD(learning_rate)`.
The conversion from and to per-seed Keras models and the data orders are in include/replicas.py.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger("tl.replicas")

_TRACE_LOCK = threading.Lock()

# Validation and test passes are forward only: rows per graph call bound their memory, not the maths.
EVAL_ROWS = 4096


@dataclass
class FitResult:
    """Per replica: one record per epoch (loss, accuracy and, when validated, val_loss, val_accuracy).

    Times are each replica's share of the chunk's: a record's `elapsed_s` and `wall_seconds` are the
    chunk's seconds divided by K, so per-seed timings stay comparable whatever the chunk size.
    """

    records: list[list[dict[str, float]]]
    wall_seconds: float
    phase: str


class ReplicaGraph:
    """K stacked copies of an MLP of Dense layers: relu hidden layers, a softmax or sigmoid head.

    `layers` holds (kernels (K, in, out), biases (K, out)) per Dense layer, first to last.
    `trainable[i]` says whether layer i is updated (frozen body: all False but the head).
    """

    def __init__(self, layers: Sequence[tuple[np.ndarray, np.ndarray]], trainable: Sequence[bool], lr: float,
                 binary: bool) -> None:
        import tensorflow as tf

        if len(layers) != len(trainable):
            raise ValueError(f"{len(layers)} layers but {len(trainable)} trainable flags")
        self.k = int(layers[0][0].shape[0])
        self.binary = binary
        self.lr = float(lr)
        self.kernels = [tf.Variable(np.asarray(w, np.float32), name=f"kernel_{i}") for i, (w, _) in enumerate(layers)]
        self.biases = [tf.Variable(np.asarray(b, np.float32), name=f"bias_{i}") for i, (_, b) in enumerate(layers)]
        self.trainable = list(trainable)
        self._train_epoch = None
        self._evaluate = None
        self._batch_size = 0

    # -- the batched graph ----------------------------------------------------------------------
    def _logits(self, h: Any, shared: bool) -> Any:
        """Forward pass. `h` is (K, B, in), or (B, in) shared by every replica (validation, test)."""
        import tensorflow as tf

        for i, (w, b) in enumerate(zip(self.kernels, self.biases)):
            h = (tf.einsum("bi,kio->kbo", h, w) if shared and i == 0 else tf.matmul(h, w)) + b[:, None, :]
            if i < len(self.kernels) - 1:
                h = tf.nn.relu(h)
        return h

    def _predict(self, logits: Any) -> Any:
        """Predicted labels (K, B): Keras' BinaryAccuracy rule (positive when sigmoid > 0.5), or argmax."""
        import tensorflow as tf

        if self.binary:
            return tf.cast(tf.sigmoid(logits[..., 0]) > 0.5, tf.int32)
        return tf.cast(tf.argmax(logits, axis=-1), tf.int32)

    def _per_sample(self, logits: Any, y: Any) -> tuple[Any, Any, Any]:
        """Per-sample loss, correctness and prediction, (K, B) each, from the logits (numerically stable)."""
        import tensorflow as tf

        if self.binary:
            loss = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.cast(y, tf.float32), logits=logits[..., 0])
        else:
            loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(y, tf.int32), logits=logits)
        pred = self._predict(logits)
        return loss, tf.cast(pred == tf.cast(y, tf.int32), tf.float32), pred

    def _build(self, batch_size: int) -> None:
        """Trace the epoch and evaluation graphs once, without autograph (plain tf.while_loop):
        autograph's conversion cache is not safe when several threads trace at once."""
        import tensorflow as tf

        params = [v for pair in zip(self.kernels, self.biases) for v in pair]
        flags = [t for t in self.trainable for _ in (0, 1)]
        variables = [v for v, t in zip(params, flags) if t]
        lr = tf.constant(self.lr, tf.float32)
        k = self.k

        def step(x: Any, y: Any, order: Any, n: Any, s: Any, loss_sum: Any, correct_sum: Any) -> tuple[Any, ...]:
            idx = order[:, s * batch_size: tf.minimum((s + 1) * batch_size, n)]
            xb, yb = tf.gather(x, idx), tf.gather(y, idx)
            with tf.GradientTape() as tape:
                loss, correct, _ = self._per_sample(self._logits(xb, shared=False), yb)
                # Sum of per-replica means: replica k's gradient is exactly its own mean's.
                total = tf.reduce_sum(tf.reduce_mean(loss, axis=1))
            grads = tape.gradient(total, variables)
            updates = [v.assign_sub(lr * g) for v, g in zip(variables, grads)]
            with tf.control_dependencies(updates):  # the next step reads the updated weights
                return s + 1, loss_sum + tf.reduce_sum(loss, axis=1), correct_sum + tf.reduce_sum(correct, axis=1)

        @tf.function(autograph=False, input_signature=[
            tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([k, None], tf.int32)])
        def train_epoch(x: Any, y: Any, order: Any) -> tuple[Any, Any]:
            n = tf.shape(order)[1]
            steps = (n + batch_size - 1) // batch_size
            _, loss_sum, correct_sum = tf.while_loop(
                lambda s, *_: s < steps, lambda s, lo, co: step(x, y, order, n, s, lo, co),
                (tf.constant(0), tf.zeros([k]), tf.zeros([k])), parallel_iterations=1)
            n_f = tf.cast(n, tf.float32)
            return loss_sum / n_f, correct_sum / n_f

        @tf.function(autograph=False, input_signature=[tf.TensorSpec([None, None], tf.float32),
                                                       tf.TensorSpec([None], tf.int32)])
        def evaluate(x: Any, y: Any) -> tuple[Any, Any, Any, Any]:
            logits = self._logits(x, shared=True)
            loss, correct, pred = self._per_sample(logits, tf.broadcast_to(y[None, :], tf.shape(logits)[:2]))
            return tf.reduce_sum(loss, axis=1), tf.reduce_sum(correct, axis=1), logits, pred

        with _TRACE_LOCK:  # trace now, one thread at a time
            train_epoch.get_concrete_function()
            evaluate.get_concrete_function()
        self._train_epoch, self._evaluate, self._batch_size = train_epoch, evaluate, batch_size

    # -- training and evaluation ------------------------------------------------------------------
    def evaluate(self, x: Any, y: Any) -> dict[str, np.ndarray]:
        """Per replica, on a set shared by all: loss and accuracy (K,), logits (K, n, out) and predicted
        labels (K, n), the accuracy being exactly the share of predictions equal to y."""
        if self._evaluate is None:
            raise RuntimeError("call fit() first (it builds the graph for its batch size)")
        x2, y = as_tensor(x), as_tensor(y, labels=True)
        n = int(y.shape[0])
        loss, correct, outs, preds = np.zeros(self.k), np.zeros(self.k), [], []
        for start in range(0, n, EVAL_ROWS):
            lo, co, lg, pr = self._evaluate(x2[start:start + EVAL_ROWS], y[start:start + EVAL_ROWS])
            loss += lo.numpy()
            correct += co.numpy()
            outs.append(lg.numpy())
            preds.append(pr.numpy())
        n = max(n, 1)
        return {"loss": loss / n, "accuracy": correct / n, "logits": np.concatenate(outs, axis=1),
                "predictions": np.concatenate(preds, axis=1)}

    def fit(self, x: Any, y: Any, orders: np.ndarray, batch_size: int, phase: str,
            validation: tuple[Any, Any] | None = None, epoch_offset: int = 0) -> FitResult:
        """Train every replica for `orders.shape[1]` epochs.

        `orders` is (K, epochs, n): replica k visits rows orders[k, e] of x in epoch e (so a replica's
        subset of x is just the rows its orders name). `validation`, when given, is evaluated after
        every epoch (learning curves, time to accuracy); without it, no per-epoch forward pass.
        """
        import tensorflow as tf

        orders = np.asarray(orders, np.int32)
        if orders.ndim != 3 or orders.shape[0] != self.k:
            raise ValueError(f"orders must be (K={self.k}, epochs, n), got {orders.shape}")
        if self._batch_size != batch_size:
            self._build(batch_size)
        xt, yt = as_tensor(x), as_tensor(y, labels=True)  # once: each epoch's call reuses them
        records: list[list[dict[str, float]]] = [[] for _ in range(self.k)]
        t0 = time.perf_counter()
        for e in range(orders.shape[1]):
            loss, acc = self._train_epoch(xt, yt, tf.constant(orders[:, e]))
            rec = [{"loss": float(lo), "accuracy": float(ac)} for lo, ac in zip(loss.numpy(), acc.numpy())]
            if validation is not None:
                ev = self.evaluate(*validation)
                for k in range(self.k):
                    rec[k].update(val_loss=float(ev["loss"][k]), val_accuracy=float(ev["accuracy"][k]))
            elapsed = time.perf_counter() - t0
            for k in range(self.k):
                records[k].append({**rec[k], "epoch": epoch_offset + e + 1, "elapsed_s": elapsed / self.k})
            log.info("%s epoch %d: %d replicas, loss %s, val_accuracy %s (%.1fs)", phase, epoch_offset + e + 1,
                     self.k, _fmt(r["loss"] for r in rec), _fmt(r.get("val_accuracy", float("nan")) for r in rec),
                     elapsed)
        return FitResult(records=records, wall_seconds=(time.perf_counter() - t0) / self.k, phase=phase)


def as_tensor(a: Any, labels: bool = False) -> Any:
    """Images as one float32 (n, pixels) tensor, labels as int32; a tensor passes through. A task
    converts its arrays once and hands the tensors to every fit, instead of one copy per fit."""
    import tensorflow as tf

    if isinstance(a, tf.Tensor):
        return a
    if labels:
        return tf.constant(np.asarray(a).astype(np.int32))
    a = np.asarray(a, dtype=np.float32)
    return tf.constant(a.reshape(len(a), -1))


def _fmt(values: Any) -> str:
    return "[" + " ".join(f"{v:.4f}" for v in values) + "]"
