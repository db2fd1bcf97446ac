"""K replicas of any Keras model, trained as one graph: one SGD step of every replica per loop turn.

Each replica is a Keras model of one architecture (the builder's, include/models/architectures.py)
with its own seed's initial weights. One graph call trains one epoch of every replica: a
`tf.while_loop` over the steps, where each step runs every replica's forward pass on its own batch
(rows `orders[k, step]` of a shared image tensor), takes the gradient of the sum of the replicas'
batch-mean losses, and applies plain SGD (`w -= lr * grad`, as `keras.optimizers.SGD(lr)`) to
each replica's *trainable* variables. The replicas share no weight and no op, so a replica's
updates are the same ops on the same numbers whatever else is in the graph: its result does not
depend on K (tests/unit/test_replicas.py checks it bit for bit). Batching only removes per-step
overhead, and the replicas' independent ops can run on different inter-op threads.

The graph trains working copies ("slots") of the models, kept per thread, architecture, trainable
set and K: a later fit of the same shape assigns its replicas' variables into the slots instead of
tracing again (exact). `to_models` copies the trained variables back into the per-seed models.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from include.models.architectures import is_binary

log = logging.getLogger("tl.replicas")

_TRACE_LOCK = threading.Lock()  # tracing touches Keras' global state: one thread at a time
_THREAD_GRAPHS = threading.local()  # per thread: graphs by (architecture, trainable set, K, lr)

# Validation and test passes are forward only: rows per graph call bound their memory, not the maths.
EVAL_ROWS = 4096


@dataclass
class FitResult:
    """Per replica: one record per epoch (loss, accuracy and, when validated, val_loss, val_accuracy).

    Times are each replica's share of the graph's: a record's `elapsed_s` and `wall_seconds` are the
    graph's seconds divided by K, so per-seed timings stay comparable whatever the chunk size.
    """

    records: list[list[dict[str, float]]]
    wall_seconds: float
    phase: str


class ReplicaTrainer:
    """K Keras models of one architecture, trained and evaluated as one graph."""

    def __init__(self, models: Sequence[Any], lr: float) -> None:
        import keras

        _check_same_architecture(models)
        self.k = len(models)
        self.lr = float(lr)
        self.binary = is_binary(models[0])
        with _TRACE_LOCK:
            self.slots = [keras.models.clone_model(m) for m in models]
        self.load(models)
        self._train_epoch = self._evaluate = None
        self._batch_size = 0

    @classmethod
    def reuse_for(cls, models: Sequence[Any], lr: float) -> ReplicaTrainer:
        """A trainer for `models`, reusing this thread's graph of the same shape when there is one."""
        key = (_signature(models[0]), len(models), float(lr))
        cache = _THREAD_GRAPHS.__dict__.setdefault("graphs", {})
        net = cache.get(key)
        if net is None:
            net = cache[key] = cls(models, lr)
        else:
            _check_same_architecture([net.slots[0], *models])
            net.load(models)
        return net

    def load(self, models: Sequence[Any]) -> None:
        """The replicas' starting state: models[k]'s variables into slot k (weights, and also the state
        of random layers such as Dropout's seed, so that a clone draws the masks its original would)."""
        for slot, model in zip(self.slots, models, strict=True):
            for mine, theirs in zip(slot.variables, model.variables, strict=True):
                mine.assign(theirs)

    def to_models(self, models: Sequence[Any]) -> None:
        """Write replica k's weights back into models[k] (the per-seed model that is saved)."""
        if len(models) != self.k:
            raise ValueError(f"{len(models)} models for {self.k} replicas")
        for slot, model in zip(self.slots, models):
            for mine, theirs in zip(slot.variables, model.variables, strict=True):
                theirs.assign(mine)

    # -- the graph ----------------------------------------------------------------------------------
    def _per_sample(self, probs: Any, y: Any) -> tuple[Any, Any, Any]:
        """Per-sample loss, correctness and predicted label from the model's output, as Keras' losses
        compute them (from the sigmoid's or softmax's logits) and its accuracy metrics count them."""
        import keras
        import tensorflow as tf

        if self.binary:
            loss = keras.ops.binary_crossentropy(tf.cast(y, tf.float32)[:, None], probs)[:, 0]
            pred = tf.cast(probs[:, 0] > 0.5, tf.int32)  # BinaryAccuracy: positive above 0.5
        else:
            loss = keras.ops.sparse_categorical_crossentropy(y, probs)
            pred = tf.cast(tf.argmax(probs, axis=-1), tf.int32)
        return loss, tf.cast(tf.equal(pred, y), tf.float32), pred

    def _build(self, batch_size: int) -> None:
        """Trace the epoch and evaluation graphs once, without autograph (plain tf.while_loop):
        autograph's conversion cache is not safe when several threads trace at once."""
        import tensorflow as tf

        slots, k = self.slots, self.k
        variables = [_tf_variable(v) for m in slots for v in m.trainable_variables]
        lr = tf.constant(self.lr, tf.float32)
        shape = tf.TensorShape([None, *slots[0].input_shape[1:]])

        def step(x: Any, y: Any, order: Any, n: Any, s: Any, loss_sum: Any, correct_sum: Any) -> tuple[Any, ...]:
            idx = order[:, s * batch_size: tf.minimum((s + 1) * batch_size, n)]
            with tf.GradientTape() as tape:
                per = [self._per_sample(m(tf.gather(x, idx[i]), training=True), tf.gather(y, idx[i]))
                       for i, m in enumerate(slots)]
                # Sum of per-replica means: replica k's gradient is exactly its own mean's.
                total = tf.add_n([tf.reduce_mean(loss) for loss, _, _ in per])
            grads = tape.gradient(total, variables)
            updates = [v.assign_sub(lr * g) for v, g in zip(variables, grads)]
            with tf.control_dependencies(updates):  # the next step reads the updated weights
                return (s + 1, loss_sum + tf.stack([tf.reduce_sum(lo) for lo, _, _ in per]),
                        correct_sum + tf.stack([tf.reduce_sum(co) for _, co, _ in per]))

        @tf.function(autograph=False, input_signature=[
            tf.TensorSpec(shape, tf.float32), tf.TensorSpec([None], tf.int32), tf.TensorSpec([k, None], tf.int32)])
        def train_epoch(x: Any, y: Any, order: Any) -> tuple[Any, Any]:
            n = tf.shape(order)[1]
            steps = (n + batch_size - 1) // batch_size
            _, loss_sum, correct_sum = tf.while_loop(
                lambda s, *_: s < steps, lambda s, lo, co: step(x, y, order, n, s, lo, co),
                (tf.constant(0), tf.zeros([k]), tf.zeros([k])), parallel_iterations=1)
            n_f = tf.cast(n, tf.float32)
            return loss_sum / n_f, correct_sum / n_f

        @tf.function(autograph=False, input_signature=[tf.TensorSpec(shape, tf.float32),
                                                       tf.TensorSpec([None], tf.int32)])
        def evaluate(x: Any, y: Any) -> tuple[Any, Any, Any, Any]:
            outs = [m(x, training=False) for m in slots]
            per = [self._per_sample(out, y) for out in outs]
            return (tf.stack([tf.reduce_sum(lo) for lo, _, _ in per]), tf.stack([tf.reduce_sum(co) for _, co, _ in per]),
                    tf.stack(outs), tf.stack([pr for _, _, pr in per]))

        with _TRACE_LOCK:  # trace now, one thread at a time
            train_epoch.get_concrete_function()
            evaluate.get_concrete_function()
        self._train_epoch, self._evaluate, self._batch_size = train_epoch, evaluate, batch_size

    # -- training and evaluation --------------------------------------------------------------------
    def evaluate(self, x: Any, y: Any) -> dict[str, np.ndarray]:
        """Per replica, on a set shared by all: loss and accuracy (K,), outputs (K, n, out) and predicted
        labels (K, n), the accuracy being exactly the share of predictions equal to y."""
        if self._evaluate is None:
            raise RuntimeError("call fit() first (it builds the graph for its batch size)")
        x2, y = self._images(x), as_tensor(y, labels=True)
        n = int(y.shape[0])
        loss, correct, outs, preds = np.zeros(self.k), np.zeros(self.k), [], []
        for start in range(0, n, EVAL_ROWS):
            lo, co, out, pr = self._evaluate(x2[start:start + EVAL_ROWS], y[start:start + EVAL_ROWS])
            loss += lo.numpy()
            correct += co.numpy()
            outs.append(out.numpy())
            preds.append(pr.numpy())
        n = max(n, 1)
        return {"loss": loss / n, "accuracy": correct / n, "outputs": np.concatenate(outs, axis=1),
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
        xt, yt = self._images(x), as_tensor(y, labels=True)  # once: each epoch's call reuses them
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

    def _images(self, x: Any) -> Any:
        """Images in the model's input shape (a flat (n, pixels) tensor is reshaped, without a copy)."""
        import tensorflow as tf
        x = as_tensor(x)
        shape = tuple(self.slots[0].input_shape[1:])
        return x if tuple(x.shape[1:]) == shape else tf.reshape(x, (-1, *shape))


def as_tensor(a: Any, labels: bool = False) -> Any:
    """Images as one float32 tensor, labels as int32; a tensor passes through. A task converts its
    arrays once and hands the tensors to every fit, instead of one copy per fit."""
    import tensorflow as tf

    if isinstance(a, tf.Tensor):
        return a
    if labels:
        return tf.constant(np.asarray(a).astype(np.int32))
    return tf.constant(np.asarray(a, dtype=np.float32))


def _tf_variable(v: Any) -> Any:
    """The tf.Variable under a Keras variable: its assign_sub is one in-place op, not a read and an assign."""
    import tensorflow as tf

    value = getattr(v, "value", v)
    return value if isinstance(value, tf.Variable) else v


def _signature(model: Any) -> tuple[Any, ...]:
    """What a traced graph depends on: each weight's shape and trainability, and the layers' config."""
    return (tuple((tuple(w.shape), w.trainable) for w in model.weights),
            tuple(repr(layer.get_config()) for layer in model.layers))


def _check_same_architecture(models: Sequence[Any]) -> None:
    if len({tuple((tuple(w.shape), w.trainable) for w in m.weights) for m in models}) != 1:
        raise ValueError("replicas must share one architecture and trainable set; got models that differ")


def _fmt(values: Any) -> str:
    return "[" + " ".join(f"{v:.4f}" for v in values) + "]"
