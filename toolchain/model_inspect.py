"""Per-layer / per-operator analysis of Keras and TFLite models: shapes, parameters, MACs, dtypes,
quantisation, weight bytes and peak activation memory.

Counting convention (the one used by the reference models' README):

* ``params`` counts the weights and biases of convolutions (CONV_2D / Conv*), depthwise convolutions and
  fully-connected (Dense) layers; ``macs`` counts their multiply-accumulates
  (conv: out_h·out_w·out_c·kh·kw·in_c; depthwise: out_h·out_w·out_c·kh·kw; FC: out·in per batch row).
* Weights of other operators that carry them (e.g. SVDF feature/time weights and bias) are reported per row and
  in ``other_params`` / ``other_macs``, not in ``params`` / ``macs``.
* For Keras models ``keras_params`` is ``model.count_params()`` (everything, incl. BatchNormalization, whose
  parameters fold away on conversion and are also listed as ``bn_params``); ``params`` is the Keras total, so
  it is the figure Keras' own summary prints.
* ``peak_activation_bytes``: the largest total size of the non-constant tensors alive at the same time when the
  operators run in order; a tensor is alive from its producer (or model input) to its last consumer (or model
  output). Variable (state) tensors persist for the whole run and are reported as ``state_bytes`` instead.
  Keras activations are counted with batch size 1.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.keras_io import KERAS_SUFFIXES
from toolchain.errors import ModelError
from toolchain.tflite_model import Operator, Tensor, TFLiteModel, load_tflite



@dataclass
class Totals:
    params: int = 0
    macs: int = 0
    model_bytes: int | None = None
    weight_bytes: int = 0
    peak_activation_bytes: int = 0
    other_params: int = 0
    other_macs: int = 0
    state_bytes: int = 0
    keras_params: int | None = None
    bn_params: int | None = None
    conv_fc_params: int | None = None
    peak_at: str | None = None


@dataclass
class LayerRow:
    index: int
    name: str
    type: str
    output_shape: list[list[int | None]]
    params: int = 0
    macs: int = 0
    other_params: int = 0
    other_macs: int = 0
    input_dtypes: list[str] = field(default_factory=list)
    output_dtypes: list[str] = field(default_factory=list)
    weight_bytes: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    quantization: list[str] = field(default_factory=list)
    formulas: list[str] = field(default_factory=list)
    keras_params: int | None = None  # Keras rows: layer.count_params() (== params); conv/FC part in conv_fc_params
    conv_fc_params: int | None = None

    @property
    def dtypes(self) -> str:
        return f"{','.join(self.input_dtypes) or '-'} → {','.join(self.output_dtypes) or '-'}"


@dataclass
class Inspection:
    format: str  # "keras" | "tflite"
    source: str | None
    name: str
    layers: list[LayerRow]
    totals: Totals
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    tensors: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "source": self.source,
            "name": self.name,
            "totals": asdict(self.totals),
            "inputs": self.inputs,
            "outputs": self.outputs,
            "layers": [dict(asdict(r), dtypes=r.dtypes) for r in self.layers],
            "tensors": self.tensors,
            "notes": self.notes,
        }


def inspect_model(path: str | os.PathLike) -> Inspection:
    """Inspect a model file, dispatching on its extension (.tflite, .keras/.h5, or a run folder with model.keras)."""
    p = Path(path)
    if not p.exists():
        raise ModelError("model file not found", received=str(p))
    if p.is_dir():
        if (p / "model.keras").is_file():
            return inspect_keras(p / "model.keras")
        raise ModelError("expected a .keras or .tflite file (or a run folder containing model.keras), got a directory",
                         received=str(p))
    suffix = p.suffix.lower()
    if suffix == ".tflite":
        return inspect_tflite(p)
    if suffix in KERAS_SUFFIXES:
        return inspect_keras(p)
    raise ModelError("unsupported model file extension (expected .keras or .tflite)", received=str(p))


# --------------------------------------------------------------------------------------------------------------
# TFLite


def quant_summary(t: Tensor) -> str:
    """One-line description of a tensor's quantisation, per-channel parameters summarised."""
    if not t.is_quantized:
        return "not quantised"
    zp = t.zero_point if t.zero_point is not None else np.zeros(1, dtype=np.int64)
    if t.scale.size == 1:
        return f"scale {float(t.scale[0]):.4g} zp {int(zp[0])}"
    zps = f"{int(zp.min())}" if zp.min() == zp.max() else f"{int(zp.min())}–{int(zp.max())}"
    return (f"per-channel ×{t.scale.size} scale {float(t.scale.min()):.2g}–{float(t.scale.max()):.2g} zp {zps} "
            f"(axis {t.quantized_dimension})")


