"""The plain Python objects a parsed ``.tflite`` flatbuffer becomes (``Tensor``, ``Operator``, ``TFLiteModel``).

Public import path: :mod:`toolchain.tflite_model` (these are re-exported there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from toolchain.errors import ModelError


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    data: np.ndarray | None = None
    scale: np.ndarray | None = None
    zero_point: np.ndarray | None = None
    quantized_dimension: int = 0
    is_variable: bool = False
    buffer: int = 0
    shape_signature: tuple[int, ...] | None = None

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    @property
    def num_elements(self) -> int:
        return math.prod(max(int(d), 0) for d in self.shape)  # Python ints: no int64 wrap-around, never negative

    @property
    def itemsize(self) -> float:
        """Bytes per element (0.5 for int4)."""
        if self.dtype == "int4":
            return 0.5
        if self.dtype in ("bfloat16",):
            return 2
        if self.dtype in ("string", "resource", "variant"):
            return 0
        return np.dtype(self.dtype).itemsize

    @property
    def nbytes(self) -> int:
        return math.ceil(self.num_elements * self.itemsize) if self.itemsize != 0.5 else (self.num_elements + 1) // 2

    @property
    def is_quantized(self) -> bool:
        return self.scale is not None and self.scale.size > 0

    @property
    def per_channel(self) -> bool:
        return self.scale is not None and self.scale.size > 1


@dataclass
class Operator:
    index: int
    opcode: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)
    version: int = 1
    builtin: bool = True
    intermediates: tuple[int, ...] = ()


@dataclass
class TFLiteModel:
    path: str | None
    data: bytes
    size_bytes: int
    version: int
    description: str
    tensors: list[Tensor]
    operators: list[Operator]
    inputs: list[int]
    outputs: list[int]
    metadata: dict[str, bytes]
    num_subgraphs: int

    def opcode_names(self) -> list[str]:
        return sorted({op.opcode for op in self.operators})

    def tensor(self, i: int) -> Tensor:
        if not 0 <= i < len(self.tensors):
            raise ModelError("tensor index out of range", received=f"{i} (model has {len(self.tensors)} tensors)")
        return self.tensors[i]

    @property
    def input_tensors(self) -> list[Tensor]:
        return [self.tensors[i] for i in self.inputs]

    @property
    def output_tensors(self) -> list[Tensor]:
        return [self.tensors[i] for i in self.outputs]

    def input_quant_range(self) -> tuple[float, float] | None:
        """The float range the first input's int8/uint8/int16 quantisation represents: the input tensor's own, or,
        for a float input, that of the QUANTIZE op that consumes it. None when the input is never quantised."""
        if not self.inputs:
            return None
        t = self.tensor(self.inputs[0])
        if t.dtype not in _INT_RANGES:
            q = next((op for op in self.operators if op.opcode == "QUANTIZE" and op.inputs
                      and op.inputs[0] == t.index and op.outputs), None)
            if q is None:
                return None
            t = self.tensor(q.outputs[0])
        if t.dtype not in _INT_RANGES or t.scale is None or len(t.scale) != 1 or t.zero_point is None:
            return None
        lo, hi = _INT_RANGES[t.dtype]
        s, z = float(t.scale[0]), int(t.zero_point[0])
        return ((lo - z) * s, (hi - z) * s)


_INT_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}
