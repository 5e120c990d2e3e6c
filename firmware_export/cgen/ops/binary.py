"""Element-wise binary operators with broadcasting (up to 4-D) and constant operands: SUB, MUL, MAXIMUM, MINIMUM
(ce_binary_s8), with TFLM's reference arithmetic: SUB rescales both inputs to twice the larger input scale with 20
bits of headroom (multipliers from float32 scale arithmetic, as TFLM's sub_common.cc), MUL requantises the
product of the zero-point-corrected inputs, MAXIMUM / MINIMUM compare the raw int8 values (TFLM does not rescale
them)."""

from __future__ import annotations

import numpy as np

from firmware_export.cgen.builder import _array, c_list
from firmware_export.cgen.ops import common
from firmware_export.cgen.quant import quantize_multiplier

OPCODES = ("SUB", "MUL", "MAXIMUM", "MINIMUM")
KIND = {"SUB": 0, "MUL": 1, "MAXIMUM": 2, "MINIMUM": 3}
LEFT_SHIFT = 20


def _dims4(shape) -> list[int] | None:
    shape = [int(d) for d in shape]
    return None if len(shape) > 4 else [1] * (4 - len(shape)) + shape


def _strides(in_shape, out4) -> list[int]:
    d = _dims4(in_shape)
    strides, step = [0] * 4, 1
    for k in range(3, -1, -1):
        strides[k] = 0 if d[k] == 1 and out4[k] != 1 else step
        step *= d[k]
    return strides


def broadcastable(bld, op):
    """needs operands of rank <= 4 that broadcast to the output shape (each dimension equal or 1)"""
    ta, tb, ty = (bld.t(i) for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    a, b, y = _dims4(ta.shape), _dims4(tb.shape), _dims4(ty.shape)
    ok = a is not None and b is not None and y is not None and all(
        ya == max(aa, bb) and aa in (1, ya) and bb in (1, ya) for aa, bb, ya in zip(a, b, y))
    return ok, f"{list(ta.shape)} and {list(tb.shape)} -> {list(ty.shape)}"


def not_both_constant(bld, op):
    """needs at least one non-constant operand"""
    return not all(bld.t(i).data is not None for i in op.inputs[:2]), ""


def _sub_multipliers(bld, op):
    f = np.float32
    (s1, _), (s2, _), (so, _) = (bld.qparams(i) for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    twice = f(2) * max(f(s1), f(s2))
    return (quantize_multiplier(float(f(s1) / twice)), quantize_multiplier(float(f(s2) / twice)),
            quantize_multiplier(float(twice / (f(1 << LEFT_SHIFT) * f(so)))))


def sub_rescale_below_one(bld, op):
    """SUB needs rescaling multipliers below 1 (TFLite's QuantizeMultiplierSmallerThanOneExp)"""
    if op.opcode != "SUB":
        return True, ""
    return max(sh for _, sh in _sub_multipliers(bld, op)) <= 0, "output scale far below the input scales"


def activation(bld, op):
    """supports the fused activations NONE, RELU, RELU6 and RELU_N1_TO_1 (SUB, MUL) and none (MAXIMUM, MINIMUM)"""
    act = op.options.get("fused_activation_function")
    allowed = common.ACTIVATIONS if op.opcode in ("SUB", "MUL") else (None, "NONE")
    return act in allowed, f"{act}"


def quantised_operands(bld, op):
    """needs quantised (scale and zero point) operands and output"""
    bad = [bld.t(i) for i in (op.inputs[0], op.inputs[1], op.outputs[0])
           if bld.t(i).scale is None or bld.t(i).scale.size == 0]
    return not bad, ", ".join(f"tensor '{t.name}'" for t in bad)


CONSTRAINTS = (common.int8_all, quantised_operands, broadcastable, not_both_constant, sub_rescale_below_one,
               activation)


def _operand(bld, t: int) -> str:
    tt = bld.t(t)
    if tt.data is None:
        return bld.ptr(t)
    name = bld.const_name(f"in{t}")
    bld.consts.append(_array("int8_t", name, np.asarray(tt.data, dtype=np.int64), 24))
    return name


def lower(bld, op) -> None:
    a, b, y = op.inputs[0], op.inputs[1], op.outputs[0]
    ty = bld.t(y)
    out4 = _dims4(ty.shape)
    (_, za), (_, zb), (_, zy) = (bld.qparams(i) for i in (a, b, y))
    m1 = s1 = m2 = s2 = mo = so = 0
    if op.opcode == "SUB":
        (m1, s1), (m2, s2), (mo, so) = _sub_multipliers(bld, op)
    elif op.opcode == "MUL":
        (sa, _), (sb, _), (sy, _) = (bld.qparams(i) for i in (a, b, y))
        mo, so = quantize_multiplier(float(sa) * float(sb) / float(sy))
    lo, hi = bld.act_range(op.options.get("fused_activation_function"), y, op)
    pa, pb = _operand(bld, a), _operand(bld, b)
    st_a, st_b = _strides(bld.t(a).shape, out4), _strides(bld.t(b).shape, out4)
    pn = bld.params("ce_binary_params", op=KIND[op.opcode], dims=c_list(out4), stride1=c_list(st_a),
                    stride2=c_list(st_b), in1_offset=-za, in2_offset=-zb, out_offset=zy, in1_mult=m1, in1_shift=s1,
                    in2_mult=m2, in2_shift=s2, out_mult=mo, out_shift=so, act_min=lo, act_max=hi)
    reads = [t for t in (a, b) if bld.t(t).data is None]
    for cand in reads:
        if tuple(bld.t(cand).shape) == tuple(ty.shape) and bld.can_overwrite(op, cand):
            bld.alias[y] = cand  # out[i] reads this operand at index i only
            break
    bld.add_step(op, f"ce_binary_s8(&{pn}, {pa}, {pb}, {bld.ptr(y)});", reads, [y])
