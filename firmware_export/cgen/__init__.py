"""C inference engine generator: ``.tflite`` (int8) -> standalone C99 sources with an offline memory plan.

``generate_c_engine(model_path, out_dir, name=None, force=False) -> dict`` writes the sources, a host test harness
with golden vectors and ``manifest.json``; ``firmware_export.cgen.bench.run_c_bench`` builds and runs them on the
host or on an emulated Cortex-M4 (QEMU MPS2 AN386).

Using the generated sources on a real board: add ``NAME.c``, ``NAME.h``, ``ce_kernels.c`` and ``ce_kernels.h``
to the firmware project and compile with the core's flags (for a Cortex-M4F: ``-mcpu=cortex-m4 -mthumb
-mfloat-abi=hard -mfpu=fpv4-sp-d16 -O2``; the SMLAD/SXTB16 DSP path is selected automatically through
``__ARM_FEATURE_DSP``, define ``CE_NO_DSP`` to force the portable path, ``CE_NO_ASM`` to avoid the inline-assembly
SMLAD loop, which needs an optimised build). Call ``NAME_invoke(input, output)`` with
int8 buffers of ``NAME_INPUT_SIZE``/``NAME_OUTPUT_SIZE`` bytes; the activation arena (``NAME_ARENA_BYTES``) is a
static array in ``.bss``, so no heap is used. The same test firmware as under QEMU (``NAME_test.c`` +
``ce_m4_startup.c`` + ``mps2_an386.ld``, adapt the MEMORY block to the board's flash/RAM) runs on a board with a
debugger attached for semihosting (e.g. ``openocd ... -c "arm semihosting enable"``); build it with
``-DCE_USE_DWT`` to time with DWT->CYCCNT cycles instead of SysTick.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from toolchain.errors import ToolchainError

DEFAULT_GOLDEN_VECTORS = 10
GOLDEN_MAX_BYTES = 4 << 20  # golden inputs in total (fewer vectors for a large input)


def int8_activations(model) -> tuple[bool, str]:
    """The C engine runs int8 activations (int8 or int4 weights); this model has int16 activations (16x8), which
    only TFLM's kernels run here: export it with --format tflm, or quantise with --activations int8."""
    compute = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
    ops = [f"{op.index} {op.opcode}" for op in model.operators
           if op.opcode in compute and any(model.tensor(i).dtype == "int16" for i in op.outputs)]
    return not ops, (int8_activations.__doc__ or "").replace("\n    ", " ").strip() + (
        f" Layers with int16 outputs: {', '.join(ops[:6])}" + (f" and {len(ops) - 6} more" if len(ops) > 6 else "")
        if ops else "")


def load_engine(model_path: str | os.PathLike, name: str | None = None, max_bytes: int | None = None):
    """Parse the model, validate it and build the engine in memory (raises ExportError for malformed, unsupported
    or float models, ModelError for a Keras model or a sidecar that is not this model's). ``max_bytes``: per-tensor
    byte limit of the validation (default: ``validate.CONST_MAX_BYTES`` / ``ACT_MAX_BYTES``)."""
    from firmware_export.cgen.generator import build_engine
    from firmware_export.cgen.validate import check_model
    from firmware_export.model_input import load_export_model
    from firmware_export.naming import c_identifier
    from toolchain.metadata import load_tflite_metadata

    model = load_export_model(model_path)
    check_model(model, max_bytes, source=str(model_path))
    ok, reason = int8_activations(model)
    if not ok:
        from toolchain.errors import ExportError

        raise ExportError(reason, received=str(model_path))
    ident = c_identifier(name if name else Path(model_path).stem)
    return build_engine(model, ident, load_tflite_metadata(model_path))


def write_engine(engine, out_dir: Path, inputs=None, outputs=None) -> list[str]:
    """Write all sources of ``engine`` into an existing folder; returns the file names.

    With ``inputs``, also the golden header: expected ``outputs`` make the harness compare; None leaves the outputs
    to the host (the firmware is built with -DCE_WRITE_OUTPUTS)."""
    from firmware_export.cgen import build
    from firmware_export.cgen.generator import TEMPLATE_DIR, _render, kernel_sources

    out_dir = Path(out_dir)
    files = {f"{engine.name}.h": engine.header, f"{engine.name}.c": engine.source, **kernel_sources()}
    in_t, out_t = engine.byte_io
    files[f"{engine.name}_test.c"] = _render("harness.c.in", NAME=engine.name, UPPER=engine.name.upper(), IN_T=in_t,
                                             OUT_T=out_t)
    for f in ("ce_m4_startup.c", "mps2_an386.ld"):
        files[f] = (TEMPLATE_DIR / f).read_text(encoding="utf-8")
    files["Makefile"] = _render("Makefile.in", NAME=engine.name)
    for fname, text in files.items():
        (out_dir / fname).write_text(text, encoding="utf-8")
    if inputs is not None:
        build.write_golden(out_dir, engine, inputs, outputs)
        files[f"{engine.name}_golden.h"] = ""
    return sorted(files)


