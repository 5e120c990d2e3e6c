"""Element-wise int8 activations: RELU, RELU6, LEAKY_RELU, LOGISTIC, TANH, HARD_SWISH. Each output depends on the
input value only, so the generator evaluates TFLM's reference integer arithmetic (its Prepare-time multipliers and
its Eval loop, gemmlowp fixed point: ``firmware_export.cgen.fixedpoint``) on all 256 int8 values into a table, and
the engine runs one table look-up per element (ce_lut_s8; in place when the input is dead)."""

from __future__ import annotations

import math

import numpy as np

from firmware_export.cgen import fixedpoint as fx
from firmware_export.cgen.builder import _array
from firmware_export.cgen.ops import common
from firmware_export.cgen.quant import quantize_multiplier

OPCODES = ("RELU", "RELU6", "LEAKY_RELU", "LOGISTIC", "TANH", "HARD_SWISH")
INPUT_INTEGER_BITS = 4  # LOGISTIC / TANH: the input in Q4.27


def _f32(v) -> np.float32:
    return np.float32(v)


def _clamp8(v: int) -> int:
    return max(-128, min(127, v))


def _scales(bld, op):
    (sx, zx), (sy, zy) = bld.qparams(op.inputs[0]), bld.qparams(op.outputs[0])
    return _f32(sx), zx, _f32(sy), zy


def _relu(bld, op):
    sx, zx, sy, zy = _scales(bld, op)
    m, sh = quantize_multiplier(float(sx / sy))
    lo = max(-128, zy)
    return [min(127, max(lo, zy + fx.mbqm(q - zx, m, sh))) for q in range(-128, 128)]


def _relu6(bld, op):
    # TFLM's Relu6Quantized clamps the raw values to [zero, six] of the *input* quantisation (no rescaling)
    sx, zx, _, _ = _scales(bld, op)
    r = float(_f32(6.0) / sx)
    six = _clamp8(int(math.floor(abs(r) + 0.5)) * (1 if r >= 0 else -1) + zx)
    return [six if q > six else zx if q < zx else q for q in range(-128, 128)]


def _leaky_relu(bld, op):
    sx, zx, sy, zy = _scales(bld, op)
    alpha = _f32(op.options.get("alpha", 0.2))
    mi, si = quantize_multiplier(float(sx / sy))
    real_alpha = float(_f32(sx * alpha) / sy)
    ma, sa = quantize_multiplier(abs(real_alpha))
    sign = -1 if real_alpha < 0 else 1
    out = []
    for q in range(-128, 128):
        x = q - zx
        out.append(_clamp8(zy + (fx.mbqm(x, mi, si) if x >= 0 else sign * fx.mbqm(x, ma, sa))))
    return out


def _sigmoid_params(sx) -> tuple[int, int, int]:
    real = float(sx) * float(1 << (31 - INPUT_INTEGER_BITS))
    q, left_shift = math.frexp(real)
    mult = int(math.floor(abs(q) * (1 << 31) + 0.5))
    radius = math.floor(1.0 * ((1 << INPUT_INTEGER_BITS) - 1) * (1 << (31 - INPUT_INTEGER_BITS)) / 2.0 ** left_shift)
    return mult, left_shift, int(radius)


def _sigmoid_table(bld, op, fn, out_shift: int, out_offset: int) -> list[int]:
    """TFLM's int8 LOGISTIC / TANH loop: saturate beyond the input radius, else Q4.27 input -> gemmlowp ``fn``
    (Q0.31) -> rounding shift to the output."""
    sx, zx, _, _ = _scales(bld, op)
    mult, shift, radius = _sigmoid_params(sx)
    out = []
    for q in range(-128, 128):
        x = q - zx
        if x <= -radius:
            out.append(-128)
        elif x >= radius:
            out.append(127)
        else:
            y = fn(fx.mbqm(x, mult, shift), INPUT_INTEGER_BITS)
            out.append(_clamp8(fx.rdbpot(y, out_shift) + out_offset))
    return out


def _logistic(bld, op):
    return _sigmoid_table(bld, op, fx.logistic, 31 - 8, -128)  # output scale 1/256, zero point -128