def _tensor_info(t: Tensor) -> dict[str, Any]:
    info: dict[str, Any] = {
        "index": t.index, "name": t.name, "shape": list(t.shape), "dtype": t.dtype,
        "constant": t.is_constant, "variable": t.is_variable, "bytes": t.nbytes,
    }
    if t.is_quantized:
        info["quantization"] = {
            "scale": [float(s) for s in t.scale],
            "zero_point": [int(z) for z in t.zero_point],
            "quantized_dimension": t.quantized_dimension,
            "summary": quant_summary(t),
        }
    else:
        info["quantization"] = None
    return info


def _opt_tensor(m: TFLiteModel, op: Operator, k: int) -> Tensor | None:
    if k < len(op.inputs) and op.inputs[k] >= 0:
        return m.tensors[op.inputs[k]]
    return None


def _size(shape: tuple[int, ...]) -> int:
    return int(np.prod([max(int(d), 1) for d in shape], dtype=np.int64)) if shape else 1


def _op_counts(m: TFLiteModel, op: Operator) -> tuple[int, int, int, int]:
    """(params, macs, other_params, other_macs) of one operator under the README convention."""
    out = m.tensors[op.outputs[0]] if op.outputs and op.outputs[0] >= 0 else None
    if out is None:
        return 0, 0, 0, 0
    out_elems = _size(out.shape)
    if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "CONV_3D"):
        w, b = _opt_tensor(m, op, 1), _opt_tensor(m, op, 2)
        if w is None:
            return 0, 0, 0, 0
        params = _size(w.shape) + (_size(b.shape) if b is not None else 0)
        if op.opcode == "CONV_2D":  # weights (out_c, kh, kw, in_c)
            macs = out_elems * _size(w.shape[1:])
        elif op.opcode == "CONV_3D":  # weights (kd, kh, kw, in_c, out_c)
            macs = out_elems * _size(w.shape[:-1])
        elif op.opcode == "DEPTHWISE_CONV_2D":  # weights (1, kh, kw, out_c)
            macs = out_elems * _size(w.shape[1:3])
        else:  # FULLY_CONNECTED weights (out, in)
            macs = out_elems * int(w.shape[-1])
        return params, macs, 0, 0
    if op.opcode == "TRANSPOSE_CONV":  # inputs: output_shape, weights (out_c, kh, kw, in_c), input, [bias]
        w, x, b = _opt_tensor(m, op, 1), _opt_tensor(m, op, 2), _opt_tensor(m, op, 3)
        if w is None or x is None:
            return 0, 0, 0, 0
        params = _size(w.shape) + (_size(b.shape) if b is not None else 0)
        return params, _size(x.shape) * _size(w.shape[:3]), 0, 0
    if op.opcode == "SVDF":  # input, weights_feature (F, in), weights_time (F, memory), bias, state
        wf, wt, b = _opt_tensor(m, op, 1), _opt_tensor(m, op, 2), _opt_tensor(m, op, 3)
        x = _opt_tensor(m, op, 0)
        batch = int(x.shape[0]) if x is not None and x.shape else 1
        other = sum(_size(t.shape) for t in (wf, wt, b) if t is not None)
        macs = batch * ((_size(wf.shape) if wf is not None else 0) + (_size(wt.shape) if wt is not None else 0))
        return 0, 0, other, macs
    # any other operator with constant float/int weights of its own (not shape/axis constants) is not counted
    return 0, 0, 0, 0


