"""TFLite's fixed-point helpers, reproduced bit-exactly in Python (used offline by the C generator)."""

from __future__ import annotations

import ctypes
import ctypes.util
import math
from functools import lru_cache

import numpy as np


def quantize_multiplier(real_multiplier: float) -> tuple[int, int]:
    """TFLite ``QuantizeMultiplier``: ``real = q * 2**(shift - 31)`` with ``q`` in [2**30, 2**31)."""
    if real_multiplier == 0.0:
        return 0, 0
    q, shift = math.frexp(float(real_multiplier))
    q_fixed = int(math.floor(abs(q) * (1 << 31) + 0.5)) * (1 if q >= 0 else -1)  # TfLiteRound: half away
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        shift = 0
        q_fixed = 0
    return q_fixed, shift


def srdhm(a: np.ndarray, b: int) -> np.ndarray:
    """SaturatingRoundingDoublingHighMul (vectorised, int64 maths)."""
    ab = np.asarray(a, dtype=np.int64) * np.int64(b)
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    num = ab + nudge
    res = np.where(num >= 0, num // (1 << 31), -((-num) // (1 << 31)))  # truncating division like C
    return res.astype(np.int64)


def rdbpot(x: np.ndarray, exponent: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.int64)
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(x: np.ndarray, multiplier: int, shift: int) -> np.ndarray:
    left = shift if shift > 0 else 0
    right = 0 if shift > 0 else -shift
    return rdbpot(srdhm(np.asarray(x, dtype=np.int64) * (1 << left), multiplier), right)


@lru_cache(maxsize=1)
def _libm_expf():
    name = ctypes.util.find_library("m")
    if not name:
        return None
    try:
        lib = ctypes.CDLL(name)
        fn = lib.expf
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_float
    fn.argtypes = [ctypes.c_float]
    return fn


def softmax_exp_table(input_scale: float, beta: float) -> np.ndarray:
    """LiteRT ``PopulateSoftmaxLookupTable``: ``table[d] = expf((-input_scale * beta) * d)`` in float32.

    ``expf`` is the C library's (as in LiteRT on the same host); without a loadable libm the float64
    exponential rounded to float32 is used.
    """
    scale = np.float32(-np.float32(input_scale) * np.float32(beta))
    args = (scale * np.arange(256, dtype=np.float32)).astype(np.float32)
    expf = _libm_expf()
    if expf is not None:
        return np.array([expf(float(a)) for a in args], dtype=np.float32)
    return np.exp(args.astype(np.float64)).astype(np.float32)
