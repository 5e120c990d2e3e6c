"""Keras side of :mod:`toolchain.model_inspect`: per-layer parameters, MACs, output-size formulas and peak
activation memory of a built Keras model (Keras is only imported when a model file is loaded).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.errors import ModelError
from toolchain.inspect_common import Inspection, LayerRow, Totals, _peak, _size


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