def _peak(n_tensors: int, ops: list[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]],
          inputs: list[int], outputs: list[int], sizes: dict[int, int]) -> tuple[int, int]:
    """Peak total bytes of live tensors. ``ops`` = (inputs, outputs, intermediates) in execution order;
    ``sizes`` maps the tensor ids that count (non-constant, non-variable) to bytes. Returns (peak, step)."""
    n = len(ops)
    start: dict[int, int] = {}
    end: dict[int, int] = {}
    for t in inputs:
        if t in sizes:
            start[t] = -1
            end[t] = -1
    for i, (ins, outs, inter) in enumerate(ops):
        for t in outs:
            if t in sizes and t not in start:
                start[t] = i
                end[t] = i
        for t in inter:
            if t in sizes:
                start.setdefault(t, i)
                end[t] = max(end.get(t, i), i)
        for t in ins:
            if t in sizes:
                start.setdefault(t, -1)  # consumed but never produced: treat as an input
                end[t] = max(end.get(t, i), i)
    for t in outputs:
        if t in sizes:
            start.setdefault(t, -1)
            end[t] = n
    best, best_step = 0, -1
    for step in range(-1, n + 1):
        total = sum(sizes[t] for t in start if start[t] <= step <= end[t])
        if total > best:
            best, best_step = total, step
    return best, best_step


def inspect_tflite(model: str | os.PathLike | TFLiteModel) -> Inspection:
    m = model if isinstance(model, TFLiteModel) else load_tflite(model)
    rows: list[LayerRow] = []
    totals = Totals(model_bytes=m.size_bytes)
    for op in m.operators:
        params, macs, oparams, omacs = _op_counts(m, op)
        ins = [m.tensors[i] for i in op.inputs if i >= 0]
        outs = [m.tensors[i] for i in op.outputs if i >= 0]
        consts = [t for t in ins if t.is_constant and not t.is_variable]
        quant = []
        roles = {0: "in", 1: "w", 2: "b"} if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") else {}
        for k, t in enumerate(ins):
            if t.is_quantized:
                role = roles.get(k, "const" if t.is_constant else ("state" if t.is_variable else "in"))
                quant.append(f"{role}: {quant_summary(t)}")
        for t in outs:
            if t.is_quantized:
                quant.append(f"out: {quant_summary(t)}")
        rows.append(LayerRow(
            index=op.index, name=outs[0].name if outs else "", type=op.opcode,
            output_shape=[list(t.shape) for t in outs], params=params, macs=macs, other_params=oparams,
            other_macs=omacs,
            input_dtypes=sorted({t.dtype for t in ins if not t.is_constant and not t.is_variable}),
            output_dtypes=sorted({t.dtype for t in outs}),
            weight_bytes=sum(t.nbytes for t in consts), options=dict(op.options), quantization=quant,
        ))
        totals.params += params
        totals.macs += macs
        totals.other_params += oparams
        totals.other_macs += omacs
    seen_buffers: set[int] = set()
    for t in m.tensors:
        if t.is_constant and not t.is_variable and t.buffer not in seen_buffers:
            seen_buffers.add(t.buffer)
            totals.weight_bytes += t.nbytes
        if t.is_variable:
            totals.state_bytes += t.nbytes
    sizes = {t.index: t.nbytes for t in m.tensors if not t.is_constant and not t.is_variable}
    peak, step = _peak(len(m.tensors), [(op.inputs, op.outputs, op.intermediates) for op in m.operators],
                       m.inputs, m.outputs, sizes)
    totals.peak_activation_bytes = peak
    if 0 <= step < len(m.operators):
        totals.peak_at = f"operator {step} ({m.operators[step].opcode})"
    elif step == len(m.operators):
        totals.peak_at = "model outputs"
    else:
        totals.peak_at = "model inputs"
    notes = []
    if totals.other_params:
        notes.append(f"{totals.other_params:,} weights of other operators (e.g. SVDF) are not in the conv/FC "
                     "parameter total")
    if m.num_subgraphs > 1:
        notes.append(f"model has {m.num_subgraphs} subgraphs; only the main subgraph is analysed")
    name = Path(m.path).stem if m.path else "model"
    return Inspection(
        format="tflite", source=m.path, name=name, layers=rows, totals=totals,
        inputs=[_tensor_info(m.tensors[i]) for i in m.inputs],
        outputs=[_tensor_info(m.tensors[i]) for i in m.outputs],
        tensors=[_tensor_info(t) for t in m.tensors], notes=notes,
    )


