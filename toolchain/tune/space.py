"""The search space of ``toolchain tune``: the seed CNN families, and what an architecture costs before training.

Two families, both a stack of ``blocks`` blocks [conv -> ReLU -> 2x2 max-pool] and a classifier head
[Flatten -> (Dense ``dense`` -> ReLU) -> Dropout ``dropout`` -> Dense softmax]:

* ``cnn``: every block's conv is a Conv2D (``kernel`` x ``kernel``); the seed CNNs (seed001/seed002) are of this form.
* ``dscnn``: the first block's conv is a Conv2D, the others are depthwise-separable (DepthwiseConv2D ``kernel`` x
  ``kernel`` -> ReLU -> Conv2D 1x1), as in DS-CNN.

Block ``i`` (from 0) has ``filters * growth**i`` output channels; only the first conv has stride ``stride``; every
conv uses ``padding``. The input is ``resolution`` x ``resolution`` with the data set's channel count (the data is
resized by the recorded preprocessing).

``static_costs`` computes, from the architecture alone (no TensorFlow), the parameters, the int8 constant bytes
(weights 1 B each, biases int32: 4 B each; every engine stores at least these in flash), the MACs and a lower bound
on the tensor arena (the largest input + output pair of one layer at 1 B per int8 value: a conv, pool or dense
layer cannot write its output over its input). A violation of the board's flash or RAM by these figures prunes a
trial before it is trained.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from toolchain.errors import UsageError

SPACES = ("all", "cnn", "dscnn")

# The categorical choices of every dimension (the order is part of the search space: same seed -> same trials).
CHOICES: dict[str, tuple[Any, ...]] = {
    "resolution": (8, 16, 24),
    "blocks": (1, 2, 3),
    "filters": (8, 16, 32),
    "growth": (1, 2),
    "kernel": (3, 5),
    "stride": (1, 2),
    "padding": ("same", "valid"),
    "dense": (0, 32, 64, 128),
    "dropout": (0.0, 0.1, 0.25),
}


class InvalidArchitecture(ValueError):
    """The architecture cannot be built (a feature map shrinks below 1x1); the message says where."""


@dataclass(frozen=True)
class Architecture:
    family: str
    resolution: int
    blocks: int
    filters: int
    growth: int
    kernel: int
    stride: int
    padding: str
    dense: int
    dropout: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Architecture":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})

    def block_filters(self) -> list[int]:
        return [int(self.filters * self.growth ** i) for i in range(self.blocks)]

    def describe(self) -> str:
        """One short line: family, input, blocks x filters, kernel, stride, padding, head."""
        head = f"d{self.dense}" if self.dense else "no-dense"
        return (f"{self.family} {self.resolution}x{self.resolution} {'-'.join(map(str, self.block_filters()))} "
                f"k{self.kernel} s{self.stride} {self.padding} {head} do{self.dropout:g}")


def check_space(space: str) -> str:
    if space not in SPACES:
        raise UsageError(f"unknown search space (known: {', '.join(SPACES)})", received=f"--space {space}")
    return space


def suggest(trial, space: str) -> Architecture:
    """Draw an architecture through an Optuna trial (every dimension categorical)."""
    families = ("cnn", "dscnn") if space == "all" else (space,)
    params = {"family": trial.suggest_categorical("family", families)}
    for name, choices in CHOICES.items():
        params[name] = trial.suggest_categorical(name, choices)
    return Architecture(**params)


def _conv_out(n: int, k: int, s: int, padding: str) -> int:
    return -(-n // s) if padding == "same" else (n - k) // s + 1


def layer_plan(arch: Architecture, channels: int, num_classes: int) -> list[dict[str, Any]]:
    """Every layer with its input/output shape, weights, biases and MACs (raises InvalidArchitecture)."""
    layers: list[dict[str, Any]] = []
    h = w = int(arch.resolution)
    c = int(channels)

    def add(name: str, kind: str, out: tuple[int, ...], weights: int = 0, biases: int = 0, macs: int = 0) -> None:
        if min(out) < 1:
            raise InvalidArchitecture(f"layer {name} would have an empty output {'x'.join(map(str, out))}")
        layers.append({"name": name, "kind": kind, "in": (h, w, c) if kind != "dense" else None, "out": out,
                       "weights": weights, "biases": biases, "macs": macs})

    for i, f in enumerate(arch.block_filters()):
        s = arch.stride if i == 0 else 1
        if i == 0 or arch.family == "cnn":
            oh, ow = _conv_out(h, arch.kernel, s, arch.padding), _conv_out(w, arch.kernel, s, arch.padding)
            add(f"conv{i + 1}", "conv", (oh, ow, f), arch.kernel ** 2 * c * f, f, oh * ow * f * arch.kernel ** 2 * c)
        else:
            oh, ow = _conv_out(h, arch.kernel, s, arch.padding), _conv_out(w, arch.kernel, s, arch.padding)
            add(f"dw{i + 1}", "depthwise", (oh, ow, c), arch.kernel ** 2 * c, c, oh * ow * c * arch.kernel ** 2)
            h, w = oh, ow
            add(f"pw{i + 1}", "conv", (oh, ow, f), c * f, f, oh * ow * c * f)
        h, w, c = oh, ow, f
        add(f"pool{i + 1}", "pool", (h // 2, w // 2, c))
        h, w = h // 2, w // 2
    flat = h * w * c
    units = [arch.dense] if arch.dense else []
    for j, u in enumerate(units + [num_classes]):
        name = "dense" if j < len(units) else "predictions"
        layers.append({"name": name, "kind": "dense", "in": (flat,), "out": (u,), "weights": flat * u,
                       "biases": u, "macs": flat * u})
        flat = u
    return layers


def static_costs(arch: Architecture, channels: int, num_classes: int) -> dict[str, int]:
    """Parameters, int8 constant bytes, MACs and the arena lower bound of ``arch`` (raises InvalidArchitecture)."""
    plan = layer_plan(arch, channels, num_classes)

    def size(shape) -> int:
        n = 1
        for d in shape:
            n *= int(d)
        return n

    weights = sum(lay["weights"] for lay in plan)
    biases = sum(lay["biases"] for lay in plan)
    return {"params": weights + biases, "int8_weight_bytes": weights + 4 * biases,
            "macs": sum(lay["macs"] for lay in plan),
            "arena_lower_bound_bytes": max(size(lay["in"]) + size(lay["out"]) for lay in plan),
            "io_bytes": int(arch.resolution) ** 2 * int(channels) + int(num_classes)}


def build(arch: Architecture, input_shape, num_classes: int):
    """The Keras model of ``arch`` (uncompiled, softmax head); layer names as in ``layer_plan``."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=tuple(int(d) for d in input_shape), name="image")
    x = inputs
    for i, f in enumerate(arch.block_filters()):
        s = arch.stride if i == 0 else 1
        if i == 0 or arch.family == "cnn":
            x = layers.Conv2D(f, arch.kernel, strides=s, padding=arch.padding, activation="relu",
                              name=f"conv{i + 1}")(x)
        else:
            x = layers.DepthwiseConv2D(arch.kernel, strides=s, padding=arch.padding, activation="relu",
                                       name=f"dw{i + 1}")(x)
            x = layers.Conv2D(f, 1, activation="relu", name=f"pw{i + 1}")(x)
        x = layers.MaxPooling2D(2, strides=2, name=f"pool{i + 1}")(x)
    x = layers.Flatten(name="flatten")(x)
    if arch.dense:
        x = layers.Dense(arch.dense, activation="relu", name="dense")(x)
    if arch.dropout:
        x = layers.Dropout(arch.dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=f"tune_{arch.family}")


class ArchitectureBuilder:
    """What ``toolchain.train.train`` needs to train an architecture that is not in the zoo (``architecture=``)."""

    def __init__(self, arch: Architecture, channels: int):
        self.arch = arch
        self.name = f"tune_{arch.family}"
        self.input_shape = (int(arch.resolution), int(arch.resolution), int(channels))

    def build(self, input_shape, num_classes: int):
        return build(self.arch, input_shape, num_classes)

    def to_dict(self) -> dict[str, Any]:
        return {"family": "toolchain.tune.space", **self.arch.to_dict()}
