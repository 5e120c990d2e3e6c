"""Run a model on the emulated Cortex-M4F with one of three engines and measure it: one entry point.

``run_on_target(model_path, engine, inputs, ...) -> TargetRun``

* ``c``: the standalone C engine (``firmware_export.cgen``), arena from its offline planner;
* ``tflm``: the TFLM export (model data + op resolver) with TFLM's reference kernels;
* ``cmsis-nn``: the same export with TFLM's CMSIS-NN kernels.

The TFLM engines need a TFLM source tree (``--tflm-dir`` / ``$TOOLCHAIN_TFLM_DIR``); their library is built once
and cached (:mod:`firmware_export.m4.tflm_lib`). Inputs are raw arrays already in the model's input type; outputs
come back per input. Comparing them with a host reference is the caller's job (the toolchain's ``bench`` and
``verify``), so this package does not open host interpreters.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from firmware_export.m4.tflm_lib import FLAVOUR_OF, tflm_library  # noqa: F401  (re-exported)
from firmware_export.m4.tools import FLASH_LIMIT, INSTRUCTIONS_PER_TICK, QEMU_MACHINE, RAM_LIMIT, STACK_RESERVE
from toolchain.errors import ExportError, UsageError

ENGINES = ("c", "tflm", "cmsis-nn")
ENGINE_TITLES = {"c": "C engine", "tflm": "TFLM (reference kernels)", "cmsis-nn": "TFLM + CMSIS-NN"}


def supported_engine(engine: str) -> tuple[bool, str]:
    """--engine must be c (the standalone C engine), tflm (TFLM reference kernels) or cmsis-nn (TFLM + CMSIS-NN)."""
    return engine in ENGINES, (supported_engine.__doc__ or "").strip()


@dataclass
class TargetRun:
    engine: str
    outputs: list[np.ndarray]
    instructions_per_inference: int
    macs: int
    arena_bytes: int
    arena_source: str
    flash: dict[str, int]            # model, runtime, harness, firmware
    ram_bytes: int
    static_ram_bytes: int
    stack_bytes: int
    qemu_runs: int
    build_seconds: float
    emulation_seconds: float
    library: dict[str, Any] | None = None
    layers: list[tuple[int, int, bytes]] | None = None   # (layer/op index, tensor index, bytes), first input
    name: str = ""
    sections: dict[str, int] = field(default_factory=dict)   # arm-none-eabi-size -A of the (first) firmware
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def macs_per_instruction(self) -> float | None:
        return round(self.macs / self.instructions_per_inference, 4) if self.instructions_per_inference else None

    def summary(self) -> dict[str, Any]:
        """The measured figures as plain JSON values (no outputs, no layer dumps)."""
        return {"engine": self.engine, "engine_title": ENGINE_TITLES[self.engine], "name": self.name,
                "machine": QEMU_MACHINE, "instructions_per_tick": INSTRUCTIONS_PER_TICK,
                "runs": len(self.outputs), "macs": self.macs,
                "instructions_per_inference": self.instructions_per_inference,
                "macs_per_instruction": self.macs_per_instruction, "arena_bytes": self.arena_bytes,
                "arena_source": self.arena_source, "flash": dict(self.flash), "ram_bytes": self.ram_bytes,
                "static_ram_bytes": self.static_ram_bytes, "stack_bytes": self.stack_bytes,
                "qemu_runs": self.qemu_runs, "build_seconds": self.build_seconds,
                "emulation_seconds": self.emulation_seconds, "library": self.library,
                "sections": dict(self.sections), **self.extra}


def run_on_target(model_path: str | os.PathLike, engine: str, inputs: list[np.ndarray], *,
                  tflm_dir: str | os.PathLike | None = None, dump_layers: bool = False,
                  keep_dir: str | os.PathLike | None = None, progress: Callable[[str], None] | None = None,
                  timeout: float = 600) -> TargetRun:
    """Build ``model_path`` for the Cortex-M4F with ``engine``, run ``inputs`` on QEMU, return the measurements."""
    ok, reason = supported_engine(engine)
    if not ok:
        raise UsageError(reason, received=f"--engine {engine}")
    work = Path(keep_dir).resolve() if keep_dir else Path(tempfile.mkdtemp(prefix="m4_"))  # compilers run in it
    work.mkdir(parents=True, exist_ok=True)
    try:
        if engine == "c":
            return _run_c(Path(model_path), inputs, work, progress, timeout, dump_layers)
        return _run_tflm(Path(model_path), engine, inputs, work, tflm_dir, dump_layers, progress, timeout)
    finally:
        if not keep_dir:
            shutil.rmtree(work, ignore_errors=True)


def _run_tflm(path: Path, engine: str, inputs, work: Path, tflm_dir, dump_layers: bool, progress, timeout
              ) -> TargetRun:
    from firmware_export import export_tflm
    from firmware_export.m4.tflm_firmware import run_tflm
    from toolchain.model_inspect import inspect_tflite
    from toolchain.tflite_model import load_tflite

    lib = tflm_library(tflm_dir, engine, progress)
    model = load_tflite(path)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ExportError("the on-target harness runs models with one input and one output",
                          received=f"{len(model.inputs)} inputs, {len(model.outputs)} outputs")
    if progress:
        progress("exporting for TFLM (model data, op resolver) and measuring the host arena")
    manifest = export_tflm(path, work / "export", name="model", on_target=False, force=True)
    arena = int(manifest["arena"]["recommended_bytes"])
    if dump_layers:  # every tensor is preserved: room for all activations on top of the planned arena
        acts = [t for t in model.tensors if t.data is None]
        arena += sum(-(-t.nbytes // 16) * 16 + 16 for t in acts) + 4096
    out = model.tensor(model.outputs[0])
    run = run_tflm(work / "export", "model", lib, list(inputs), model_bytes=len(model.data), arena_bytes=arena,
                   out_dtype=np.dtype(out.dtype), out_shape=tuple(int(s) for s in out.shape),
                   work=work / "firmware", dump_layers=dump_layers, timeout=timeout, progress=progress)
    return TargetRun(
        engine=engine, outputs=run.outputs, instructions_per_inference=run.instructions_per_inference,
        macs=int(inspect_tflite(model).totals.macs), arena_bytes=run.arena_used_bytes,
        arena_source="TFLM arena_used_bytes() on the 32-bit target" + (" (all tensors preserved)" if dump_layers
                                                                         else ""),
        flash=run.flash, ram_bytes=run.ram_bytes, static_ram_bytes=run.static_ram_bytes, stack_bytes=run.stack_bytes,
        qemu_runs=run.qemu_runs, build_seconds=run.build_seconds, emulation_seconds=run.emulation_seconds,
        library={"flavour": lib.flavour, "path": str(lib.path), "tree": str(lib.tree.root),
                 "tree_digest": lib.tree.digest[:16], "cached": lib.cached, "build_seconds": lib.build_seconds},
        layers=run.layers, name=path.stem, sections=run.sections,
        extra={"host_arena_recorded_bytes": int(manifest["arena"]["recorded_bytes"])})


def _run_c(path: Path, inputs, work: Path, progress, timeout, dump_layers: bool = False) -> TargetRun:
    from firmware_export.cgen import build, load_engine, write_engine
    from firmware_export.m4.tools import firmware_flash, footprint, read_layer_dump, section_sizes

    engine = load_engine(path)
    xs = list(inputs)
    in_bytes = int(np.asarray(xs[0]).nbytes) if xs else 0
    out_item = 4 if engine.output_dtype == "float32" else 1
    n_out = int(np.prod(engine.output_shape))
    per_run = max(0, (FLASH_LIMIT - path.stat().st_size - 512 * 1024) // max(1, in_bytes))  # inputs: flash
    per_run = min(per_run,  # the outputs stay in RAM until the run ends
                  (RAM_LIMIT - engine.plan.arena_bytes - STACK_RESERVE) // max(1, n_out * out_item))
    if not xs or per_run < 1:
        raise ExportError("the model and one input do not fit the emulated board's 4 MB flash image" if xs
                          else "no inputs to run on the target", received=f"{len(xs)} inputs of {in_bytes} bytes")
    outputs: list[np.ndarray] = []
    elapsed = stack = 0
    build_s = emu_s = 0.0
    chunks = [xs[i:i + per_run] for i in range(0, len(xs), per_run)]
    flash: dict[str, int] = {}
    sections: dict[str, int] = {}
    static_ram = 0
    layers = None
    for ci, chunk in enumerate(chunks):
        if progress:
            progress(f"C engine: generating and compiling for Cortex-M4F ({len(chunk)} input(s))")
        t0 = time.monotonic()
        src = work / f"run{ci}"
        src.mkdir(parents=True, exist_ok=True)
        write_engine(engine, src, chunk, None)  # no expected outputs: they come back to the host
        paths = build.build_m4(src, engine.name,
                               extra_cflags=["-DCE_WRITE_OUTPUTS", *(["-DCE_LAYER_DUMP"] if dump_layers else [])])
        build_s += time.monotonic() - t0
        if progress:
            progress(f"QEMU run {ci + 1}/{len(chunks)}: {len(chunk)} input(s) on the C engine")
        t0 = time.monotonic()
        res = build.run_qemu(paths["elf"], timeout=timeout)
        emu_s += time.monotonic() - t0
        raw = np.frombuffer((paths["elf"].parent / "ce_outputs.bin").read_bytes(),
                            dtype=np.float32 if out_item == 4 else np.int8)
        if raw.size != len(chunk) * n_out:
            raise ExportError("the target wrote fewer outputs than it ran inputs", received=f"{raw.size} values")
        outputs += [raw[i * n_out:(i + 1) * n_out].reshape(engine.output_shape).copy() for i in range(len(chunk))]
        elapsed += res["elapsed"]
        stack = max(stack, res["stack_bytes"])
        if ci == 0:
            layers = read_layer_dump(paths["elf"].parent / "ce_layers.bin") if dump_layers else None
            sections = {k: v for k, v in section_sizes(paths["elf"]).items()
                        if not k.startswith((".debug", ".comment", ".ARM.attr"))}
            total = firmware_flash(sections)
            harness = footprint(paths["harness_objs"])["flash_bytes"]
            model_fp = sum(n for s, n in section_sizes(paths["model_obj"]).items() if s.startswith(".rodata"))
            flash = {"model": model_fp, "runtime": total - model_fp - harness, "harness": harness, "firmware": total}
            results_buf = len(chunk) * n_out * out_item
            static_ram = sections.get(".data", 0) + sections.get(".bss", 0) - results_buf - engine.plan.arena_bytes
    instr = int(round(elapsed * INSTRUCTIONS_PER_TICK / len(xs)))
    return TargetRun(
        engine="c", outputs=outputs, instructions_per_inference=instr, macs=int(engine.macs),
        arena_bytes=int(engine.plan.arena_bytes), arena_source="C engine offline memory plan", flash=flash,
        ram_bytes=int(engine.plan.arena_bytes) + static_ram + stack, static_ram_bytes=static_ram, stack_bytes=stack,
        qemu_runs=len(chunks), build_seconds=round(build_s, 2), emulation_seconds=round(emu_s, 2), name=path.stem,
        layers=layers, sections=sections)