def _tanh(bld, op):
    return _sigmoid_table(bld, op, fx.tanh, 31 - 7, 0)  # output scale 1/128, zero point 0


def _int16_multiplier(m32: int) -> int:
    """TFLite's DownScaleInt32ToInt16Multiplier."""
    return fx.I16_MAX if m32 >= fx.I32_MAX - (1 << 15) else (m32 + (1 << 15)) >> 16


def _hard_swish_params(bld, op):
    sx, zx, sy, zy = _scales(bld, op)
    hires = _f32(_f32(1.0 / 128.0) * sx)
    m_out, e_out = quantize_multiplier(float(hires / sy))
    m_rel, e_rel = quantize_multiplier(float(hires / _f32(3.0 / 32768.0)))
    return zx, zy, _int16_multiplier(m_out), e_out, _int16_multiplier(m_rel), e_rel


def _sat16(v: int) -> int:
    return max(fx.I16_MIN, min(fx.I16_MAX, v))


def _hard_swish(bld, op):
    zx, zy, m_out, e_out, m_rel, e_rel = _hard_swish_params(bld, op)
    out = []
    for q in range(-128, 128):
        hires = (q - zx) * 128
        pre_out = fx.srdhm16(hires, m_out)
        rel = hires
        if e_rel > 0:
            rel = _sat16(rel * (1 << (e_rel - 1)))
        rel = fx.srdhm16(rel, m_rel)
        if e_rel > 0:
            rel = _sat16(rel * 2)
        if e_rel < 0:
            rel = fx.rdbpot(rel, -e_rel)
        rel = (rel + (1 << 15)) >> 1
        v = fx.rdbpot(fx.sdhm16(rel, pre_out), -e_out) + zy
        out.append(_clamp8(v))
    return out


TABLES = {"RELU": _relu, "RELU6": _relu6, "LEAKY_RELU": _leaky_relu, "LOGISTIC": _logistic, "TANH": _tanh,
          "HARD_SWISH": _hard_swish}


def same_size(bld, op):
    """needs an output of the input's size"""
    tx, ty = bld.t(op.inputs[0]), bld.t(op.outputs[0])
    return tx.num_elements == ty.num_elements, f"{list(tx.shape)} -> {list(ty.shape)}"


def sigmoid_quantisation(bld, op):
    """LOGISTIC needs an output zero point of -128 and TANH one of 0 (as TFLM's kernels), and an input scale of at
    least 2^-27"""
    if op.opcode not in ("LOGISTIC", "TANH"):
        return True, ""
    sx, _, sy, zy = _scales(bld, op)
    want = -128 if op.opcode == "LOGISTIC" else 0
    mult, shift, _ = _sigmoid_params(sx)
    ok = zy == want and shift >= 0 and mult < (1 << 31)
    return ok, f"output zero point {zy}, input scale {float(sx):g}"


def hard_swish_exponent(bld, op):
    """HARD_SWISH needs an output scale of at least the input scale / 128 (TFLM's output multiplier exponent <= 0)"""
    if op.opcode != "HARD_SWISH":
        return True, ""
    params = _hard_swish_params(bld, op)
    return params[3] <= 0, f"exponent {params[3]}"


CONSTRAINTS = (common.int8_io, common.quantised_io, common.data_input_not_constant, same_size,
               sigmoid_quantisation, hard_swish_exponent)


def table(bld, op) -> list[int]:
    """The 256 int8 outputs for inputs -128..127."""
    return TABLES[op.opcode](bld, op)


def lower(bld, op) -> None:
    x, y = op.inputs[0], op.outputs[0]
    name = bld.const_name("lut")
    bld.consts.append(f"/* {op.opcode}: output for input -128..127 (TFLM reference arithmetic) */\n" +
                      _array("int8_t", name, table(bld, op), 16))
    if bld.can_overwrite(op, x):
        bld.alias[y] = x  # element-wise: out[i] depends on in[i] only
    bld.add_step(op, f"ce_lut_s8({name}, {bld.ptr(x)}, {bld.ptr(y)}, {bld.t(y).num_elements});", [x], [y])