# --------------------------------------------------------------------------------------------------------------
# Keras


def load_keras_model(path: str | os.PathLike):
    """Load a .keras/.h5 model (or a run folder's model.keras) with keras' safe_mode; ModelError on failure."""
    from toolchain.keras_io import load_keras_model as load

    return load(path)

def _mro_names(layer) -> set[str]:
    return {c.__name__ for c in type(layer).__mro__}


def _fmt_num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _shape_list(shape) -> list[int | None]:
    return [None if d is None else int(d) for d in shape]


def _dim_formula(n: int, f: int, s: int, d: int, padding: str, out: int) -> str | None:
    """Seed formula (N − F + 2P)/S + 1 for one spatial dimension, or None when it does not apply."""
    if n is None or out is None:
        return None
    f_eff = d * (f - 1) + 1
    if padding == "valid":
        p2 = 0
    elif padding == "same":
        p2 = max((math.ceil(n / s) - 1) * s + f_eff - n, 0)
    else:
        return None
    num = n - f_eff + p2
    value = num // s + 1
    if value != out:
        return None
    f_txt = str(f) if d == 1 else f"{f_eff}"
    body = f"({n} − {f_txt} + 2·{_fmt_num(p2 / 2)})/{s}"
    if num % s:
        body = f"⌊{body}⌋"
    return f"{body} + 1 = {out}"


def _output_formulas(layer, in_shape, out_shape, kernel, strides, dilation) -> list[str]:
    padding = getattr(layer, "padding", "valid")
    if getattr(layer, "data_format", "channels_last") != "channels_last" or len(in_shape) < 3:
        return []
    spatial_in, spatial_out = in_shape[1:-1], out_shape[1:-1]
    dims = []
    for i, (n, o) in enumerate(zip(spatial_in, spatial_out)):
        txt = _dim_formula(n, int(kernel[i]), int(strides[i]), int(dilation[i]) if dilation else 1, padding, o)
        if txt is None:
            return []
        dims.append(txt)
    if len(dims) == 2 and dims[0] == dims[1]:
        return [f"output (N − F + 2P)/S + 1: {dims[0]}"]
    labels = ["H", "W", "D"] if len(dims) > 1 else ["N"]
    return ["output (N − F + 2P)/S + 1: " + "; ".join(f"{labels[i]} {t}" for i, t in enumerate(dims))]


