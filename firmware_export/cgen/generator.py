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

The linear driver: constant folding of shape arithmetic (``fold.py``) → model-level checks → every operator's
support rules (``firmware_export.cgen.ops``; all
refusals reported at once) → lowering, one registered module per operator family → offline memory plan →
C text from the templates.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from firmware_export.cgen import fold, ops, planner
from firmware_export.cgen.builder import Builder, Step, _c_float, resolve
from firmware_export.cgen.ops import boundary, conv, resblock
from toolchain.errors import ExportError

SUPPORTED_OPS = ops.SUPPORTED_OPS
TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "templates" / "cengine"
KERNEL_FILES = ("ce_kernels.h", "ce_kernels.c")
SHOWN_REFUSALS = 4


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
    core_io_dtypes: tuple[str, str] = ("int8", "int8")  # of the tensors NAME_invoke reads and writes

    @property
    def float_io(self) -> bool:
        return self.input_dtype == "float32"

    @property
    def byte_io(self) -> tuple[str, str]:
        """C types of ``NAME_invoke``'s input and output (int8_t, or uint8_t for a uint8 model)."""
        return tuple(IO_CTYPES[d] for d in self.core_io_dtypes)  # type: ignore[return-value]


IO_CTYPES = {"int8": "int8_t", "uint8": "uint8_t"}
IO_NUMPY = {"int8": np.int8, "uint8": np.uint8, "float32": np.float32}


