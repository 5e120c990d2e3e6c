"""Validation of a parsed model before the C engine lowers it (``load_engine`` runs it before ``build_engine``).

The lowering in ``generator.py`` indexes operands, unpacks shapes, divides by dimensions and turns scales into
fixed-point multipliers; a malformed file (a fuzzed, truncated or hand-edited flatbuffer that the reader still
accepts) must fail here with one :class:`~toolchain.errors.ExportError` that lists what is wrong, not with an
IndexError deep in a lowering, a hang in the RESHAPE alias resolver or a multi-gigabyte allocation.

Every check is a *rule*: a function returning ``(ok, detail)`` whose docstring is the message (Arm Vela's
constraint style). ``TENSOR_RULES`` apply to every tensor, ``OPERATOR_RULES`` to every operator, ``OP_RULES[op]``
to the operators the engine lowers. ``model_problems`` collects all problems; ``check_model`` raises
``ExportError("the model is malformed: <first problems>; N more", received=<file>)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from toolchain.errors import ExportError

MAX_DIM = 1 << 24  # largest accepted dimension
MAX_ELEMENTS = 1 << 28  # largest accepted element count of one tensor
CONST_MAX_BYTES = 64 << 20  # default per-tensor limit for constant (weight) tensors
ACT_MAX_BYTES = 16 << 20  # default per-tensor limit for activation tensors
SCALE_RANGE = (1e-30, 1e30)  # finite positive scales the fixed-point multipliers can represent
ZERO_POINT_RANGES = {"int4": (-8, 7), "int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767),
                     "int32": (-(1 << 31), (1 << 31) - 1)}
SHOWN_PROBLEMS = 3


@dataclass
class Context:
    model: object
    const_max_bytes: int = CONST_MAX_BYTES
    act_max_bytes: int = ACT_MAX_BYTES
    producer: dict[int, list[int]] = field(default_factory=dict)  # tensor -> operators writing it

    def ok_index(self, t: int) -> bool:
        return 0 <= t < len(self.model.tensors)

    def t(self, i: int):
        return self.model.tensors[i]


def _elements(shape) -> int:
    return math.prod(int(d) for d in shape)  # Python ints: no int64 wrap-around


def _itemsize(dtype: str) -> float:
    if dtype == "int4":
        return 0.5
    if dtype in ("string", "resource", "variant"):
        return 0
    if dtype == "bfloat16":
        return 2
    return np.dtype(dtype).itemsize


# -- tensor rules -----------------------------------------------------------------------------------------------

def tensor_shape_non_negative(ctx, t):
    """tensor dimensions must be non-negative"""
    return all(int(d) >= 0 for d in t.shape), f"tensor {t.index} shape {list(t.shape)}"


def tensor_shape_bounded(ctx, t):
    """tensor dimensions must be at most 16,777,216 (2^24) and a tensor at most 268,435,456 (2^28) elements"""
    ok = all(int(d) <= MAX_DIM for d in t.shape) and _elements(t.shape) <= MAX_ELEMENTS
    return ok, f"tensor {t.index} shape {list(t.shape)}"


def tensor_bytes_bounded(ctx, t):
    """tensor size must be within the byte limit"""
    const = t.data is not None
    limit = ctx.const_max_bytes if const else ctx.act_max_bytes
    nbytes = math.ceil(max(_elements(t.shape), 0) * _itemsize(t.dtype))
    return nbytes <= limit, (f"{'constant' if const else 'activation'} tensor {t.index} needs {nbytes:,} bytes, "
                             f"limit {limit:,}")


def tensor_constant_data_matches(ctx, t):
    """constant tensor data must be exactly the declared size"""
    if t.data is None:
        return True, ""
    n = int(np.asarray(t.data).size)
    return n == _elements(t.shape), f"tensor {t.index} shape {list(t.shape)} holds {n} values"


def tensor_scales_valid(ctx, t):
    """quantisation scales must be finite and positive"""
    if t.scale is None:
        return True, ""
    s = np.asarray(t.scale, dtype=np.float64).reshape(-1)
    ok = bool(np.all(np.isfinite(s)) and np.all(s >= SCALE_RANGE[0]) and np.all(s <= SCALE_RANGE[1]))
    bad = s[~(np.isfinite(s) & (s >= SCALE_RANGE[0]) & (s <= SCALE_RANGE[1]))]
    return ok, f"tensor {t.index} scale {float(bad[0]) if bad.size else ''} (accepted {SCALE_RANGE[0]:g}..{SCALE_RANGE[1]:g})"


def tensor_zero_points_in_range(ctx, t):
    """zero points must be within the range of the tensor's type"""
    if t.zero_point is None or t.dtype not in ZERO_POINT_RANGES:
        return True, ""
    lo, hi = ZERO_POINT_RANGES[t.dtype]
    z = np.asarray(t.zero_point).reshape(-1)
    bad = [int(v) for v in z if not lo <= int(v) <= hi]
    return not bad, f"tensor {t.index} ({t.dtype}) zero point {bad[0] if bad else ''}"


