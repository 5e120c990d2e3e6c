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

import os
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.errors import ModelError
from toolchain.inspect_common import (
    Inspection,
    LayerRow,
    Totals,
    _peak,
    _size,
)
from toolchain.keras_inspect import inspect_keras, load_keras_model  # noqa: F401  (re-exported)
from toolchain.keras_io import KERAS_SUFFIXES
from toolchain.tflite_model import Operator, Tensor, TFLiteModel, load_tflite


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
            macs = out_elems * (int(w.shape[-1]) if w.shape else 1)
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
