"""Batched replicas of any Keras model: each replica trains as if alone, bit for bit, whatever the
architecture and whatever graph it shares; it takes Keras' own SGD steps; seeds differ."""

import numpy as np
import pytest

from include.models.architectures import build_model, replace_head, set_trainable
from include.models.replicas import ReplicaTrainer
from include.models.training import epoch_orders, replica_groups
from tests.keras_oracle import compile_model


def _data(n: int = 150, n_out: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 28, 28)).astype("float32")
    signal = x[:, 5, 5] + x[:, 20, 20]
    y = (signal > 0) if n_out == 1 else np.digitize(signal, np.quantile(signal, np.linspace(0, 1, n_out + 1)[1:-1]))
    return x, y.astype("int32")


def _models(seeds: list[int], n_out: int, frozen_body: bool = False, arch: str = "mlp") -> list:
    """Each seed's model as a task builds it: seeded, then (transfer head) the new head on top."""
    import keras

    out = []
    for s in seeds:
        keras.utils.set_random_seed(s)
        model = build_model(arch, n_out)
        out.append(set_trainable(replace_head(model, 1), trainable=False) if frozen_body else model)
    return out


def _train(seeds: list[int], n_out: int, epochs: int = 3, frozen_body: bool = False, batch: int = 16,
           arch: str = "mlp") -> list:
    """Train `seeds` as one graph; return each replica's weights. 150 rows: the last batch is partial."""
    x, y = _data(n_out=n_out)
    models = _models(seeds, n_out, frozen_body, arch)
    net = ReplicaTrainer(models, lr=0.05)
    orders = np.stack([epoch_orders(s, "test", len(y), epochs) for s in seeds])
    labels = y % 2 if frozen_body else y
    fit = net.fit(x, labels, orders, batch, phase="t", validation=(x[:40], labels[:40]))
    assert [len(r) for r in fit.records] == [epochs] * len(seeds)
    net.to_models(models)
    return [m.get_weights() for m in models]


@pytest.mark.training
@pytest.mark.parametrize("arch", ["mlp", "cnn"])
@pytest.mark.parametrize("n_out,frozen", [(1, False), (4, False), (1, True)], ids=["scratch", "pretrain", "head"])
def test_a_replica_in_a_graph_of_three_trains_bit_for_bit_as_the_same_seed_alone(n_out, frozen, arch):
    chunk = _train([3, 7, 11], n_out, frozen_body=frozen, arch=arch)
    alone = _train([7], n_out, frozen_body=frozen, arch=arch)[0]
    assert all(np.array_equal(a, b) for a, b in zip(chunk[1], alone, strict=True))
    start = _models([7], n_out, frozen, arch)[0].get_weights()
    moved = [not np.array_equal(a, b) for a, b in zip(chunk[1], start)]
    assert moved[-2:] == [True, True]  # the head trained
    assert any(moved[:-2]) != frozen  # the body trained unless frozen
    # Replicas with different seeds really differ (initialisation and shuffle order); a frozen
    # body's biases stay at their zero start in every replica, so compare the kernels.
    assert not any(np.allclose(a, b) for a, b in zip(chunk[0][::2], chunk[1][::2]))


def _dropout_models(seeds: list[int], rate: float) -> list:
    """A model no builder makes: Dense, Dropout, Dense head. Any layer must train as Keras trains it."""
    import keras
    from keras import layers

    out = []
    for s in seeds:
        keras.utils.set_random_seed(s)
        out.append(keras.Sequential([keras.Input((28, 28)), layers.Flatten(), layers.Dense(20, activation="relu"),
                                     layers.Dropout(rate), layers.Dense(1, activation="sigmoid", name="output")]))
    return out


@pytest.mark.training
def test_a_dropout_layer_is_trained_with_and_each_replica_draws_its_own_masks():
    x, y = _data()
    weights = {}
    for name, seeds, rate in (("chunk", [3, 7, 11], 0.5), ("alone", [7], 0.5), ("no_dropout", [7], 0.0)):
        models = _dropout_models(seeds, rate)
        net = ReplicaTrainer(models, lr=0.05)
        net.fit(x, y, np.stack([epoch_orders(s, "drop", len(y), 2) for s in seeds]), 16, phase="t")
        net.to_models(models)
        weights[name] = models[seeds.index(7)].get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(weights["chunk"], weights["alone"], strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(weights["alone"], weights["no_dropout"], strict=True))


@pytest.mark.training
@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_one_replica_takes_the_same_sgd_steps_as_keras_fit_in_the_same_order(arch):
    """Plain SGD, per-batch mean loss, the partial last batch, every layer of the builder's model:
    Keras' own compile and fit (the oracle, tests/keras_oracle.py) on the same order."""
    import keras

    x, y = _data()
    orders = epoch_orders(1, "keras", len(y), 2)
    reference = compile_model(_models([1], 1, arch=arch)[0], 0.05)
    for order in orders:  # Keras in our order: the epoch's rows pre-permuted, no shuffling of its own
        reference.fit(x[order], y[order], epochs=1, batch_size=16, shuffle=False, verbose=0)
    model = _models([1], 1, arch=arch)[0]
    net = ReplicaTrainer([model], lr=0.05)
    net.fit(x, y, orders[None], 16, phase="t")
    net.to_models([model])
    assert all(np.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(model.get_weights(), reference.get_weights()))
    keras.backend.clear_session()


