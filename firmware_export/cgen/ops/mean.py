"""MEAN over contiguous axes with constant axes (TFLite's reference integer mean; ce_mean_s8)."""

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


def not_keep_dims_hw(bld, op):
    """MEAN with keep_dims over height and width is not supported by the C engine (LiteRT routes it to
    optimized_integer_ops::Mean, whose arithmetic is not reproduced here): use keepdims=False, e.g.
    GlobalAveragePooling2D()"""
    keep = bool(op.options.get("keep_dims", False))
    return not (keep and len(bld.t(op.inputs[0]).shape) == 4 and _axes(bld, op) == [1, 2]), ""


CONSTRAINTS = (common.int8_io, common.quantised_io, constant_axes, contiguous_axes, not_keep_dims_hw)


def lower(bld, op) -> None:
    x, y = op.inputs[0], op.outputs[0]
    tx = bld.t(x)
    axes = _axes(bld, op)
    outer = int(np.prod(tx.shape[:axes[0]], dtype=np.int64))
    reduce_ = int(np.prod(tx.shape[axes[0]:axes[-1] + 1], dtype=np.int64))
    inner = int(np.prod(tx.shape[axes[-1] + 1:], dtype=np.int64))
    sx, zx = bld.qparams(x)
    sy, zy = bld.qparams(y)
    m, sh = quantize_multiplier(float(sx) / (float(sy) * reduce_))
    pn = bld.const_name("params")
    bld.consts.append(f"static const ce_mean_params {pn} = {{ {outer}, {reduce_}, {inner}, {zx}, {zy}, {m}, {sh} }};\n")
    bld.add_step(op, f"ce_mean_s8(&{pn}, {bld.ptr(x)}, {bld.ptr(y)});", [x], [y])
