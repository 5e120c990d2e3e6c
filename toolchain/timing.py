"""The one timing loop of the toolchain (bench and verify both use it), latency statistics and host facts.

``time_single`` warms up, then times single-sample inferences cycling through the inputs (batch-1 latency and the
batch-1 throughput: runs / wall-clock time of that loop); ``time_batched`` times ``runner.run_many`` passes over a set
of samples at a batch size (the batched throughput, per sample); ``latency_stats`` summarises milliseconds.
Only NumPy and the standard library are imported here.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np


def sig(v: float, digits: int = 4) -> str:
    """``v`` with ``digits`` significant digits in plain notation, thousands separated: 0.061634 -> '0.06163',
    261.119 -> '261.1'; the integer part is never rounded (15826.1 -> '15,826'); below 1e-4 '1.235e-05'."""
    if v == 0 or not np.isfinite(v):
        return f"{v:g}"
    if abs(v) >= 10 ** (digits - 1):
        return f"{v:,.0f}"
    if abs(v) < 1e-4:
        return f"{v:.{digits}g}"
    v = float(f"{v:.{digits}g}")  # round first: 999.96 -> 1000 has one digit fewer after the point
    decimals = max(0, digits - 1 - int(np.floor(np.log10(abs(v)))))
    return f"{v:,.{decimals}f}"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_info() -> dict[str, Any]:
    """CPU model, cores, OS and the versions of numpy and of the installed runtimes (found without importing)."""
    from importlib import metadata

    from toolchain.runtime import available_runtimes, runtime_version

    runtimes = {}
    for r in available_runtimes():
        try:
            runtimes[r] = runtime_version(r)
        except (ImportError, AttributeError, metadata.PackageNotFoundError):  # a broken install must not break a report
            runtimes[r] = "unknown"
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        mem = None
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "machine": platform.machine(),
            "system": f"{platform.system()} {platform.release()}", "memory_bytes": mem,
            "python": platform.python_version(), "numpy": metadata.version("numpy"), "runtimes": runtimes}


def latency_stats(samples_s: list[float]) -> dict[str, float]:
    """min / median / mean / p90 / p99 / max in milliseconds of per-inference times given in seconds."""
    a = np.asarray(samples_s, dtype=np.float64) * 1e3
    return {
        "min": float(a.min()), "median": float(np.median(a)), "mean": float(a.mean()),
        "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99)), "max": float(a.max()),
    }


def time_single(runner, x: np.ndarray, runs: int, warmup: int) -> tuple[list[float], float]:
    """``warmup`` untimed then ``runs`` timed single-sample inferences cycling through ``x`` (already in the input
    dtype); returns (seconds per inference, wall-clock seconds of the timed loop)."""
    n = int(x.shape[0])
    for i in range(warmup):
        runner.run(x[i % n:i % n + 1])
    times = []
    t_start = time.perf_counter()
    for i in range(runs):
        xi = x[i % n:i % n + 1]
        t0 = time.perf_counter()
        runner.run(xi)
        times.append(time.perf_counter() - t0)
    return times, time.perf_counter() - t_start


def time_batched(runner, x: np.ndarray, batch_size: int, min_seconds: float = 0.2,
                 max_passes: int = 20) -> tuple[float | None, int]:
    """Samples per second of ``runner.run_many`` over all of ``x`` at ``batch_size`` (one batch-resized interpreter
    invocation per ``batch_size`` samples, or a loop when the model cannot batch: see ``runner.batch_mode``).

    One untimed pass first builds and checks the resized interpreter (``Runner`` keeps it), so the timed passes
    measure inference only; passes are repeated until ``min_seconds`` (at most ``max_passes``). Returns
    (samples / timed seconds, timed passes)."""
    runner.run_many(x, batch_size=batch_size)
    passes, dt = 0, 0.0
    while passes < max_passes and (passes == 0 or dt < min_seconds):
        t0 = time.perf_counter()
        runner.run_many(x, batch_size=batch_size)
        dt += time.perf_counter() - t0
        passes += 1
    return (float(passes * len(x) / dt) if dt > 0 else None), passes


def measure_latency(runner, x: np.ndarray, runs: int = 100, warmup: int = 10, batch_size: int = 256,
                    batch_samples: int | None = None) -> dict[str, Any]:
    """Single-sample latency statistics and the batched throughput of ``runner`` on inputs ``x``."""
    times, total = time_single(runner, x, runs, warmup)
    stats = latency_stats(times)
    m = min(int(x.shape[0]), batch_samples or max(batch_size, 256))
    batch_tp, passes = time_batched(runner, x[:m], batch_size)
    return {
        "runtime": runner.name, "runtime_version": runner.version, "threads": runner.threads,
        "runs": runs, "warmup": warmup, **stats,
        "throughput_per_s": float(runs / total) if total > 0 else None,
        "batch_throughput_per_s": batch_tp, "batch_samples": m, "batch_passes": passes,
        "batch_mode": runner.batch_mode,
        "samples_ms": [round(t * 1e3, 5) for t in times],
    }