def _quant_axis_size(t) -> int | None:
    """Size of the quantized dimension; a 1-D tensor's only axis when the declared one is beyond its rank (TFLM
    ignores the axis there: its person-detection example carries quantized_dimension 3 on 1-D biases)."""
    qd = int(t.quantized_dimension)
    if 0 <= qd < len(t.shape):
        return int(t.shape[qd])
    return int(t.shape[0]) if len(t.shape) == 1 else None


def tensor_quant_counts(ctx, t):
    """scale and zero-point counts must be 1 or the size of the quantized dimension"""
    if t.scale is None:
        return True, ""
    ns = int(np.asarray(t.scale).size)
    nz = 0 if t.zero_point is None else int(np.asarray(t.zero_point).size)
    qd = int(t.quantized_dimension)
    ok = ns == nz and (ns == 1 or ns == _quant_axis_size(t))
    return ok, f"tensor {t.index}: {ns} scales, {nz} zero points, dimension {qd} of shape {list(t.shape)}"


def tensor_quant_dim_in_rank(ctx, t):
    """the quantized dimension must be within the tensor's rank (any axis for one scale, a 1-D tensor's only axis
    for one scale per element)"""
    if t.scale is None or np.asarray(t.scale).size == 1:
        return True, ""
    qd = int(t.quantized_dimension)
    return qd >= 0 and _quant_axis_size(t) is not None, f"tensor {t.index}: dimension {qd} of rank {len(t.shape)}"


TENSOR_RULES = (tensor_shape_non_negative, tensor_shape_bounded, tensor_bytes_bounded, tensor_constant_data_matches,
                tensor_scales_valid, tensor_zero_points_in_range, tensor_quant_counts, tensor_quant_dim_in_rank)


# -- graph rules -----------------------------------------------------------------------------------------------

def graph_io_in_range(ctx):
    """model input/output tensor indices must be in range"""
    bad = [t for t in list(ctx.model.inputs) + list(ctx.model.outputs) if not ctx.ok_index(t)]
    return not bad, f"tensor {bad[0] if bad else ''} of {len(ctx.model.tensors)}"


def graph_outputs_produced(ctx):
    """model outputs must be produced by an operator or be model inputs"""
    m = ctx.model
    bad = [t for t in m.outputs if ctx.ok_index(t) and t not in ctx.producer and t not in m.inputs]
    return not bad, f"tensor {bad[0] if bad else ''}"


GRAPH_RULES = (graph_io_in_range, graph_outputs_produced)


def op_indices_in_range(ctx, op):
    """operator tensor indices must be in range (-1 only for an optional input)"""
    bad = [t for t in op.inputs if not (ctx.ok_index(t) or t == -1)]
    bad += [t for t in op.outputs if not ctx.ok_index(t)]
    return not bad, f"operator {op.index} ({op.opcode}) refers to tensor {bad[0] if bad else ''} of {len(ctx.model.tensors)}"


def op_inputs_available(ctx, op):
    """every non-constant operator input must be a model input or produced by an earlier operator"""
    bad = [t for t in op.inputs if t >= 0 and ctx.t(t).data is None and not ctx.t(t).is_variable
           and t not in ctx.model.inputs
           and not any(p < op.index for p in ctx.producer.get(t, ()))]
    return not bad, f"operator {op.index} ({op.opcode}) reads tensor {bad[0] if bad else ''}"


def op_outputs_single_assignment(ctx, op):
    """an operator output must be a fresh tensor: not a model input, constant, own input or another operator's output"""
    bad = [t for t in op.outputs if t in ctx.model.inputs or ctx.t(t).data is not None or t in op.inputs
           or ctx.producer.get(t, [op.index]) != [op.index] or list(op.outputs).count(t) > 1]
    return not bad, f"operator {op.index} ({op.opcode}) writes tensor {bad[0] if bad else ''}"


OPERATOR_RULES = (op_inputs_available, op_outputs_single_assignment)


# -- rules of the operators the engine lowers ----------------------------------------------------------------
# ARITY: (min inputs, max inputs, outputs); REQUIRED: leading inputs that may not be absent (-1), default 1; a
# RESHAPE's shape operand, when listed, must be present (LiteRT's kernel dereferences it: fuzz seeds 1097, 1705)

