"""The one Keras -> TFLite converter of the toolchain: a fixed batch of 1, variables frozen to constants.

``model(x, training=False)`` is traced with input signature ``[1, *input_shape]`` so ``Flatten`` becomes a single
RESHAPE and the graph is what a microcontroller runs. ``quantise``/``convert``, verify's per-layer debugger and the
C-engine zoo fixtures all build their converter here (``keras_converter``) and run it here (``run_converter``).
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path
from typing import Any

from toolchain.errors import ConversionError, ModelError
from toolchain.native_stderr import quiet_native_stderr

log = logging.getLogger("toolchain.convert")


def load_keras_model(path: Path):
    """Load a .keras file for conversion: one fully defined input and one output."""
    from toolchain.keras_io import load_keras_model as load

    model = load(path)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError("only single-input, single-output models can be converted",
                         received=f"{path}: {len(model.inputs)} inputs, {len(model.outputs)} outputs")
    shape = model.inputs[0].shape[1:]
    if any(d is None for d in shape):
        raise ModelError("the model input shape must be fully defined (apart from the batch)",
                         received=f"{path}: input shape {tuple(model.inputs[0].shape)}")
    return model


def input_shape(model) -> tuple[int, ...]:
    return tuple(int(d) for d in model.inputs[0].shape[1:])


def output_shape(model) -> tuple[int, ...]:
    return tuple(int(d) for d in model.outputs[0].shape[1:])


def is_autoencoder(model, run_meta: dict[str, Any] | None) -> bool:
    if run_meta and run_meta.get("task"):
        return run_meta["task"] == "autoencoder"
    return output_shape(model) == input_shape(model)


def frozen_concrete_function(model):
    """``model(x, training=False)`` traced with a fixed batch of 1 and its variables frozen to constants."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    shape = [1, *(int(d) for d in model.inputs[0].shape[1:])]
    spec = tf.TensorSpec(shape, tf.float32, name="input")
    fn = tf.function(lambda x: model(x, training=False), input_signature=[spec], autograph=False)
    return convert_variables_to_constants_v2(fn.get_concrete_function())


def keras_converter(model):
    """A TFLiteConverter for ``model`` traced with a fixed batch of 1."""
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_concrete_functions([frozen_concrete_function(model)], model)


def run_converter(converter, what: str, layer_names: list[str]) -> bytes:
    try:
        with warnings.catch_warnings(), quiet_native_stderr(log):
            warnings.simplefilter("ignore")
            return bytes(converter.convert())
    except Exception as exc:  # ConverterError / RuntimeError from the MLIR converter or the calibrator
        raise ConversionError(f"{what} failed", received=_summarise_converter_error(exc, layer_names),
                              hint="run with --verbose for the converter log") from exc


def _summarise_converter_error(exc: Exception, layer_names: list[str]) -> str:
    text = str(exc)
    lines = [ln.strip() for ln in text.splitlines() if "error:" in ln.lower() or "op" in ln.lower()]
    first = lines[0] if lines else (text.splitlines()[0] if text else type(exc).__name__)
    layer = layer_from_name(first, layer_names)
    return (f"layer '{layer}': " if layer else "") + first[:300]


def layer_from_name(tensor_name: str, layer_names: list[str]) -> str | None:
    """Best-effort Keras layer for a TFLite tensor name like ``functional_1/conv_2/Relu``."""
    known = set(layer_names)
    for part in re.split(r"[/;:\"' ()]+", tensor_name):
        if part in known:
            return part
        base = re.sub(r"_\d+$", "", part)
        if base in known:
            return base
    return None


def layer_names(model) -> list[str]:
    names: list[str] = []

    def walk(m) -> None:
        for layer in getattr(m, "layers", []):
            names.append(layer.name)
            if hasattr(layer, "layers"):
                walk(layer)

    walk(model)
    return names