def _keras_counts(layer, in_shape, out_shape) -> tuple[int, int, list[str]]:
    """(conv/FC params, MACs, formulas) for one Keras layer with known input/output shapes (batch excluded)."""
    names = _mro_names(layer)
    weights = {w.path.split("/")[-1]: tuple(int(d) for d in w.shape) for w in layer.weights}
    spatial_out = _size(tuple(d or 1 for d in out_shape[1:-1])) if len(out_shape) > 2 else 1
    formulas: list[str] = []
    use_bias = "bias" in weights
    bias_txt = " + 1" if use_bias else ""
    if "BaseDepthwiseConv" in names:
        k = weights["kernel"]  # (k..., in_c, dm)
        ks, d, dm = k[:-2], k[-2], k[-1]
        params = _size(k) + (_size(weights["bias"]) if use_bias else 0)
        macs = spatial_out * d * dm * _size(ks)
        formulas += _output_formulas(layer, in_shape, out_shape, ks, layer.strides, layer.dilation_rate)
        formulas.append(f"params (F·F{bias_txt})·D·M: ({'·'.join(map(str, ks))}{bias_txt})·{d}·{dm} = {params:,}")
        return params, macs, formulas
    if "BaseSeparableConv" in names:
        dk, pk = weights["depthwise_kernel"], weights["pointwise_kernel"]  # (k..., in_c, dm), (1.., in_c*dm, out_c)
        ks, d, dm, k_out = dk[:-2], dk[-2], dk[-1], pk[-1]
        params = _size(dk) + _size(pk) + (_size(weights["bias"]) if use_bias else 0)
        macs = spatial_out * d * dm * _size(ks) + spatial_out * d * dm * k_out
        formulas += _output_formulas(layer, in_shape, out_shape, ks, layer.strides, layer.dilation_rate)
        formulas.append(f"params F·F·D·M + (D·M{bias_txt})·K: {'·'.join(map(str, ks))}·{d}·{dm} + "
                        f"({d}·{dm}{bias_txt})·{k_out} = {params:,}")
        return params, macs, formulas
    if "BaseConvTranspose" in names:
        k = weights["kernel"]  # (k..., out_c, in_c)
        params = _size(k) + (_size(weights["bias"]) if use_bias else 0)
        spatial_in = _size(tuple(d or 1 for d in in_shape[1:-1]))
        macs = spatial_in * _size(k)
        return params, macs, formulas
    if "BaseConv" in names:
        k = weights["kernel"]  # (k..., in_c/groups, out_c)
        ks, d, k_out = k[:-2], k[-2], k[-1]
        params = _size(k) + (_size(weights["bias"]) if use_bias else 0)
        macs = spatial_out * k_out * _size(k[:-1])
        formulas += _output_formulas(layer, in_shape, out_shape, ks, layer.strides, layer.dilation_rate)
        formulas.append(f"params (F·F·D{bias_txt})·K: ({'·'.join(map(str, ks))}·{d}{bias_txt})·{k_out} = {params:,}")
        return params, macs, formulas
    if "Dense" in names and "kernel" in weights:
        k = weights["kernel"]  # (in, units)
        params = _size(k) + (_size(weights["bias"]) if use_bias else 0)
        rows = _size(tuple(d or 1 for d in out_shape[1:-1])) if len(out_shape) > 2 else 1
        macs = rows * _size(k)
        formulas.append(f"params (D{bias_txt})·K: ({k[0]}{bias_txt})·{k[1]} = {params:,}")
        return params, macs, formulas
    if "BasePooling" in names:
        formulas += _output_formulas(layer, in_shape, out_shape, layer.pool_size, layer.strides, None)
    return 0, 0, formulas


def _leaf_layers(model, prefix: str = ""):
    for layer in model.layers:
        if hasattr(layer, "layers") and "Model" in _mro_names(layer):
            yield from _leaf_layers(layer, prefix + layer.name + "/")
        else:
            yield prefix, layer


def _node_shapes(layer):
    nodes = getattr(layer, "_inbound_nodes", [])
    if not nodes:
        return None, None, [], []
    node = nodes[0]
    ins = [t for t in node.input_tensors]
    outs = list(node.outputs)
    return ([tuple(t.shape) for t in ins], [tuple(t.shape) for t in outs],
            [str(t.dtype) for t in ins], [str(t.dtype) for t in outs])


def _keras_bytes(shape, dtype: str) -> int:
    try:
        item = np.dtype(dtype).itemsize
    except TypeError:
        item = 4
    return _size(tuple(1 if d is None else d for d in shape)) * item