ARITY = {
    "CONV_2D": (2, 3, 1), "DEPTHWISE_CONV_2D": (2, 3, 1), "FULLY_CONNECTED": (2, 3, 1),
    "AVERAGE_POOL_2D": (1, 1, 1), "MAX_POOL_2D": (1, 1, 1), "ADD": (2, 2, 1), "MEAN": (2, 2, 1),
    "SOFTMAX": (1, 1, 1), "PAD": (2, 3, 1), "CONCATENATION": (1, 1 << 16, 1), "RESHAPE": (1, 2, 1),
    "QUANTIZE": (1, 1, 1), "DEQUANTIZE": (1, 1, 1),
}
REQUIRED = {"CONV_2D": 2, "DEPTHWISE_CONV_2D": 2, "FULLY_CONNECTED": 2, "MEAN": 2, "PAD": 2, "ADD": 2}


def op_arity(ctx, op):
    """operator must have the number of operands its kind takes (required operands present)"""
    lo, hi, nout = ARITY[op.opcode]
    req = REQUIRED.get(op.opcode, len(op.inputs) if op.opcode in ("CONCATENATION", "RESHAPE") else 1)
    ok = lo <= len(op.inputs) <= hi and len(op.outputs) == nout and all(t >= 0 for t in op.inputs[:req])
    return ok, f"operator {op.index} ({op.opcode}): inputs {list(op.inputs)}, outputs {list(op.outputs)}"


def _positive(ctx, *idx) -> bool:
    return all(int(d) >= 1 for i in idx for d in ctx.t(i).shape)


def _out_size(padding, n: int, k: int, stride: int, dil: int) -> int:
    eff = (k - 1) * dil + 1
    return (n + stride - 1) // stride if padding == "SAME" else (n - eff + stride) // stride


def op_conv_geometry(ctx, op):
    """convolution needs 4-D input, weights and output with positive dimensions, positive strides and dilations,
    SAME/VALID padding, an output size that follows from them and one bias value per output channel"""
    x, w, y = op.inputs[0], op.inputs[1], op.outputs[0]
    tx, tw, ty = ctx.t(x), ctx.t(w), ctx.t(y)
    where = f"operator {op.index} ({op.opcode}): input {list(tx.shape)}, weights {list(tw.shape)}, output {list(ty.shape)}"
    if not (len(tx.shape) == len(tw.shape) == len(ty.shape) == 4 and _positive(ctx, x, w, y)):
        return False, where
    o = op.options
    st = [o.get("stride_h", 1), o.get("stride_w", 1), o.get("dilation_h_factor", 1), o.get("dilation_w_factor", 1)]
    if not all(isinstance(v, int) and 1 <= v <= MAX_DIM for v in st) or o.get("padding", "VALID") not in ("SAME", "VALID"):
        return False, f"operator {op.index} ({op.opcode}): strides/dilations {st}, padding {o.get('padding')}"
    kh, kw = tw.shape[1], tw.shape[2]
    exp = (_out_size(o.get("padding", "VALID"), tx.shape[1], kh, st[0], st[2]),
           _out_size(o.get("padding", "VALID"), tx.shape[2], kw, st[1], st[3]))
    if tuple(ty.shape[1:3]) != exp:
        return False, f"{where} (expected output {exp[0]}x{exp[1]})"
    oc = tw.shape[3] if op.opcode == "DEPTHWISE_CONV_2D" else tw.shape[0]
    if len(op.inputs) > 2 and op.inputs[2] >= 0 and _elements(ctx.t(op.inputs[2]).shape) != oc:
        return False, f"{where}, bias {list(ctx.t(op.inputs[2]).shape)}"
    return True, ""


def op_fc_geometry(ctx, op):
    """FULLY_CONNECTED needs 2-D weights with positive dimensions, an input of whole weight rows, an output of
    batches x units and one bias value per unit"""
    x, w, y = op.inputs[0], op.inputs[1], op.outputs[0]
    tx, tw, ty = ctx.t(x), ctx.t(w), ctx.t(y)
    where = f"operator {op.index}: input {list(tx.shape)}, weights {list(tw.shape)}, output {list(ty.shape)}"
    if len(tw.shape) != 2 or not _positive(ctx, w):
        return False, where
    n, k = tw.shape
    nx = _elements(tx.shape)
    if nx % k or _elements(ty.shape) != nx // k * n:
        return False, where
    if len(op.inputs) > 2 and op.inputs[2] >= 0 and _elements(ctx.t(op.inputs[2]).shape) != n:
        return False, f"{where}, bias {list(ctx.t(op.inputs[2]).shape)}"
    return True, ""


