"""Build and run the generated C engine on the host or on an emulated Cortex-M4 and measure it.

``run_c_bench(model_path, runtime="qemu-m4" | "c-host", runs=..., inputs=None) -> dict``

* ``c-host``: the generated sources are compiled with ``gcc -std=c99 -O2 -Wall -Wextra -Werror`` (portable C path)
  and run on the golden inputs; reports host latency.
* ``qemu-m4``: compiled with ``arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16 -O2``
  (SMLAD DSP path) together with a generated startup file and linker script, run under
  ``qemu-system-arm -M mps2-an386 -icount shift=0 -semihosting``. All inputs are batched into one firmware run.
  SysTick under ``-icount shift=0`` is deterministic: one tick is 40 instructions, so the report gives
  instructions per inference (not cycles: QEMU does not model pipeline timing), MACs per instruction, flash
  (``.text + .rodata + .data`` of the linked firmware from ``arm-none-eabi-size -A``, minus the test harness and
  startup objects and the test vectors: what the engine adds to a firmware, C library memcpy/memset included;
  ``firmware_flash_bytes`` is the whole test firmware) and RAM (``.data + .bss`` without the harness's result
  buffer, plus the measured stack high-water mark).

Outputs are compared byte for byte with LiteRT's reference interpreter (BUILTIN_WITHOUT_DEFAULT_DELEGATES).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.errors import UsageError

RUNTIMES = ("c-host", "qemu-m4")


def _normalise_inputs(engine, inputs) -> list[np.ndarray]:
    dtype = np.float32 if engine.float_io else np.int8
    shape = tuple(engine.input_shape)
    if isinstance(inputs, np.ndarray) and inputs.shape == shape:
        inputs = [inputs]
    out = []
    for x in inputs:
        a = np.asarray(x)
        if a.size != int(np.prod(shape)):
            raise UsageError("input does not match the model input shape", received=f"{a.shape} vs {shape}")
        if a.dtype != dtype:
            raise UsageError(f"inputs must already be {np.dtype(dtype).name} (the model input type)",
                             received=str(a.dtype))
        out.append(a.reshape(shape))
    if not out:
        raise UsageError("no inputs to run", received="0 inputs")
    return out


def run_c_bench(model_path: str | os.PathLike, runtime: str = "qemu-m4", runs: int = 10, inputs=None,
                seed: int = 0, keep_dir: str | os.PathLike | None = None, timeout: float = 900) -> dict[str, Any]:
    """Generate, build and run the C engine for ``model_path``; returns the measurements (see module doc)."""
    from firmware_export.cgen import build, load_engine, write_engine

    if runtime not in RUNTIMES:
        raise UsageError(f"runtime must be one of {', '.join(RUNTIMES)}", received=runtime)
    if inputs is None and (not isinstance(runs, int) or runs < 1):
        raise UsageError("runs must be a positive integer", received=runs)
    engine = load_engine(model_path)
    xs = build.random_inputs(engine, runs, seed=seed) if inputs is None else _normalise_inputs(engine, inputs)
    refs = build.reference_outputs(model_path, xs)
    work = Path(keep_dir) if keep_dir else Path(tempfile.mkdtemp(prefix="ce_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        write_engine(engine, work, xs, refs)
        result: dict[str, Any] = {
            "runtime": runtime,
            "model": str(model_path),
            "name": engine.name,
            "runs": len(xs),
            "macs": engine.macs,
            "arena_bytes": engine.plan.arena_bytes,
        }
        if runtime == "c-host":
            t0 = time.perf_counter()
            exe = build.build_host(work, engine.name)
            result["build_seconds"] = round(time.perf_counter() - t0, 3)
            res = build.run_host(exe, timeout=timeout)
            result.update({
                "outputs_match": res["mismatches"] == 0,
                "mismatches": res["mismatches"],
                "latency_ms": res["elapsed"] / len(xs) / 1e6,
                "instructions_per_inference": None,
                "macs_per_instruction": None,
                "flash_bytes": None,
                "ram_bytes": None,
            })
            if res.get("first_mismatch_detail"):
                result["first_mismatch"] = res["first_mismatch_detail"]
            return result
        t0 = time.perf_counter()
        paths = build.build_m4(work, engine.name)
        result["build_seconds"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        res = build.run_qemu(paths["elf"], timeout=timeout)
        result["emulation_seconds"] = round(time.perf_counter() - t0, 3)
        sections = build.section_sizes(paths["elf"])
        out_item = 4 if engine.output_dtype == "float32" else 1
        results_buf = len(xs) * int(np.prod(engine.output_shape)) * out_item
        firmware_flash = sum(n for s, n in sections.items() if s in (".text", ".rodata", ".data", ".ARM.exidx"))
        harness = build.footprint(paths["harness_objs"])  # test harness + startup: not part of the engine
        flash = firmware_flash - harness["flash_bytes"]
        static_ram = sections.get(".data", 0) + sections.get(".bss", 0) - results_buf
        instructions = res["elapsed"] * build.INSTRUCTIONS_PER_TICK / len(xs)
        result.update({
            "outputs_match": res["mismatches"] == 0,
            "mismatches": res["mismatches"],
            "instructions_per_inference": int(round(instructions)),
            "macs_per_instruction": round(engine.macs / instructions, 4) if instructions else None,
            "flash_bytes": flash,
            "firmware_flash_bytes": firmware_flash,
            "ram_bytes": static_ram + res["stack_bytes"],
            "static_ram_bytes": static_ram,
            "stack_bytes": res["stack_bytes"],
            "sections": {k: v for k, v in sections.items() if not k.startswith((".debug", ".comment", ".ARM.attr"))},
            "latency_ms": None,
            "machine": build.QEMU_MACHINE,
            "instructions_per_tick": build.INSTRUCTIONS_PER_TICK,
        })
        if res.get("first_mismatch_detail"):
            result["first_mismatch"] = res["first_mismatch_detail"]
        return result
    finally:
        if not keep_dir:
            shutil.rmtree(work, ignore_errors=True)
