"""Runtime discovery (which inference runtimes are installed, their versions) and quantised tensor I/O
(float <-> int8/uint8/int16 with a tensor's scale and zero point). Nothing heavy is imported.

Public import path: :mod:`toolchain.runtime` (these are re-exported there).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import numpy as np

from toolchain.errors import RuntimeUnavailableError, UsageError

TFLITE_RUNTIMES = ("litert", "tflite-runtime", "tensorflow", "tflm")
RUNTIMES = TFLITE_RUNTIMES + ("keras",)

_MODULES = {
    "litert": "ai_edge_litert",
    "tflite-runtime": "tflite_runtime",
    "tensorflow": "tensorflow",
    "tflm": "tflite_micro",
    "keras": "keras",
}
_DISTRIBUTIONS = {
    "litert": "ai-edge-litert",
    "tflite-runtime": "tflite-runtime",
    "tensorflow": "tensorflow",
    "tflm": "tflite-micro",
    "keras": "keras",
}
INSTALL_HINTS = {
    "litert": "pip install ai-edge-litert",
    "tflite-runtime": "pip install 'numpy<2' tflite-runtime",
    "tensorflow": "pip install tensorflow",
    "tflm": "pip install tflite-micro",
    "keras": "pip install tensorflow keras",
}


def _installed(runtime: str) -> bool:
    try:
        return importlib.util.find_spec(_MODULES[runtime]) is not None
    except (ImportError, ValueError):
        return False


def available_runtimes() -> list[str]:
    """Installed runtimes, in ``auto`` preference order (found without importing them)."""
    return [r for r in RUNTIMES if _installed(r)]


def runtime_version(runtime: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(_DISTRIBUTIONS[runtime])
    except metadata.PackageNotFoundError:
        mod = importlib.import_module(_MODULES[runtime])
        return str(getattr(mod, "__version__", "unknown"))


def _require(runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise UsageError(f"unknown runtime; choose one of auto, {', '.join(RUNTIMES)}", received=runtime)
    if not _installed(runtime):
        raise RuntimeUnavailableError(f"runtime '{runtime}' is not installed", received=runtime,
                                      hint=f"install it with: {INSTALL_HINTS[runtime]}")


# ---------------------------------------------------------------------------------------------- quantisation


def _qparams(detail: dict[str, Any]) -> tuple[float, int]:
    q = detail.get("quantization")
    if q is None:
        qp = detail.get("quantization_parameters") or {}
        scales = np.asarray(qp.get("scales", []), dtype=np.float64)
        zps = np.asarray(qp.get("zero_points", []), dtype=np.int64)
        return (float(scales[0]) if scales.size else 0.0, int(zps[0]) if zps.size else 0)
    return float(q[0]), int(q[1])


def is_quantized(detail: dict[str, Any]) -> bool:
    """True when the tensor is an integer tensor with a non-zero scale."""
    dtype = np.dtype(detail["dtype"])
    return dtype.kind in "iu" and _qparams(detail)[0] != 0.0


def quantize_input(x_float: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Float array -> the tensor's dtype: ``round(x / scale) + zero_point`` clipped to the dtype range for quantised
    integer tensors (float32 arithmetic, ties away from zero, as TFLite's QUANTIZE kernel), a plain cast otherwise."""
    dtype = np.dtype(detail["dtype"])
    x = np.asarray(x_float)
    if dtype.kind == "f":
        return x.astype(dtype, copy=False)
    scale, zp = _qparams(detail)
    if scale == 0.0:
        return x.astype(dtype)
    info = np.iinfo(dtype)
    # the same arithmetic as TFLite's QUANTIZE kernel: float32 division, round half away from zero
    v = x.astype(np.float32) / np.float32(scale)
    q = np.sign(v) * np.floor(np.abs(v) + np.float32(0.5)) + zp
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize_output(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Tensor values -> float32: ``(y - zero_point) * scale`` for quantised tensors, a cast otherwise."""
    y = np.asarray(y)
    if np.dtype(detail["dtype"]).kind == "f":
        return y.astype(np.float32, copy=False)
    scale, zp = _qparams(detail)
    if scale == 0.0:
        return y.astype(np.float32)
    return ((y.astype(np.float64) - zp) * scale).astype(np.float32)

