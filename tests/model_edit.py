"""Rewrites of real ``.tflite`` files through the schema's object API (TensorFlow's ``schema_py_generated``), for
tests that need a model as another converter or an older toolchain wrote it."""

from __future__ import annotations

import flatbuffers
import numpy as np


def _load(data: bytes):
    from tensorflow.lite.python import schema_py_generated as fb

    return fb, fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(bytearray(data), 0))


def _save(model) -> bytes:
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def per_tensor_depthwise_qdim3(data: bytes) -> tuple[bytes, int]:
    """Like TFLM's person-detection example: every DEPTHWISE_CONV_2D gets one weight scale (the largest channel
    scale; weights requantised to it) with ``quantized_dimension`` 3, and a 1-D bias with one scale per element and
    ``quantized_dimension`` 3 (beyond its rank: TFLM ignores it, LiteRT refuses it). Returns (model, layers edited)."""
    fb, m = _load(data)
    sg = m.subgraphs[0]
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in m.operatorCodes]
    edited = 0
    for op in sg.operators:
        if codes[op.opcodeIndex] != fb.BuiltinOperator.DEPTHWISE_CONV_2D:
            continue
        x, w, b = (sg.tensors[i] for i in op.inputs[:3])
        ws = np.asarray(w.quantization.scale, dtype=np.float32)
        s = np.float32(ws.max())
        wbuf = m.buffers[w.buffer]
        wv = np.frombuffer(bytes(bytearray(wbuf.data)), dtype=np.int8).reshape(w.shape).astype(np.float64)
        wbuf.data = np.clip(np.round(wv * (ws / s)), -127, 127).astype(np.int8).tobytes()
        w.quantization.scale, w.quantization.zeroPoint, w.quantization.quantizedDimension = [float(s)], [0], 3
        bbuf = m.buffers[b.buffer]
        bv = np.frombuffer(bytes(bytearray(bbuf.data)), dtype=np.int32).astype(np.float64)
        bbuf.data = np.round(bv * (ws / s)).astype(np.int32).tobytes()
        sx = np.float32(x.quantization.scale[0])
        b.quantization.scale = [float(sx * s)] * len(bv)
        b.quantization.zeroPoint = [0] * len(bv)
        b.quantization.quantizedDimension = 3
        edited += 1
    return _save(m), edited


def move_operator(data: bytes, src: int, dst: int) -> bytes:
    """The same graph with operator ``src`` moved to position ``dst`` of the execution order (the caller keeps the
    order topological)."""
    _, m = _load(data)
    ops = m.subgraphs[0].operators
    ops.insert(dst, ops.pop(src))
    return _save(m)


def set_bias(data: bytes, opcode: str, nth: int, channel: int, value: int) -> bytes:
    """The same model with output channel ``channel`` of the ``nth`` ``opcode`` operator's bias set to ``value``."""
    fb, m = _load(data)
    sg = m.subgraphs[0]
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in m.operatorCodes]
    ops = [op for op in sg.operators if codes[op.opcodeIndex] == getattr(fb.BuiltinOperator, opcode)]
    bbuf = m.buffers[sg.tensors[ops[nth].inputs[2]].buffer]
    bv = np.frombuffer(bytes(bytearray(bbuf.data)), dtype=np.int32).copy()
    bv[channel] = value
    bbuf.data = bv.tobytes()
    return _save(m)


def mark_weights_sparse(data: bytes, opcode: str, nth: int) -> bytes:
    """The same model with the ``nth`` ``opcode`` operator's weight tensor flagged sparse (a dense traversal order,
    values unchanged): the reader then keeps its values flat, as it does for every sparse tensor."""
    fb, m = _load(data)
    sg = m.subgraphs[0]
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in m.operatorCodes]
    ops = [op for op in sg.operators if codes[op.opcodeIndex] == getattr(fb.BuiltinOperator, opcode)]
    w = sg.tensors[ops[nth].inputs[1]]
    sp = fb.SparsityParametersT()
    sp.traversalOrder = list(range(len(w.shape)))
    dims = []
    for d in w.shape:
        dm = fb.DimensionMetadataT()
        dm.format = fb.DimensionType.DENSE
        dm.denseSize = int(d)
        dims.append(dm)
    sp.dimMetadata = dims
    w.sparsity = sp
    return _save(m)
