"""CONV_2D and DEPTHWISE_CONV_2D: im2col + SMLAD kernels (ce_conv2d_s8), the depthwise row-ring kernels
(ce_depthwise_s8, ce_depthwise3x3_s8), int8 or packed int4 weights (``_w4`` kernels)."""

from __future__ import annotations

import numpy as np

from firmware_export.cgen import packing
from firmware_export.cgen.ops import common

OPCODES = ("CONV_2D", "DEPTHWISE_CONV_2D")


def batch1_4d(bld, op):
    """needs 4-D input and output tensors of batch 1"""
    sx, sy = list(bld.t(op.inputs[0]).shape), list(bld.t(op.outputs[0]).shape)
    return len(sx) == 4 and len(sy) == 4 and sx[0] == 1, f"{sx} -> {sy}"


def constant_weights(bld, op):
    """needs constant int8 or int4 weights with values in range, symmetric (zero point 0)"""
    return common.weights_check(bld, op, 4)


def weights_match(bld, op):
    """weights must match the tensors (grouped convolutions are not supported)"""
    tx, tw, ty = bld.t(op.inputs[0]), bld.t(op.inputs[1]), bld.t(op.outputs[0])
    ic, oc = int(tx.shape[3]), int(ty.shape[3])
    if op.opcode == "DEPTHWISE_CONV_2D":
        ok = int(tw.shape[0]) == 1 and int(tw.shape[3]) == oc and ic > 0 and oc % ic == 0
    else:
        ok = int(tw.shape[0]) == oc and int(tw.shape[3]) == ic
    return ok, f"weights {list(tw.shape)}, input {list(tx.shape)}, output {list(ty.shape)}"


def channel_scales(bld, op):
    """needs one weight scale per output channel, or one for all"""
    return common.scale_count(bld, op, int(bld.t(op.outputs[0]).shape[3]), "channels")


def kernel_dims(bld, op):
    """dimensions above 32767 and generic depthwise kernels taller than 16 (or int4 depthwise kernels above the
    accumulator's tap limit) are not supported"""
    tx, tw, ty = bld.t(op.inputs[0]), bld.t(op.inputs[1]), bld.t(op.outputs[0])
    dims = [int(d) for d in tuple(tx.shape[1:]) + tuple(ty.shape[1:]) + tuple(tw.shape[1:3])]
    if max(dims) > 32767:
        return False, f"dimension {max(dims)}"
    kh, kw = int(tw.shape[1]), int(tw.shape[2])
    if op.opcode == "DEPTHWISE_CONV_2D" and int(tx.shape[3]) != 1:
        if kh > 16:
            return False, f"{kh}x{kw} kernel"
        if tw.dtype == "int4" and kh * kw > packing.MAX_INT4_DEPTHWISE_TAPS:
            return False, f"int4 {kh}x{kw} kernel (at most {packing.MAX_INT4_DEPTHWISE_TAPS} taps)"
    return True, ""


CONSTRAINTS = (common.int8_io, common.quantised_io, batch1_4d, constant_weights, weights_match, channel_scales,
               common.int32_bias, kernel_dims, common.fused_activation)


def lower(bld, op, fc=None) -> None:
    """Lower ``op``; with ``fc`` (``fused_fc``) the convolution and that FULLY_CONNECTED as one step."""
    _lower(bld, op, op.opcode == "DEPTHWISE_CONV_2D", fc)


def emit(bld, op) -> tuple[str, int, int, int]:
    """Emit a CONV_2D's constants and ``ce_conv_params`` for a fused step (no step of its own, no in-place
    storage); returns (params name, scratch bytes, MACs, constant bytes)."""
    return _lower(bld, op, False, None, True)


def fused_fc(bld, op, consumers: dict[int, list]):
    """The FULLY_CONNECTED operator that reads the whole output of convolution ``op`` and is its only reader
    (through RESHAPEs), when the two run as one step (``ce_conv2d_fc_s8``): the convolution's output is then
    never stored whole. ``consumers``: alias root -> operators reading it. None when they cannot be fused."""
    from firmware_export.cgen.builder import resolve

    if op.opcode == "DEPTHWISE_CONV_2D" and int(bld.t(op.inputs[0]).shape[3]) != 1:
        return None
    y = op.outputs[0]
    ty, tw = bld.t(y), bld.t(op.inputs[1])
    readers = [r for r in consumers.get(resolve(bld._static_root, y), []) if r.opcode != "RESHAPE"]
    if tw.dtype == "int4" or len(readers) != 1 or readers[0].opcode != "FULLY_CONNECTED":
        return None
    fc = readers[0]
    if resolve(bld._static_root, y) in bld.protected or bld.t(fc.inputs[1]).dtype == "int4":
        return None
    tx = bld.t(fc.inputs[0])
    k = int(bld.t(fc.inputs[1]).shape[1])
    ok = (resolve(bld._static_root, fc.inputs[0]) == resolve(bld._static_root, y) and tx.num_elements == k
          and ty.num_elements == k and (int(ty.shape[2]) * int(ty.shape[3])) % 4 == 0)
    return fc if ok else None


