"""Constraints shared by several operator families. Each is ``rule(bld, op) -> (ok, detail)``; its docstring is
the user's message (``firmware_export.cgen.ops.supported``)."""

from __future__ import annotations

import numpy as np

ACTIVATIONS = (None, "NONE", "RELU", "RELU6", "RELU_N1_TO_1")


def _int8(bld, op, idx) -> tuple[bool, str]:
    bad = [bld.t(i) for i in idx if i >= 0 and bld.t(i).dtype != "int8"]
    return not bad, ", ".join(f"tensor '{t.name}' is {t.dtype}" for t in bad)


def int8_io(bld, op):
    """supports int8 input and output tensors only"""
    return _int8(bld, op, (op.inputs[0], op.outputs[0]))


def int8_all(bld, op):
    """supports int8 tensors only"""
    return _int8(bld, op, tuple(op.inputs) + tuple(op.outputs))


def quantised_io(bld, op):
    """needs quantised (scale and zero point) input and output tensors"""
    bad = [bld.t(i) for i in tuple(op.inputs[:1]) + tuple(op.outputs) if i >= 0 and
           (bld.t(i).scale is None or bld.t(i).scale.size == 0)]
    return not bad, ", ".join(f"tensor '{t.name}'" for t in bad)


def fused_activation(bld, op):
    """supports the fused activations NONE, RELU, RELU6 and RELU_N1_TO_1 only"""
    act = op.options.get("fused_activation_function")
    return act in ACTIVATIONS, f"{act}"


def batch1_4d_input(bld, op):
    """needs a 4-D input of batch 1"""
    shape = list(bld.t(op.inputs[0]).shape)
    return len(shape) == 4 and shape[0] == 1, f"{shape}"


def same_quantisation(bld, op):
    """needs the same quantisation (scale, zero point) on the input and the output"""
    qx, qy = bld.qparams(op.inputs[0]), bld.qparams(op.outputs[0])
    return qx == qy, f"input {qx[0]:g}/{qx[1]}, output {qy[0]:g}/{qy[1]}"


def dims_int16(bld, op):
    """dimensions above 32767 are not supported"""
    dims = [int(d) for i in (op.inputs[0], op.outputs[0]) for d in bld.t(i).shape]
    return max(dims, default=0) <= 32767, f"{max(dims, default=0)}"


def non_constant_inputs(bld, op):
    """constant (weight-like) data inputs are not supported"""
    idx = [i for i in op.inputs if i >= 0 and bld.t(i).data is not None]
    return not idx, ", ".join(f"tensor {i}" for i in idx)


def quantised_all(bld, op):
    """needs quantised (scale and zero point) input and output tensors"""
    bad = [bld.t(i) for i in tuple(op.inputs) + tuple(op.outputs) if i >= 0 and bld.t(i).data is None and
           (bld.t(i).scale is None or bld.t(i).scale.size == 0)]
    return not bad, ", ".join(f"tensor '{t.name}'" for t in bad)


def data_input_not_constant(bld, op):
    """a constant data input is not supported"""
    t = bld.t(op.inputs[0])
    return t.data is None, f"tensor '{t.name}'"


def int32_bias(bld, op):
    """needs a constant int32 bias (or none)"""
    if len(op.inputs) < 3 or op.inputs[2] < 0:
        return True, ""
    tb = bld.t(op.inputs[2])
    return tb.data is not None and tb.dtype == "int32", f"{tb.dtype}"


def weights_check(bld, op, rank: int) -> tuple[bool, str]:
    """Constant int8/int4 weights of ``rank`` dimensions, int4 values in range, zero points 0 (the rule bodies of
    the convolution and fully-connected families)."""
    tw = bld.t(op.inputs[1])
    if tw.data is None or tw.dtype not in ("int8", "int4") or len(tw.shape) != rank:
        return False, f"{tw.dtype} {list(tw.shape)}{' (not constant)' if tw.data is None else ''}"
    vals = np.asarray(tw.data)
    if vals.shape != tuple(int(d) for d in tw.shape):  # a sparse tensor's values, not densified
        return False, f"sparse {tw.dtype} weights {list(tw.shape)} (the kernels need dense weights)"
    if tw.dtype == "int4" and vals.size and (int(vals.min()) < -8 or int(vals.max()) > 7):
        return False, "int4 weights outside [-8, 7]"
    zp = tw.zero_point
    return zp is None or not np.any(np.asarray(zp) != 0), "non-zero weight zero point"


def scale_count(bld, op, n: int, what: str) -> tuple[bool, str]:
    """One weight scale per output (``n`` of them) or one for all."""
    ws = bld.t(op.inputs[1]).scale
    size = 0 if ws is None else int(np.asarray(ws).size)
    return size in (1, n), f"{size} scales for {n} {what}"
