"""MEAN over contiguous constant axes, with or without keep_dims (ce_mean_s8). TFLM computes every int8 MEAN with
reference_ops::QuantizedMeanOrSum, keep_dims or not; LiteRT's x86 kernels take another path for keep_dims over
height and width (optimized_integer_ops::Mean), which is not the device's arithmetic."""

from __future__ import annotations

import numpy as np

from firmware_export.cgen.ops import common
from firmware_export.cgen.quant import quantize_multiplier

OPCODES = ("MEAN",)


def _axes(bld, op) -> list[int]:
    rank = len(bld.t(op.inputs[0]).shape)
    return sorted({int(a) % max(rank, 1) for a in np.asarray(bld.t(op.inputs[1]).data).reshape(-1)})


def constant_axes(bld, op):
    """needs constant axes"""
    return bld.t(op.inputs[1]).data is not None, f"tensor '{bld.t(op.inputs[1]).name}'"


def contiguous_axes(bld, op):
    """supports a mean over one run of contiguous axes only"""
    axes = _axes(bld, op)
    return bool(axes) and axes == list(range(axes[0], axes[-1] + 1)), f"axes {axes}"


CONSTRAINTS = (common.int8_io, common.quantised_io, constant_axes, contiguous_axes)


def lower(bld, op) -> None:
    x, y = op.inputs[0], op.outputs[0]
    tx = bld.t(x)
    axes = _axes(bld, op)
    outer = int(np.prod(tx.shape[:axes[0]], dtype=np.int64))
    reduce_ = int(np.prod(tx.shape[axes[0]:axes[-1] + 1], dtype=np.int64))
    inner = int(np.prod(tx.shape[axes[-1] + 1:], dtype=np.int64))
    sx, zx = bld.qparams(x)
    sy, zy = bld.qparams(y)
    # TFLM's QuantizedMeanOrSum: QuantizeMultiplier(input / output scale), then 1/N folded in with a shift
    m, sh = quantize_multiplier(float(sx) / float(sy))
    k = min(reduce_.bit_length() - 1, 32, 31 + sh)
    m, sh = (m << k) // reduce_, sh - k
    pn = bld.params("ce_mean_params", outer=outer, reduce=reduce_, inner=inner, in_zero_point=zx, out_zero_point=zy,
                    mult=m, shift=sh)
    bld.add_step(op, f"ce_mean_s8(&{pn}, {bld.ptr(x)}, {bld.ptr(y)});", [x], [y])
