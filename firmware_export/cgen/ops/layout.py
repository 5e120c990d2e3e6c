"""Data movement without arithmetic: PAD (ce_pad_s8), CONCATENATION (ce_copy_s8 per input), TRANSPOSE
(ce_transpose_s8, up to 4-D) and RESHAPE (no code: the output shares the input's storage)."""

from __future__ import annotations

import numpy as np

from firmware_export.cgen.builder import c_list
from firmware_export.cgen.ops import common

OPCODES = ("PAD", "CONCATENATION", "RESHAPE", "TRANSPOSE")


def pad_operands(bld, op):
    """needs constant, non-negative paddings, rank <= 4 and no explicit constant value"""
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        return False, "explicit constant value"
    tx, tp = bld.t(op.inputs[0]), bld.t(op.inputs[1])
    if tp.data is None:
        return False, "paddings not constant"
    if len(tx.shape) > 4:
        return False, f"rank {len(tx.shape)}"
    return not np.any(np.asarray(tp.data, dtype=np.int64).reshape(-1) < 0), "negative padding"


def no_fused_activation(bld, op):
    """supports no fused activation"""
    act = op.options.get("fused_activation_function", "NONE")
    return act in (None, "NONE"), f"{act}"


def concat_quantisation(bld, op):
    """needs every input to have the output's quantisation (scale, zero point)"""
    qy = bld.qparams(op.outputs[0])
    bad = [bld.t(i) for i in op.inputs if bld.qparams(i) != qy]
    return not bad, ", ".join(f"tensor '{t.name}'" for t in bad) + f" vs output {qy[0]:g}/{qy[1]}"


def reshape_size(bld, op):
    """needs an output of the input's byte size"""
    tx, ty = bld.t(op.inputs[0]), bld.t(op.outputs[0])
    return tx.nbytes == ty.nbytes, f"{tx.nbytes} B -> {ty.nbytes} B"


def _perm(bld, op) -> list[int]:
    return [int(v) for v in np.asarray(bld.t(op.inputs[1]).data).reshape(-1)]


def transpose_permutation(bld, op):
    """needs a constant permutation of at most 4 dimensions that matches the output shape"""
    tx, tp, ty = bld.t(op.inputs[0]), bld.t(op.inputs[1]), bld.t(op.outputs[0])
    if tp.data is None:
        return False, "permutation not constant"
    perm = _perm(bld, op)
    rank = len(tx.shape)
    ok = rank <= 4 and sorted(perm) == list(range(rank)) and \
        [int(tx.shape[k]) for k in perm] == [int(d) for d in ty.shape]
    return ok, f"permutation {perm} of {list(tx.shape)} -> {list(ty.shape)}"


CONSTRAINTS = {
    "PAD": (common.int8_io, common.quantised_io, pad_operands, common.same_quantisation),
    "CONCATENATION": (common.int8_all, common.quantised_all, common.non_constant_inputs, no_fused_activation,
                      concat_quantisation),
    "RESHAPE": (common.data_input_not_constant, reshape_size),
    "TRANSPOSE": (common.int8_io, common.data_input_not_constant, transpose_permutation),
}


def lower(bld, op) -> None:
    {"PAD": _pad, "CONCATENATION": _concatenation, "RESHAPE": _reshape, "TRANSPOSE": _transpose}[op.opcode](bld, op)


def _pad(bld, op) -> None:
    x, pads, y = op.inputs[0], op.inputs[1], op.outputs[0]
    tx, tp, ty = bld.t(x), bld.t(pads), bld.t(y)
    padv = np.asarray(tp.data, dtype=np.int64).reshape(-1, 2)
    lead = 4 - len(tx.shape)
    in_dims = [1] * lead + list(tx.shape)
    out_dims = [1] * lead + list(ty.shape)
    before = [0] * lead + [int(p) for p in padv[:, 0]]
    _, zy = bld.qparams(y)
    pn = bld.params("ce_pad_params", in_dims=c_list(in_dims), out_dims=c_list(out_dims), pad_before=c_list(before),
                    pad_value=zy)
    bld.add_step(op, f"ce_pad_s8(&{pn}, {bld.ptr(x)}, {bld.ptr(y)});", [x], [y])


def _concatenation(bld, op) -> None:
    y = op.outputs[0]
    xs = list(op.inputs)
    ty = bld.t(y)
    rank = len(ty.shape)
    axis = int(op.options.get("axis", 0)) % max(rank, 1)
    outer = int(np.prod(ty.shape[:axis], dtype=np.int64))
    sizes = [int(np.prod(bld.t(i).shape[axis:], dtype=np.int64)) for i in xs]
    total = sum(sizes)
    lines = ["int32_t o;", f"for (o = 0; o < {outer}; ++o) {{"]
    off = 0
    for i, s in zip(xs, sizes):
        lines.append(f"    ce_copy_s8({bld.ptr(i)} + o * {s}, {bld.ptr(y)} + o * {total} + {off}, {s});")
        off += s
    lines.append("}")
    bld.add_step(op, "\n    ".join(lines), xs, [y])


def _reshape(bld, op) -> None:
    bld.alias[op.outputs[0]] = op.inputs[0]  # in place: output aliases the input buffer


def _transpose(bld, op) -> None:
    x, y = op.inputs[0], op.outputs[0]
    shape = [int(d) for d in bld.t(x).shape]
    lead = 4 - len(shape)
    dims = [1] * lead + shape
    perm = list(range(lead)) + [lead + k for k in _perm(bld, op)]
    in_strides, step = [0] * 4, 1
    for k in range(3, -1, -1):
        in_strides[k] = step
        step *= dims[k]
    out_dims = [dims[k] for k in perm]
    strides = [in_strides[k] for k in perm]
    pn = bld.params("ce_transpose_params", dims=c_list(out_dims), stride=c_list(strides))
    bld.add_step(op, f"ce_transpose_s8(&{pn}, {bld.ptr(x)}, {bld.ptr(y)});", [x], [y])
