"""ADD of two int8 tensors of the same shape (TFLite's reference rescaling: inputs to a common scale with 20 bits
of headroom, then the output multiplier; ce_add_s8)."""

from __future__ import annotations

import numpy as np

from firmware_export.cgen.ops import common
from firmware_export.cgen.quant import quantize_multiplier

OPCODES = ("ADD",)
LEFT_SHIFT = 20


def same_shapes(bld, op):
    """supports operands of the same shape only (no broadcasting)"""
    ta, tb, ty = bld.t(op.inputs[0]), bld.t(op.inputs[1]), bld.t(op.outputs[0])
    ok = tuple(ta.shape) == tuple(tb.shape) and ta.num_elements == ty.num_elements
    return ok, f"{list(ta.shape)} + {list(tb.shape)} -> {list(ty.shape)}"


def _multipliers(bld, op):
    (s1, _), (s2, _), (so, _) = (bld.qparams(i) for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    twice_max = 2.0 * float(max(np.float32(s1), np.float32(s2)))
    return (quantize_multiplier(float(s1) / twice_max), quantize_multiplier(float(s2) / twice_max),
            quantize_multiplier(twice_max / ((1 << LEFT_SHIFT) * float(so))))


def rescale_below_one(bld, op):
    """needs rescaling multipliers below 1 (the output scale is far below the input scales), as TFLite's
    QuantizeMultiplierSmallerThanOneExp requires"""
    (_, sh1), (_, sh2), (_, sho) = _multipliers(bld, op)
    scales = [f"{bld.qparams(i)[0]:g}" for i in (op.inputs[0], op.inputs[1], op.outputs[0])]
    return max(sh1, sh2, sho) <= 0, f"input scales {scales[0]}, {scales[1]}, output scale {scales[2]}"


CONSTRAINTS = (common.int8_all, common.quantised_all, common.non_constant_inputs, same_shapes, rescale_below_one,
               common.fused_activation)


def lower(bld, op) -> None:
    a, b, y = op.inputs[0], op.inputs[1], op.outputs[0]
    ty = bld.t(y)
    pn = params(bld, op)
    for cand in (a, b):
        if bld.can_overwrite(op, cand) and bld.t(cand).nbytes == ty.nbytes:
            bld.alias[y] = cand  # element-wise: out[i] depends on in[i] only
            break
    bld.add_step(op, f"ce_add_s8(&{pn}, {bld.ptr(a)}, {bld.ptr(b)}, {bld.ptr(y)}, @S32@);",
                 [a, b], [y], TABLE_BYTES)


TABLE_BYTES = 2 * 256 * 4  # ce_add_tables: each input rescaled for every int8 value


def params(bld, op) -> str:
    """Emit the layer's ``ce_add_params``; returns its name."""
    a, b, y = op.inputs[0], op.inputs[1], op.outputs[0]
    ty = bld.t(y)
    _, z1 = bld.qparams(a)
    _, z2 = bld.qparams(b)
    _, zo = bld.qparams(y)
    (m1, sh1), (m2, sh2), (mo, sho) = _multipliers(bld, op)
    lo, hi = bld.act_range(op.options.get("fused_activation_function"), y, op)
    pn = bld.params("ce_add_params", size=ty.num_elements, in1_mult=m1, in2_mult=m2, out_mult=mo,
                    left_shift=LEFT_SHIFT, in1_offset=-z1, in1_shift=sh1, in2_offset=-z2, in2_shift=sh2, out_offset=zo,
                    out_shift=sho, act_min=lo, act_max=hi)
    return pn
