"""Flatbuffer helpers used by ``toolchain.quantise`` (TensorFlow's generated TFLite schema object API).

* ``embed_metadata(data, name, payload)``: add (or replace) one entry of the .tflite ``metadata`` table,
  deterministically, keeping every buffer 16-byte aligned.
* ``describe(data)``: operators, tensor dtypes, input/output quantisation and the float operators an
  "int8" model still contains.

TensorFlow is only needed for its generated schema module, which this module imports lazily.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from toolchain.errors import ModelError

_BUFFER_ALIGNMENT = 16
_PASS_THROUGH_OPS = {"QUANTIZE", "DEQUANTIZE"}
_FLOAT_TYPES = {"FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16"}


def _schema():
    from tensorflow.lite.python import schema_py_generated as schema

    return schema


def _reverse_enum(cls: type) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


def _read(data: bytes):
    schema = _schema()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelError("not a TFLite flatbuffer (missing TFL3 identifier)", received=f"{len(data)} bytes")
    try:
        return schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    except Exception as exc:  # corrupt flatbuffers raise anything from struct/index errors
        raise ModelError("cannot parse the TFLite flatbuffer", received=f"{type(exc).__name__}: {exc}") from exc


def _aligned_buffer_class():
    schema = _schema()

    class AlignedBufferT(schema.BufferT):
        """A BufferT whose data vector starts on a 16-byte boundary (what the TFLite converter emits)."""

        def Pack(self, builder):  # noqa: N802 (flatbuffers naming)
            data_off = None
            if self.data is not None:
                raw = np.asarray(self.data, dtype=np.uint8).tobytes()
                builder.StartVector(1, len(raw), _BUFFER_ALIGNMENT)
                builder.head = builder.head - len(raw)
                builder.Bytes[builder.head: builder.head + len(raw)] = raw
                data_off = builder.EndVector()
            schema.BufferStart(builder)
            if data_off is not None:
                schema.BufferAddData(builder, data_off)
            schema.BufferAddOffset(builder, self.offset)
            schema.BufferAddSize(builder, self.size)
            return schema.BufferEnd(builder)

    return AlignedBufferT


def _pack(model) -> bytes:
    import flatbuffers

    aligned = _aligned_buffer_class()
    for buf in model.buffers or []:
        buf.__class__ = aligned
    builder = flatbuffers.Builder(1 << 16)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def embed_metadata(data: bytes, name: str, payload: bytes) -> bytes:
    """Return ``data`` with metadata entry ``name`` set to ``payload`` (same bytes in, same bytes out)."""
    schema = _schema()
    model = _read(data)
    if model.buffers is None:
        model.buffers = []
    if model.metadata is None:
        model.metadata = []
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(payload, dtype=np.uint8).copy()
    existing = [m for m in model.metadata if _text(m.name) == name]
    if existing:
        model.buffers[existing[0].buffer] = buffer
    else:
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = name
        entry.buffer = len(model.buffers) - 1
        model.metadata.append(entry)
    return _pack(model)


def read_metadata(data: bytes) -> dict[str, bytes]:
    """All entries of the .tflite metadata table: name -> raw bytes."""
    model = _read(data)
    out: dict[str, bytes] = {}
    for entry in model.metadata or []:
        buf = model.buffers[entry.buffer]
        out[_text(entry.name)] = b"" if buf.data is None else np.asarray(buf.data, np.uint8).tobytes()
    return out


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _tensor_info(tensor, type_names: dict[int, str]) -> dict[str, Any]:
    q = tensor.quantization
    scale = [] if q is None or q.scale is None else [float(s) for s in np.asarray(q.scale).ravel()]
    zero = [] if q is None or q.zeroPoint is None else [int(z) for z in np.asarray(q.zeroPoint).ravel()]
    shape = [] if tensor.shape is None else [int(d) for d in np.asarray(tensor.shape).ravel()]
    return {
        "name": _text(tensor.name),
        "dtype": type_names.get(tensor.type, str(tensor.type)).lower(),
        "shape": shape,
        "scale": scale[0] if len(scale) == 1 else scale,
        "zero_point": zero[0] if len(zero) == 1 else zero,
    }


def describe(data: bytes) -> dict[str, Any]:
    """Summary of a .tflite: op list, dtype counts, constant weight/bias dtypes, I/O tensors and float ops."""
    schema = _schema()
    model = _read(data)
    op_names = _reverse_enum(schema.BuiltinOperator)
    type_names = _reverse_enum(schema.TensorType)
    if not model.subgraphs:
        raise ModelError("the TFLite model has no subgraph", received=f"{len(data)} bytes")
    sg = model.subgraphs[0]
    tensors = sg.tensors or []

    def has_data(t) -> bool:
        buf = model.buffers[t.buffer] if model.buffers and t.buffer < len(model.buffers) else None
        return buf is not None and buf.data is not None and len(buf.data) > 0

    def op_name(op) -> str:
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        name = op_names.get(builtin, str(builtin))
        return (_text(code.customCode) or "CUSTOM") if name == "CUSTOM" else name

    # float16 models keep their weights as float16 constants behind a DEQUANTIZE op: report those constants
    dequantized_from = {int(op.outputs[0]): int(op.inputs[0]) for op in (sg.operators or [])
                        if op_name(op) == "DEQUANTIZE" and op.inputs is not None and op.outputs is not None
                        and has_data(tensors[int(op.inputs[0])])}

    ops: list[str] = []
    float_ops: list[dict[str, Any]] = []
    weight_dtypes: Counter[str] = Counter()
    bias_dtypes: Counter[str] = Counter()
    for index, op in enumerate(sg.operators or []):
        name = op_name(op)
        ops.append(name)
        ins = [i for i in (op.inputs if op.inputs is not None else []) if i >= 0]
        outs = [i for i in (op.outputs if op.outputs is not None else []) if i >= 0]
        if name in {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"}:
            for pos, ti in enumerate(ins):
                t = tensors[dequantized_from.get(ti, ti)]
                if not has_data(t):
                    continue
                kind = type_names.get(t.type, str(t.type)).lower()
                if pos == 1:
                    weight_dtypes[kind] += 1
                elif pos == (3 if name == "TRANSPOSE_CONV" else 2):
                    bias_dtypes[kind] += 1
        if name in _PASS_THROUGH_OPS:
            continue
        in_types = {type_names.get(tensors[i].type) for i in ins if not has_data(tensors[i])}
        out_types = {type_names.get(tensors[i].type) for i in outs}
        if (in_types | out_types) & _FLOAT_TYPES:
            float_ops.append({
                "index": index,
                "op": name,
                "output": _text(tensors[outs[0]].name) if outs else "",
            })
    dtype_counts = Counter(type_names.get(t.type, str(t.type)).lower() for t in tensors)
    return {
        "operators": ops,
        "op_counts": dict(sorted(Counter(ops).items())),
        "tensor_dtypes": dict(sorted(dtype_counts.items())),
        "weight_dtypes": dict(sorted((k, v) for k, v in weight_dtypes.items() if v)),
        "bias_dtypes": dict(sorted((k, v) for k, v in bias_dtypes.items() if v)),
        "inputs": [_tensor_info(tensors[i], type_names) for i in (sg.inputs if sg.inputs is not None else [])],
        "outputs": [_tensor_info(tensors[i], type_names) for i in (sg.outputs if sg.outputs is not None else [])],
        "float_ops": float_ops,
        "metadata_names": [_text(m.name) for m in (model.metadata or [])],
    }
