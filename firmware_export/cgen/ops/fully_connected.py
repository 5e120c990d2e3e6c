"""FULLY_CONNECTED: int8 or packed int4 weights, the SMLAD kernel over interleaved weight rows (ce_fully_connected_s8)."""

from __future__ import annotations

import numpy as np

from firmware_export.cgen import packing
from firmware_export.cgen.ops import common

OPCODES = ("FULLY_CONNECTED",)


def constant_weights(bld, op):
    """needs constant 2-D int8 or int4 weights with values in range, symmetric (zero point 0)"""
    return common.weights_check(bld, op, 2)


def input_matches(bld, op):
    """needs an input whose element count is a multiple of the weights' input depth"""
    tx, tw = bld.t(op.inputs[0]), bld.t(op.inputs[1])
    k = int(tw.shape[1])
    return k > 0 and tx.num_elements % k == 0, f"input {list(tx.shape)}, weights {list(tw.shape)}"


def channel_scales(bld, op):
    """needs one weight scale per output unit, or one for all"""
    return common.scale_count(bld, op, int(bld.t(op.inputs[1]).shape[0]), "units")


CONSTRAINTS = (common.int8_io, common.quantised_io, constant_weights, input_matches, channel_scales,
               common.int32_bias, common.fused_activation)


def lower(bld, op) -> None:
    x, y = op.inputs[0], op.outputs[0]
    pn, w4, batches, macs, wbytes = params(bld, op)
    body = f"ce_fully_connected_s8{'_w4' if w4 else ''}(&{pn}, {bld.ptr(x)}, {bld.ptr(y)});"
    bld.add_step(op, body, [x], [y], 0, macs, wbytes)


def params(bld, op) -> tuple[str, bool, int, int, int]:
    """Emit the layer's constants and ``ce_fc_params``; returns (params name, int4 weights, batches, MACs,
    constant bytes)."""
    x, w, y = op.inputs[0], op.inputs[1], op.outputs[0]
    b = op.inputs[2] if len(op.inputs) > 2 else -1
    tx, tw = bld.t(x), bld.t(w)
    w4 = tw.dtype == "int4"
    n, k = (int(d) for d in tw.shape)
    batches = tx.num_elements // k
    lo, hi = bld.act_range(op.options.get("fused_activation_function"), y, op)
    _, zx = bld.qparams(x)
    _, zy = bld.qparams(y)
    mn, sn, hn = bld.per_channel(op, x, w, y, n)
    bn = bld.bias(op, b, n)
    w2d = np.asarray(tw.data, dtype=np.int8).reshape(n, k)
    if w4:
        wn, wbytes = bld.packed_weights(packing.pack_int4_rows(w2d))
    else:
        wn, wbytes = bld.weights(packing.interleave_rows(w2d)), n * k
    pn = bld.params("ce_fc_params", batches=batches, in_depth=k, out_depth=n, in_offset=-zx, out_offset=zy,
                    act_min=lo, act_max=hi, weights=wn, bias=bn, mult=mn, shift=sn, rq=hn)
    return pn, w4, batches, batches * n * k, wbytes + 4 * n
