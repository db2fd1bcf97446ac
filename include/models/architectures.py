"""Architectures: one builder per network, registered by name, and the transfer surgery.

A builder returns the model's *body* as a list of Keras layers for a given input shape; every
model is then `Input -> body -> head`, the head being one Dense layer named `output` (sigmoid for
one output, softmax otherwise). The body is what transfer reuses: `replace_head` keeps every layer
but the head and puts a fresh head on top, and `set_trainable` freezes or unfreezes the body, as in
Keras' transfer-learning guide. Training (include/models/replicas.py) runs whatever model comes out,
whatever its layers.

Adding an architecture is one builder and its `register` line. Only stdlib at import time: the
config (and so the DAG file) reads `ARCHITECTURES` for the form's choices; Keras is imported inside.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from include.config_errors import ConfigError

HEAD = "output"  # the name of the head layer every builder's model ends with
DEFAULT_INPUT_SHAPE = (28, 28)  # Fashion-MNIST; the tasks pass the shape of the data they read


@dataclass(frozen=True)
class Architecture:
    name: str
    body: Callable[[tuple[int, ...]], list[Any]]  # input shape -> the body's layers, first to last
    description: str
    min_side: int = 1  # smallest image side (pixels) the body can take

    def check(self, input_shape: Sequence[int]) -> None:
        """Refuse images the body cannot take, before anything is built or trained."""
        sides = tuple(input_shape)[:2]
        if len(input_shape) >= 2 and min(sides) < self.min_side:
            size = "x".join(map(str, sides))
            raise ConfigError(
                f"architecture={self.name!r} needs images of at least {self.min_side}x{self.min_side} pixels "
                f"({self.description}); these images are {size}. Use architecture='mlp', or images of at least "
                f"{self.min_side}x{self.min_side}.")


ARCHITECTURES: dict[str, Architecture] = {}


def register(name: str, description: str, min_side: int = 1) -> Callable[[Callable], Callable]:
    """Decorator: make a body builder available as `architecture=<name>` (the form lists it)."""
    def add(body: Callable[[tuple[int, ...]], list[Any]]) -> Callable[[tuple[int, ...]], list[Any]]:
        ARCHITECTURES[name] = Architecture(name, body, description, min_side)
        return body
    return add


# -- the builders -----------------------------------------------------------------------------------
# The seed's MLP: Flatten, then 3 x Dense(100, relu, he_normal), then the head.
HIDDEN_UNITS = (100, 100, 100)


@register("mlp", "the seed's network: Flatten, 3 x Dense(100, relu), then the head")
def mlp_body(input_shape: tuple[int, ...]) -> list[Any]:
    from keras import layers

    body = [layers.Flatten(name="flatten")]
    body += [layers.Dense(units, activation="relu", kernel_initializer="he_normal", name=f"hidden_{i + 1}")
             for i, units in enumerate(HIDDEN_UNITS)]
    return body


# A small CNN: two Conv2D(3x3) + 2x2 max-pooling blocks, then Dense(100) and the head. Filters are
# few (8, 16) so that it stays a few times the MLP's arithmetic on a small CPU (28x28: ~3.7x).
CNN_FILTERS = (8, 16)


@register("cnn", f"{len(CNN_FILTERS)} blocks of Conv2D(3x3, relu) + 2x2 max-pooling, Dense(100), then the head",
          min_side=2 ** len(CNN_FILTERS))
def cnn_body(input_shape: tuple[int, ...]) -> list[Any]:
    from keras import layers

    body = [] if len(input_shape) == 3 else [layers.Reshape((*input_shape, 1), name="channels")]  # grey: 1 channel
    for i, filters in enumerate(CNN_FILTERS):
        body += [layers.Conv2D(filters, 3, padding="same", activation="relu", kernel_initializer="he_normal",
                               name=f"conv_{i + 1}"),
                 layers.MaxPooling2D(2, name=f"pool_{i + 1}")]
    return body + [layers.Flatten(name="flatten"),
                   layers.Dense(100, activation="relu", kernel_initializer="he_normal", name="hidden_1")]


# -- building and surgery ---------------------------------------------------------------------------
def architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise ConfigError(f"Unknown architecture {name!r}. Choose one of {sorted(ARCHITECTURES)}.")
    return ARCHITECTURES[name]


def build_model(arch: str, n_outputs: int, input_shape: Sequence[int] = DEFAULT_INPUT_SHAPE,
                name: str | None = None) -> Any:
    """`Input(input_shape) -> the architecture's body -> head(n_outputs)`, as one Sequential model."""
    import keras

    spec = architecture(arch)
    shape = tuple(int(s) for s in input_shape)
    spec.check(shape)
    model = keras.Sequential(name=name or arch)
    model.add(keras.Input(shape=shape, name="image"))
    for layer in spec.body(shape):
        model.add(layer)
    model.add(_head(n_outputs))
    return model


def build_mlp(n_outputs: int, name: str = "mlp", input_shape: Sequence[int] = DEFAULT_INPUT_SHAPE) -> Any:
    """The seed's MLP (architecture 'mlp')."""
    return build_model("mlp", n_outputs, input_shape, name=name)


def _head(n_outputs: int) -> Any:
    from keras import layers

    return layers.Dense(n_outputs, activation="sigmoid" if n_outputs == 1 else "softmax", name=HEAD)


def body_layers(model: Any) -> list[Any]:
    """Every layer but the head: what transfer reuses and what freezing freezes."""
    return [layer for layer in model.layers if layer.name != HEAD]


def replace_head(model: Any, n_outputs: int = 1, name: str = "transfer") -> Any:
    """A new Sequential reusing the body's layers (weights shared), plus a fresh head."""
    import keras

    new = keras.Sequential(name=name)
    new.add(keras.Input(shape=tuple(model.input_shape[1:]), name="image"))
    for layer in body_layers(model):
        new.add(layer)
    new.add(_head(n_outputs))
    return new


def set_trainable(model: Any, trainable: bool) -> Any:
    """Freeze or unfreeze the body; the head stays trainable. The trainer builds its graph from the
    model's trainable variables, so a change takes effect at the next fit (Keras: recompile)."""
    for layer in body_layers(model):
        layer.trainable = trainable
    return model


def is_binary(model: Any) -> bool:
    """One sigmoid output (binary cross-entropy) or a softmax over classes (sparse cross-entropy)."""
    return int(model.output_shape[-1]) == 1
