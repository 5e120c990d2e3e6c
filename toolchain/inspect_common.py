"""Shared parts of :mod:`toolchain.model_inspect`: the result dataclasses (``Inspection``, ``LayerRow``,
``Totals``) and the size / peak-live-memory helpers used by both the Keras and the TFLite inspection.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


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


def _size(shape: tuple[int, ...]) -> int:
    return int(np.prod([max(int(d), 1) for d in shape], dtype=np.int64)) if shape else 1


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

