"""QUANTIZE and DEQUANTIZE. Float32 at the model's input/output: no layer of their own, they become the float
wrappers ``NAME_invoke_float`` (ce_quantize_f32_s8 / ce_dequantize_s8_f32) around the int8 core. Between 8-bit
types (uint8 model input -> int8, int8 -> uint8 model output, int8 -> int8 requantisation): a 256-entry table of
TFLM's Requantize arithmetic, one look-up per element (ce_lut_s8; uint8 bytes index the table as their int8
reinterpretation)."""

from __future__ import annotations

from firmware_export.cgen import fixedpoint as fx
from firmware_export.cgen.builder import _array
from firmware_export.cgen.quant import quantize_multiplier

OPCODES = ("QUANTIZE", "DEQUANTIZE")
BYTE_TYPES = ("int8", "uint8")
RANGES = {"int8": (-128, 127), "uint8": (0, 255)}


def _float_boundary(m, op) -> bool:
    src, dst = m.tensor(op.inputs[0]), m.tensor(op.outputs[0])
    if op.opcode == "QUANTIZE":
        return op.inputs[0] in m.inputs and src.dtype == "float32" and dst.dtype == "int8"
    return op.outputs[0] in m.outputs and src.dtype == "int8" and dst.dtype == "float32"


def at_supported_boundary(bld, op):
    """is supported between a float32 model input and int8 (QUANTIZE), between int8 and a float32 model output
    (DEQUANTIZE), and as QUANTIZE between int8 and uint8 tensors (requantisation)"""
    m = bld.m
    src, dst = m.tensor(op.inputs[0]), m.tensor(op.outputs[0])
    ok = _float_boundary(m, op) or (op.opcode == "QUANTIZE" and src.dtype in BYTE_TYPES and dst.dtype in BYTE_TYPES
                                    and src.data is None and src.num_elements == dst.num_elements)
    return ok, f"{src.dtype} -> {dst.dtype}"


def quantised(bld, op):
    """needs quantised (scale and zero point) input and output tensors"""
    bad = [bld.t(i) for i in (op.inputs[0], op.outputs[0]) if bld.t(i).dtype != "float32" and
           (bld.t(i).scale is None or bld.t(i).scale.size == 0)]
    return not bad, ", ".join(f"tensor '{t.name}'" for t in bad)


CONSTRAINTS = (at_supported_boundary, quantised)


def core_tensors(model) -> tuple[int, int, set[int]]:
    """(core input tensor, core output tensor, indices of the float boundary operators to skip)."""
    core_in, core_out = model.inputs[0], model.outputs[0]
    skip = set()
    for op in model.operators:
        if not _float_boundary(model, op):
            continue
        if op.opcode == "QUANTIZE" and op.inputs[0] == core_in:
            core_in = op.outputs[0]
            skip.add(op.index)
        elif op.opcode == "DEQUANTIZE" and op.outputs[0] == model.outputs[0]:
            core_out = op.inputs[0]
            skip.add(op.index)
    return core_in, core_out, skip


def requantize_table(bld, op) -> list[int]:
    """TFLM's Requantize for each input byte: the table entry for int8 byte value s (index s + 128); uint8 values
    are indexed by their int8 reinterpretation and uint8 outputs stored as such."""
    src, dst = bld.t(op.inputs[0]), bld.t(op.outputs[0])
    (si, zi), (so, zo) = bld.qparams(op.inputs[0]), bld.qparams(op.outputs[0])
    mult, shift = quantize_multiplier(float(si) / float(so))
    lo, hi = RANGES[dst.dtype]
    table = []
    for s in range(-128, 128):
        v = s if src.dtype == "int8" else s & 0xFF
        out = max(lo, min(hi, fx.mbqm(v - zi, mult, shift) + zo))  # TFLM's 128-shift fast path is this too
        table.append(out - 256 if out > 127 else out)
    return table


def lower(bld, op) -> None:
    """Float boundaries: nothing to emit (``build_engine`` wraps the core, see ``core_tensors``); 8-bit
    requantisation: a table look-up step."""
    if _float_boundary(bld.m, op):
        return
    x, y = op.inputs[0], op.outputs[0]
    name = bld.const_name("lut")
    bld.consts.append(f"/* QUANTIZE {bld.t(x).dtype} -> {bld.t(y).dtype}: output byte for input byte -128..127 "
                      f"(TFLM Requantize) */\n" + _array("int8_t", name, requantize_table(bld, op), 16))
    if bld.can_overwrite(op, x):
        bld.alias[y] = x
    bld.add_step(op, f"ce_lut_s8({name}, {bld.ptr(x)}, {bld.ptr(y)}, {bld.t(y).num_elements});", [x], [y])
