"""Read a ``.tflite`` flatbuffer into plain Python objects, without TensorFlow.

Uses the maintained ``tflite`` schema package (generated from TensorFlow's ``schema.fbs``) for field access and
adds what it does not do: identifier and bounds checks so that corrupt, truncated or non-TFLite input raises
:class:`~toolchain.errors.ModelError` instead of an arbitrary exception, builtin options converted to a
snake_case dict with enum names, and constant tensor data as correctly typed, reshaped NumPy arrays.

Only the main subgraph (index 0) is decoded into ``tensors``/``operators``; ``num_subgraphs`` tells whether
there are more (control-flow models).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from toolchain.errors import ModelError
from toolchain.tflite_parse import _parse
from toolchain.tflite_types import _INT_RANGES, Operator, Tensor, TFLiteModel  # noqa: F401  (re-exported)

FILE_IDENTIFIER = b"TFL3"


# --------------------------------------------------------------------------------------------------------------
# public entry points


def load_tflite(path: str | os.PathLike) -> TFLiteModel:
    """Read and parse a .tflite file; ModelError for missing, unreadable or invalid files."""
    p = Path(path)
    if not p.exists():
        raise ModelError("model file not found", received=str(p))
    if p.is_dir():
        raise ModelError("expected a .tflite file, got a directory", received=str(p))
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ModelError("cannot read model file", received=f"{p} ({exc.strerror})") from exc
    return parse_tflite(data, str(p))


def parse_tflite(data: bytes, source: str = "<bytes>") -> TFLiteModel:
    """Parse TFLite flatbuffer bytes. ``source`` names the input in error messages."""
    data = bytes(data)
    if len(data) < 8:
        raise ModelError("not a valid TFLite flatbuffer (file too short)", received=f"{source}: {len(data)} bytes")
    if data[4:8] != FILE_IDENTIFIER:
        raise ModelError("not a valid TFLite flatbuffer (missing 'TFL3' identifier)",
                         received=f"{source}: found {data[4:8]!r}")
    try:
        return _parse(data, source)
    except ModelError:
        raise
    except (IndexError, struct.error, ValueError, TypeError, OverflowError, UnicodeDecodeError, AttributeError,
            KeyError, MemoryError, RecursionError) as exc:
        detail = (str(exc).strip().splitlines() or [""])[0][:120]
        raise ModelError("not a valid TFLite flatbuffer (corrupt or truncated)",
                         received=f"{source} ({len(data):,} bytes): {type(exc).__name__}: {detail}") from exc

