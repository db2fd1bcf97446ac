"""Head replacement and freezing: kept layers keep their pretrained weights; flags per phase."""

import numpy as np
import pytest

from include.networks import build_mlp, compile_model, replace_head, set_trainable


def test_build_mlp_is_the_seeds_architecture():
    m = build_mlp(8)
    dense = [layer for layer in m.layers if layer.__class__.__name__ == "Dense"]
    assert [layer.units for layer in dense] == [100, 100, 100, 8]
    assert [layer.activation.__name__ for layer in dense] == ["relu", "relu", "relu", "softmax"]
    assert dense[0].kernel_initializer.__class__.__name__ == "HeNormal"
    assert m.count_params() == 784 * 100 + 100 + 2 * (100 * 100 + 100) + 808


@pytest.mark.training
def test_replace_head_keeps_pretrained_weights_and_freezes_per_phase():
    import keras

    keras.utils.set_random_seed(0)
    base = build_mlp(8)
    before = [w.copy() for layer in base.layers[:-1] for w in layer.get_weights()]
    model = set_trainable(replace_head(base, 1), trainable=False)
    assert model.layers[-1].units == 1 and model.layers[-1].activation.__name__ == "sigmoid"
    assert [layer.trainable for layer in model.layers] == [False] * 4 + [True]
    kept = [w for layer in model.layers[:-1] for w in layer.get_weights()]
    assert all(np.array_equal(a, b) for a, b in zip(before, kept, strict=True))

    # Phase 1: only the head learns.
    compile_model(model, 0.1)
    x = np.random.default_rng(0).normal(size=(64, 28, 28)).astype("float32")
    y = (x[:, 0, 0] > 0).astype("float32")
    head_before = model.layers[-1].get_weights()[0].copy()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    body = [w for layer in model.layers[:-1] for w in layer.get_weights()]
    assert all(np.array_equal(a, b) for a, b in zip(before, body, strict=True))
    assert not np.array_equal(head_before, model.layers[-1].get_weights()[0])

    # Phase 2: unfrozen and recompiled, the body moves too.
    set_trainable(model, trainable=True)
    assert all(layer.trainable for layer in model.layers)
    compile_model(model, 0.1)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    after = [w for layer in model.layers[:-1] for w in layer.get_weights()]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))
