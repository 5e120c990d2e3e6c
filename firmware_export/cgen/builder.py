"""The lowering state shared by the operator modules (``firmware_export.cgen.ops``): tensors, quantisation
parameters, constants emitted as C text, the steps (one C function per layer) and storage aliases."""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from firmware_export.cgen import packing
from firmware_export.cgen.quant import quantize_multiplier
from toolchain.errors import ExportError


@dataclass
class Step:
    index: int
    opcode: str
    func: str
    body: str
    reads: list[int]
    writes: list[int]
    scratch_bytes: int = 0
    macs: int = 0
    weight_bytes: int = 0


def _c_float(v: float) -> str:
    v = float(np.float32(v))
    if not math.isfinite(v):
        raise ExportError("non-finite constant in the model", received=repr(v))
    return f"{v.hex()}f" if v != 0 else "0.0f"


def _array(ctype: str, name: str, values, per_line: int = 16) -> str:
    vals = [int(v) for v in np.asarray(values).reshape(-1)]
    if not vals:
        vals = [0]
    lines = []
    for i in range(0, len(vals), per_line):
        lines.append("    " + ", ".join(str(v) if v != -2147483648 else "(-2147483647 - 1)" for v in
                                        vals[i:i + per_line]) + ",")
    return f"static const {ctype} {name}[{len(vals)}] CE_CONST_ATTR = {{\n" + "\n".join(lines) + "\n};\n"


def c_list(values) -> str:
    """A C brace list of integers (array members of a parameter struct)."""
    return "{" + ", ".join(str(int(v)) for v in values) + "}"


def _round_half_away(x: float) -> int:
    return int(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)


