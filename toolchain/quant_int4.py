"""Packed int4 weights: rewrite a calibrated int8 .tflite so chosen weight tensors are TensorType INT4.

``to_int4(data, layer_of, int4_layers=None, keep_int8_layers=None) -> (bytes, info)``

Why a rewrite of the flatbuffer (and not another converter): the TF converter emits no int4 weights for
full-integer models, ai-edge-quantizer is not part of this toolchain's dependencies, and the int8 model already
carries everything int4 weights need — the activation ranges calibrated on the training split, the per-channel
weight scales, the int32 biases. The rewrite keeps the activations and the graph exactly as they are and, per
weight tensor of a CONV_2D, DEPTHWISE_CONV_2D or FULLY_CONNECTED:

1. dequantises the int8 weights (q8 x scale8) per channel (the tensor's ``quantized_dimension``; one scale for a
   per-tensor tensor);
2. picks each channel's int4 scale by searching the clipping ratio r in [0.5, 1] that minimises the squared error
   of round(w / (r * max|w| / 7)) clamped to [-7, 7] (symmetric, zero point 0, as TFLite's int4 kernels expect);
3. packs two values per byte, the first in the low nibble (TFLite's packed int4 layout, which LiteRT's reference
   kernels and TFLM unpack);
4. rescales the int32 bias to the new input x weight scale: bias4 = round(bias8 x scale8 / scale4).

Deterministic: the same int8 model gives the same bytes. Layers are chosen by Keras layer name (the name found in
the op's output tensor): ``int4_layers`` (a regex; default every eligible layer) minus ``keep_int8_layers``.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import numpy as np

from toolchain.errors import ConversionError, UsageError

INT4_OPS = {"CONV_2D": 3, "DEPTHWISE_CONV_2D": 4, "FULLY_CONNECTED": 9}
QMAX = 7
RATIOS = np.linspace(0.5, 1.0, 26)


def compile_regex(pattern: str | None, option: str) -> re.Pattern | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"{option} is not a valid regular expression: {exc}", received=pattern) from None


def pack_int4(q: np.ndarray) -> np.ndarray:
    """Values in [-8, 7] -> bytes, two per byte, element 2i in the low nibble (odd count: high nibble 0)."""
    flat = q.reshape(-1).astype(np.int8)
    if flat.size % 2:
        flat = np.concatenate([flat, np.zeros(1, np.int8)])
    lo = flat[0::2].astype(np.uint8) & 0x0F
    hi = (flat[1::2].astype(np.uint8) & 0x0F) << 4
    return (lo | hi).astype(np.uint8)


def unpack_int4(packed: np.ndarray, count: int) -> np.ndarray:
    """The inverse of :func:`pack_int4` (sign-extended int8 values)."""
    b = np.asarray(packed, dtype=np.uint8)
    out = np.empty(b.size * 2, dtype=np.int8)
    out[0::2] = ((b & 0x0F).astype(np.int16) ^ 8) - 8
    out[1::2] = ((b >> 4).astype(np.int16) ^ 8) - 8
    return out[:count]


def quantise_channels(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of ``w`` (channels x values, float) -> (int4 values, scales, squared error per channel)."""
    amax = np.max(np.abs(w), axis=1)
    best_q = np.zeros(w.shape, dtype=np.int8)
    best_s = np.where(amax > 0, amax / QMAX, 1.0)
    best_e = np.full(w.shape[0], np.inf)
    for r in RATIOS:
        s = np.where(amax > 0, r * amax / QMAX, 1.0)
        q = np.clip(np.round(w / s[:, None]), -QMAX, QMAX)
        e = np.sum((q * s[:, None] - w) ** 2, axis=1)
        better = e < best_e
        best_e[better] = e[better]
        best_s[better] = s[better]
        best_q[better] = q[better].astype(np.int8)
    return best_q, best_s, best_e


def _builtin(model, op) -> int:
    code = model.operatorCodes[op.opcodeIndex]
    return max(int(code.builtinCode), int(code.deprecatedBuiltinCode))


