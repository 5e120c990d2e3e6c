"""On the emulated Cortex-M4F: host references, output comparison and the on-target benchmark.

The firmware side (build, run, measure) is :func:`firmware_export.m4.target.run_on_target`; this application-layer
module adds what needs the host interpreters: the bit-exact host reference (the reference kernels TFLM runs:
TFLM's Python runtime, else LiteRT's BUILTIN_REF; ``firmware_export.cgen.golden``), the comparison
(identical outputs %, max LSB difference), and the board-clock figure: instructions / clock, a lower bound on
latency (QEMU counts instructions, not cycles; a real core needs >= 1 cycle per instruction, more for loads,
branches and multi-cycle multiplies).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from toolchain.errors import ToolchainError


REFERENCE_NAMES = {"tflm": "TFLM's reference kernels (tflite-micro Python runtime)",
                   "litert-ref": "LiteRT's reference kernels (BUILTIN_REF; TFLM cannot run the model)"}


def host_reference(model_path: str | os.PathLike, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], str]:
    """Outputs of the bit-exact host reference for each input, and which reference it was
    (``firmware_export.cgen.golden``: the reference kernels TFLM runs on the device)."""
    from firmware_export.cgen.golden import reference_outputs

    golden = reference_outputs(model_path, inputs)
    return golden.outputs, REFERENCE_NAMES[golden.reference]


def compare_outputs(got: list[np.ndarray], want: list[np.ndarray]) -> dict[str, Any]:
    """Identical outputs (% of inputs whose whole output is equal), max |difference| in LSB, first mismatch."""
    n = len(want)
    identical = 0
    max_diff = 0.0
    first = None
    for i, (g, w) in enumerate(zip(got, want)):
        g = np.asarray(g).reshape(-1)
        w = np.asarray(w).reshape(-1)
        if g.shape == w.shape and np.array_equal(g, w):
            identical += 1
            continue
        if first is None:
            first = i
        if g.shape == w.shape:
            max_diff = max(max_diff, float(np.max(np.abs(g.astype(np.float64) - w.astype(np.float64)))))
        else:
            max_diff = float("inf")
    is_int = bool(want) and np.asarray(want[0]).dtype.kind in "iu"
    return {"samples": n, "identical": identical, "identical_pct": round(100.0 * identical / n, 3) if n else None,
            "max_lsb_diff": (int(max_diff) if max_diff != float("inf") else None) if is_int else None,
            "max_abs_diff": max_diff if not is_int else None, "first_mismatch": first}


def board_time(instructions: int | None, board: str | None) -> dict[str, Any] | None:
    """instructions / board clock: a lower bound on the latency at that clock (labelled as such)."""
    if not board or not instructions:
        return None
    from firmware_export.targets import get_target

    t = get_target(board)
    ms = instructions / (t.clock_mhz * 1e3)
    return {"board": t.key, "display": t.display, "clock_mhz": t.clock_mhz, "lower_bound_ms": round(ms, 4),
            "note": "lower bound: instructions / clock (QEMU counts instructions, not cycles; at >= 1 cycle per "
                    "instruction the board is no faster). Build the harness with -DCE_USE_DWT on a real board to "
                    "count DWT cycles instead"}


def run_and_compare(model_path: str | os.PathLike, engine: str, inputs: list[np.ndarray], *,
                    tflm_dir=None, progress: Callable[[str], None] | None = None, keep_dir=None):
    """Run ``inputs`` on the target with ``engine``; returns (TargetRun, comparison with the host reference)."""
    from firmware_export.m4.target import run_on_target

    run = run_on_target(model_path, engine, inputs, tflm_dir=tflm_dir, progress=progress, keep_dir=keep_dir)
    if progress:
        progress("host reference outputs for the same inputs")
    refs, ref_name = host_reference(model_path, inputs)
    cmp = compare_outputs(run.outputs, refs)
    cmp["reference"] = ref_name
    cmp["reference_outputs"] = refs
    return run, cmp


def bench_on_target(path: Path, engine: str, inputs: list[np.ndarray], input_source: str, *, tflm_dir=None,
                    board: str | None = None, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """``toolchain bench --runtime qemu-m4``: the measured figures as a TargetBenchResult dict."""
    from toolchain.results import TargetBenchResult
    from toolchain.timing import host_info

    run, cmp = run_and_compare(path, engine, inputs, tflm_dir=tflm_dir, progress=progress)
    cmp.pop("reference_outputs")
    s = run.summary()
    flash = s["flash"]
    return TargetBenchResult(
        runtime="qemu-m4", model=str(path), name=s["name"], runs=s["runs"], macs=s["macs"],
        arena_bytes=s["arena_bytes"], build_seconds=s["build_seconds"], outputs_match=cmp["identical"] == cmp["samples"],
        mismatches=cmp["samples"] - cmp["identical"], latency_ms=None,
        instructions_per_inference=s["instructions_per_inference"], macs_per_instruction=s["macs_per_instruction"],
        flash_bytes=flash["model"] + flash["runtime"], ram_bytes=s["ram_bytes"], size_bytes=path.stat().st_size,
        firmware_flash_bytes=flash["firmware"], static_ram_bytes=s["static_ram_bytes"], stack_bytes=s["stack_bytes"],
        emulation_seconds=s["emulation_seconds"], machine=s["machine"], instructions_per_tick=s["instructions_per_tick"],
        first_mismatch=None if cmp["first_mismatch"] is None else f"input {cmp['first_mismatch']}",
        host=host_info(), engine=engine, engine_title=s["engine_title"], arena_source=s["arena_source"],
        flash=flash, reference=cmp["reference"], identical_pct=cmp["identical_pct"],
        max_lsb_diff=cmp["max_lsb_diff"], input_source=input_source, qemu_runs=s["qemu_runs"],
        library=s["library"], board_time=board_time(s["instructions_per_inference"], board),
        sections=s["sections"]).to_json()


def first_divergence(model_path: str | os.PathLike, engine: str, x: np.ndarray, *, tflm_dir=None,
                     progress: Callable[[str], None] | None = None, target_model: str | os.PathLike | None = None
                     ) -> dict[str, Any]:
    """Rerun one input with every layer's output dumped on the target and compare each with the host interpreter's
    intermediate tensor (LiteRT's BUILTIN_REF reference kernels, all tensors preserved); name the first layer that
    differs.

    ``target_model`` builds the firmware from another file than the host model (a deliberately injected
    divergence in the tests); by default both are ``model_path``.
    """
    from firmware_export.m4.target import run_on_target
    from toolchain.runtime import intermediate_tensors
    from toolchain.tflite_model import load_tflite

    if progress:
        progress("rerunning the first disagreeing input with every layer's output dumped on the target")
    run = run_on_target(target_model or model_path, engine, [x], tflm_dir=tflm_dir, dump_layers=True,
                        progress=progress)
    try:
        host = intermediate_tensors(model_path, x)
    except ToolchainError as exc:
        return {"status": "unavailable", "reason": f"no host intermediate tensors: {exc}"}
    model = load_tflite(model_path)
    producer = {t: op for op in model.operators for t in op.outputs}
    compared = 0
    for _, tensor, raw in run.layers or []:
        ref = host.get(tensor)
        if ref is None or tensor not in producer:
            continue
        got = np.frombuffer(raw, dtype=ref.dtype)
        if got.size != ref.size:
            continue
        compared += 1
        diff = got.astype(np.int64) - ref.reshape(-1).astype(np.int64) if ref.dtype.kind in "iu" else \
            got.astype(np.float64) - ref.reshape(-1).astype(np.float64)
        if np.any(diff != 0):
            op = producer[tensor]
            return {"status": "diverged", "op_index": op.index, "op": op.opcode,
                    "tensor": model.tensor(tensor).name, "tensor_index": tensor,
                    "differing_values": int(np.count_nonzero(diff)), "values": int(diff.size),
                    "max_abs_diff": float(np.max(np.abs(diff))), "layers_compared": compared, "engine": engine}
    if compared == 0:
        return {"status": "unavailable", "layers_compared": 0, "engine": engine,
                "reason": "no dumped layer could be matched with a host tensor of the same size and type"}
    return {"status": "identical", "layers_compared": compared, "engine": engine,
            "reason": "every dumped layer equals the host's intermediate tensor"}


def verify_on_target(candidate: str | os.PathLike, inputs: list[np.ndarray], labels: np.ndarray | None, *,
                     engine: str = "c", tflm_dir=None, locate: bool = True,
                     progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The quantised test samples through the firmware on the emulated core: the report's ``target`` section.

    Rows "target vs ground truth" (accuracy) and "target vs host candidate" (agreement of the top-1 class,
    identical outputs %, max LSB) with the host candidate on the bit-exact reference kernels. When an output
    differs, ``divergence`` names the first diverging layer (:func:`first_divergence`).
    """
    run, cmp = run_and_compare(candidate, engine, inputs, tflm_dir=tflm_dir, progress=progress)
    refs = cmp.pop("reference_outputs")
    got = np.stack([np.asarray(o).reshape(-1) for o in run.outputs])
    want = np.stack([np.asarray(o).reshape(-1) for o in refs])
    pred_t, pred_h = got.argmax(axis=1), want.argmax(axis=1)
    rows = []
    if labels is not None and got.shape[1] > 1:
        rows.append({"name": "target vs ground truth", "accuracy": float(np.mean(pred_t == labels)),
                     "top_k_accuracy": None, "agreement": None, "identical_pct": None, "max_lsb_diff": None})
        rows.append({"name": "host candidate vs ground truth (same samples)",
                     "accuracy": float(np.mean(pred_h == labels)), "top_k_accuracy": None, "agreement": None,
                     "identical_pct": None, "max_lsb_diff": None})
    rows.append({"name": "target vs host candidate", "accuracy": None, "top_k_accuracy": None,
                 "agreement": float(np.mean(pred_t == pred_h)) if got.shape[1] > 1 else None,
                 "identical_pct": cmp["identical_pct"], "max_lsb_diff": cmp["max_lsb_diff"]})
    section = {"on": "qemu-m4", **run.summary(), "samples": len(inputs), "reference": cmp["reference"],
               "comparison": cmp, "rows": rows,
               "agreement": rows[-1]["agreement"] if rows[-1]["agreement"] is not None
               else cmp["identical"] / max(1, cmp["samples"]), "divergence": None}
    if locate and cmp["first_mismatch"] is not None:
        section["divergence"] = {"sample": cmp["first_mismatch"],
                                 **first_divergence(candidate, engine, inputs[cmp["first_mismatch"]],
                                                    tflm_dir=tflm_dir, progress=progress)}
    return section
