"""Generate a standalone C99 inference engine from an int8 ``.tflite`` model.

Output folder (``generate_c_engine``):

* ``NAME.h`` / ``NAME.c``  the model: weights/biases as const arrays, precomputed per-channel requantisation
  constants, one function per layer, the static activation arena and ``int NAME_invoke(const int8_t *input,
  int8_t *output)`` (plus ``NAME_invoke_float`` when the model has float input/output). ``NAME.h`` gives the
  I/O scales as exact hex float literals with the decimal in a comment, every negative literal parenthesised, and
  the preprocessing recorded with the model (the TFLM config header's block, ``firmware_export.preprocessing``).
* ``ce_kernels.h`` / ``ce_kernels.c``  the kernel library (portable C99 + Cortex-M DSP path, both bit-exact).
* ``NAME_golden.h`` + ``NAME_test.c`` + ``Makefile``  a host test harness that runs golden inputs (computed with
  LiteRT's reference interpreter) and compares the outputs byte for byte.
* ``manifest.json``  arena plan, TFLM arena comparison, per-layer MACs, sizes.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from firmware_export.cgen import planner
from firmware_export.cgen.quant import quantize_multiplier, softmax_params
from toolchain.errors import ExportError

SUPPORTED_OPS = (
    "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "AVERAGE_POOL_2D", "MAX_POOL_2D", "ADD", "MEAN", "RESHAPE",
    "SOFTMAX", "PAD", "CONCATENATION", "QUANTIZE", "DEQUANTIZE",
)
TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "templates" / "cengine"
KERNEL_FILES = ("ce_kernels.h", "ce_kernels.c")


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


@dataclass
class Engine:
    """Everything generated for one model (sources as text plus the facts reported in the manifest)."""

    name: str
    header: str
    source: str
    plan: planner.Plan
    steps: list[Step]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    input_dtype: str
    output_dtype: str
    core_input: dict[str, Any]
    core_output: dict[str, Any]
    macs: int
    weight_bytes: int
    opcodes: list[str] = field(default_factory=list)

    @property
    def float_io(self) -> bool:
        return self.input_dtype == "float32"


def _c_float(v: float) -> str:
    v = float(np.float32(v))
    if not math.isfinite(v):
        raise ExportError("non-finite constant in the model", received=repr(v))
    return f"{v.hex()}f" if v != 0 else "0.0f"


def _c_double(v: float) -> str:
    return float(v).hex() if v != 0 else "0.0"


def _array(ctype: str, name: str, values, per_line: int = 16) -> str:
    vals = [int(v) for v in np.asarray(values).reshape(-1)]
    if not vals:
        vals = [0]
    lines = []
    for i in range(0, len(vals), per_line):
        lines.append("    " + ", ".join(str(v) if v != -2147483648 else "(-2147483647 - 1)" for v in
                                        vals[i:i + per_line]) + ",")
    return f"static const {ctype} {name}[{len(vals)}] = {{\n" + "\n".join(lines) + "\n};\n"


def interleave_rows(w2d: np.ndarray) -> np.ndarray:
    """Kernel weight layout: rows zero-padded to a multiple of 4 and stored in pairs interleaved by groups of 4."""
    n, k = w2d.shape
    kp = (k + 3) // 4 * 4
    padded = np.zeros((n, kp), dtype=np.int8)
    padded[:, :k] = w2d
    out = []
    for r in range(0, n - 1, 2):
        pair = padded[r:r + 2].reshape(2, kp // 4, 4)
        out.append(np.transpose(pair, (1, 0, 2)).reshape(-1))
    if n % 2:
        out.append(padded[-1])
    return np.concatenate(out) if out else padded.reshape(-1)


# int4 dot products run on 16 x the weights: |16 w (x + offset)| <= 128 * 255 per product; a depthwise kernel
# accumulates at most this many taps without a partial sum (CONV_2D / FULLY_CONNECTED sum in chunks, ce_kernels.c)
MAX_INT4_DEPTHWISE_TAPS = (2 ** 31 - 1) // (128 * 255)


def _nibbles(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.int16) & 15


def pack_int4_rows(w2d: np.ndarray) -> np.ndarray:
    """Packed int4 layout of ce_conv2d_s8_w4 / ce_fully_connected_s8_w4: rows zero-padded to a multiple of 8 values,
    byte i of word j = (row[8j + 4 + i] << 4) | (row[8j + i] & 15), then pairs of rows interleaved by words."""
    n, k = w2d.shape
    k8 = (k + 7) // 8 * 8
    padded = np.zeros((n, k8), dtype=np.int16)
    padded[:, :k] = w2d
    r = _nibbles(padded).reshape(n, k8 // 8, 2, 4)
    rows = (r[:, :, 0, :] | (r[:, :, 1, :] << 4)).astype(np.uint8).reshape(n, k8 // 2)
    return interleave_rows(rows.view(np.int8)).view(np.uint8)


def pack_int4_depthwise(w: np.ndarray) -> np.ndarray:
    """ce_depthwise_s8_w4 layout: [taps][out_c] -> per tap, blocks of 4 channels (zero-padded) in 16 bits holding
    the nibbles (c2, c0, c3, c1) from the least significant."""
    taps, oc = w.shape
    blocks = (oc + 3) // 4
    padded = np.zeros((taps, blocks * 4), dtype=np.int16)
    padded[:, :oc] = w
    c = _nibbles(padded).reshape(taps, blocks, 4)
    lo = c[..., 2] | (c[..., 0] << 4)
    hi = c[..., 3] | (c[..., 1] << 4)
    return np.stack([lo, hi], axis=-1).astype(np.uint8).reshape(-1)


def pack_int4_pairs(values: np.ndarray) -> np.ndarray:
    """Two values per byte, the first in the low nibble (TFLite's packed int4 order)."""
    v = _nibbles(np.asarray(values).reshape(-1))
    if v.size % 2:
        v = np.concatenate([v, np.zeros(1, dtype=v.dtype)])
    return (v[0::2] | (v[1::2] << 4)).astype(np.uint8)


def _round_half_away(x: float) -> int:
    return int(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)


class _Builder:
    def __init__(self, model, name: str):
        self.m = model
        self.name = name
        self.consts: list[str] = []
        self.steps: list[Step] = []
        self.alias: dict[int, int] = {}  # tensor -> tensor it shares storage with (RESHAPE, in-place ops)
        self.protected: set[int] = set()  # tensors whose storage may not be overwritten (model output group)
        self.inplace_enabled = True
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
                    r = _resolve(root, t)
                    self.last_read[r] = max(self.last_read.get(r, -1), op.index)

    def can_overwrite(self, op, t: int) -> bool:
        """May ``op`` write its output over tensor ``t`` (t and its RESHAPE aliases are not read later)?"""
        if not self.inplace_enabled:
            return False
        r = _resolve(self._static_root, t)
        rr = _resolve(self.alias, t)
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

    def add_step(self, op, body: str, reads, writes, scratch: int = 0, macs: int = 0, wbytes: int = 0) -> None:
        func = f"{self.name}_layer{len(self.steps)}_{op.opcode.lower()}"
        self.steps.append(Step(len(self.steps), op.opcode, func, body, list(reads), list(writes), scratch, macs,
                               wbytes))

    def const_name(self, suffix: str) -> str:
        return f"{self.name}_l{len(self.steps)}_{suffix}"

    def per_channel(self, op, x: int, w: int, y: int, n: int) -> tuple[str, str]:
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
        return mn, sn

    def bias(self, op, b: int, n: int) -> str:
        bn = self.const_name("bias")
        if b < 0:
            vals = np.zeros(n, dtype=np.int64)
        else:
            tb = self.t(b)
            if tb.data is None or tb.dtype != "int32":
                raise ExportError("bias must be a constant int32 tensor", received=f"{tb.dtype} (operator {op.index})")
            vals = tb.data.reshape(-1)
        self.consts.append(_array("int32_t", bn, vals, 8))
        return bn

    def weights(self, arr: np.ndarray) -> str:
        wn = self.const_name("weights")
        self.consts.append(_array("int8_t", wn, arr.astype(np.int64), 24))
        return wn

    def packed_weights(self, packed: np.ndarray) -> tuple[str, int]:
        """Packed int4 weights as a word-aligned uint8 array; returns (C expression for the params, bytes)."""
        wn = self.const_name("weights4")
        vals = [f"0x{int(v):02x}" for v in np.asarray(packed, dtype=np.uint8).reshape(-1)] or ["0x00"]
        lines = ["    " + ", ".join(vals[i:i + 16]) + "," for i in range(0, len(vals), 16)]
        self.consts.append(f"/* int4 weights, packed two per byte */\nstatic const uint8_t {wn}[{len(vals)}] "
                           f"CE_WEIGHTS_ALIGN = {{\n" + "\n".join(lines) + "\n};\n")
        return f"(const int8_t *){wn}", len(vals)

    def dw3x3_weights4(self, arr: np.ndarray) -> tuple[str, int]:
        """ce_depthwise3x3_s8_w4: per channel one word, low nibbles = bytes 0-3 and high nibbles = bytes 4-7 of the
        int8 kernel's [w00 w10 w01 w11 w20 w02 w21 w12], then w22 of every channel two per byte."""
        w = arr.reshape(3, 3, -1).astype(np.int64)
        order = [(0, 0), (1, 0), (0, 1), (1, 1), (2, 0), (0, 2), (2, 1), (1, 2)]
        head = _nibbles(np.stack([w[ky, kx] for ky, kx in order], axis=-1))  # [C][8]
        words = (head[:, :4] | (head[:, 4:] << 4)).astype(np.uint8).reshape(-1)
        return self.packed_weights(np.concatenate([words, pack_int4_pairs(w[2, 2])]))

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
        w = arr.reshape(3, 3, -1).astype(np.int64)
        order = [(0, 0), (1, 0), (0, 1), (1, 1), (2, 0), (0, 2), (2, 1), (1, 2)]
        head = np.stack([w[ky, kx] for ky, kx in order], axis=-1)  # [C][8]
        wn = self.const_name("weights")
        self.consts.append(_array("int8_t", wn, np.concatenate([head.reshape(-1), w[2, 2]]), 24))
        return wn

    # -- operators -----------------------------------------------------------------------------------------
    def conv_like(self, op, depthwise: bool) -> None:
        x, w, y = op.inputs[0], op.inputs[1], op.outputs[0]
        b = op.inputs[2] if len(op.inputs) > 2 else -1
        self.need_int8(op, x, y)
        tx, tw, ty = self.t(x), self.t(w), self.t(y)
        w4 = self.weight_kind(op, w)
        if len(tx.shape) != 4 or len(ty.shape) != 4 or tx.shape[0] != 1:
            raise ExportError(f"{op.opcode} needs 4-D batch-1 tensors", received=f"{tx.shape} (operator {op.index})")
        o = op.options
        _, ih, iw, ic = tx.shape
        _, oh, ow, oc = ty.shape
        if depthwise:
            _, kh, kw, woc = tw.shape
            if woc != oc or oc % ic:
                raise ExportError("depthwise weights do not match the tensors", received=f"operator {op.index}")
        else:
            woc, kh, kw, wic = tw.shape
            if woc != oc or wic != ic:
                raise ExportError("grouped convolution is not supported", received=f"weights {tw.shape} input {tx.shape}")
        sh, sw = int(o.get("stride_h", 1)), int(o.get("stride_w", 1))
        dh, dw = int(o.get("dilation_h_factor", 1)), int(o.get("dilation_w_factor", 1))
        if max(ih, iw, ic, oh, ow, oc, kh, kw) > 32767:
            raise ExportError(f"{op.opcode} dimensions above 32767 are not supported", received=f"{tx.shape}")
        pad_t = self.padding(o.get("padding", "VALID"), ih, oh, kh, sh, dh)
        pad_l = self.padding(o.get("padding", "VALID"), iw, ow, kw, sw, dw)
        lo, hi = self.act_range(o.get("fused_activation_function"), y, op)
        _, zx = self.qparams(x)
        _, zy = self.qparams(y)
        mn, sn = self.per_channel(op, x, w, y, oc)
        bn = self.bias(op, b, oc)
        warr = np.asarray(tw.data, dtype=np.int8)
        as_conv = (not depthwise) or ic == 1
        dm = oc // ic if depthwise else 1
        dw3x3 = (depthwise and not as_conv and (kh, kw, sh, sw, dh, dw, dm) == (3, 3, 1, 1, 1, 1, 1)
                 and ic % 4 == 0 and pad_t <= 1 and pad_l <= 1)
        k = kh * kw * (1 if depthwise else ic)
        kp = (k + 3) // 4 * 4
        if as_conv:
            if depthwise:
                warr = np.transpose(warr, (3, 1, 2, 0))  # [1,kh,kw,oc] -> conv layout [oc,kh,kw,1]
            cin = 1 if depthwise else ic
            w2d = warr.reshape(oc, k)
            if cin % 4:
                # generic channel count: each kernel row of kw*cin values is zero-padded to a multiple of 4
                run = kw * cin
                rowp = (run + 3) // 4 * 4
                padded = np.zeros((oc, kh, rowp), dtype=np.int8)
                padded[:, :, :run] = warr.reshape(oc, kh, run)
                w2d = padded.reshape(oc, kh * rowp)
                kp = kh * rowp
            if w4:
                wn, wbytes = self.packed_weights(pack_int4_rows(w2d))
            else:
                wn = self.weights(interleave_rows(w2d))
        elif dw3x3:
            wn, wbytes = self.dw3x3_weights4(warr) if w4 else (self.dw3x3_weights(warr), 0)
        else:
            if kh > 16:
                raise ExportError("DEPTHWISE_CONV_2D kernels taller than 16 are not supported", received=f"{kh}")
            if w4 and kh * kw > MAX_INT4_DEPTHWISE_TAPS:
                raise ExportError(f"int4 DEPTHWISE_CONV_2D kernels above {MAX_INT4_DEPTHWISE_TAPS} taps are not "
                                  "supported", received=f"{kh}x{kw} (operator {op.index})")
            if w4:
                wn, wbytes = self.packed_weights(pack_int4_depthwise(warr.reshape(kh * kw, oc)))
            else:
                wn = self.weights(warr)
        if not w4:
            wbytes = warr.size
        inplace = 0
        scratch = 0
        same_geometry = (oh, ow) == (ih, iw) and sh == 1 and sw == 1
        kp_col = kp  # im2col column length
        if as_conv and w4:
            kp = (kp + 7) // 8 * 8  # int4 rows: whole words of 8 values (the last column group meets zero weights)
        if as_conv:
            scratch = 4 * kp  # two interleaved int32 im2col columns: 2 words per group of 4 elements and pixel
            if (1 if depthwise else ic) % 4:
                scratch += 2 * kp_col  # int16 row buffer of the generic im2col (border pixels)
            if (kh, kw) == (1, 1) and same_geometry and pad_t == 0 and pad_l == 0 and oc <= ic \
                    and self.can_overwrite(op, x):
                inplace = 1
        elif dw3x3:
            scratch = 3 * ic * (ow + 3) * 2  # ring of three int16 channel-major input rows
            if same_geometry and self.can_overwrite(op, x):
                inplace = 1
        else:
            if same_geometry and dh == 1 and dw == 1 and dm == 1 and self.can_overwrite(op, x):
                inplace = 1
                scratch = ow * oc + pad_t * iw * ic
        pn = self.const_name("params")
        self.consts.append(
            f"static const ce_conv_params {pn} = {{\n"
            f"    {ih}, {iw}, {ic}, {oh}, {ow}, {oc},\n"
            f"    {kh}, {kw}, {sh}, {sw}, {dh}, {dw}, {pad_t}, {pad_l},\n"
            f"    {dm}, {inplace}, {-zx}, {zy}, {lo}, {hi}, {kp},\n"
            f"    {wn}, {bn}, {mn}, {sn}\n}};\n")
        macs = oh * ow * oc * kh * kw * (1 if depthwise else ic)
        sfx = "_w4" if w4 else ""
        if as_conv:
            body = f"ce_conv2d_s8{sfx}(&{pn}, {self.ptr(x)}, {self.ptr(y)}, (int16_t *)(void *)@S@);"
        elif dw3x3:
            body = f"ce_depthwise3x3_s8{sfx}(&{pn}, {self.ptr(x)}, {self.ptr(y)}, (int16_t *)(void *)@S@);"
        else:
            body = f"ce_depthwise_s8{sfx}(&{pn}, {self.ptr(x)}, {self.ptr(y)}, @S@);"
        if inplace:
            self.alias[y] = x
        self.add_step(op, body, [x], [y], scratch, macs, wbytes + 4 * oc)

    @staticmethod
    def padding(kind: str, n_in: int, n_out: int, k: int, stride: int, dil: int) -> int:
        eff = (k - 1) * dil + 1
        if kind == "SAME":
            total = max((n_out - 1) * stride + eff - n_in, 0)
            return total // 2
        return 0

    def fully_connected(self, op) -> None:
        x, w, y = op.inputs[0], op.inputs[1], op.outputs[0]
        b = op.inputs[2] if len(op.inputs) > 2 else -1
        self.need_int8(op, x, y)
        tx, tw, ty = self.t(x), self.t(w), self.t(y)
        w4 = self.weight_kind(op, w)
        if len(tw.shape) != 2:
            raise ExportError("FULLY_CONNECTED needs constant 2-D weights", received=f"operator {op.index}")
        n, k = tw.shape
        if tx.num_elements % k:
            raise ExportError("FULLY_CONNECTED input does not match the weights", received=f"{tx.shape} vs {tw.shape}")
        batches = tx.num_elements // k
        lo, hi = self.act_range(op.options.get("fused_activation_function"), y, op)
        _, zx = self.qparams(x)
        _, zy = self.qparams(y)
        mn, sn = self.per_channel(op, x, w, y, n)
        bn = self.bias(op, b, n)
        w2d = np.asarray(tw.data, dtype=np.int8).reshape(n, k)
        if w4:
            wn, wbytes = self.packed_weights(pack_int4_rows(w2d))
        else:
            wn, wbytes = self.weights(interleave_rows(w2d)), n * k
        pn = self.const_name("params")
        self.consts.append(f"static const ce_fc_params {pn} = {{\n    {batches}, {k}, {n}, {-zx}, {zy}, {lo}, {hi},\n"
                           f"    {wn}, {bn}, {mn}, {sn}\n}};\n")
        body = f"ce_fully_connected_s8{'_w4' if w4 else ''}(&{pn}, {self.ptr(x)}, {self.ptr(y)});"
        self.add_step(op, body, [x], [y], 0, batches * n * k, wbytes + 4 * n)

    def pool(self, op) -> None:
        x, y = op.inputs[0], op.outputs[0]
        self.need_int8(op, x, y)
        tx, ty = self.t(x), self.t(y)
        if len(tx.shape) != 4 or tx.shape[0] != 1:
            raise ExportError(f"{op.opcode} needs a 4-D batch-1 input", received=f"{tx.shape}")
        if self.qparams(x) != self.qparams(y):
            raise ExportError(f"int8 {op.opcode} needs equal input/output quantisation", received=f"operator {op.index}")
        o = op.options
        _, ih, iw, c = tx.shape
        _, oh, ow, _ = ty.shape
        fh, fw = int(o["filter_height"]), int(o["filter_width"])
        sh, sw = int(o["stride_h"]), int(o["stride_w"])
        if max(ih, iw, c, oh, ow, fh, fw, sh, sw) > 32767:
            raise ExportError(f"{op.opcode} dimensions above 32767 are not supported", received=f"{tx.shape}")
        pt = self.padding(o.get("padding", "VALID"), ih, oh, fh, sh, 1)
        pl = self.padding(o.get("padding", "VALID"), iw, ow, fw, sw, 1)
        lo, hi = self.act_range(o.get("fused_activation_function"), y, op)
        pn = self.const_name("params")
        self.consts.append(f"static const ce_pool_params {pn} = {{ {ih}, {iw}, {c}, {oh}, {ow}, {fh}, {fw}, {sh}, "
                           f"{sw}, {pt}, {pl}, {lo}, {hi} }};\n")
        fn = "ce_avgpool_s8" if op.opcode == "AVERAGE_POOL_2D" else "ce_maxpool_s8"
        self.add_step(op, f"{fn}(&{pn}, {self.ptr(x)}, {self.ptr(y)});", [x], [y])

    def add(self, op) -> None:
        a, b, y = op.inputs[0], op.inputs[1], op.outputs[0]
        self.need_int8(op, a, b, y)
        ta, tb, ty = self.t(a), self.t(b), self.t(y)
        if tuple(ta.shape) != tuple(tb.shape) or ta.num_elements != ty.num_elements:
            raise ExportError("ADD with broadcasting is not supported", received=f"{ta.shape} + {tb.shape}")
        for i in (a, b):
            if self.t(i).data is not None:
                raise ExportError("ADD of a constant tensor is not supported", received=f"operator {op.index}")
        s1, z1 = self.qparams(a)
        s2, z2 = self.qparams(b)
        so, zo = self.qparams(y)
        left = 20
        twice_max = 2.0 * float(max(np.float32(s1), np.float32(s2)))
        m1, sh1 = quantize_multiplier(float(s1) / twice_max)
        m2, sh2 = quantize_multiplier(float(s2) / twice_max)
        mo, sho = quantize_multiplier(twice_max / ((1 << left) * float(so)))
        if max(sh1, sh2, sho) > 0:
            # TFLite uses QuantizeMultiplierSmallerThanOneExp here: multipliers >= 1 are invalid for it too
            raise ExportError("ADD rescaling multiplier >= 1 (output scale far below the input scales)",
                              received=f"operator {op.index}: input scales {s1:g}, {s2:g}, output scale {so:g}")
        lo, hi = self.act_range(op.options.get("fused_activation_function"), y, op)
        pn = self.const_name("params")
        self.consts.append(f"static const ce_add_params {pn} = {{ {ty.num_elements}, {m1}, {m2}, {mo}, {left}, {-z1}, "
                           f"{sh1}, {-z2}, {sh2}, {zo}, {sho}, {lo}, {hi} }};\n")
        for cand in (a, b):
            if self.can_overwrite(op, cand) and self.t(cand).nbytes == ty.nbytes:
                self.alias[y] = cand  # element-wise: out[i] depends on in[i] only
                break
        self.add_step(op, f"ce_add_s8(&{pn}, {self.ptr(a)}, {self.ptr(b)}, {self.ptr(y)}, (int32_t *)(void *)@S@);",
                      [a, b], [y], 2 * 256 * 4)

    def mean(self, op) -> None:
        x, ax, y = op.inputs[0], op.inputs[1], op.outputs[0]
        self.need_int8(op, x, y)
        tx, tax = self.t(x), self.t(ax)
        if tax.data is None:
            raise ExportError("MEAN needs constant axes", received=f"operator {op.index}")
        rank = len(tx.shape)
        axes = sorted({int(a) % rank for a in np.asarray(tax.data).reshape(-1)})
        if not axes or axes != list(range(axes[0], axes[-1] + 1)):
            raise ExportError("MEAN over non-contiguous axes is not supported", received=f"axes {axes}")
        outer = int(np.prod(tx.shape[:axes[0]], dtype=np.int64))
        reduce_ = int(np.prod(tx.shape[axes[0]:axes[-1] + 1], dtype=np.int64))
        inner = int(np.prod(tx.shape[axes[-1] + 1:], dtype=np.int64))
        sx, zx = self.qparams(x)
        sy, zy = self.qparams(y)
        if bool(op.options.get("keep_dims", False)) and rank == 4 and axes == [1, 2]:
            # LiteRT routes this case to optimized_integer_ops::Mean, whose arithmetic is not reproduced here
            raise ExportError("MEAN with keep_dims over height and width is not supported by the C engine "
                              "(use keepdims=False, e.g. GlobalAveragePooling2D())", received=f"operator {op.index}")
        m, sh = quantize_multiplier(float(sx) / (float(sy) * reduce_))
        pn = self.const_name("params")
        self.consts.append(f"static const ce_mean_params {pn} = {{ {outer}, {reduce_}, {inner}, {zx}, {zy}, {m}, {sh} }};\n")
        self.add_step(op, f"ce_mean_s8(&{pn}, {self.ptr(x)}, {self.ptr(y)});", [x], [y])

    def softmax(self, op) -> None:
        x, y = op.inputs[0], op.outputs[0]
        self.need_int8(op, x, y)
        tx = self.t(x)
        sx, _ = self.qparams(x)
        sy, zy = self.qparams(y)
        beta = float(op.options.get("beta", 1.0))
        depth = int(tx.shape[-1]) if tx.shape else 1
        outer = tx.num_elements // max(depth, 1)
        if np.float32(sy) != np.float32(1.0 / 256) or zy != -128:
            raise ExportError("int8 SOFTMAX needs an output scale of 1/256 and zero point -128 (as TFLite's and "
                              "TFLM's kernels)", received=f"operator {op.index}: scale {sy:g}, zero point {zy}")
        try:
            mult, left_shift, diff_min = softmax_params(sx, beta)
        except ValueError as exc:
            raise ExportError(f"int8 SOFTMAX: {exc}", received=f"operator {op.index}") from exc
        pn = self.const_name("params")
        self.consts.append(f"static const ce_softmax_params {pn} = {{ {outer}, {depth}, {mult}, {left_shift}, "
                           f"{diff_min} }};\n")
        self.add_step(op, f"ce_softmax_s8(&{pn}, {self.ptr(x)}, {self.ptr(y)});", [x], [y])

    def pad(self, op) -> None:
        x, pads, y = op.inputs[0], op.inputs[1], op.outputs[0]
        self.need_int8(op, x, y)
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            raise ExportError("PAD with an explicit constant value is not supported", received=f"operator {op.index}")
        tx, tp, ty = self.t(x), self.t(pads), self.t(y)
        if tp.data is None or len(tx.shape) > 4:
            raise ExportError("PAD needs constant paddings and rank <= 4", received=f"operator {op.index}")
        if self.qparams(x) != self.qparams(y):
            raise ExportError("int8 PAD needs equal input/output quantisation", received=f"operator {op.index}")
        padv = np.asarray(tp.data, dtype=np.int64).reshape(-1, 2)
        lead = 4 - len(tx.shape)
        in_dims = [1] * lead + list(tx.shape)
        out_dims = [1] * lead + list(ty.shape)
        before = [0] * lead + [int(p) for p in padv[:, 0]]
        if any(p < 0 for p in padv.reshape(-1)):
            raise ExportError("negative padding is not supported", received=f"operator {op.index}")
        _, zy = self.qparams(y)
        pn = self.const_name("params")
        self.consts.append(f"static const ce_pad_params {pn} = {{ {{{', '.join(map(str, in_dims))}}}, "
                           f"{{{', '.join(map(str, out_dims))}}}, {{{', '.join(map(str, before))}}}, {zy} }};\n")
        self.add_step(op, f"ce_pad_s8(&{pn}, {self.ptr(x)}, {self.ptr(y)});", [x], [y])

    def concatenation(self, op) -> None:
        y = op.outputs[0]
        xs = list(op.inputs)
        self.need_int8(op, y, *xs)
        if op.options.get("fused_activation_function", "NONE") not in (None, "NONE"):
            raise ExportError("CONCATENATION with a fused activation is not supported", received=f"operator {op.index}")
        qy = self.qparams(y)
        for i in xs:
            if self.t(i).data is not None:
                raise ExportError("CONCATENATION of constant tensors is not supported", received=f"operator {op.index}")
            if self.qparams(i) != qy:
                raise ExportError("int8 CONCATENATION needs equal quantisation on all inputs",
                                  received=f"operator {op.index}")
        ty = self.t(y)
        rank = len(ty.shape)
        axis = int(op.options.get("axis", 0)) % max(rank, 1)
        outer = int(np.prod(ty.shape[:axis], dtype=np.int64))
        sizes = [int(np.prod(self.t(i).shape[axis:], dtype=np.int64)) for i in xs]
        total = sum(sizes)
        lines = ["int32_t o;", f"for (o = 0; o < {outer}; ++o) {{"]
        off = 0
        for i, s in zip(xs, sizes):
            lines.append(f"    ce_copy_s8({self.ptr(i)} + o * {s}, {self.ptr(y)} + o * {total} + {off}, {s});")
            off += s
        lines.append("}")
        self.add_step(op, "\n    ".join(lines), xs, [y])

    def reshape(self, op) -> None:
        x, y = op.inputs[0], op.outputs[0]
        if self.t(x).data is not None:
            raise ExportError("RESHAPE of a constant tensor is not supported", received=f"operator {op.index}")
        if self.t(x).nbytes != self.t(y).nbytes:
            raise ExportError("RESHAPE changes the tensor size", received=f"operator {op.index}")
        self.alias[y] = x  # in place: output aliases the input buffer


def _resolve(alias: dict[int, int], t: int) -> int:
    while t in alias:
        t = alias[t]
    return t


def build_engine(model, name: str, meta: dict[str, Any] | None = None) -> Engine:
    """Translate a parsed model (``toolchain.tflite_model.TFLiteModel``) into C sources (no files written).

    ``meta``: the model's metadata (sidecar), for the preprocessing record in ``NAME.h``."""
    from firmware_export.model_input import is_float_model, quantise_hint
    from firmware_export.preprocessing import preprocessing_block

    if is_float_model(model):
        raise ExportError("the C engine runs int8-quantised models; this model computes in float",
                          received=f"{model.path or 'model'} has float32/float16 activations",
                          hint=f"{quantise_hint()}; --format tflm also exports a float model")
    unsupported = sorted({op.opcode for op in model.operators if op.opcode not in SUPPORTED_OPS})
    if unsupported:
        raise ExportError("the C engine does not support these operators: " + ", ".join(unsupported),
                          received=f"{model.path or 'model'} uses {', '.join(model.opcode_names())}",
                          hint="supported: " + ", ".join(SUPPORTED_OPS) + "; use --format tflm instead")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ExportError("the C engine supports models with one input and one output",
                          received=f"{len(model.inputs)} inputs, {len(model.outputs)} outputs")
    b = _Builder(model, name)
    in_t, out_t = model.inputs[0], model.outputs[0]
    core_in, core_out = in_t, out_t
    skip = set()
    for op in model.operators:
        if op.opcode == "QUANTIZE":
            if op.inputs[0] == in_t and model.tensor(in_t).dtype == "float32" and model.tensor(op.outputs[0]).dtype == "int8":
                core_in = op.outputs[0]
                skip.add(op.index)
            else:
                raise ExportError("QUANTIZE is supported only on a float model input",
                                  received=f"operator {op.index}: {model.tensor(op.inputs[0]).dtype} -> "
                                           f"{model.tensor(op.outputs[0]).dtype}")
        elif op.opcode == "DEQUANTIZE":
            if op.outputs[0] == out_t and model.tensor(out_t).dtype == "float32" and model.tensor(op.inputs[0]).dtype == "int8":
                core_out = op.inputs[0]
                skip.add(op.index)
            else:
                raise ExportError("DEQUANTIZE is supported only on a float model output",
                                  received=f"operator {op.index}")
    for t in (core_in, core_out):
        if model.tensor(t).dtype != "int8":
            raise ExportError("the C engine needs int8 (or float32 with QUANTIZE/DEQUANTIZE) model input/output",
                              received=f"tensor '{model.tensor(t).name}' is {model.tensor(t).dtype}")
    b.protected.add(_resolve(b._static_root, core_out))
    b.protected.add(core_out)
    dispatch = {
        "CONV_2D": lambda op: b.conv_like(op, False),
        "DEPTHWISE_CONV_2D": lambda op: b.conv_like(op, True),
        "FULLY_CONNECTED": b.fully_connected,
        "AVERAGE_POOL_2D": b.pool,
        "MAX_POOL_2D": b.pool,
        "ADD": b.add,
        "MEAN": b.mean,
        "SOFTMAX": b.softmax,
        "PAD": b.pad,
        "CONCATENATION": b.concatenation,
        "RESHAPE": b.reshape,
    }
    for op in model.operators:
        if op.index in skip:
            continue
        dispatch[op.opcode](op)

    # ---- memory plan ----
    n = len(b.steps)
    life: dict[int, list[int]] = {}
    members: dict[int, list[int]] = {}

    def touch(t: int, step: int) -> None:
        r = _resolve(b.alias, t)
        lo_hi = life.setdefault(r, [step, step])
        lo_hi[0] = min(lo_hi[0], step)
        lo_hi[1] = max(lo_hi[1], step)

    for s in b.steps:
        for t in s.reads + s.writes:
            touch(t, s.index)
    touch(core_in, -1)
    touch(core_out, n)
    for t in list(b.alias) + [core_in, core_out] + [t for s in b.steps for t in s.reads + s.writes]:
        members.setdefault(_resolve(b.alias, t), [])
        if t not in members[_resolve(b.alias, t)]:
            members[_resolve(b.alias, t)].append(t)
    buffers = []
    for r, (first, last) in life.items():
        size = max(model.tensor(t).nbytes for t in members[r])
        buffers.append(planner.Buffer(f"t{r}", size, first, last,
                                      members=[model.tensor(t).name for t in members[r]]))
    for s in b.steps:
        if s.scratch_bytes:
            buffers.append(planner.Buffer(f"scratch{s.index}", s.scratch_bytes, s.index, s.index,
                                          members=[f"{s.func} scratch"]))
    plan = planner.plan(buffers)
    offsets = {bf.name: bf.offset for bf in plan.buffers}

    def ptr(t: int) -> str:
        return f"(ce_arena.bytes + {offsets[f't{_resolve(b.alias, t)}']})"

    funcs = []
    for s in b.steps:
        body = re.sub(r"@T(\d+)@", lambda mm: ptr(int(mm.group(1))), s.body)
        body = body.replace("@S@", f"(ce_arena.bytes + {offsets.get(f'scratch{s.index}', 0)})")
        trace = "".join(f"\n#ifdef CE_TRACE\n    CE_TRACE({s.index}, {t}, {ptr(t)}, {model.tensor(t).nbytes});\n#endif"
                        for t in s.writes)
        funcs.append(f"/* layer {s.index}: {s.opcode}, {s.macs} MACs */\nstatic void {s.func}(void)\n{{\n    {body}{trace}\n}}\n")

    tin, tout = model.tensor(in_t), model.tensor(out_t)
    cin_s, cin_z = b.qparams(core_in)
    cout_s, cout_z = b.qparams(core_out)
    n_in, n_out = model.tensor(core_in).num_elements, model.tensor(core_out).num_elements
    up = name.upper()
    macs = sum(s.macs for s in b.steps)
    wbytes = sum(s.weight_bytes for s in b.steps)
    float_io = tin.dtype == "float32"
    header = _render("model.h.in", NAME=name, UPPER=up, ARENA=plan.arena_bytes, N_IN=n_in, N_OUT=n_out,
                     IN_SCALE=_c_float(cin_s), IN_ZP=cin_z, OUT_SCALE=_c_float(cout_s), OUT_ZP=cout_z, MACS=macs,
                     IN_SCALE_DECIMAL=f"{float(np.float32(cin_s)):.9g}",
                     OUT_SCALE_DECIMAL=f"{float(np.float32(cout_s)):.9g}",
                     FLOAT_IO=1 if float_io else 0, N_LAYERS=n, PREPROCESSING=preprocessing_block(meta, up),
                     IN_SHAPE=", ".join(map(str, tin.shape)), OUT_SHAPE=", ".join(map(str, tout.shape)))
    calls = "\n".join(f"    {s.func}();" for s in b.steps)
    in_ptr = f"(ce_arena.bytes + {offsets[f't{_resolve(b.alias, core_in)}']})"
    out_ptr = f"(ce_arena.bytes + {offsets[f't{_resolve(b.alias, core_out)}']})"
    float_wrappers = ""
    if float_io:
        if tout.dtype != "float32":
            raise ExportError("float input with int8 output is not supported", received=f"{tin.dtype} -> {tout.dtype}")
        float_wrappers = (
            f"int {name}_invoke_float(const float *input, float *output)\n{{\n"
            f"    ce_quantize_f32_s8(input, {in_ptr}, {n_in}, {_c_float(cin_s)}, {cin_z});\n"
            f"    {name}_run();\n"
            f"    ce_dequantize_s8_f32({out_ptr}, output, {n_out}, {_c_double(float(np.float32(cout_s)))}, {cout_z});\n"
            f"    return 0;\n}}\n")
    source = _render("model.c.in", NAME=name, CONSTS="\n".join(b.consts), FUNCS="\n".join(funcs), CALLS=calls,
                     IN_PTR=in_ptr, OUT_PTR=out_ptr, N_IN=n_in, N_OUT=n_out, FLOAT_WRAPPERS=float_wrappers,
                     ARENA_ALLOC=plan.arena_bytes + 8)  # slack: the generic im2col may read 3 bytes past a row
    return Engine(name=name, header=header, source=source, plan=plan, steps=b.steps, input_shape=tuple(tin.shape),
                  output_shape=tuple(tout.shape), input_dtype=tin.dtype, output_dtype=tout.dtype,
                  core_input={"scale": cin_s, "zero_point": cin_z, "elements": n_in},
                  core_output={"scale": cout_s, "zero_point": cout_z, "elements": n_out},
                  macs=macs, weight_bytes=wbytes, opcodes=model.opcode_names())


def _render(template: str, **values: Any) -> str:
    text = (TEMPLATE_DIR / template).read_text(encoding="utf-8")
    return string.Template(text).substitute({k: str(v) for k, v in values.items()})


def kernel_sources() -> dict[str, str]:
    return {f: (TEMPLATE_DIR / f).read_text(encoding="utf-8") for f in KERNEL_FILES}