def tflm_arena(model_path: str | os.PathLike) -> dict[str, Any] | None:
    """TFLM's measured arena (export helper's ``measure_arena``), or None when it cannot be measured here."""
    try:
        from firmware_export.arena import measure_arena
    except ImportError:
        return None
    try:
        m = measure_arena(model_path)
    except (ToolchainError, OSError, RuntimeError):
        return None
    return {"recorded_bytes": int(m.recorded_bytes), "recommended_bytes": int(m.recommended_bytes)}


def generate_c_engine(model_path: str | os.PathLike, out_dir: str | os.PathLike, name: str | None = None,
                      force: bool = False, golden_vectors: int = DEFAULT_GOLDEN_VECTORS,
                      measure_tflm: bool = True, max_bytes: int | None = None) -> dict[str, Any]:
    """Generate the C engine for ``model_path`` into ``out_dir``; returns the manifest (also ``manifest.json``).

    ``max_bytes``: per-tensor byte limit of the model validation (``load_engine``)."""
    from firmware_export.cgen import build
    from firmware_export.cgen.planner import check_plan
    from firmware_export.naming import export_name
    from toolchain.errors import ExportError, ModelError
    from toolchain.fsutil import atomic_write_json, check_output_dir, output_dir, sha256_file
    from toolchain.results import EngineManifest

    path = Path(model_path)
    if not path.is_file():
        raise ModelError("model file not found", received=str(model_path))
    check_output_dir(out_dir, force)
    engine = load_engine(path, export_name(name or None, path.stem), max_bytes=max_bytes)
    problems = check_plan(engine.plan)
    if problems:
        raise ExportError("internal memory plan is inconsistent", received="; ".join(problems[:3]))
    from firmware_export.cgen.golden import reference_outputs

    inputs = outputs = golden_reference = None
    golden_note = None
    in_bytes = max(engine.core_input["elements"], 1) * (4 if engine.float_io else 1)
    if golden_vectors > 0 and golden_vectors * in_bytes > GOLDEN_MAX_BYTES:
        golden_vectors = GOLDEN_MAX_BYTES // in_bytes
        if golden_vectors == 0:
            golden_note = f"no golden vectors: the input ({in_bytes:,} bytes) is above {GOLDEN_MAX_BYTES:,} bytes"
    if golden_vectors > 0:
        inputs = build.random_inputs(engine, golden_vectors, seed=0)
        try:
            golden = reference_outputs(path, inputs)
            outputs = golden.outputs
            golden_reference = golden.reference
        except ToolchainError as exc:  # no reference kernels run the model: no golden vectors
            inputs = outputs = None
            golden_note = f"no golden vectors: {exc}"
    tflm = tflm_arena(path) if measure_tflm else None
    manifest = EngineManifest(
        format="c-engine", name=engine.name, source_model=str(path), source_sha256=sha256_file(path),
        tflite_bytes=path.stat().st_size, operators=engine.opcodes,
        layers=[{"index": s.index, "op": s.opcode, "function": s.func, "macs": s.macs,
                 "scratch_bytes": s.scratch_bytes} for s in engine.steps],
        macs=engine.macs, weight_bytes=engine.weight_bytes,
        input={"shape": list(engine.input_shape), "dtype": engine.input_dtype, **engine.core_input},
        output={"shape": list(engine.output_shape), "dtype": engine.output_dtype, **engine.core_output},
        arena_bytes=engine.plan.arena_bytes, memory_plan=engine.plan.to_dict(), tflm_arena=tflm,
        arena_vs_tflm=(round(engine.plan.arena_bytes / tflm["recorded_bytes"], 3)
                       if tflm and tflm.get("recorded_bytes") else None),
        golden_vectors=0 if inputs is None else len(inputs), golden_reference=golden_reference,
        golden_note=golden_note)
    with output_dir(out_dir, force) as tmp:
        manifest.files = write_engine(engine, tmp, inputs, outputs) + ["manifest.json"]
        atomic_write_json(tmp / "manifest.json", manifest.to_json())
    return manifest.to_json()
