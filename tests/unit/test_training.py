"""The training loop's speed-ups must leave the maths alone."""

import numpy as np
import pytest

from include import training
from include.networks import build_mlp, compile_model


def _fit(monkeypatch, validation_batch_size: int):
    import keras

    monkeypatch.setattr(training, "VALIDATION_BATCH_SIZE", validation_batch_size)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 28, 28)).astype("float32")
    y = (x[:, 0, 0] + 0.3 * rng.normal(size=200) > 0).astype("float32")
    keras.utils.set_random_seed(7)
    model = compile_model(build_mlp(1), 0.05, steps_per_execution=4)
    hist = training.fit(model, x[:140], y[:140], (x[140:], y[140:]), epochs=3, batch_size=8, phase="t")
    return model.get_weights(), hist["epochs"]


@pytest.mark.training
def test_validation_batch_size_changes_neither_the_updates_nor_val_accuracy(monkeypatch):
    w_small, rec_small = _fit(monkeypatch, 8)  # validation in training-sized batches, as Keras' default
    w_big, rec_big = _fit(monkeypatch, 1024)  # the pipeline's: one batch
    assert all(np.array_equal(a, b) for a, b in zip(w_small, w_big, strict=True))
    assert [r["val_accuracy"] for r in rec_small] == [r["val_accuracy"] for r in rec_big]
    assert [r["loss"] for r in rec_small] == [r["loss"] for r in rec_big]
    assert np.allclose([r["val_loss"] for r in rec_small], [r["val_loss"] for r in rec_big], rtol=1e-5)


def test_saved_predictions_agree_with_keras_accuracy_even_at_exactly_one_half():
    import keras

    # A zero-weight head outputs sigmoid(0) = 0.5 for every image: Keras counts that as class 0.
    model = compile_model(build_mlp(1), 0.01)
    model.layers[-1].set_weights([np.zeros_like(w) for w in model.layers[-1].get_weights()])
    x = np.random.default_rng(1).normal(size=(20, 28, 28)).astype("float32")
    y = np.array([0, 1] * 10, dtype="float32")
    ev = training.evaluate(model, x, y)
    assert ev["predictions"].tolist() == [0] * 20
    assert ev["accuracy"] == float((ev["predictions"] == y).mean()) == 0.5
    keras.backend.clear_session()


@pytest.mark.training
def test_one_pass_evaluation_equals_model_evaluate():
    """Loss, accuracy and labels from one forward pass are exactly what model.evaluate and predict give."""
    import keras

    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 28, 28)).astype("float32")  # three batches of 128, the last one partial
    for n_outputs, y in ((1, (x[:, 0, 0] > 0).astype("int32")), (8, rng.integers(0, 8, 300).astype("int32"))):
        keras.utils.set_random_seed(3)
        model = compile_model(build_mlp(n_outputs), 0.05, steps_per_execution=4)
        model.fit(x, y, epochs=1, batch_size=32, verbose=0)
        loss, acc = model.evaluate(x, y, batch_size=128, verbose=0)
        probs = model.predict(x, batch_size=128, verbose=0)
        ev = training.evaluate(model, x, y, batch_size=128)
        # Bit for bit: the same loss graph and the same float32 aggregation as model.evaluate.
        assert (ev["loss"], ev["accuracy"]) == (loss, acc)
        labels = probs[:, 0] > 0.5 if n_outputs == 1 else probs.argmax(axis=-1)
        assert ev["predictions"].dtype == np.int32 and np.array_equal(ev["predictions"], labels)
        keras.backend.clear_session()


@pytest.mark.parametrize(("executor", "slots", "cores", "env", "expected"), [
    ("CeleryExecutor", "2", 8, "", 4),   # a Celery worker: its cores shared by its task slots
    ("CeleryExecutor", "3", 2, "", 1),   # never below one thread
    ("LocalExecutor", "2", 8, "", 8),    # not a Celery worker: the task has the machine
    ("CeleryExecutor", "2", 8, "3", 3),  # TL_TF_THREADS wins
])
def test_threads_per_task_default_to_the_workers_cores_over_its_task_slots(
        monkeypatch, executor, slots, cores, env, expected):
    from include import training

    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", executor)
    monkeypatch.setenv("AIRFLOW__CELERY__WORKER_CONCURRENCY", slots)
    monkeypatch.setenv("TL_TF_THREADS", env)
    monkeypatch.setattr(training.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert training.tf_threads() == expected
