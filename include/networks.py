"""Model builders and transfer surgery, following Keras' transfer-learning guide."""

from __future__ import annotations

from typing import Any

# The seed's MLP: Flatten, then 3 x Dense(100, relu, he_normal), then the output layer.
HIDDEN_UNITS = (100, 100, 100)
INPUT_SHAPE = (28, 28)


def build_mlp(n_outputs: int, name: str = "mlp") -> Any:
    import keras
    from keras import layers

    model = keras.Sequential(name=name)
    model.add(keras.Input(shape=INPUT_SHAPE, name="image"))
    model.add(layers.Flatten(name="flatten"))
    for i, units in enumerate(HIDDEN_UNITS):
        model.add(layers.Dense(units, activation="relu", kernel_initializer="he_normal", name=f"hidden_{i + 1}"))
    model.add(_head(n_outputs))
    return model


def _head(n_outputs: int) -> Any:
    from keras import layers

    if n_outputs == 1:
        return layers.Dense(1, activation="sigmoid", name="output")
    return layers.Dense(n_outputs, activation="softmax", name="output")


def replace_head(model: Any, n_outputs: int = 1, name: str = "transfer") -> Any:
    """A new Sequential reusing every layer but the last (weights shared), plus a fresh head."""
    import keras

    new = keras.Sequential(name=name)
    new.add(keras.Input(shape=INPUT_SHAPE, name="image"))
    for layer in model.layers[:-1]:
        new.add(layer)
    new.add(_head(n_outputs))
    return new


def set_trainable(model: Any, trainable: bool) -> Any:
    """Freeze or unfreeze the body. The head (last layer) stays trainable. Recompile afterwards."""
    for layer in model.layers[:-1]:
        layer.trainable = trainable
    return model


def compile_model(model: Any, learning_rate: float, steps_per_execution: int = 1) -> Any:
    import keras

    binary = model.layers[-1].units == 1
    model.compile(
        loss="binary_crossentropy" if binary else "sparse_categorical_crossentropy",
        optimizer=keras.optimizers.SGD(learning_rate=learning_rate),
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    return model