def op_weights_quantized(ctx, op):
    """integer convolution and fully-connected weights must carry quantisation scales (one, or one per output
    channel)"""
    tw = ctx.t(op.inputs[1])
    if tw.dtype not in ("int8", "int4", "int16", "uint8"):
        return True, ""  # float weights: the generator's own support check refuses them with its hint
    if op.opcode == "FULLY_CONNECTED":
        oc = tw.shape[0] if tw.shape else None
    else:
        oc = tw.shape[3] if op.opcode == "DEPTHWISE_CONV_2D" and len(tw.shape) == 4 else (tw.shape[:1] or (None,))[0]
    n = 0 if tw.scale is None else int(np.asarray(tw.scale).size)
    return n == 1 or (n > 1 and n == oc), f"operator {op.index} ({op.opcode}): weights tensor {tw.index} has {n} scales"


def op_pool_geometry(ctx, op):
    """pooling needs 4-D input and output with positive dimensions and equal channels, positive filter and strides,
    SAME/VALID padding and an output size that follows from them"""
    tx, ty = ctx.t(op.inputs[0]), ctx.t(op.outputs[0])
    o = op.options
    where = f"operator {op.index} ({op.opcode}): input {list(tx.shape)}, output {list(ty.shape)}"
    if not (len(tx.shape) == len(ty.shape) == 4 and _positive(ctx, op.inputs[0], op.outputs[0])
            and tx.shape[3] == ty.shape[3]):
        return False, where
    f = [o.get(k) for k in ("filter_height", "filter_width", "stride_h", "stride_w")]
    if not all(isinstance(v, int) and 1 <= v <= MAX_DIM for v in f) or o.get("padding", "VALID") not in ("SAME", "VALID"):
        return False, f"{where}, filter/strides {f}, padding {o.get('padding')}"
    exp = (_out_size(o.get("padding", "VALID"), tx.shape[1], f[0], f[2], 1),
           _out_size(o.get("padding", "VALID"), tx.shape[2], f[1], f[3], 1))
    return tuple(ty.shape[1:3]) == exp, f"{where} (expected output {exp[0]}x{exp[1]})"


def op_same_elements(ctx, op):
    """input and output must have the same number of elements"""
    a, y = ctx.t(op.inputs[0]), ctx.t(op.outputs[0])
    return _elements(a.shape) == _elements(y.shape), f"operator {op.index} ({op.opcode}): {list(a.shape)} -> {list(y.shape)}"


def op_add_operands(ctx, op):
    """ADD operands must have the output's number of elements"""
    n = [_elements(ctx.t(i).shape) for i in (op.inputs[0], op.inputs[1], op.outputs[0])]
    return n[0] == n[1] == n[2], f"operator {op.index}: {n[0]} + {n[1]} -> {n[2]} elements"


def op_mean_axes(ctx, op):
    """MEAN needs an input of rank >= 1 with positive dimensions, constant integer axes within its rank and an
    output of the reduced size"""
    tx, ta, ty = ctx.t(op.inputs[0]), ctx.t(op.inputs[1]), ctx.t(op.outputs[0])
    rank = len(tx.shape)
    if rank < 1 or not _positive(ctx, op.inputs[0]) or ta.data is None or not ta.dtype.startswith("int"):
        return False, f"operator {op.index}: input {list(tx.shape)}, axes {ta.dtype}{' constant' if ta.data is not None else ''}"
    axes = [int(a) for a in np.asarray(ta.data).reshape(-1)]
    if not axes or any(not -rank <= a < rank for a in axes):
        return False, f"operator {op.index}: axes {axes} of rank {rank}"
    red = {a % rank for a in axes}
    kept = _elements(d for i, d in enumerate(tx.shape) if i not in red)
    return _elements(ty.shape) == kept, f"operator {op.index}: {list(tx.shape)} over {sorted(red)} -> {list(ty.shape)}"


def op_softmax(ctx, op):
    """SOFTMAX needs a finite beta and an output of the input's size"""
    beta = op.options.get("beta", 1.0)
    ok, where = op_same_elements(ctx, op)
    return ok and isinstance(beta, float) and math.isfinite(beta), f"{where}, beta {beta}"


