"""SOFTMAX: the gemmlowp fixed-point softmax of TFLite's reference kernels and TFLM (ce_softmax_s8)."""

from __future__ import annotations

import numpy as np

from firmware_export.cgen.ops import common
from firmware_export.cgen.quant import softmax_params

OPCODES = ("SOFTMAX",)


def output_quantisation(bld, op):
    """int8 SOFTMAX needs an output scale of 1/256 and zero point -128 (as TFLite's and TFLM's kernels)"""
    sy, zy = bld.qparams(op.outputs[0])
    return np.float32(sy) == np.float32(1.0 / 256) and zy == -128, f"scale {sy:g}, zero point {zy}"


def representable_beta(bld, op):
    """int8 SOFTMAX needs an input scale x beta its fixed-point multiplier can represent"""
    sx, _ = bld.qparams(op.inputs[0])
    try:
        softmax_params(sx, float(op.options.get("beta", 1.0)))
    except ValueError as exc:
        return False, str(exc)
    return True, ""


CONSTRAINTS = (common.int8_io, common.quantised_io, output_quantisation, representable_beta)


def lower(bld, op) -> None:
    x, y = op.inputs[0], op.outputs[0]
    tx = bld.t(x)
    sx, _ = bld.qparams(x)
    depth = int(tx.shape[-1]) if tx.shape else 1
    outer = tx.num_elements // max(depth, 1)
    mult, left_shift, diff_min = softmax_params(sx, float(op.options.get("beta", 1.0)))
    pn = bld.params("ce_softmax_params", outer=outer, depth=depth, mult=mult, left_shift=left_shift, diff_min=diff_min)
    bld.add_step(op, f"ce_softmax_s8(&{pn}, {bld.ptr(x)}, {bld.ptr(y)});", [x], [y])