def inspect_keras(model_or_path) -> Inspection:
    source = None
    model = model_or_path
    model_bytes = None
    if isinstance(model_or_path, (str, os.PathLike)):
        p = Path(model_or_path)
        if p.is_dir() and (p / "model.keras").is_file():
            p = p / "model.keras"
        model = load_keras_model(p)
        source = str(p)
        model_bytes = p.stat().st_size
    if not hasattr(model, "layers") or not hasattr(model, "count_params"):
        raise ModelError("not a Keras model", received=type(model_or_path).__name__)
    if not model.built:
        raise ModelError("the Keras model is not built (no input shape)", received=model.name)

    rows: list[LayerRow] = []
    totals = Totals(model_bytes=model_bytes, keras_params=int(model.count_params()), bn_params=0,
                    conv_fc_params=0)
    for idx, (prefix, layer) in enumerate(_leaf_layers(model)):
        if type(layer).__name__ == "InputLayer":
            continue
        in_shapes, out_shapes, in_dtypes, out_dtypes = _node_shapes(layer)
        if out_shapes is None:
            raise ModelError("cannot determine the layer's output shape (model not built on an input)",
                             received=f"{model.name}/{prefix}{layer.name}")
        params = macs = 0
        formulas: list[str] = []
        if in_shapes:
            params, macs, formulas = _keras_counts(layer, in_shapes[0], out_shapes[0])
            # a shared layer runs once per call: its weights count once, its MACs for every call
            for node in getattr(layer, "_inbound_nodes", [])[1:]:
                if node.input_tensors and node.outputs:
                    macs += _keras_counts(layer, tuple(node.input_tensors[0].shape),
                                          tuple(node.outputs[0].shape))[1]
        kparams = int(layer.count_params())
        if "BatchNormalization" in _mro_names(layer):
            totals.bn_params += kparams
        cfg = {}
        for key in ("filters", "units", "kernel_size", "strides", "padding", "pool_size", "activation", "rate",
                    "depth_multiplier", "dilation_rate"):
            if hasattr(layer, key):
                v = getattr(layer, key)
                v = getattr(v, "__name__", v)
                cfg[key] = list(v) if isinstance(v, tuple) else v
        rows.append(LayerRow(
            index=len(rows), name=prefix + layer.name, type=type(layer).__name__,
            output_shape=[_shape_list(s) for s in out_shapes], params=kparams, macs=macs,
            input_dtypes=sorted(set(in_dtypes)), output_dtypes=sorted(set(out_dtypes)),
            weight_bytes=int(sum(_keras_bytes(w.shape, str(w.dtype)) for w in layer.weights)),
            options={k: v for k, v in cfg.items() if isinstance(v, (int, float, str, list, bool))},
            formulas=formulas, keras_params=kparams, conv_fc_params=params,
        ))
        totals.conv_fc_params += params
        totals.macs += macs
    totals.params = totals.keras_params
    totals.weight_bytes = int(sum(_keras_bytes(w.shape, str(w.dtype)) for w in model.weights))
    totals.peak_activation_bytes, peak_step = _keras_peak(model)
    notes = []
    if totals.bn_params:
        notes.append(f"{totals.bn_params:,} BatchNormalization parameters fold into the preceding layer on "
                     "conversion")
    totals.peak_at = peak_step

    def _io(tensors, names) -> list[dict[str, Any]]:
        names = list(names or [])
        return [{"name": names[i] if i < len(names) else getattr(t, "name", ""), "shape": _shape_list(t.shape),
                 "dtype": str(t.dtype)} for i, t in enumerate(tensors)]

    return Inspection(
        format="keras", source=source, name=model.name, layers=rows, totals=totals,
        inputs=_io(model.inputs, [getattr(t, "name", "") for t in model.inputs]),
        outputs=_io(model.outputs, getattr(model, "output_names", None)),
        notes=notes,
    )


def _keras_peak(model) -> tuple[int, str | None]:
    """Peak live activation bytes (batch 1) over the model's top-level layers in order."""
    ids: dict[int, int] = {}
    sizes: dict[int, int] = {}

    def tid(t) -> int:
        key = id(t)
        if key not in ids:
            ids[key] = len(ids)
            sizes[ids[key]] = _keras_bytes(tuple(t.shape), str(t.dtype))
        return ids[key]

    inputs = [tid(t) for t in model.inputs]
    known = set(inputs)
    ops = []
    names = []
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        for node in getattr(layer, "_inbound_nodes", []):
            ins = [id(t) for t in node.input_tensors]
            if not all(i in ids and ids[i] in known for i in ins):
                continue  # a node of this layer in another model
            outs = [tid(t) for t in node.outputs]
            known.update(outs)
            ops.append((tuple(ids[i] for i in ins), tuple(outs), ()))
            names.append(layer.name)
    outputs = [ids[id(t)] for t in model.outputs if id(t) in ids]
    peak, step = _peak(len(ids), ops, inputs, outputs, sizes)
    if 0 <= step < len(names):
        return peak, f"layer {names[step]}"
    return peak, "model inputs" if step < 0 else "model outputs"
