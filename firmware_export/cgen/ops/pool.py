"""AVERAGE_POOL_2D and MAX_POOL_2D (ce_avgpool_s8, ce_maxpool_s8)."""

from __future__ import annotations

from firmware_export.cgen.ops import common

OPCODES = ("AVERAGE_POOL_2D", "MAX_POOL_2D")


def batch1_4d(bld, op):
    """needs 4-D input and output tensors of batch 1"""
    sx, sy = list(bld.t(op.inputs[0]).shape), list(bld.t(op.outputs[0]).shape)
    return len(sx) == 4 and len(sy) == 4 and sx[0] == 1, f"{sx} -> {sy}"


def dims_int16(bld, op):
    """dimensions, filter sizes and strides above 32767 are not supported"""
    o = op.options
    vals = [int(d) for d in tuple(bld.t(op.inputs[0]).shape[1:]) + tuple(bld.t(op.outputs[0]).shape[1:3])]
    vals += [int(o.get(k, 1)) for k in ("filter_height", "filter_width", "stride_h", "stride_w")]
    return max(vals) <= 32767, f"{max(vals)}"


CONSTRAINTS = (common.int8_io, common.quantised_io, batch1_4d, common.same_quantisation, dims_int16,
               common.fused_activation)


def lower(bld, op) -> None:
    x, y = op.inputs[0], op.outputs[0]
    tx, ty = bld.t(x), bld.t(y)
    o = op.options
    _, ih, iw, c = tx.shape
    _, oh, ow, _ = ty.shape
    fh, fw = int(o["filter_height"]), int(o["filter_width"])
    sh, sw = int(o["stride_h"]), int(o["stride_w"])
    pt = bld.padding(o.get("padding", "VALID"), ih, oh, fh, sh, 1)
    pl = bld.padding(o.get("padding", "VALID"), iw, ow, fw, sw, 1)
    lo, hi = bld.act_range(o.get("fused_activation_function"), y, op)
    pn = bld.params("ce_pool_params", in_h=ih, in_w=iw, ch=c, out_h=oh, out_w=ow, f_h=fh, f_w=fw, stride_h=sh,
                    stride_w=sw, pad_t=pt, pad_l=pl, act_min=lo, act_max=hi)
    fn = "ce_avgpool_s8" if op.opcode == "AVERAGE_POOL_2D" else "ce_maxpool_s8"
    bld.add_step(op, f"{fn}(&{pn}, {bld.ptr(x)}, {bld.ptr(y)});", [x], [y])
