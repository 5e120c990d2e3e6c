"""Constant folding of shape arithmetic before lowering.

A model converted with a dynamic batch (``TFLiteConverter.from_keras_model`` of a ``Flatten``) computes the
RESHAPE target at run time: SHAPE of an activation, STRIDED_SLICE of that shape, PACK with constants. The tensors'
shapes are static in the file (batch 1), so these operators compute constants: ``fold_constants`` evaluates them
with NumPy, gives their outputs the values as constant data and returns the operators the engine then skips.
An operator that cannot be evaluated here (e.g. a STRIDED_SLICE with an ellipsis mask) is left in the graph, and
the operator support check refuses it as usual.
"""

from __future__ import annotations

import numpy as np

FOLDABLE = ("SHAPE", "STRIDED_SLICE", "PACK", "CONCATENATION")
MAX_FOLD_ELEMENTS = 64  # shape vectors: anything larger is data, not shape arithmetic


def _const(model, i: int):
    t = model.tensor(i)
    return None if t.data is None else np.asarray(t.data)


def _shape(model, op):
    out = model.tensor(op.outputs[0])
    if out.dtype not in ("int32", "int64"):
        return None
    return np.asarray(model.tensor(op.inputs[0]).shape, dtype=out.dtype)


def _strided_slice(model, op):
    o = op.options
    if o.get("ellipsis_mask", 0) or o.get("new_axis_mask", 0) or o.get("offset", False):
        return None
    x, begin, end, strides = (_const(model, i) for i in op.inputs[:4])
    if x is None or begin is None or end is None or strides is None or x.ndim != 1 or begin.size != 1 \
            or end.size != 1 or strides.size != 1 or int(strides.reshape(-1)[0]) == 0:
        return None
    b, e, s = (int(v.reshape(-1)[0]) for v in (begin, end, strides))
    n = x.shape[0]
    if o.get("shrink_axis_mask", 0) & 1:
        k = b + n if b < 0 else b
        return None if not 0 <= k < n else np.asarray(x[k], dtype=x.dtype)
    b = None if o.get("begin_mask", 0) & 1 else b
    e = None if o.get("end_mask", 0) & 1 else e
    return np.asarray(x[slice(b, e, s)], dtype=x.dtype)


def _pack(model, op):
    vals = [_const(model, i) for i in op.inputs]
    if any(v is None for v in vals) or len({v.shape for v in vals}) != 1:
        return None
    axis = int(op.options.get("axis", 0))
    rank = vals[0].ndim + 1
    return np.stack(vals, axis=axis) if -rank <= axis < rank else None


def _concatenation(model, op):
    vals = [_const(model, i) for i in op.inputs]
    if any(v is None for v in vals) or model.tensor(op.outputs[0]).dtype not in ("int32", "int64") or \
            op.options.get("fused_activation_function", "NONE") not in (None, "NONE"):
        return None
    if len({v.ndim for v in vals}) != 1 or vals[0].ndim == 0:
        return None
    axis = int(op.options.get("axis", 0))
    try:
        return np.concatenate(vals, axis=axis)
    except ValueError:  # shapes that do not concatenate: leave it to the support check
        return None


EVAL = {"SHAPE": _shape, "STRIDED_SLICE": _strided_slice, "PACK": _pack, "CONCATENATION": _concatenation}


def fold_constants(model) -> set[int]:
    """Fold shape arithmetic in place (outputs become constant tensors); returns the folded operators' indices."""
    folded = set()
    for op in model.operators:  # topological order (validated): a folded output is constant for later operators
        if op.opcode not in EVAL or len(op.outputs) != 1:
            continue
        out = model.tensor(op.outputs[0])
        if out.data is not None or out.dtype not in ("int32", "int64"):
            continue
        value = EVAL[op.opcode](model, op)
        if value is None or value.size > MAX_FOLD_ELEMENTS or tuple(value.shape) != tuple(int(d) for d in out.shape):
            continue
        out.data = value.astype(out.dtype)
        folded.add(op.index)
    return folded