# sizeof(ce_dw3p_tile_args): the row-ring 3x3 depthwise kernel's per-channel constants (ce_dw3_table)
DW3_ROW_ARGS_BYTES = 68


def _lower(bld, op, depthwise: bool, fc=None, emit_only: bool = False):
    x, w, y = op.inputs[0], op.inputs[1], op.outputs[0]
    b = op.inputs[2] if len(op.inputs) > 2 else -1
    tx, tw, ty = bld.t(x), bld.t(w), bld.t(y)
    w4 = tw.dtype == "int4"
    o = op.options
    _, ih, iw, ic = tx.shape
    _, oh, ow, oc = ty.shape
    kh, kw = int(tw.shape[1]), int(tw.shape[2])
    sh, sw = int(o.get("stride_h", 1)), int(o.get("stride_w", 1))
    dh, dw = int(o.get("dilation_h_factor", 1)), int(o.get("dilation_w_factor", 1))
    pad_t = bld.padding(o.get("padding", "VALID"), ih, oh, kh, sh, dh)
    pad_l = bld.padding(o.get("padding", "VALID"), iw, ow, kw, sw, dw)
    lo, hi = bld.act_range(o.get("fused_activation_function"), y, op)
    _, zx = bld.qparams(x)
    _, zy = bld.qparams(y)
    warr = np.asarray(tw.data, dtype=np.int8)
    as_conv = (not depthwise) or ic == 1
    dm = oc // ic if depthwise else 1
    dw3x3 = (depthwise and not as_conv and (kh, kw, dh, dw, dm) == (3, 3, 1, 1, 1) and ic % 4 == 0
             and pad_t <= 1 and pad_l <= 1
             and ((sh, sw) == (1, 1) or ((sh, sw) == (2, 2) and not w4 and pad_l + iw <= (ow - 1) * 2 + 4)))
    wide = as_conv and not w4 and packing.wide_weights(oh * ow, int(warr.size))
    # doubled accumulators (int16 weights and bias doubled; the SMMLAR output stage, ce_fold2) when the activation
    # range is all of int8 and every |accumulator| is below 2^30: |bias| + 255 * sum |w| per output channel
    dbl = False
    if wide and (lo, hi) == (-128, 127):
        per_oc = np.abs(warr.astype(np.int64)).sum(axis=(0, 1, 2) if depthwise else (1, 2, 3))
        dbl = int(np.max(np.abs(bld.bias_values(op, b, oc)) + 255 * per_oc)) < 2 ** 30
    mn, sn, hn = bld.per_channel(op, x, w, y, oc, double=dbl)
    dbl = dbl and hn != "NULL"
    bn = bld.bias(op, b, oc, scale=2 if dbl else 1)
    k = kh * kw * (1 if depthwise else ic)
    kp = (k + 3) // 4 * 4
    if as_conv:
        if depthwise:
            warr = np.transpose(warr, (3, 1, 2, 0))  # [1,kh,kw,oc] -> conv layout [oc,kh,kw,1]
        cin = 1 if depthwise else ic
        w2d = warr.reshape(oc, k)
        if cin % 4:
            # generic channel count: each kernel row of kw*cin values is zero-padded to a multiple of 4
            run = kw * cin
            rowp = (run + 3) // 4 * 4
            padded = np.zeros((oc, kh, rowp), dtype=np.int8)
            padded[:, :, :run] = warr.reshape(oc, kh, run)
            w2d = padded.reshape(oc, kh * rowp)
            kp = kh * rowp
        if w4:
            wn, wbytes = bld.packed_weights(packing.pack_int4_rows(w2d))
        elif wide:
            wn, wbytes = bld.wide_weights(packing.interleave_rows(w2d), scale=2 if dbl else 1)
        else:
            wn = bld.weights(packing.interleave_rows(w2d))
    elif dw3x3:
        wn, wbytes = bld.dw3x3_weights4(warr) if w4 else (bld.dw3x3_weights(warr), 0)
    else:
        if w4:
            wn, wbytes = bld.packed_weights(packing.pack_int4_depthwise(warr.reshape(kh * kw, oc)))
        else:
            wn = bld.weights(warr)
    if not w4 and not wide:
        wbytes = warr.size
    inplace = 0
    scratch = 0
    same_geometry = (oh, ow) == (ih, iw) and sh == 1 and sw == 1
    kp_col = kp  # im2col column length
    if as_conv and w4:
        kp = (kp + 7) // 8 * 8  # int4 rows: whole words of 8 values (the last column group meets zero weights)
    if as_conv:
        scratch = 4 * kp  # two interleaved int32 im2col columns: 2 words per group of 4 elements and pixel
        cin = 1 if depthwise else ic
        if cin % 4 and dw == 1:
            # ring of staged, zero-point padded input rows (ce_rows_width / ce_rows_init in ce_kernels.c)
            rowp = (kw * cin + 3) // 4 * 4
            wp = (max((pad_l + iw) * cin, (ow - 1) * sw * cin + rowp) + 3) // 4 * 4
            scratch += ((kh - 1) * dh + 1 + sh) * wp
        elif cin % 4:
            scratch += 2 * kp_col  # int16 row buffer of the generic im2col (dilated border pixels)
        if (kh, kw) == (1, 1) and same_geometry and pad_t == 0 and pad_l == 0 and oc <= ic \
                and bld.can_overwrite(op, x):
            inplace = 1
    elif dw3x3:
        scratch = 3 * ic * ((ow - 1) * sw + 4) * 2  # ring of three int16 channel-major input rows (ce_dw3_pw)
        if not w4 and hn != "NULL" and (lo, hi) == (-128, 127) and ow >= 2:  # ce_dw3_table_used
            scratch += ic * DW3_ROW_ARGS_BYTES
        planes = 4 * ((oh - 1) * sh + 3) * ((ow - 1) * sw + 4) * 2  # four int16 channel planes (ce_dw3p_ph)
        dw3_planes = not w4 and planes <= scratch  # small feature maps: by channel planes, in no more scratch
        if dw3_planes:
            scratch = planes
        if same_geometry and bld.can_overwrite(op, x):
            inplace = 1
    else:
        if same_geometry and dh == 1 and dw == 1 and dm == 1 and bld.can_overwrite(op, x):
            inplace = 1
            scratch = ow * oc + pad_t * iw * ic
    pn = bld.params("ce_conv_params", in_h=ih, in_w=iw, in_c=ic, out_h=oh, out_w=ow, out_c=oc, k_h=kh, k_w=kw,
                    stride_h=sh, stride_w=sw, dil_h=dh, dil_w=dw, pad_t=pad_t, pad_l=pad_l, depth_multiplier=dm,
                    inplace=inplace, wide=int(wide), dbl=int(dbl), in_offset=-zx, out_offset=zy, act_min=lo, act_max=hi,
                    k_padded=kp, weights=wn, bias=bn, mult=mn, shift=sn, rq=hn)
    macs = oh * ow * oc * kh * kw * (1 if depthwise else ic)
    sfx = "_w4" if w4 else ""
    if emit_only:
        return pn, scratch, macs, wbytes + 4 * oc
    if fc is not None:
        from firmware_export.cgen.ops import fully_connected

        with bld.part("fc"):
            fpn, _, _, fmacs, fbytes = fully_connected.params(bld, fc)
        nacc = (int(bld.t(fc.inputs[1]).shape[0]) + 1) // 2 * 2
        row = ow * oc
        scratch += 4 * nacc + (row + 3) // 4 * 4 + 4  # accumulators, one output row (ce_conv2d_fc_s8)
        body = f"ce_conv2d_fc_s8(&{pn}, &{fpn}, {bld.ptr(x)}, {bld.ptr(fc.outputs[0])}, @S32@);"
        bld.add_step(op, body, [x], [fc.outputs[0]], scratch, macs + fmacs, wbytes + 4 * oc + fbytes,
                     label=f"{op.opcode}_FULLY_CONNECTED")
        return
    if as_conv:
        body = f"ce_conv2d_s8{sfx}(&{pn}, {bld.ptr(x)}, {bld.ptr(y)}, @S16@);"
    elif dw3x3:
        kernel = "ce_depthwise3x3_plane_s8" if dw3_planes else f"ce_depthwise3x3_s8{sfx}"
        body = f"{kernel}(&{pn}, {bld.ptr(x)}, {bld.ptr(y)}, @S16@);"
    else:
        body = f"ce_depthwise_s8{sfx}(&{pn}, {bld.ptr(x)}, {bld.ptr(y)}, @S@);"
    if inplace:
        bld.alias[y] = x
    bld.add_step(op, body, [x], [y], scratch, macs, wbytes + 4 * oc)
