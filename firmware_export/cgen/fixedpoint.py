"""gemmlowp's fixed-point arithmetic on Python ints, as TFLite's reference integer kernels (and TFLM) use it:
int32 and int16 rounding high multiplies, rounding shifts, and the logistic / tanh approximations. The C engine
evaluates the int8 activation functions offline with these into 256-entry tables (``ops/activations.py``)."""

from __future__ import annotations

I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1
I16_MIN, I16_MAX = -(1 << 15), (1 << 15) - 1


def wrap32(x: int) -> int:
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def _tdiv(a: int, b: int) -> int:
    """C integer division (truncation towards zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def srdhm32(a: int, b: int) -> int:
    """SaturatingRoundingDoublingHighMul for int32."""
    if a == b == I32_MIN:
        return I32_MAX
    ab = a * b
    return _tdiv(ab + ((1 << 30) if ab >= 0 else 1 - (1 << 30)), 1 << 31)


def srdhm16(a: int, b: int) -> int:
    """SaturatingRoundingDoublingHighMul for int16."""
    if a == b == I16_MIN:
        return I16_MAX
    ab = a * b
    return _tdiv(ab + ((1 << 14) if ab >= 0 else 1 - (1 << 14)), 1 << 15)


def sdhm16(a: int, b: int) -> int:
    """TFLite's (non-rounding) SaturatingDoublingHighMul for int16 (reference/hard_swish.h)."""
    if a == b == I16_MIN:
        return I16_MAX
    return _tdiv(a * b, 1 << 15)


def rdbpot(x: int, exponent: int) -> int:
    """RoundingDivideByPOT: x / 2^exponent rounded half away from zero."""
    mask = (1 << exponent) - 1
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if (x & mask) > threshold else 0)


def mbqm(x: int, multiplier: int, shift: int) -> int:
    """MultiplyByQuantizedMultiplier (TFLite's reference definition)."""
    left, right = (shift, 0) if shift > 0 else (0, -shift)
    return rdbpot(srdhm32(wrap32(x * (1 << left)), multiplier), right)


def saturating_mul_pot(x: int, exponent: int) -> int:
    """SaturatingRoundingMultiplyByPOT<exponent> for int32."""
    if exponent == 0:
        return x
    if exponent < 0:
        return rdbpot(x, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    if x > threshold:
        return I32_MAX
    if x < -threshold:
        return I32_MIN
    return wrap32(x << exponent)


def _mul(a: int, b: int) -> int:  # FixedPoint * FixedPoint: raw high multiply, integer bits add up
    return srdhm32(a, b)


def _one(integer_bits: int) -> int:
    return I32_MAX if integer_bits == 0 else 1 << (31 - integer_bits)


def _exp_on_interval_between_negative_one_quarter_and_0_excl(a: int) -> int:
    constant_term, constant_1_over_3 = 1895147668, 715827883
    x = wrap32(a + (1 << 28))
    x2 = _mul(x, x)
    x3 = _mul(x2, x)
    x4 = _mul(x2, x2)
    x4_over_4 = saturating_mul_pot(x4, -2)
    poly = saturating_mul_pot(wrap32(_mul(wrap32(x4_over_4 + x3), constant_1_over_3) + x2), -1)
    return wrap32(constant_term + _mul(constant_term, wrap32(x + poly)))


_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535), (3, 720401),
           (4, 242))


def exp_on_negative_values(a: int, integer_bits: int) -> int:
    """exp(a) for a FixedPoint<int32, integer_bits> a <= 0; the result has 0 integer bits."""
    frac = 31 - integer_bits
    quarter = 1 << (frac - 2)
    a_mod = wrap32((a & (quarter - 1)) - quarter)
    result = _exp_on_interval_between_negative_one_quarter_and_0_excl(saturating_mul_pot(a_mod, integer_bits))
    remainder = wrap32(a_mod - a)
    for exponent, multiplier in _BARREL:
        if integer_bits > exponent and remainder & (1 << (frac + exponent)):
            result = _mul(result, multiplier)
    if integer_bits > 5 and a < -(1 << (36 - integer_bits)):
        result = 0
    return _one(0) if a == 0 else result


def _rounding_half_sum(a: int, b: int) -> int:
    s = a + b
    return _tdiv(s + (1 if s >= 0 else -1), 2)


def _newton_reciprocal_f2(a: int) -> int:
    """The shared Newton-Raphson loop of one_over_one_plus_x / one_minus_x_over_one_plus_x (F2 result)."""
    half_denominator = _rounding_half_sum(a, _one(0))
    x = wrap32(1515870810 + _mul(half_denominator, -1010580540))
    for _ in range(3):
        one_minus = wrap32(_one(2) - _mul(half_denominator, x))
        x = wrap32(x + saturating_mul_pot(_mul(x, one_minus), 2))
    return x


def logistic(a: int, integer_bits: int) -> int:
    """gemmlowp::logistic of a FixedPoint<int32, integer_bits>; result with 0 integer bits."""
    if a == 0:
        return 1 << 30
    abs_a = a if a > 0 else wrap32(-a)
    e = exp_on_negative_values(wrap32(-abs_a), integer_bits)
    positive = saturating_mul_pot(_newton_reciprocal_f2(e), 1)  # Rescale<0>(ExactMulByPot<-1>(x)): F2 -> F1 -> F0
    return positive if a > 0 else wrap32(_one(0) - positive)


def tanh(a: int, integer_bits: int) -> int:
    """gemmlowp::tanh of a FixedPoint<int32, integer_bits>; result with 0 integer bits."""
    if a == 0:
        return 0
    n = a if a < 0 else wrap32(-a)
    e = exp_on_negative_values(n, integer_bits + 1)  # ExactMulByPot<1>: the same raw value, one more integer bit
    t = saturating_mul_pot(wrap32(_newton_reciprocal_f2(e) - _one(2)), 2)  # Rescale<0>(x - One)
    return wrap32(-t) if a < 0 else t
