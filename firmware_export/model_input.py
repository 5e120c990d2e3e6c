"""The model an export starts from: a ``.tflite`` file, and errors that say what to do when it is not one.

``load_export_model(path)`` loads the ``.tflite`` both exports (TFLM and the C engine) take. A Keras model (a
``.keras`` / ``.h5`` file, or a training run folder holding ``model.keras``) is refused with the command that makes
the ``.tflite`` (``toolchain quantise MODEL.keras --output X.tflite``). ``is_float_model(model)`` tells a model
that computes in float (the C engine refuses it with the same hint; the TFLM export warns).
"""

from __future__ import annotations

import os
from pathlib import Path

from toolchain.errors import ModelError

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
_KERAS_MAGIC = (b"PK\x03\x04", b"\x89HDF\r\n\x1a\n")  # .keras is a zip archive; .h5 is HDF5


def quantise_hint(keras_path: str | os.PathLike | None = None) -> str:
    """The command that makes an int8 ``.tflite`` to export: for ``keras_path`` when it is known."""
    if keras_path is None:
        return "make an int8 model first: toolchain quantise MODEL.keras --output X.tflite, then export X.tflite"
    p = Path(keras_path)
    out = p / "model_int8.tflite" if p.is_dir() else p.with_name(f"{p.stem}_int8.tflite")
    return f"make an int8 model first: toolchain quantise {p} --output {out}, then export {out}"


def _is_keras(p: Path) -> bool:
    if p.is_dir():
        return (p / "model.keras").is_file()
    if p.suffix.lower() in KERAS_SUFFIXES:
        return True
    try:
        with p.open("rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return any(head.startswith(m) for m in _KERAS_MAGIC)


def load_export_model(path: str | os.PathLike):
    """The parsed ``.tflite`` at ``path`` (``toolchain.tflite_model.TFLiteModel``).

    Raises ModelError: missing / unreadable / corrupt file, or a Keras model (with the ``toolchain quantise``
    command to run first)."""
    from toolchain.tflite_model import load_tflite

    p = Path(path)
    if p.exists() and _is_keras(p):
        raise ModelError("export takes a .tflite model, not a Keras model", received=str(p), hint=quantise_hint(p))
    return load_tflite(p)


def is_float_model(model) -> bool:
    """True when the model computes in float (float activations: float32, float16 or dynamic-range models).

    An int8 model with float I/O (``--io float32``: QUANTIZE at the input, DEQUANTIZE at the output) computes in
    int8; its float edge tensors do not make it a float model.
    """
    edges = {op.inputs[0] for op in model.operators if op.opcode == "QUANTIZE" and op.inputs}
    edges |= {o for op in model.operators if op.opcode == "DEQUANTIZE" for o in op.outputs}
    acts = [t for t in model.tensors if t.data is None and not t.is_variable and t.index not in edges]
    return any(t.dtype in ("float32", "float16") for t in acts)