def op_pad_geometry(ctx, op):
    """PAD needs constant integer paddings of shape [rank, 2] and an output of the padded shape"""
    tx, tp, ty = ctx.t(op.inputs[0]), ctx.t(op.inputs[1]), ctx.t(op.outputs[0])
    rank = len(tx.shape)
    if tp.data is None or not tp.dtype.startswith("int") or int(np.asarray(tp.data).size) != 2 * rank:
        return False, f"operator {op.index}: paddings {list(tp.shape)} ({tp.dtype}) for rank {rank}"
    pads = np.asarray(tp.data, dtype=np.int64).reshape(rank, 2)
    exp = [int(d) + int(a) + int(b) for d, (a, b) in zip(tx.shape, pads)]
    return list(ty.shape) == exp, f"operator {op.index}: {list(tx.shape)} padded {pads.tolist()} -> {list(ty.shape)}"


def op_concat_geometry(ctx, op):
    """CONCATENATION inputs must have the output's rank, an axis within it, equal other dimensions and axis sizes
    that add up to the output's"""
    ty = ctx.t(op.outputs[0])
    rank = len(ty.shape)
    axis = op.options.get("axis", 0)
    shapes = [list(ctx.t(i).shape) for i in op.inputs]
    where = f"operator {op.index}: {shapes} on axis {axis} -> {list(ty.shape)}"
    if not isinstance(axis, int) or not -rank <= axis < rank or any(len(s) != rank for s in shapes):
        return False, where
    a = axis % rank
    same = all(s[:a] + s[a + 1:] == list(ty.shape[:a]) + list(ty.shape[a + 1:]) for s in shapes)
    return same and sum(s[a] for s in shapes) == ty.shape[a], where


OP_RULES = {
    "CONV_2D": (op_conv_geometry, op_weights_quantized), "DEPTHWISE_CONV_2D": (op_conv_geometry, op_weights_quantized),
    "FULLY_CONNECTED": (op_fc_geometry, op_weights_quantized),
    "AVERAGE_POOL_2D": (op_pool_geometry,), "MAX_POOL_2D": (op_pool_geometry,), "ADD": (op_add_operands,),
    "MEAN": (op_mean_axes,), "SOFTMAX": (op_softmax,), "PAD": (op_pad_geometry,),
    "CONCATENATION": (op_concat_geometry,), "RESHAPE": (op_same_elements,), "QUANTIZE": (op_same_elements,),
    "DEQUANTIZE": (op_same_elements,),
}


def _message(rule, detail: str) -> str:
    text = " ".join((rule.__doc__ or rule.__name__).split())
    return f"{text} ({detail})" if detail else text


def model_problems(model, max_bytes: int | None = None) -> list[str]:
    """Every problem the rules find in ``model`` (empty when the engine may lower it).

    ``max_bytes`` replaces both per-tensor byte limits (constant and activation tensors)."""
    ctx = Context(model)
    if max_bytes is not None:
        ctx.const_max_bytes = ctx.act_max_bytes = int(max_bytes)
    problems: list[str] = []

    def run(rule, *args) -> bool:
        ok, detail = rule(ctx, *args)
        if not ok:
            problems.append(_message(rule, detail))
        return bool(ok)

    bad_tensors: set[int] = set()
    for t in model.tensors:
        for rule in TENSOR_RULES:
            if not run(rule, t):
                bad_tensors.add(t.index)
                if rule in (tensor_shape_non_negative, tensor_shape_bounded):
                    break  # the size rules would only repeat it
    sound_ops = [op for op in model.operators if run(op_indices_in_range, op)]
    for op in sound_ops:
        for t in op.outputs:
            ctx.producer.setdefault(t, []).append(op.index)
    for rule in GRAPH_RULES:
        run(rule)
    for op in sound_ops:
        graph_ok = all([run(rule, op) for rule in OPERATOR_RULES])
        if op.opcode not in ARITY or not run(op_arity, op) or not graph_ok:
            continue
        if any(t in bad_tensors for t in tuple(op.inputs) + tuple(op.outputs) if t >= 0):
            continue  # its tensors are already reported; the geometry rules need sound shapes
        for rule in OP_RULES.get(op.opcode, ()):
            run(rule, op)
    return problems


def check_model(model, max_bytes: int | None = None, source: str | None = None) -> None:
    """Raise ExportError listing the first problems when ``model`` is malformed (see ``model_problems``)."""
    problems = model_problems(model, max_bytes)
    if not problems:
        return
    more = len(problems) - SHOWN_PROBLEMS
    text = "; ".join(problems[:SHOWN_PROBLEMS]) + (f"; {more} more" if more > 0 else "")
    raise ExportError(f"the model is malformed: {text}", received=source or getattr(model, "path", None) or "model")
