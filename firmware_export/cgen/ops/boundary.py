"""QUANTIZE on a float model input and DEQUANTIZE on a float model output: no layer of their own, they become the
float wrappers ``NAME_invoke_float`` (ce_quantize_f32_s8 / ce_dequantize_s8_f32) around the int8 core."""

from __future__ import annotations

OPCODES = ("QUANTIZE", "DEQUANTIZE")


def at_float_boundary(bld, op):
    """is supported only between a float32 model input and int8 (QUANTIZE) or between int8 and a float32 model
    output (DEQUANTIZE)"""
    m = bld.m
    src, dst = m.tensor(op.inputs[0]), m.tensor(op.outputs[0])
    if op.opcode == "QUANTIZE":
        ok = op.inputs[0] in m.inputs and src.dtype == "float32" and dst.dtype == "int8"
    else:
        ok = op.outputs[0] in m.outputs and src.dtype == "int8" and dst.dtype == "float32"
    return ok, f"{src.dtype} -> {dst.dtype}"


CONSTRAINTS = (at_float_boundary,)


def core_tensors(model) -> tuple[int, int, set[int]]:
    """(int8 core input tensor, int8 core output tensor, indices of the boundary operators to skip)."""
    core_in, core_out = model.inputs[0], model.outputs[0]
    skip = set()
    for op in model.operators:
        if op.opcode == "QUANTIZE" and op.inputs[0] == core_in:
            core_in = op.outputs[0]
            skip.add(op.index)
        elif op.opcode == "DEQUANTIZE" and op.outputs[0] == model.outputs[0]:
            core_out = op.inputs[0]
            skip.add(op.index)
    return core_in, core_out, skip


def lower(bld, op) -> None:
    """Nothing to emit: ``build_engine`` wraps the core with the conversion (see ``core_tensors``)."""
