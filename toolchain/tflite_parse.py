"""Flatbuffer parsing internals of :mod:`toolchain.tflite_model`: bounds-checked decoding of buffers, tensors,
operators and builtin options with the ``tflite`` schema package (imported lazily).
"""

from __future__ import annotations

import importlib
import inspect as _inspect
import math
import re
import struct
from functools import lru_cache
from typing import Any

import numpy as np

from toolchain.errors import ModelError
from toolchain.tflite_types import Operator, Tensor, TFLiteModel

# TensorType enum value -> numpy dtype name (None: no numpy equivalent, data kept as raw bytes).
_TENSOR_TYPES: dict[int, tuple[str, str | None]] = {
    0: ("float32", "float32"),
    1: ("float16", "float16"),
    2: ("int32", "int32"),
    3: ("uint8", "uint8"),
    4: ("int64", "int64"),
    5: ("string", None),
    6: ("bool", "bool"),
    7: ("int16", "int16"),
    8: ("complex64", "complex64"),
    9: ("int8", "int8"),
    10: ("float64", "float64"),
    11: ("complex128", "complex128"),
    12: ("uint64", "uint64"),
    13: ("resource", None),
    14: ("variant", None),
    15: ("uint32", "uint32"),
    16: ("uint16", "uint16"),
    17: ("int4", "int8"),  # packed two per byte; unpacked to int8 values
    18: ("bfloat16", None),
}

# Option fields whose values are enums, by getter name (fields named like their enum class are found generically).
_ENUM_FIELDS = {
    "FusedActivationFunction": "ActivationFunctionType",
    "WeightsFormat": "FullyConnectedOptionsWeightsFormat",
    "QuantizedBiasType": "TensorType",
    "InDataType": "TensorType",
    "OutDataType": "TensorType",
    "OutputType": "TensorType",
    "OutType": "TensorType",
    "IdxOutType": "TensorType",
    "KernelType": "LSTMKernelType",
    "Mode": "MirrorPadMode",
    "CombinerType": "CombinerType",
}
# Getters of the generated classes that are not option fields.
_NOT_FIELDS = {"Init", "GetRootAs"}


# --------------------------------------------------------------------------------------------------------------
# parsing


class _Bad(ModelError):
    pass


def _check_len(n: int, elem_size: int, buf_len: int, what: str, source: str) -> int:
    if n < 0 or n * elem_size > buf_len:
        raise _Bad("not a valid TFLite flatbuffer (corrupt or truncated)", received=f"{source}: {what} length {n}")
    return n


