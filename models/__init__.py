"""Model zoo: small Keras 3 architectures for edge deployment.

Each model lives in its own module (``models/<name>.py``) exposing ``SPEC`` (a :class:`ModelSpec`) and
``build(input_shape, num_classes, **kwargs) -> keras.Model``. Keras is imported lazily inside the builders, so
``import models`` and ``models.list_specs()`` stay cheap.

Public API::

    models.list_specs() -> list[ModelSpec]
    models.get_spec(name) -> ModelSpec             # ModelError with "did you mean" for unknown names
    models.build(name, input_shape=None, num_classes=None, **kwargs) -> keras.Model (uncompiled)
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Sequence

from toolchain.errors import ModelError

__all__ = ["ModelSpec", "MODEL_NAMES", "list_specs", "get_spec", "build", "parse_input_shape"]


@dataclass(frozen=True)
class ModelSpec:
    """What a zoo model is: default input shape, output classes, task and where the architecture comes from."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    task: str  # "classification" | "autoencoder"
    source: str
    description: str
    # Which extra keyword arguments ``build`` accepts for this model, with their defaults.
    options: dict[str, Any] = field(default_factory=dict)
    # Keras parameter count and MACs per inference of the default build (input_shape, num_classes), recorded so
    # `toolchain models` needs no TensorFlow; tests/test_models.py checks them against the built model.
    params: int | None = None
    macs: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "task": self.task,
            "source": self.source,
            "description": self.description,
            "options": dict(self.options),
            "params": self.params,
            "macs": self.macs,
        }


# Zoo order = listing order.
MODEL_NAMES: tuple[str, ...] = (
    "seed000_face",
    "seed001_basic_cnn",
    "seed002_keras_cnn",
    "seed003_fashion_cnn",
    "seed004_cs231n",
    "resnet8",
    "ds_cnn",
    "mobilenet_v1_025",
    "fc_autoencoder",
)


def _module(name: str):
    return importlib.import_module(f"models.{name}")


def _unknown(name: str) -> ModelError:
    close = difflib.get_close_matches(str(name), MODEL_NAMES, n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'?" if close else "run `toolchain models` to list them"
    return ModelError(f"unknown model; known models: {', '.join(MODEL_NAMES)}", received=name, hint=hint)


def list_specs() -> list[ModelSpec]:
    return [_module(n).SPEC for n in MODEL_NAMES]


def get_spec(name: str) -> ModelSpec:
    if name not in MODEL_NAMES:
        raise _unknown(name)
    return _module(name).SPEC


def parse_input_shape(text: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """Parse ``"H,W,C"`` (or ``"N"`` for vector models) into a tuple of positive ints; ``None`` passes through."""
    if text is None:
        return None
    if isinstance(text, str):
        parts = [p.strip() for p in text.replace("x", ",").split(",")]
        try:
            dims = tuple(int(p) for p in parts)
        except ValueError:
            raise ModelError("input shape must be comma-separated positive integers like 28,28,1",
                             received=text) from None
    else:
        try:
            dims = tuple(int(d) for d in text)
        except (TypeError, ValueError):
            raise ModelError("input shape must be a sequence of positive integers", received=text) from None
    if not dims or any(d <= 0 for d in dims) or len(dims) not in (1, 3):
        raise ModelError("input shape must be H,W,C (images) or N (vectors), all positive", received=text)
    return dims


def build(name: str, input_shape: Sequence[int] | str | None = None, num_classes: int | None = None,
          **kwargs: Any):
    """Build zoo model ``name`` (uncompiled Keras model; classifiers end in softmax).

    ``input_shape`` overrides the default input (e.g. to train on a dataset resized to another size);
    ``num_classes`` overrides the classifier head. Extra keyword arguments go to the model's builder
    (see ``ModelSpec.options``).
    """
    spec = get_spec(name)
    shape = parse_input_shape(input_shape) or spec.input_shape
    if spec.task == "classification" and len(shape) != 3:
        raise ModelError(f"{name} needs an image input shape H,W,C", received=",".join(map(str, shape)))
    if spec.task == "autoencoder" and len(shape) != 1:
        raise ModelError(f"{name} needs a vector input shape N", received=",".join(map(str, shape)))
    classes = spec.num_classes if num_classes is None else int(num_classes)
    if spec.task == "classification" and classes < 2:
        raise ModelError("a classifier needs at least 2 classes", received=num_classes)
    unknown = sorted(set(kwargs) - set(spec.options))
    if unknown:
        allowed = ", ".join(spec.options) or "none"
        raise ModelError(f"unknown option(s) for {name} (allowed: {allowed})", received=", ".join(unknown))
    try:
        return _module(name).build(tuple(shape), classes, **kwargs)
    except ValueError as exc:
        # Keras raises ValueError when e.g. a valid convolution/pooling would shrink the map below 1x1.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot build {name} for this input shape ({first})",
                         received=",".join(map(str, shape))) from exc