@pytest.mark.training
def test_a_frozen_body_does_not_move_and_unfreezing_takes_effect_at_the_next_fit():
    import keras

    keras.utils.set_random_seed(5)
    model = set_trainable(replace_head(build_model("cnn", 8), 1), trainable=False)
    before = model.get_weights()
    x, y = _data()
    net = ReplicaTrainer.reuse_for([model], lr=0.1)
    net.fit(x, y, epoch_orders(5, "head", len(y), 2)[None], 16, phase="t")
    net.to_models([model])
    after = model.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before[:-2], after[:-2]))
    assert not np.array_equal(before[-2], after[-2])
    # Unfrozen (the trainer's "recompile": a new graph for the new trainable set), the body moves.
    net2 = ReplicaTrainer.reuse_for([set_trainable(model, trainable=True)], lr=0.1)
    assert net2 is not net
    net2.fit(x, y, epoch_orders(5, "finetune", len(y), 1)[None], 16, phase="t")
    net2.to_models([model])
    assert not np.array_equal(after[0], model.get_weights()[0])


@pytest.mark.training
def test_a_reused_graph_trains_exactly_as_a_fresh_one():
    x, y = _data()
    orders = np.stack([epoch_orders(s, "r", len(y), 2) for s in (4, 6)])
    first = _models([4, 6], 1)
    ReplicaTrainer.reuse_for(first, 0.05).fit(x, y, orders, 16, phase="t")  # leaves trained weights in the slots
    again, fresh = _models([4, 6], 1), _models([4, 6], 1)
    reused = ReplicaTrainer.reuse_for(again, 0.05)
    reused.fit(x, y, orders, 16, phase="t")
    reused.to_models(again)
    new = ReplicaTrainer(fresh, 0.05)
    new.fit(x, y, orders, 16, phase="t")
    new.to_models(fresh)
    for a, b in zip(again, fresh):
        assert all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))


@pytest.mark.training
def test_evaluation_agrees_with_the_saved_keras_model():
    models = _models([2, 9], 1)
    net = ReplicaTrainer(models, lr=0.05)
    x, y = _data()
    net.fit(x, y, np.stack([epoch_orders(s, "e", len(y), 1) for s in (2, 9)]), 16, phase="t")
    net.to_models(models)
    ev = net.evaluate(x, y)
    for k, model in enumerate(models):
        probs = model.predict(x, verbose=0)[:, 0]
        assert np.allclose(ev["outputs"][k, :, 0], probs, atol=1e-6)
        assert ev["accuracy"][k] == pytest.approx(((probs > 0.5) == y).mean())


def test_orders_depend_on_seed_and_stream_only():
    a = epoch_orders(42, "scratch:0.3", 50, 3)
    assert np.array_equal(a, epoch_orders(42, "scratch:0.3", 50, 3))
    assert sorted(a[0]) == list(range(50)) and not np.array_equal(a[0], a[1])
    assert not np.array_equal(a, epoch_orders(43, "scratch:0.3", 50, 3))
    assert not np.array_equal(a, epoch_orders(42, "head:0.3", 50, 3))


@pytest.mark.parametrize("n,most,groups", [(5, 3, [[0, 1, 2], [3, 4]]), (5, 5, [[0, 1, 2, 3, 4]]),
                                           (5, 1, [[0], [1], [2], [3], [4]]), (4, 3, [[0, 1], [2, 3]]),
                                           (1, 3, [[0]]), (6, 4, [[0, 1, 2], [3, 4, 5]])])
def test_replica_groups_are_as_few_and_as_even_as_the_limit_allows(n, most, groups):
    assert replica_groups(n, most) == groups


def test_orders_of_the_wrong_shape_and_mixed_architectures_are_refused():
    net = ReplicaTrainer(_models([1, 2], 1), lr=0.1)
    x, y = _data()
    with pytest.raises(ValueError, match="orders must be"):
        net.fit(x, y, epoch_orders(1, "s", len(y), 1)[None], 16, phase="t")
    with pytest.raises(ValueError, match="share one architecture"):
        ReplicaTrainer(_models([1], 1) + _models([2], 1, arch="cnn"), lr=0.1)


@pytest.mark.parametrize(("executor", "slots", "cores", "env", "expected"), [
    ("CeleryExecutor", "2", 8, "", 4),   # a Celery worker: its cores shared by its task slots
    ("CeleryExecutor", "3", 2, "", 1),   # never below one thread
    ("LocalExecutor", "2", 8, "", 8),    # not a Celery worker: the task has the machine
    ("CeleryExecutor", "2", 8, "3", 3),  # TL_TF_THREADS wins
])
def test_threads_per_task_default_to_the_workers_cores_over_its_task_slots(
        monkeypatch, executor, slots, cores, env, expected):
    from include.models import training

    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", executor)
    monkeypatch.setenv("AIRFLOW__CELERY__WORKER_CONCURRENCY", slots)
    monkeypatch.setenv("TL_TF_THREADS", env)
    monkeypatch.setattr(training.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert training.tf_threads() == expected