def _parse(data: bytes, source: str) -> TFLiteModel:
    import tflite

    buf = bytearray(data)
    n = len(buf)
    root = struct.unpack_from("<I", buf, 0)[0]
    if root + 4 > n:
        raise _Bad("not a valid TFLite flatbuffer (corrupt or truncated)", received=f"{source}: root offset {root}")
    model = tflite.Model.GetRootAsModel(buf, 0)

    # buffers
    nbuf = _check_len(model.BuffersLength(), 4, n, "buffers", source)
    buffers: list[bytes | None] = []
    for i in range(nbuf):
        b = model.Buffers(i)
        buffers.append(_buffer_bytes(b, buf, source, i))

    # opcodes
    nops_codes = _check_len(model.OperatorCodesLength(), 4, n, "operator codes", source)
    opcodes: list[tuple[str, bool, int]] = []
    names = tflite.utils.BUILTIN_OPCODE2NAME
    for i in range(nops_codes):
        oc = model.OperatorCodes(i)
        code = max(int(oc.DeprecatedBuiltinCode()), int(oc.BuiltinCode()))
        if code == tflite.BuiltinOperator.CUSTOM:
            custom = oc.CustomCode()
            opcodes.append(((custom or b"CUSTOM").decode("utf-8", "replace"), False, oc.Version()))
        else:
            opcodes.append((names.get(code, f"BUILTIN_{code}"), True, oc.Version()))

    nsub = _check_len(model.SubgraphsLength(), 4, n, "subgraphs", source)
    if nsub < 1:
        raise _Bad("not a valid TFLite flatbuffer (no subgraph)", received=source)
    sg = model.Subgraphs(0)

    ntens = _check_len(sg.TensorsLength(), 4, n, "tensors", source)
    tensors = [_tensor(sg.Tensors(i), i, buffers, n, source) for i in range(ntens)]

    def _indices(vec_len: int, getter, what: str, allow_absent: bool = False) -> tuple[int, ...]:
        _check_len(vec_len, 4, n, what, source)
        out = tuple(int(getter(j)) for j in range(vec_len))
        for t in out:
            if not (0 <= t < ntens or (allow_absent and t == -1)):
                raise _Bad("not a valid TFLite flatbuffer (tensor index out of range)",
                           received=f"{source}: {what} refers to tensor {t} of {ntens}")
        return out

    inputs = list(_indices(sg.InputsLength(), sg.Inputs, "subgraph inputs"))
    outputs = list(_indices(sg.OutputsLength(), sg.Outputs, "subgraph outputs"))

    nops = _check_len(sg.OperatorsLength(), 4, n, "operators", source)
    operators: list[Operator] = []
    for i in range(nops):
        op = sg.Operators(i)
        idx = int(op.OpcodeIndex())
        if not 0 <= idx < len(opcodes):
            raise _Bad("not a valid TFLite flatbuffer (operator code index out of range)",
                       received=f"{source}: operator {i} uses opcode {idx} of {len(opcodes)}")
        name, builtin, version = opcodes[idx]
        ins = _indices(op.InputsLength(), op.Inputs, f"operator {i} inputs", allow_absent=True)
        outs = _indices(op.OutputsLength(), op.Outputs, f"operator {i} outputs", allow_absent=True)
        inter = _indices(op.IntermediatesLength(), op.Intermediates, f"operator {i} intermediates")
        options = _options(op) if builtin else {}
        operators.append(Operator(i, name, ins, outs, options, int(version), builtin, inter))

    metadata: dict[str, bytes] = {}
    nmeta = _check_len(model.MetadataLength(), 4, n, "metadata", source)
    for i in range(nmeta):
        m = model.Metadata(i)
        name = (m.Name() or b"").decode("utf-8", "replace")
        bi = int(m.Buffer())
        if not 0 <= bi < len(buffers):
            raise _Bad("not a valid TFLite flatbuffer (metadata buffer index out of range)",
                       received=f"{source}: metadata {name!r} -> buffer {bi} of {len(buffers)}")
        metadata[name] = buffers[bi] or b""

    desc = model.Description()
    return TFLiteModel(
        path=None if source.startswith("<") else source,
        data=data,
        size_bytes=n,
        version=int(model.Version()),
        description=(desc or b"").decode("utf-8", "replace"),
        tensors=tensors,
        operators=operators,
        inputs=inputs,
        outputs=outputs,
        metadata=metadata,
        num_subgraphs=nsub,
    )


def _buffer_bytes(b, buf: bytearray, source: str, i: int) -> bytes | None:
    tab = b._tab
    o = tab.Offset(4)
    if o != 0:
        start = tab.Vector(o)
        length = tab.VectorLen(o)
        if start < 0 or length < 0 or start + length > len(buf):
            raise _Bad("not a valid TFLite flatbuffer (buffer data beyond end of file)",
                       received=f"{source}: buffer {i} [{start}, {start + length}) of {len(buf)} bytes")
        return bytes(buf[start:start + length]) if length else None
    # models > 2 GB store buffers after the flatbuffer: offset/size relative to the file start
    off, size = int(b.Offset()), int(b.Size())
    if off > 1 and size > 0:
        if off + size > len(buf):
            raise _Bad("not a valid TFLite flatbuffer (buffer data beyond end of file)",
                       received=f"{source}: buffer {i} [{off}, {off + size}) of {len(buf)} bytes")
        return bytes(buf[off:off + size])
    return None


