"""Batched replicas: each replica trains as if alone; different seeds give different models."""

import numpy as np
import pytest

from include.networks import build_mlp, compile_model, replace_head, set_trainable
from include.replicas import ReplicaMLP, epoch_orders


def _data(n: int = 150, n_out: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 28, 28)).astype("float32")
    signal = x[:, 5, 5] + x[:, 20, 20]
    y = (signal > 0) if n_out == 1 else np.digitize(signal, np.quantile(signal, np.linspace(0, 1, n_out + 1)[1:-1]))
    return x, y.astype("int32")


def _models(seeds: list[int], n_out: int, frozen_body: bool = False) -> list:
    """Each seed's model as a task builds it: seeded, then (transfer head) the new head on top."""
    import keras

    out = []
    for s in seeds:
        keras.utils.set_random_seed(s)
        model = build_mlp(n_out)
        out.append(set_trainable(replace_head(model, 1), trainable=False) if frozen_body else model)
    return out


def _train(seeds: list[int], n_out: int, epochs: int = 3, frozen_body: bool = False, batch: int = 16) -> list:
    """Train `seeds` as one chunk; return each replica's weights. 150 rows: the last batch is partial."""
    x, y = _data(n_out=n_out)
    models = _models(seeds, n_out, frozen_body)
    net = ReplicaMLP.from_models(models, lr=0.05)
    orders = np.stack([epoch_orders(s, "test", len(y), epochs) for s in seeds])
    labels = y % 2 if frozen_body else y
    fit = net.fit(x, labels, orders, batch, phase="t", validation=(x[:40], labels[:40]))
    assert [len(r) for r in fit.records] == [epochs] * len(seeds)
    net.to_models(models)
    return [m.get_weights() for m in models]


@pytest.mark.parametrize("n_out,frozen", [(1, False), (4, False), (1, True)], ids=["scratch", "pretrain", "head"])
def test_a_replica_in_a_chunk_of_three_trains_as_the_same_seed_alone(n_out, frozen):
    chunk = _train([3, 7, 11], n_out, frozen_body=frozen)
    alone = _train([7], n_out, frozen_body=frozen)[0]
    assert all(np.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(chunk[1], alone))
    moved = [not np.array_equal(a, b) for a, b in zip(chunk[1], _models([7], n_out, frozen)[0].get_weights())]
    assert moved[-2:] == [True, True]  # the head trained
    # Replicas with different seeds really differ (initialisation and shuffle order); a frozen
    # body's biases stay at their zero start in every replica, so compare the kernels.
    assert not any(np.allclose(a, b) for a, b in zip(chunk[0][::2], chunk[1][::2]))


def test_a_frozen_body_does_not_move():
    import keras

    keras.utils.set_random_seed(5)
    model = set_trainable(replace_head(build_mlp(8), 1), trainable=False)
    before = model.get_weights()
    net = ReplicaMLP.from_models([model], lr=0.1)
    x, y = _data()
    net.fit(x, y, epoch_orders(5, "head", len(y), 2)[None], 16, phase="t")
    net.to_models([model])
    after = model.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before[:-2], after[:-2]))
    assert not np.array_equal(before[-2], after[-2])


def test_one_replica_takes_the_same_sgd_steps_as_keras_fit_in_the_same_order():
    """Plain SGD, per-batch mean loss, the partial last batch: Keras' own fit on the same order."""
    import keras

    x, y = _data()
    orders = epoch_orders(1, "keras", len(y), 2)
    reference = compile_model(_models([1], 1)[0], 0.05)
    for order in orders:  # Keras in our order: the epoch's rows pre-permuted, no shuffling of its own
        reference.fit(x[order], y[order], epochs=1, batch_size=16, shuffle=False, verbose=0)
    model = _models([1], 1)[0]
    net = ReplicaMLP.from_models([model], lr=0.05)
    net.fit(x, y, orders[None], 16, phase="t")
    net.to_models([model])
    assert all(np.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(model.get_weights(), reference.get_weights()))
    keras.backend.clear_session()


def test_evaluation_agrees_with_the_saved_keras_model():
    models = _models([2, 9], 1)
    net = ReplicaMLP.from_models(models, lr=0.05)
    x, y = _data()
    net.fit(x, y, np.stack([epoch_orders(s, "e", len(y), 1) for s in (2, 9)]), 16, phase="t")
    net.to_models(models)
    ev = net.evaluate(x, y)
    for k, model in enumerate(models):
        probs = model.predict(x, verbose=0)[:, 0]
        assert np.allclose(1 / (1 + np.exp(-ev["logits"][k, :, 0])), probs, atol=1e-5)
        assert ev["accuracy"][k] == pytest.approx(((probs > 0.5) == y).mean())


def test_orders_depend_on_seed_and_stream_only():
    a = epoch_orders(42, "scratch:0.3", 50, 3)
    assert np.array_equal(a, epoch_orders(42, "scratch:0.3", 50, 3))
    assert sorted(a[0]) == list(range(50)) and not np.array_equal(a[0], a[1])
    assert not np.array_equal(a, epoch_orders(43, "scratch:0.3", 50, 3))
    assert not np.array_equal(a, epoch_orders(42, "head:0.3", 50, 3))


def test_orders_of_the_wrong_shape_are_refused():
    net = ReplicaMLP.from_models(_models([1, 2], 1), lr=0.1)
    x, y = _data()
    with pytest.raises(ValueError, match="orders must be"):
        net.fit(x, y, epoch_orders(1, "s", len(y), 1)[None], 16, phase="t")