def to_int4(data: bytes, layer_of: Callable[[str], str | None], int4_layers: str | None = None,
            keep_int8_layers: str | None = None) -> tuple[bytes, dict[str, Any]]:
    """Rewrite the eligible int8 weight tensors of ``data`` to packed int4; returns (bytes, info for the sidecar)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    want = compile_regex(int4_layers, "--int4-layers")
    keep = compile_regex(keep_int8_layers, "--keep-int8-layers")
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    graph = model.subgraphs[0]
    layers: list[dict[str, Any]] = []
    seen: set[int] = set()
    by_code = {v: k for k, v in INT4_OPS.items()}
    for op in graph.operators:
        opname = by_code.get(_builtin(model, op))
        if opname is None or len(op.inputs) < 2:
            continue
        wt = graph.tensors[op.inputs[1]]
        out_name = graph.tensors[op.outputs[0]].name
        out_name = out_name.decode() if isinstance(out_name, bytes) else str(out_name)
        layer = layer_of(out_name) or out_name
        entry = {"layer": layer, "op": opname, "weights": int(np.prod(wt.shape)), "bits": 8}
        layers.append(entry)
        if wt.type != schema.TensorType.INT8 or op.inputs[1] in seen:
            entry["reason"] = "weights are not int8" if wt.type != schema.TensorType.INT8 else "shared weights"
            continue
        if (want is not None and not want.search(layer)) or (keep is not None and keep.search(layer)):
            entry["reason"] = "kept int8 (--int4-layers / --keep-int8-layers)"
            continue
        seen.add(op.inputs[1])
        q8 = np.frombuffer(bytes(model.buffers[wt.buffer].data), dtype=np.int8)
        shape = [int(s) for s in wt.shape]
        if q8.size != int(np.prod(shape)):
            raise ConversionError("a weight buffer does not match its tensor's shape",
                                  received=f"{layer}: {q8.size} bytes for {shape}")
        scales8 = np.asarray(wt.quantization.scale, dtype=np.float64)
        axis = int(wt.quantization.quantizedDimension) if scales8.size > 1 else 0
        w = np.moveaxis(q8.reshape(shape).astype(np.float64), axis, 0)
        rows = w.reshape(w.shape[0], -1)
        if scales8.size > 1:
            rows = rows * scales8[:, None]
            q, s4, err = quantise_channels(rows)
        else:  # per-tensor: one scale for the whole tensor
            q, s4, err = quantise_channels((rows * scales8[0]).reshape(1, -1))
        q = np.moveaxis(q.reshape(w.shape), 0, axis) if scales8.size > 1 else q.reshape(shape)
        model.buffers[wt.buffer].data = pack_int4(q)
        wt.type = schema.TensorType.INT4
        wt.quantization.scale = s4.astype(np.float32).tolist()
        wt.quantization.zeroPoint = [0] * s4.size
        s4f = np.asarray(wt.quantization.scale, dtype=np.float64)
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            bt = graph.tensors[op.inputs[2]]
            b8 = np.frombuffer(bytes(model.buffers[bt.buffer].data), dtype=np.int32).astype(np.float64)
            ratio = scales8 / s4f
            b4 = np.round(b8 * (ratio if ratio.size == b8.size else ratio[0]))
            model.buffers[bt.buffer].data = np.clip(b4, -2 ** 31, 2 ** 31 - 1).astype("<i4").view(np.uint8)
            bs = np.asarray(bt.quantization.scale, dtype=np.float64)
            bt.quantization.scale = (bs * s4f / scales8).astype(np.float32).tolist()
        energy = float(np.sum(rows ** 2))
        entry.update(bits=4, scales=int(s4.size), sqnr_db=round(10 * np.log10(energy / max(float(np.sum(err)), 1e-30)),
                                                                  2) if energy > 0 else None)
    converted = [e for e in layers if e["bits"] == 4]
    if not converted:
        raise UsageError("no layer's weights were made int4 (the eligible CONV_2D, DEPTHWISE_CONV_2D and "
                         "FULLY_CONNECTED layers are excluded by --int4-layers / --keep-int8-layers)",
                         received=", ".join(e["layer"] for e in layers) or "no eligible layers")
    out = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    info = {"weights": "int4", "int4_layers": int4_layers, "keep_int8_layers": keep_int8_layers,
            "layers": layers, "int4_weight_count": sum(e["weights"] for e in converted)}
    return out, info