def _tensor(t, index: int, buffers: list[bytes | None], n: int, source: str) -> Tensor:
    ttype = int(t.Type())
    if ttype not in _TENSOR_TYPES:
        raise _Bad("not a valid TFLite flatbuffer (unknown tensor type)", received=f"{source}: tensor {index} type {ttype}")
    dtype, np_dtype = _TENSOR_TYPES[ttype]
    _check_len(t.ShapeLength(), 4, n, f"tensor {index} shape", source)
    shape = tuple(int(t.Shape(j)) for j in range(t.ShapeLength()))
    if any(d < 0 for d in shape):
        raise _Bad("not a valid TFLite flatbuffer (negative tensor dimension)",
                   received=f"{source}: tensor {index} shape {list(shape)}")
    sig = None
    if t.ShapeSignatureLength():
        _check_len(t.ShapeSignatureLength(), 4, n, f"tensor {index} shape signature", source)
        sig = tuple(int(t.ShapeSignature(j)) for j in range(t.ShapeSignatureLength()))
    bi = int(t.Buffer())
    if not 0 <= bi < max(len(buffers), 1):
        raise _Bad("not a valid TFLite flatbuffer (tensor buffer index out of range)",
                   received=f"{source}: tensor {index} -> buffer {bi} of {len(buffers)}")
    raw = buffers[bi] if bi < len(buffers) else None
    data = None
    if raw is not None:
        data = _decode_data(raw, shape, dtype, np_dtype, sparse=t.Sparsity() is not None, where=f"{source}: tensor {index}")

    scale = zp = None
    qdim = 0
    q = t.Quantization()
    if q is not None:
        if q.ScaleLength():
            _check_len(q.ScaleLength(), 4, n, f"tensor {index} scale", source)
            scale = np.array([q.Scale(j) for j in range(q.ScaleLength())], dtype=np.float32)
        if q.ZeroPointLength():
            _check_len(q.ZeroPointLength(), 8, n, f"tensor {index} zero point", source)
            zp = np.array([q.ZeroPoint(j) for j in range(q.ZeroPointLength())], dtype=np.int64)
        qdim = int(q.QuantizedDimension())
    if scale is not None and zp is None:
        zp = np.zeros(scale.shape, dtype=np.int64)
    name = (t.Name() or b"").decode("utf-8", "replace")
    return Tensor(index=index, name=name, shape=shape, dtype=dtype, data=data, scale=scale, zero_point=zp,
                  quantized_dimension=qdim, is_variable=bool(t.IsVariable()), buffer=bi, shape_signature=sig)


def _decode_data(raw: bytes, shape: tuple[int, ...], dtype: str, np_dtype: str | None, *, sparse: bool,
                 where: str) -> np.ndarray:
    count = math.prod(shape)  # Python ints: a corrupt shape must not wrap around in int64
    if np_dtype is None:
        return np.frombuffer(raw, dtype=np.uint8).copy()
    if dtype == "int4":
        packed = np.frombuffer(raw, dtype=np.uint8)
        if not sparse and packed.size != (count + 1) // 2:
            raise _Bad("not a valid TFLite flatbuffer (tensor buffer size does not match its shape)",
                       received=f"{where}: shape {list(shape)} needs {(count + 1) // 2} bytes of packed int4, "
                                f"buffer holds {packed.size}")
        nib = np.empty(packed.size * 2, dtype=np.int8)
        nib[0::2] = (packed & 0x0F).astype(np.int8)
        nib[1::2] = (packed >> 4).astype(np.int8)
        nib = np.where(nib > 7, nib - 16, nib).astype(np.int8)
        arr = nib[:count] if nib.size >= count else nib
    else:
        item = np.dtype(np_dtype).itemsize
        if len(raw) % item:
            raise _Bad("not a valid TFLite flatbuffer (tensor buffer size is not a multiple of the element size)",
                       received=f"{where}: {len(raw)} bytes of {dtype}")
        arr = np.frombuffer(raw, dtype=np.dtype(np_dtype).newbyteorder("<")).astype(np_dtype)
    if sparse:
        return arr
    if arr.size != count:
        raise _Bad("not a valid TFLite flatbuffer (tensor buffer size does not match its shape)",
                   received=f"{where}: shape {list(shape)} needs {count} {dtype} values, buffer holds {arr.size}")
    return arr.reshape(shape)