class Builder:
    """State of one lowering: constants emitted so far, the steps, storage aliases (RESHAPE, in-place layers)."""

    def __init__(self, model, name: str):
        self.m = model
        self.name = name
        self.consts: list[str] = []
        self.steps: list[Step] = []
        self.alias: dict[int, int] = {}  # tensor -> tensor it shares storage with (RESHAPE, in-place ops)
        self.protected: set[int] = set()  # tensors whose storage may not be overwritten (model output group)
        self.inplace_enabled = True
        self._part = ""  # constant-name tag of a fused operator (``part``)
        # static alias groups of RESHAPE and the last operator reading each group
        root = {}
        for op in model.operators:
            if op.opcode == "RESHAPE":
                root[op.outputs[0]] = op.inputs[0]
        self._static_root = root
        self.last_read: dict[int, int] = {}
        for op in model.operators:
            for t in op.inputs:
                if t >= 0:
                    r = resolve(root, t)
                    self.last_read[r] = max(self.last_read.get(r, -1), op.index)

    def can_overwrite(self, op, t: int) -> bool:
        """May ``op`` write its output over tensor ``t`` (t and its RESHAPE aliases are not read later)?"""
        if not self.inplace_enabled:
            return False
        r = resolve(self._static_root, t)
        rr = resolve(self.alias, t)
        if r in self.protected or rr in self.protected or self.t(t).data is not None:
            return False
        return self.last_read.get(r, -1) <= op.index

    # -- helpers --------------------------------------------------------------------------------------------
    def t(self, i: int):
        return self.m.tensor(i)

    def qparams(self, i: int) -> tuple[float, int]:
        t = self.t(i)
        if t.scale is None or t.scale.size == 0:
            raise ExportError("tensor is not quantised", received=f"tensor {i} '{t.name}' ({t.dtype})")
        return float(np.float32(t.scale.reshape(-1)[0])), int(t.zero_point.reshape(-1)[0])

    def need_int8(self, op, *idx: int) -> None:
        for i in idx:
            t = self.t(i)
            if t.dtype != "int8":
                raise ExportError(f"{op.opcode} supports int8 tensors only",
                                  received=f"tensor '{t.name}' is {t.dtype} (operator {op.index})")

    def act_range(self, act: str, out_idx: int, op) -> tuple[int, int]:
        scale, zp = self.qparams(out_idx)
        s32 = np.float32(scale)

        def q(f: float) -> int:
            return zp + _round_half_away(float(np.float32(np.float32(f) / s32)))

        if act in (None, "NONE"):
            return -128, 127
        if act == "RELU":
            return max(-128, q(0.0)), 127
        if act == "RELU6":
            return max(-128, q(0.0)), min(127, q(6.0))
        if act == "RELU_N1_TO_1":
            return max(-128, q(-1.0)), min(127, q(1.0))
        raise ExportError("unsupported fused activation", received=f"{act} on {op.opcode} (operator {op.index})")

    def ptr(self, tensor: int) -> str:
        return f"@T{tensor}@"

    def add_step(self, op, body: str, reads, writes, scratch: int = 0, macs: int = 0, wbytes: int = 0,
                 label: str | None = None) -> None:
        """Append a step (one C function); ``label`` names a fused step (default: the operator's opcode)."""
        label = label or op.opcode
        func = f"{self.name}_layer{len(self.steps)}_{label.lower()}"
        self.steps.append(Step(len(self.steps), label, func, body, list(reads), list(writes), scratch, macs,
                               wbytes))

    def params(self, ctype: str, **fields) -> str:
        """Emit a layer's parameter struct with designated initialisers; returns its name."""
        name = self.const_name("params")
        body = ",\n".join(f"    .{k} = {v}" for k, v in fields.items())
        self.consts.append(f"static const {ctype} {name} = {{\n{body}\n}};\n")
        return name

    def const_name(self, suffix: str) -> str:
        return f"{self.name}_l{len(self.steps)}{self._part}_{suffix}"

    @contextmanager
    def part(self, tag: str):
        """Constants emitted inside are named for a second operator of the same step (a fused layer)."""
        old, self._part = self._part, f"_{tag}"
        try:
            yield
        finally:
            self._part = old

    def per_channel(self, op, x: int, w: int, y: int, n: int, double: bool = False) -> tuple[str, str, str]:
        """Requantisation constants of a conv / fully-connected layer: names of the multiplier and shift arrays and
        of ``rq`` (per channel the triplet multiplier, 2^(-shift-2) + output zero point * 2^(-shift-1), -shift-1 when
        every shift is in [-23, -2]: the kernels' branch-free output stage, ``ce_fold_rs``, loads one channel's
        constants with one LDM; ``NULL`` otherwise). ``double``: the layer's accumulators are doubled (its weights
        and bias are), the triplets are then multiplier, 2 khi, -shift (``ce_fold2``)."""
        sx, _ = self.qparams(x)
        sy, _ = self.qparams(y)
        tw = self.t(w)
        ws = np.asarray(tw.scale, dtype=np.float32).reshape(-1)
        if ws.size not in (1, n):
            raise ExportError("weight scales do not match the output channels",
                              received=f"{ws.size} scales for {n} channels (operator {op.index})")
        if tw.zero_point is not None and np.any(np.asarray(tw.zero_point) != 0):
            raise ExportError("int8 weights must be symmetric (zero point 0)", received=f"operator {op.index}")
        mults, shifts = [], []
        for c in range(n):
            s = float(ws[c if ws.size == n else 0])
            if op.opcode == "FULLY_CONNECTED" and ws.size == 1:
                # GetQuantizedConvolutionMultipler: float product of the scales, then double division
                real = float(np.float32(np.float32(sx) * np.float32(s))) / float(sy)
            else:
                real = float(sx) * float(s) / float(sy)
            m, sh = quantize_multiplier(real)
            mults.append(m)
            shifts.append(sh)
        mn, sn = self.const_name("mult"), self.const_name("shift")
        self.consts.append(_array("int32_t", mn, mults, 8))
        self.consts.append(_array("int8_t", sn, shifts, 16))
        if all(-23 <= sh < -1 for sh in shifts):  # ce_fold_fast: the output zero point folded into the constant
            _, zy = self.qparams(y)
            hn = self.const_name("rq")
            d = 2 if double else 1
            rq = [v for m, sh in zip(mults, shifts)
                  for v in (m, d * ((1 << (-sh - 2)) + zy * (1 << (-sh - 1))), -sh - 1 + (d - 1))]
            self.consts.append(_array("int32_t", hn, rq, 6))
        else:
            hn = "NULL"
        return mn, sn, hn

    def bias_values(self, op, b: int, n: int) -> np.ndarray:
        """A layer's int32 bias as int64 values (zeros without a bias input)."""
        if b < 0:
            return np.zeros(n, dtype=np.int64)
        tb = self.t(b)
        if tb.data is None or tb.dtype != "int32":
            raise ExportError("bias must be a constant int32 tensor", received=f"{tb.dtype} (operator {op.index})")
        return np.asarray(tb.data, dtype=np.int64).reshape(-1)

    def bias(self, op, b: int, n: int, scale: int = 1) -> str:
        """Emit the bias (times ``scale``: 2 for layers with doubled accumulators); returns its name."""
        bn = self.const_name("bias")
        self.consts.append(_array("int32_t", bn, scale * self.bias_values(op, b, n), 8))
        return bn

    def weights(self, arr: np.ndarray) -> str:
        wn = self.const_name("weights")
        self.consts.append(_array("int8_t", wn, arr.astype(np.int64), 24))
        return wn

    def wide_weights(self, interleaved: np.ndarray, scale: int = 1) -> tuple[str, int]:
        """Convolution weights in the int16 layout of ``p->wide`` (``packing.widen_groups``), times ``scale`` (2:
        doubled accumulators); returns (C expression for the params, bytes)."""
        wn = self.const_name("weights16")
        wide = scale * packing.widen_groups(interleaved)
        self.consts.append(_array("int16_t", wn, wide.astype(np.int64), 24))
        return f"(const int8_t *){wn}", 2 * wide.size

    def packed_weights(self, packed: np.ndarray) -> tuple[str, int]:
        """Packed int4 weights as a word-aligned uint8 array; returns (C expression for the params, bytes)."""
        wn = self.const_name("weights4")
        vals = [f"0x{int(v):02x}" for v in np.asarray(packed, dtype=np.uint8).reshape(-1)] or ["0x00"]
        lines = ["    " + ", ".join(vals[i:i + 16]) + "," for i in range(0, len(vals), 16)]
        self.consts.append(f"/* int4 weights, packed two per byte */\nstatic const uint8_t {wn}[{len(vals)}] "
                           f"CE_CONST_ATTR = {{\n" + "\n".join(lines) + "\n};\n")
        return f"(const int8_t *){wn}", len(vals)

    def dw3x3_weights4(self, arr: np.ndarray) -> tuple[str, int]:
        return self.packed_weights(packing.pack_dw3x3_int4(arr))

    def weight_kind(self, op, w: int) -> bool:
        """True for int4 weights, False for int8; anything else is refused."""
        tw = self.t(w)
        if tw.data is None or tw.dtype not in ("int8", "int4"):
            raise ExportError(f"{op.opcode} needs constant int8 or int4 weights",
                              received=f"{tw.dtype} (operator {op.index})")
        if tw.dtype == "int4":
            vals = np.asarray(tw.data)
            if vals.size and (int(vals.min()) < -8 or int(vals.max()) > 7):
                raise ExportError("int4 weights outside [-8, 7]", received=f"operator {op.index}")
            return True
        return False

    def dw3x3_weights(self, arr: np.ndarray) -> str:
        """3x3 depthwise weights [1,3,3,C] as [C][w00 w10 w01 w11 w20 w02 w21 w12] then [C] w22 (ce_depthwise3x3_s8)."""
        head, last = packing.dw3x3_layout(arr)
        wn = self.const_name("weights")
        self.consts.append(_array("int8_t", wn, np.concatenate([head.reshape(-1), last]), 24))
        return wn

    @staticmethod
    def padding(kind: str, n_in: int, n_out: int, k: int, stride: int, dil: int) -> int:
        eff = (k - 1) * dil + 1
        if kind == "SAME":
            total = max((n_out - 1) * stride + eff - n_in, 0)
            return total // 2
        return 0



def resolve(alias: dict[int, int], t: int) -> int:
    """The tensor whose storage ``t`` uses (following RESHAPE / in-place aliases)."""
    while t in alias:
        t = alias[t]
    return t

