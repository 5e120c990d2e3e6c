"""Build and run the generated C engine on the host or on an emulated Cortex-M4 and measure it.

``run_c_bench(model_path, runtime="qemu-m4" | "c-host", runs=..., inputs=None) -> dict``

* ``c-host``: the generated sources are compiled with ``gcc -std=c99 -O2 -Wall -Wextra -Werror`` (portable C path)
  and run on the golden inputs; reports host latency.
* ``qemu-m4``: the firmware of :func:`firmware_export.m4.target.run_on_target` (``arm-none-eabi-gcc -O2`` for the
  Cortex-M4F, SMLAD DSP path, run under ``qemu-system-arm -M mps2-an386 -icount shift=0 -semihosting``; one tick of
  SysTick is 40 instructions): instructions per inference (not cycles), MACs per instruction, flash (model +
  engine code of the linked firmware, test harness and vectors excluded; ``firmware_flash_bytes`` is the whole
  test firmware) and RAM (arena + other static data + the measured stack high-water mark); the outputs come
  back to the host and are compared here.

Outputs are compared byte for byte with the reference kernels (``firmware_export.cgen.golden``: TFLM's Python
runtime, else LiteRT's BUILTIN_REF).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from firmware_export.cgen.golden import reference_outputs
from toolchain.errors import UsageError

RUNTIMES = ("c-host", "qemu-m4")


def _normalise_inputs(engine, inputs) -> list[np.ndarray]:
    from firmware_export.cgen.build import io_dtypes

    dtype = io_dtypes(engine)[0]
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
    refs = reference_outputs(model_path, xs).outputs
    work = Path(keep_dir) if keep_dir else Path(tempfile.mkdtemp(prefix="ce_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        result: dict[str, Any] = {
            "runtime": runtime,
            "model": str(model_path),
            "name": engine.name,
            "runs": len(xs),
            "macs": engine.macs,
            "arena_bytes": engine.plan.arena_bytes,
        }
        if runtime == "c-host":
            write_engine(engine, work, xs, refs)
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
        from firmware_export.m4.target import run_on_target

        run = run_on_target(model_path, "c", xs, keep_dir=work, timeout=timeout)
        mism = [i for i, (g, w) in enumerate(zip(run.outputs, refs)) if not np.array_equal(g.reshape(-1),
                                                                                          w.reshape(-1))]
        s = run.summary()
        result.update({
            "build_seconds": s["build_seconds"],
            "emulation_seconds": s["emulation_seconds"],
            "outputs_match": not mism,
            "mismatches": len(mism),
            "instructions_per_inference": s["instructions_per_inference"],
            "macs_per_instruction": s["macs_per_instruction"],
            "flash_bytes": s["flash"]["model"] + s["flash"]["runtime"],
            "firmware_flash_bytes": s["flash"]["firmware"],
            "ram_bytes": s["ram_bytes"],
            "static_ram_bytes": s["static_ram_bytes"],
            "stack_bytes": s["stack_bytes"],
            "latency_ms": None,
            "machine": s["machine"],
            "instructions_per_tick": s["instructions_per_tick"],
        })
        if mism:
            result["first_mismatch"] = (f"input {mism[0]}: got {run.outputs[mism[0]].reshape(-1)[:16].tolist()} "
                                        f"expected {refs[mism[0]].reshape(-1)[:16].tolist()}")
        return result
    finally:
        if not keep_dir:
            shutil.rmtree(work, ignore_errors=True)
