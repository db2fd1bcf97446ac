"""Architectures: the registered builders, head replacement and freezing (kept layers keep their
pretrained weights; flags per phase), and refusals of what a body cannot take."""

import numpy as np
import pytest

from include.config import ConfigError, ExperimentConfig
from include.models.architectures import ARCHITECTURES, build_mlp, build_model, replace_head, set_trainable
from tests.keras_oracle import compile_model


def test_build_mlp_is_the_seeds_architecture():
    m = build_mlp(8)
    dense = [layer for layer in m.layers if layer.name.startswith(("hidden", "output"))]
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


def test_the_cnn_is_conv_blocks_and_a_dense_head_and_its_body_transfers():
    import keras

    keras.utils.set_random_seed(0)
    m = build_model("cnn", 8, (28, 28))
    kinds = [layer.__class__.__name__ for layer in m.layers]
    assert kinds == ["Reshape", "Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Flatten", "Dense", "Dense"]
    assert m.output_shape == (None, 8) and m.layers[1].output.shape[1:] == (28, 28, 8)
    moved = set_trainable(replace_head(m, 1), trainable=False)
    assert moved.output_shape == (None, 1)
    # The body's layers (and their weights) are the pretrained model's own; only the head is new.
    assert all(a is b for a, b in zip(moved.layers[:-1], m.layers[:-1], strict=True))
    assert [layer.trainable for layer in moved.layers] == [False] * 7 + [True]
    assert len(moved.trainable_weights) == 2
    # RGB images: no added channel axis.
    assert build_model("cnn", 1, (12, 12, 3)).layers[0].__class__.__name__ == "Conv2D"


def test_every_registered_architecture_is_offered_by_the_form():
    from tasks.dag_params import param_specs

    spec = param_specs()["architecture"]
    assert spec["default"] == "mlp" and sorted(spec["schema"]["enum"]) == sorted(ARCHITECTURES) == ["cnn", "mlp"]


@pytest.mark.parametrize("value", ["resnet", "MLP", ""])
def test_an_unknown_architecture_is_refused_by_name(value):
    with pytest.raises(ConfigError, match=rf"Unknown architecture '{value}'\. Choose one of \['cnn', 'mlp'\]"):
        ExperimentConfig(architecture=value)


@pytest.mark.parametrize("shape,ok", [((4, 4), True), ((3, 28), False), ((2, 2, 3), False), ((8, 8), True)])
def test_a_cnn_refuses_images_too_small_for_its_pooling(shape, ok):
    if ok:
        assert build_model("cnn", 1, shape).output_shape == (None, 1)
        return
    side = "x".join(map(str, shape[:2]))
    with pytest.raises(ConfigError, match=rf"architecture='cnn' needs images of at least 4x4 pixels.*these images "
                                          rf"are {side}\. Use architecture='mlp', or images of at least 4x4"):
        build_model("cnn", 1, shape)