def build_engine(model, name: str, meta: dict[str, Any] | None = None) -> Engine:
    """Translate a parsed model (``toolchain.tflite_model.TFLiteModel``) into C sources (no files written).

    ``meta``: the model's metadata (sidecar), for the preprocessing record in ``NAME.h``."""
    from firmware_export.model_input import is_float_model, quantise_hint
    from firmware_export.preprocessing import preprocessing_block

    if is_float_model(model):
        raise ExportError("the C engine runs int8-quantised models; this model computes in float",
                          received=f"{model.path or 'model'} has float32/float16 activations",
                          hint=f"{quantise_hint()}; --format tflm also exports a float model")
    folded = fold.fold_constants(model)  # shape arithmetic of dynamic-batch conversions
    unsupported = sorted({op.opcode for op in model.operators if op.opcode not in SUPPORTED_OPS and
                          op.index not in folded})
    if unsupported:
        raise ExportError("the C engine does not support these operators: " + ", ".join(unsupported),
                          received=f"{model.path or 'model'} uses {', '.join(model.opcode_names())}",
                          hint="supported: " + ", ".join(SUPPORTED_OPS) + "; use --format tflm instead")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ExportError("the C engine supports models with one input and one output",
                          received=f"{len(model.inputs)} inputs, {len(model.outputs)} outputs")
    b = Builder(model, name)
    core_in, core_out, skip = boundary.core_tensors(model)
    skip |= folded
    in_t, out_t = model.inputs[0], model.outputs[0]
    refusals = []
    for op in model.operators:
        if op.index in folded:
            continue
        ok, reason = ops.supported(b, op)
        if not ok:
            refusals.append(f"operator {op.index} ({op.opcode}): {reason}")
    if refusals:
        more = len(refusals) - SHOWN_REFUSALS
        raise ExportError("the C engine cannot lower this model: " + "; ".join(refusals[:SHOWN_REFUSALS]) +
                          (f"; {more} more" if more > 0 else ""), received=f"{model.path or 'model'}",
                          hint="use --format tflm for what the C engine does not lower")
    for t in (core_in, core_out):
        if model.tensor(t).dtype not in ("int8", "uint8"):
            raise ExportError("the C engine needs int8 or uint8 (or float32 with QUANTIZE/DEQUANTIZE) model "
                              "input/output",
                              received=f"tensor '{model.tensor(t).name}' is {model.tensor(t).dtype}")
    b.protected.add(resolve(b._static_root, core_out))
    b.protected.add(core_out)
    consumers: dict[int, list] = {}
    for op in model.operators:
        for t in op.inputs:
            if t >= 0:
                consumers.setdefault(resolve(b._static_root, t), []).append(op)
    producers = {t: op for op in model.operators for t in op.outputs}
    blocks = {}
    for op in model.operators:
        blk = resblock.match(b, op, producers, consumers) if op.index not in skip else None
        if blk is not None and not any(o.index in skip for o in blk.ops):
            blocks[op.index] = blk
            skip |= {o.index for o in blk.ops}
            # the fused step reads the block input at the ADD's position: no operator before it may overwrite it
            rx = resolve(b._static_root, blk.c1.inputs[0])
            b.last_read[rx] = max(b.last_read.get(rx, -1), op.index)
    for op in model.operators:
        if op.index in blocks:
            resblock.lower(b, blocks[op.index])
            continue
        if op.index in skip:
            continue
        fc = conv.fused_fc(b, op, consumers) if op.opcode in conv.OPCODES and b.inplace_enabled else None
        if fc is not None:
            conv.lower(b, op, fc)
            skip.add(fc.index)
        else:
            ops.lower(b, op)

    # ---- memory plan ----
    n = len(b.steps)
    life: dict[int, list[int]] = {}
    members: dict[int, list[int]] = {}

    def touch(t: int, step: int) -> None:
        r = resolve(b.alias, t)
        lo_hi = life.setdefault(r, [step, step])
        lo_hi[0] = min(lo_hi[0], step)
        lo_hi[1] = max(lo_hi[1], step)

    for s in b.steps:
        for t in s.reads + s.writes:
            touch(t, s.index)
    touch(core_in, -1)
    touch(core_out, n)
    for t in list(b.alias) + [core_in, core_out] + [t for s in b.steps for t in s.reads + s.writes]:
        members.setdefault(resolve(b.alias, t), [])
        if t not in members[resolve(b.alias, t)]:
            members[resolve(b.alias, t)].append(t)
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
        return f"(ce_arena.bytes + {offsets[f't{resolve(b.alias, t)}']})"

    funcs = []
    for s in b.steps:
        body = re.sub(r"@T(\d+)@", lambda mm: ptr(int(mm.group(1))), s.body)
        soff = offsets.get(f"scratch{s.index}", 0)  # planner offsets are 8-byte aligned
        body = body.replace("@S16@", f"(ce_arena.h + {soff // 2})").replace("@S32@", f"(ce_arena.w + {soff // 4})")
        body = body.replace("@S@", f"(ce_arena.bytes + {soff})")
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
    core_dtypes = (model.tensor(core_in).dtype, model.tensor(core_out).dtype)
    header = _render("model.h.in", NAME=name, UPPER=up, ARENA=plan.arena_bytes, N_IN=n_in, N_OUT=n_out,
                     IN_SCALE=_c_float(cin_s), IN_ZP=cin_z, OUT_SCALE=_c_float(cout_s), OUT_ZP=cout_z, MACS=macs,
                     IN_SCALE_DECIMAL=f"{float(np.float32(cin_s)):.9g}",
                     OUT_SCALE_DECIMAL=f"{float(np.float32(cout_s)):.9g}",
                     FLOAT_IO=1 if float_io else 0, N_LAYERS=n, PREPROCESSING=preprocessing_block(meta, up),
                     IN_SHAPE=", ".join(map(str, tin.shape)), OUT_SHAPE=", ".join(map(str, tout.shape)),
                     IN_T=IO_CTYPES[core_dtypes[0]], OUT_T=IO_CTYPES[core_dtypes[1]],
                     IN_MIN=-128 if core_dtypes[0] == "int8" else 0, IN_MAX=127 if core_dtypes[0] == "int8" else 255)
    calls = "\n".join(f"    {s.func}();" for s in b.steps)
    in_ptr = f"(ce_arena.bytes + {offsets[f't{resolve(b.alias, core_in)}']})"
    out_ptr = f"(ce_arena.bytes + {offsets[f't{resolve(b.alias, core_out)}']})"
    float_wrappers = ""
    if float_io:
        if tout.dtype != "float32":
            raise ExportError("float input with int8 output is not supported", received=f"{tin.dtype} -> {tout.dtype}")
        float_wrappers = (
            f"int {name}_invoke_float(const float *input, float *output)\n{{\n"
            f"    ce_quantize_f32_s8(input, {in_ptr}, {n_in}, {_c_float(cin_s)}, {cin_z});\n"
            f"    {name}_run();\n"
            f"    ce_dequantize_s8_f32({out_ptr}, output, {n_out}, {_c_float(cout_s)}, {cout_z});\n"
            f"    return 0;\n}}\n")
    source = _render("model.c.in", NAME=name, UPPER=up, CONSTS="\n".join(b.consts), FUNCS="\n".join(funcs), CALLS=calls,
                     IN_PTR=in_ptr, OUT_PTR=out_ptr, N_IN=n_in, N_OUT=n_out, FLOAT_WRAPPERS=float_wrappers,
                     IN_T=IO_CTYPES[core_dtypes[0]], OUT_T=IO_CTYPES[core_dtypes[1]],
                     ARENA_ALLOC=plan.arena_bytes + 8, ARENA_H=(plan.arena_bytes + 8) // 2,
                     ARENA_W=(plan.arena_bytes + 8) // 4)  # slack: the generic im2col may read 3 bytes past a row
    return Engine(name=name, header=header, source=source, plan=plan, steps=b.steps, input_shape=tuple(tin.shape),
                  output_shape=tuple(tout.shape), input_dtype=tin.dtype, output_dtype=tout.dtype,
                  core_input={"scale": cin_s, "zero_point": cin_z, "elements": n_in},
                  core_output={"scale": cout_s, "zero_point": cout_z, "elements": n_out},
                  macs=macs, weight_bytes=wbytes, opcodes=model.opcode_names(), core_io_dtypes=core_dtypes)


def _render(template: str, **values: Any) -> str:
    text = (TEMPLATE_DIR / template).read_text(encoding="utf-8")
    return string.Template(text).substitute({k: str(v) for k, v in values.items()})


def kernel_sources() -> dict[str, str]:
    return {f: (TEMPLATE_DIR / f).read_text(encoding="utf-8") for f in KERNEL_FILES}
