"""K independent replicas of the seed's MLP, trained as one batched graph.

Every Dense kernel of the K replicas is stacked into one (K, in, out) variable and a batch of the
K replicas' inputs is one (K, B, in) tensor, so K small latency-bound SGD steps become one step of
K times the work. The replicas share no weight, and the loss is the sum of the K per-replica batch
means, so each replica's gradient is its own: its training is the same computation as training it
alone (tests/unit/test_replicas.py checks a replica of a chunk of 3 against the same seed alone).

Each replica keeps what makes it a seed:
- its initial weights: they come from a normal per-seed Keras model (`from_models`), built exactly
  as a single-model task builds it, and they go back into it afterwards (`to_models`), so every
  replica is saved, evaluated and reloaded as the usual per-seed `.keras` file;
- its shuffle order: `epoch_orders` draws it from the replica's own seed, one permutation per epoch.

The batched graph itself (stacked variables, traced epoch, evaluation) is include/replica_graph.py;
this module adds the per-seed Keras models, the per-thread graph cache, the orders and the threads.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from include.replica_graph import ReplicaGraph

_THREAD_GRAPHS = threading.local()  # per thread: graphs by shape, reused across a task's fits
T = TypeVar("T")
R = TypeVar("R")


def epoch_orders(seed: int, stream: str, n: int, epochs: int) -> np.ndarray:
    """(epochs, n) shuffle orders for one replica, drawn from its seed and a named stream.

    `stream` keeps the phases apart (e.g. "scratch:0.3"): the same seed draws independent orders in
    each fit, and the same (seed, stream) always draws the same ones, whatever chunk it runs in.
    """
    rng = np.random.default_rng([seed, zlib.crc32(stream.encode())])
    if not n:
        return np.zeros((epochs, 0), np.int32)
    return np.stack([rng.permutation(n) for _ in range(epochs)]).astype(np.int32)


class ReplicaMLP(ReplicaGraph):
    """The batched graph (include/replica_graph.py) of K per-seed Keras models: their weights in, and back out."""

    # -- conversion from and to normal per-seed Keras models ----------------------------------
    @classmethod
    def from_models(cls, models: Sequence[Any], lr: float) -> ReplicaMLP:
        """Stack the Dense layers of K Keras models of the same shape (their `trainable` flags too)."""
        layers, trainable = _stacked(models)
        return cls(layers, trainable, lr, binary=layers[-1][0].shape[-1] == 1)

    @classmethod
    def reuse_for(cls, models: Sequence[Any], lr: float) -> ReplicaMLP:
        """`from_models`, reusing this thread's graph of the same shape when there is one.

        A task trains several fractions of the same shape one after another on each thread:
        assigning the new starting weights to the existing variables skips tracing the graph
        again. Assigned values are exact, so the training is the same as on a fresh graph.
        """
        layers, trainable = _stacked(models)
        key = (tuple(w.shape for w, _ in layers), tuple(trainable), float(lr))
        cache = _THREAD_GRAPHS.__dict__.setdefault("nets", {})
        net = cache.get(key)
        if net is None:
            net = cache[key] = cls(layers, trainable, lr, binary=layers[-1][0].shape[-1] == 1)
        else:
            for (w, b), kv, bv in zip(layers, net.kernels, net.biases):
                kv.assign(w)
                bv.assign(b)
        return net

    def to_models(self, models: Sequence[Any]) -> None:
        """Write replica k's weights back into models[k] (the per-seed model that is saved)."""
        if len(models) != self.k:
            raise ValueError(f"{len(models)} models for {self.k} replicas")
        kernels = [v.numpy() for v in self.kernels]
        biases = [v.numpy() for v in self.biases]
        for k, model in enumerate(models):
            dense = [layer for layer in model.layers if layer.__class__.__name__ == "Dense"]
            for i, layer in enumerate(dense):
                layer.kernel.assign(kernels[i][k])
                layer.bias.assign(biases[i][k])


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


def _stacked(models: Sequence[Any]) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[bool]]:
    """Per Dense layer: (kernels (K, in, out), biases (K, out)); and the first model's trainable flags."""
    dense = [[layer for layer in m.layers if layer.__class__.__name__ == "Dense"] for m in models]
    shapes = {tuple(tuple(w.shape) for layer in d for w in layer.get_weights()) for d in dense}
    if len(shapes) != 1:
        raise ValueError("replicas must share one architecture; got models of different shapes")
    layers = [(np.stack([d[i].kernel.numpy() for d in dense]), np.stack([d[i].bias.numpy() for d in dense]))
              for i in range(len(dense[0]))]
    return layers, [layer.trainable for layer in dense[0]]
