"""TFLite's fixed-point helpers, reproduced bit-exactly in Python (used offline by the C generator)."""

from __future__ import annotations

import math

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


SOFTMAX_DIFF_INTEGER_BITS = 5  # kScaledDiffIntegerBits of TFLite's int8 SOFTMAX: the exp() input is Q5.26


def softmax_params(input_scale: float, beta: float) -> tuple[int, int, int]:
    """TFLite ``PreprocessSoftmaxScaling`` + ``CalculateInputRadius`` for int8 SOFTMAX (as TFLM's
    ``CalculateSoftmaxParams``): ``(input_multiplier, input_left_shift, diff_min)``.

    Raises ValueError when the scaled input multiplier is below one (TFLite's kernel refuses the model too)."""
    bits = SOFTMAX_DIFF_INTEGER_BITS
    real = min(float(beta) * float(input_scale) * float(1 << (31 - bits)), float((1 << 31) - 1))
    mult, left_shift = quantize_multiplier(real)
    if real <= 0 or left_shift < 0:
        raise ValueError(f"input scale x beta = {float(beta) * float(input_scale):g} is too small for int8 SOFTMAX")
    radius = math.floor(((1 << bits) - 1) * float(1 << (31 - bits)) / float(1 << left_shift))
    return mult, left_shift, -int(radius)
