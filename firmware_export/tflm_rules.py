"""What TFLM's kernels can run, as ``(ok, reason)`` support rules whose docstring is the user's message.

Checked against the TFLM tree the toolchain builds from (``tensorflow/lite/micro/kernels``): CONV_2D and
DEPTHWISE_CONV_2D take int4 weights per tensor or per channel; FULLY_CONNECTED takes int4 weights only per tensor
(``fully_connected_common.cc``: per-channel quantisation "only Int8/Int16"). Every kernel that takes int4 weights
unpacks them into an arena scratch buffer of one byte per weight (``RequestScratchBufferInArena(filter_size)``)
before it runs, so on TFLM int4 halves the flash but not the RAM; the C engine keeps the weights packed.
"""

from __future__ import annotations

from toolchain.tflite_types import TFLiteModel

INT4_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def _int4_weights(model: TFLiteModel):
    for op in model.operators:
        if op.opcode in INT4_OPS and len(op.inputs) > 1 and op.inputs[1] >= 0:
            w = model.tensor(op.inputs[1])
            if w.dtype == "int4":
                yield op, w


def int4_fully_connected_per_tensor(model: TFLiteModel) -> tuple[bool, str]:
    """TFLM's FULLY_CONNECTED runs int4 weights only with per-tensor scales; quantise with --per-tensor, keep the
    dense layers int8 (--keep-int8-layers), or export the C engine (--format c), which runs per-channel int4."""
    bad = [f"op {op.index} ({op.opcode}, {w.name})" for op, w in _int4_weights(model)
           if op.opcode == "FULLY_CONNECTED" and w.per_channel]
    return not bad, (int4_fully_connected_per_tensor.__doc__ or "").strip() + (
        f" Per-channel int4: {', '.join(bad[:4])}" + (" ..." if len(bad) > 4 else "") if bad else "")


def int4_scratch_bytes(model: TFLiteModel) -> tuple[int, str | None]:
    """The largest arena scratch buffer TFLM's kernels request to unpack int4 weights (one byte per weight)."""
    best, where = 0, None
    for op, w in _int4_weights(model):
        if w.num_elements > best:
            best, where = w.num_elements, f"op {op.index} {op.opcode}"
    return best, where
