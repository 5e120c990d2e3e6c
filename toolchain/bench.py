"""Host / device latency benchmark of one model on one runtime.

``bench(model, runtime="auto", threads=None, runs=200, warmup=20, dataset=None) -> dict`` with keys
``model, size_bytes, runtime, runtime_version, threads, runs, warmup, input {shape, dtype, source},
latency_ms {min, median, mean, p90, p99, max}, throughput_per_s, batch_throughput_per_s, batch_samples, batch_mode,
batch_passes, peak_rss_bytes, host``. Both throughputs are samples per second: ``throughput_per_s`` of the batch-1
model invoked ``runs`` times, ``batch_throughput_per_s`` of ``run_many`` over ``batch_samples`` samples at
``batch_size`` (64; ``batch_mode`` ``batched(N)``: a batch-resized interpreter, ``loop``: one at a time).
``.keras`` models run on Keras (``model.predict_on_batch`` on one sample), ``.tflite`` on any installed TFLite
runtime. ``c-host`` / ``qemu-m4`` delegate to the standalone C engine (``firmware_export.cgen.bench.run_c_bench``).

Only NumPy is imported at module import; the TFLite path imports nothing but the chosen runtime, so it works on a
device with ``numpy``, ``typer`` and ``tflite-runtime`` or ``ai-edge-litert``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.errors import ModelError, ToolchainError, UsageError
from toolchain.results import BenchResult, TargetBenchResult
from toolchain.timing import host_info, latency_stats, sig, time_batched, time_single

BENCH_RUNTIMES = ("auto", "litert", "tflite-runtime", "tensorflow", "tflm", "keras", "c-host", "qemu-m4")


def _inputs_for(runner, dataset: str | None, n: int, seed: int = 0) -> tuple[np.ndarray, str]:
    from toolchain.runtime import quantize_input

    d = runner.input_details[0]
    shape = tuple(d["shape"])
    dtype = np.dtype(d["dtype"])
    if dataset:
        from toolchain.data import load_split
        from toolchain.metadata import load_any_metadata
        from toolchain.specs import DatasetSpec, RunRecord

        spec = dataset if isinstance(dataset, DatasetSpec) else DatasetSpec.parse(dataset)
        meta = load_any_metadata(runner.model_path) if runner.model_path != "<bytes>" else None
        data = load_split(RunRecord.from_metadata(meta), "test", dataset=spec, input_shape=shape[1:], max_samples=n)
        return quantize_input(data.x, d), f"dataset {spec.text} ({len(data.x)} test samples)"
    rng = np.random.default_rng(seed)
    size = (n,) + shape[1:]
    if dtype.kind == "f":
        x = rng.random(size, dtype=np.float64).astype(dtype)
    elif dtype == np.bool_:
        x = rng.integers(0, 2, size).astype(dtype)
    else:
        info = np.iinfo(dtype)
        x = rng.integers(max(info.min, -128), min(info.max, 127) + 1, size).astype(dtype)
    return x, "random"


def bench(model: str | os.PathLike, runtime: str = "auto", threads: int | None = None, runs: int = 200,
          warmup: int = 20, dataset: str | None = None, batch_size: int = 64, engine: str = "c",
          tflm_dir: str | os.PathLike | None = None, board: str | None = None, progress=None) -> dict[str, Any]:
    """Benchmark ``model`` (see the module docstring)."""
    if runtime not in BENCH_RUNTIMES:
        raise UsageError(f"unknown runtime; choose one of {', '.join(BENCH_RUNTIMES)}", received=runtime)
    if runs < 1 or warmup < 0:
        raise UsageError("--runs must be >= 1 and --warmup >= 0", received=f"runs={runs}, warmup={warmup}")
    if threads is not None and threads < 1:
        raise UsageError("--threads must be >= 1", received=threads)
    path = Path(model)
    if not path.is_file():
        raise ModelError("model file not found", received=str(path))
    if runtime in ("c-host", "qemu-m4"):
        if threads is not None:
            raise UsageError("--threads applies to interpreter runtimes, not to the single-threaded C engine",
                             received=f"--threads {threads} --runtime {runtime}")
        if runtime == "qemu-m4":
            return bench_target(path, engine, runs, dataset, tflm_dir, board, progress)
        return bench_c(path, runtime, runs, dataset)

    from toolchain.runtime import open_runtime, peak_rss_bytes

    runner = open_runtime(path, runtime=runtime, threads=threads)
    n_inputs = max(1, min(runs, 64))
    x, source = _inputs_for(runner, dataset, max(n_inputs, batch_size))
    n = len(x)
    times, total = time_single(runner, x, runs, warmup)
    stats = latency_stats(times)
    batch_tp, passes = time_batched(runner, x, batch_size) if n > 1 else (None, None)
    mode = runner.batch_mode if n > 1 else None
    d = runner.input_details[0]
    return BenchResult(
        model=str(path), size_bytes=path.stat().st_size, runtime=runner.name, runtime_version=runner.version,
        threads=threads, runs=runs, warmup=warmup,
        input={"shape": list(d["shape"]), "dtype": np.dtype(d["dtype"]).name, "source": source},
        latency_ms=stats, throughput_per_s=runs / total if total > 0 else None,
        batch_throughput_per_s=batch_tp, batch_samples=n if batch_tp else None, batch_mode=mode,
        batch_passes=passes if batch_tp else None,
        peak_rss_bytes=peak_rss_bytes(), host=host_info()).to_json()


def bench_c(path: Path, runtime: str, runs: int, dataset: str | None) -> dict[str, Any]:
    """Delegate to the standalone C engine benchmark (host build or Cortex-M4 under QEMU)."""
    if path.suffix.lower() != ".tflite":
        raise UsageError(f"--runtime {runtime} needs a .tflite model", received=str(path))
    try:
        from firmware_export.cgen.bench import run_c_bench
    except ImportError as exc:
        from toolchain.errors import RuntimeUnavailableError

        raise RuntimeUnavailableError("the C engine benchmark is not available in this installation",
                                      received=f"--runtime {runtime}", hint=str(exc)) from exc
    inputs = None
    if dataset:
        from toolchain.runtime import open_runtime

        runner = open_runtime(path)
        x, _ = _inputs_for(runner, dataset, min(runs, 16))
        inputs = [x[i % len(x):i % len(x) + 1] for i in range(runs)]  # up to 16 distinct samples, --runs runs
    result = dict(run_c_bench(path, runtime, runs=runs, inputs=inputs))
    result.setdefault("size_bytes", path.stat().st_size)
    result["host"] = host_info()
    return TargetBenchResult(**result).to_json()


def bench_target(path: Path, engine: str, runs: int, dataset: str | None, tflm_dir, board: str | None,
                 progress) -> dict[str, Any]:
    """``--runtime qemu-m4``: firmware for the emulated Cortex-M4F with ``engine`` (c | tflm | cmsis-nn)."""
    if path.suffix.lower() != ".tflite":
        raise UsageError("--runtime qemu-m4 needs a .tflite model", received=str(path))
    from firmware_export.m4.target import supported_engine
    from toolchain.ontarget import bench_on_target
    from toolchain.runtime import open_runtime

    ok, reason = supported_engine(engine)
    if not ok:
        raise UsageError(reason, received=f"--engine {engine}")
    if engine == "c" and tflm_dir is not None:
        raise UsageError("--tflm-dir is for --engine tflm or cmsis-nn", received=f"--engine c --tflm-dir {tflm_dir}")
    if board:
        from firmware_export.targets import get_target

        get_target(board)  # an unknown board is refused before any build
    try:
        runner = open_runtime(path, runtime="litert", reference_kernels=True)
    except ToolchainError:
        runner = open_runtime(path, runtime="tflm")
    x, source = _inputs_for(runner, dataset, runs)
    inputs = [x[i % len(x):i % len(x) + 1] for i in range(runs)]
    return bench_on_target(path, engine, inputs, source, tflm_dir=tflm_dir, board=board, progress=progress)


def _target_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    fl = r["flash"]
    lib = r.get("library")
    rows = [("engine", r["engine_title"] + (f" (library {lib['flavour']}, {'cached' if lib['cached'] else 'built'})"
                                          if lib else "")),
            ("machine", f"{r['machine']} Cortex-M4F, QEMU -icount shift=0 (1 SysTick tick = "
                        f"{r['instructions_per_tick']} instructions)"),
            ("inputs", f"{r['runs']} ({r.get('input_source')}), {r.get('qemu_runs')} QEMU run(s)"),
            ("instructions / inference", f"{r['instructions_per_inference']:,} (instructions, not cycles)"),
            ("MACs / instruction", f"{r['macs_per_instruction']:.3f} ({r['macs']:,} MACs per inference)"),
            ("arena", f"{r['arena_bytes']:,} B ({r['arena_source']})"),
            ("flash", f"{fl['model'] + fl['runtime']:,} B = model {fl['model']:,} + runtime {fl['runtime']:,} "
                      f"(test harness {fl['harness']:,} B not counted)"),
            ("RAM", f"{r['ram_bytes']:,} B = arena + other static {r['static_ram_bytes']:,} + stack high-water "
                    f"{r['stack_bytes']:,}"),
            ("outputs vs host", f"{r['runs'] - r['mismatches']}/{r['runs']} identical ({r['identical_pct']:g} %)"
                                + (f", max {r['max_lsb_diff']} LSB" if r.get("max_lsb_diff") is not None else "")
                                + f" vs {r['reference']}")]
    bt = r.get("board_time")
    if bt:
        rows.append((f"time at {bt['clock_mhz']:g} MHz", f">= {bt['lower_bound_ms']:.3f} ms on {bt['display']} "
                                                         "(lower bound: instructions / clock)"))
    rows.append(("build / emulation", f"{r['build_seconds']:.1f} s / {r['emulation_seconds']:.1f} s"))
    return rows


def throughput_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    """The two throughput figures of a ``BenchResult``, per sample, each saying how it was measured."""
    rows = []
    if r.get("throughput_per_s"):
        rows.append(("throughput, batch 1", f"{sig(r['throughput_per_s'])} samples/s (batch-1 model invoked "
                                            f"{r['runs']} times back to back)"))
    if r.get("batch_throughput_per_s"):
        mode, n = r.get("batch_mode") or "", r.get("batch_samples")
        if mode.startswith("batched("):
            bs = int(mode[8:-1])
            how = (f"one batch of {bs}" if n == bs else f"{n} samples in batches of {bs}") + \
                (" through predict_on_batch" if r.get("runtime") == "keras" else " on a batch-resized interpreter")
        else:
            how = f"{n} samples one at a time: the model cannot be batch-resized"
        passes = r.get("batch_passes") or 1
        rows.append(("throughput, batched", f"{sig(r['batch_throughput_per_s'])} samples/s ({how}; {passes} timed "
                                            f"pass{'es' if passes > 1 else ''})"))
    return rows


def format_bench(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) rows for the CLI."""
    rows: list[tuple[str, str]] = [("model", str(result.get("model"))),
                                   ("size", f"{result.get('size_bytes', 0):,} B"),
                                   ("runtime", f"{result.get('runtime')} {result.get('runtime_version', '')}".strip())]
    lat = result.get("latency_ms")
    if isinstance(lat, dict):
        rows.append(("threads", str(result.get("threads") or "default")))
        rows.append(("input", f"{result['input']['dtype']} {result['input']['shape']} ({result['input']['source']})"))
        rows.append(("runs / warmup", f"{result['runs']} / {result['warmup']}"))
        for k in ("min", "median", "p90", "p99"):
            rows.append((f"latency {k} (batch 1)", f"{sig(lat[k])} ms"))
        rows += throughput_rows(result)
        rows.append(("peak RSS", f"{result['peak_rss_bytes'] / 2**20:.1f} MiB"))
    elif result.get("engine"):
        rows += _target_rows(result)
    else:
        for k, v in result.items():
            if k in ("model", "size_bytes", "runtime", "host") or v is None or isinstance(v, (dict, list)):
                continue
            if k == "latency_ms" and isinstance(v, (int, float)):
                rows.append(("latency mean (wall clock)", f"{sig(v)} ms"))
                continue
            if isinstance(v, float):
                v = f"{v:.6g}"
            elif isinstance(v, int) and not isinstance(v, bool):
                v = f"{v:,}"
            rows.append((k.replace("_", " "), str(v)))
    rows.append(("host", f"{result['host']['cpu']} ({result['host']['cores']} cores), Python {sys.version.split()[0]}"))
    return rows