# --------------------------------------------------------------------------------------------------------------
# builtin options -> dict


def _snake(name: str) -> str:
    s = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name)
    s = re.sub(r"(?<=[A-Z])([A-Z][a-z])", r"_\1", s)
    return s.lower()


@lru_cache(maxsize=None)
def _union_names(union_module: str) -> dict[int, str]:
    mod = importlib.import_module(f"tflite.{union_module}")
    cls = getattr(mod, union_module)
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


@lru_cache(maxsize=None)
def _enum_names(enum_class: str) -> dict[int, str] | None:
    try:
        mod = importlib.import_module(f"tflite.{enum_class}")
    except ImportError:
        return None
    cls = getattr(mod, enum_class, None)
    if cls is None or hasattr(cls, "Init"):  # a table, not an enum
        return None
    vals = {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}
    return vals or None


@lru_cache(maxsize=None)
def _getters(class_name: str) -> tuple[tuple[str, str, str | None], ...]:
    """(getter, kind, helper) for every field of a generated options class.

    kind: "scalar" (no-arg getter), "vector" (element getter with AsNumpy/Length helpers), "skip" (sub-table).
    """
    mod = importlib.import_module(f"tflite.{class_name}")
    cls = getattr(mod, class_name)
    out = []
    for name, fn in vars(cls).items():
        if name.startswith("_") or name in _NOT_FIELDS or not callable(fn) or isinstance(fn, classmethod):
            continue
        if name.endswith(("AsNumpy", "Length", "IsNone")) or "BufferHasIdentifier" in name or name.startswith("GetRootAs"):
            continue
        params = list(_inspect.signature(fn).parameters)
        if params == ["self"]:
            out.append((name, "scalar", None))
        elif params == ["self", "j"]:
            helper = name + "Length" if hasattr(cls, name + "Length") else None
            out.append((name, "vector", helper))
    return tuple(out)


def _options(op) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for type_getter, table_getter, union in (("BuiltinOptionsType", "BuiltinOptions", "BuiltinOptions"),
                                             ("BuiltinOptions2Type", "BuiltinOptions2", "BuiltinOptions2")):
        utype = int(getattr(op, type_getter)())
        if utype == 0:
            continue
        class_name = _union_names(union).get(utype)
        if class_name is None:
            continue
        table = getattr(op, table_getter)()
        if table is None:
            continue
        mod = importlib.import_module(f"tflite.{class_name}")
        obj = getattr(mod, class_name)()
        obj.Init(table.Bytes, table.Pos)
        result.update(_table_to_dict(obj, class_name))
    return result


def _table_to_dict(obj, class_name: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    nbytes = len(obj._tab.Bytes)
    for name, kind, helper in _getters(class_name):
        key = _snake(name)
        if kind == "scalar":
            value = getattr(obj, name)()
            if isinstance(value, (bool, float)):
                out[key] = value
            elif isinstance(value, int):
                enum = _ENUM_FIELDS.get(name, name)
                names = _enum_names(enum)
                out[key] = names.get(value, value) if names else value
            elif isinstance(value, (bytes, bytearray)):
                out[key] = bytes(value).decode("utf-8", "replace")
            elif value is None:
                continue
            # nested tables (StableHLO options) are not decoded
        elif kind == "vector" and helper:
            length = int(getattr(obj, helper)())
            if length < 0 or length > nbytes:
                raise _Bad("not a valid TFLite flatbuffer (corrupt options vector)", received=f"{class_name}.{name}")
            vals = [getattr(obj, name)(j) for j in range(length)]
            if all(isinstance(v, (int, float, bool)) for v in vals):
                out[key] = [v.item() if hasattr(v, "item") else v for v in vals]
    return out
