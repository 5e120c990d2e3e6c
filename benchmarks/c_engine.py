"""Benchmark the generated C engine on an emulated Cortex-M4 against TFLM's footprint.

    python benchmarks/c_engine.py [--runs 5] [--models a,b] [--out benchmarks/results]

Models: the MLPerf Tiny ResNet-8 and DS-CNN and TFLM's micro_speech (int8 reference models in
../shared/models/reference), plus zoo models quantised to int8 with random weights and random calibration
(``firmware_export.cgen.zoo.quantise_random``: MobileNetV1-0.25 and the seed CNNs; speed and footprint do not depend
on trained weights).

For each model:

* arena: the C engine's offline memory plan vs TFLM's measured arena (``firmware_export.arena.measure_arena``,
  tflite-micro Python runtime, ``print_allocations``); target <= 0.5x;
* flash: ``.text + .rodata + .data`` of the engine in the linked Cortex-M4 firmware (``arm-none-eabi-size -A``,
  test harness/startup/vectors excluded) vs ``.tflite`` bytes + 9.7 KB TFLM core; target <= 0.8x;
* instructions per inference on ``qemu-system-arm -M mps2-an386 -icount shift=0`` (SysTick, 40 instructions per
  tick; QEMU counts instructions, not cycles) and MACs per instruction; target >= 0.7 on ResNet-8 and DS-CNN;
* outputs compared byte for byte with LiteRT's reference interpreter on the same random inputs.

Writes ``c_engine.json`` and ``c_engine.md`` into the output folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REF_DIR = REPO.parent / "shared/models/reference"
TFLM_CORE_BYTES = 9.7 * 1024
REFERENCE = {
    "resnet8 (MLPerf Tiny)": "mlperftiny__pretrainedResnet_quant.tflite",
    "ds_cnn (MLPerf Tiny KWS)": "mlperftiny__kws_ref_model.tflite",
    "micro_speech (TFLM)": "tflm__micro_speech_quantized.tflite",
}
ZOO = ["mobilenet_v1_025", "seed000_face", "seed001_basic_cnn", "seed002_keras_cnn", "seed003_fashion_cnn",
       "seed004_cs231n"]
SPEED_TARGETS = {"resnet8 (MLPerf Tiny)", "ds_cnn (MLPerf Tiny KWS)"}


def _tool_version(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.splitlines()[0].strip()
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unavailable"


def bench_model(label: str, path: Path, runs: int) -> dict:
    from firmware_export.arena import measure_arena
    from firmware_export.cgen.bench import run_c_bench
    from toolchain.errors import ToolchainError

    res = run_c_bench(path, runtime="qemu-m4", runs=runs, seed=0)
    tflm_note = None
    try:
        m = measure_arena(path)
        tflm = {"recorded_bytes": int(m.recorded_bytes)}
    except ToolchainError as exc:
        tflm, tflm_note = None, str(exc)
    tflite_bytes = path.stat().st_size
    flash_budget = tflite_bytes + TFLM_CORE_BYTES
    row = {
        "model": label,
        "file": path.name,
        "tflite_bytes": tflite_bytes,
        "macs": res["macs"],
        "outputs_match": res["outputs_match"],
        "runs": res["runs"],
        "arena_bytes": res["arena_bytes"],
        "tflm_arena_bytes": tflm["recorded_bytes"] if tflm else None,
        "arena_ratio": round(res["arena_bytes"] / tflm["recorded_bytes"], 4) if tflm else None,
        "flash_bytes": res["flash_bytes"],
        "flash_ratio": round(res["flash_bytes"] / flash_budget, 4),
        "ram_bytes": res["ram_bytes"],
        "stack_bytes": res["stack_bytes"],
        "instructions_per_inference": res["instructions_per_inference"],
        "macs_per_instruction": res["macs_per_instruction"],
        "ms_at_100MHz_if_1_IPC": round(res["instructions_per_inference"] / 100e3, 2),
    }
    if tflm_note:
        row["tflm_note"] = tflm_note
    row["targets"] = {
        "arena<=0.5x": None if row["arena_ratio"] is None else row["arena_ratio"] <= 0.5,
        "flash<=0.8x": res["flash_bytes"] <= 0.8 * flash_budget,
        "macs/instr>=0.7": (row["macs_per_instruction"] >= 0.7) if label in SPEED_TARGETS else None,
    }
    return row


def _fmt(v, pct: bool = False) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, float):
        return f"{v:.4f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def write_markdown(rows: list[dict], meta: dict, path: Path) -> None:
    lines = [
        "# Generated C engine on an emulated Cortex-M4",
        "",
        f"Generated {meta['date']} by `python benchmarks/c_engine.py --runs {meta['runs']}`; "
        f"{meta['compiler']}; {meta['qemu']}; machine `{meta['machine']}`.",
        "",
        "Instructions are counted by QEMU (`-icount shift=0`: SysTick = 40 instructions per tick), not cycles. "
        "Flash = engine `.text+.rodata+.data` in the linked firmware (`arm-none-eabi-size -A`, test harness "
        "excluded); TFLM budget = `.tflite` bytes + 9.7 KB TFLM core. TFLM arena = measured by the tflite-micro "
        "Python runtime (`print_allocations`). Outputs match = byte-identical to LiteRT's reference interpreter "
        f"on {meta['runs']} random inputs per model. Zoo models are int8 with random weights (speed and "
        "footprint do not depend on training).",
        "",
        "| model | MACs | outputs match | arena B | TFLM arena B | arena ratio (≤0.5) | flash B | .tflite B | "
        "flash ratio (≤0.8) | RAM B (arena+stack) | instructions/inference | MACs/instruction |",
        "|---|---:|:-:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['macs']:,} | {_fmt(r['outputs_match'])} | {r['arena_bytes']:,} | "
            f"{_fmt(r['tflm_arena_bytes'])} | {_fmt(r['arena_ratio'])} | {r['flash_bytes']:,} | "
            f"{r['tflite_bytes']:,} | {_fmt(r['flash_ratio'])} | {r['ram_bytes']:,} | "
            f"{r['instructions_per_inference']:,} | {_fmt(r['macs_per_instruction'])} |")
    lines += ["", "## Targets", ""]
    for r in rows:
        t = r["targets"]
        missed = [k for k, v in t.items() if v is False]
        lines.append(f"- {r['model']}: " + ("all applicable targets met" if not missed else
                                             "missed " + ", ".join(missed)))
    for r in rows:
        if r.get("tflm_note"):
            lines.append(f"- {r['model']}: no TFLM arena: {r['tflm_note']}")
    lines += ["", meta["notes"], ""]
    path.write_text("\n".join(lines), encoding="utf-8")


NOTES = """## Notes

- Arena: activations are planned offline (lifetimes in execution order, greedy by size, first fit); RESHAPE aliases
  its input, element-wise ADD, 1x1 convolutions (out channels <= in channels) and stride-1 depthwise convolutions
  (with a ring of saved input rows) run in place. Where two full activations must be live at once (ResNet-8's
  residual branch keeps a 16 KB tensor alive across two 16 KB convolutions; micro_speech's 1,960 B input and 4,000 B
  depthwise output), the arena cannot go below their sum without tiling convolutions spatially, which this engine
  does not do; those models miss the 0.5x target.
- MACs/instruction: convolutions run an SMLAD inner loop over 2 output channels x 2 output pixels
  (about 1 MAC/instruction in the loop); 3x3 stride-1 depthwise convolutions stage their input rows channel-major as
  int16 (a ring of three rows), so that one SMLAD applies two taps and two output pixels share their loads. Every
  output value also pays the bit-exact TFLite requantisation; its two roundings are folded into one SMLAL with a
  64-bit rounding constant (checked against the two-step definition on 12 M random values in the tests) and pairs of
  outputs are clamped with SSAT, about 10 instructions per output. Models with small reductions per output (DS-CNN:
  9 MACs per depthwise output, 64 per pointwise output, 40 in its first convolution whose single input channel also
  makes the im2col costly) remain dominated by that per-output work and stay below 0.7; ResNet-8 (reductions of
  144-576) reaches it.
- Flash: weights stay int8 (rows zero-padded to a multiple of 4 only where a kernel row is not) and the requantisation
  constants are int32 multipliers + int8 shifts, so the engine costs the weights plus 5-9 KB (code, biases,
  multipliers, per-layer parameters, softmax table) instead of TFLM's flatbuffer metadata + 9.7 KB core. For models
  whose .tflite is almost all weights (the seed CNNs: large dense layers) 0.8x of (.tflite + 9.7 KB) is below the size
  of the weights themselves and cannot be met without compressing them. ResNet-8 sits at the 0.8x line: its
  convolution's output stage (SMLAL + SSAT, inlined for speed) is about 150 B larger than the two-step one.
- seed004_cs231n / seed00x arena: feed-forward chains of large activations keep an input and an output tensor live
  at each layer; the plan is at most that pair (+ scratch), TFLM's is the same pair plus its own bookkeeping.
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="random inputs per model (one firmware run)")
    ap.add_argument("--models", default="", help="comma-separated subset of labels/zoo names")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results"))
    args = ap.parse_args(argv)
    wanted = {m.strip() for m in args.models.split(",") if m.strip()}
    rows = []
    with tempfile.TemporaryDirectory(prefix="ce_zoo_") as tmp:
        jobs = [(label, REF_DIR / f) for label, f in REFERENCE.items()]
        for name in ZOO:
            jobs.append((name, None))
        for label, path in jobs:
            if wanted and label not in wanted and label.split()[0] not in wanted:
                continue
            if path is None:
                from firmware_export.cgen.zoo import quantise_random

                path = quantise_random(label, Path(tmp) / f"{label}.tflite")
            elif not path.exists():
                print(f"skip {label}: {path} not found", file=sys.stderr)
                continue
            row = bench_model(label, path, args.runs)
            rows.append(row)
            print(json.dumps(row), flush=True)
    meta = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "runs": args.runs,
        "compiler": _tool_version(["arm-none-eabi-gcc", "--version"]),
        "qemu": _tool_version(["qemu-system-arm", "--version"]),
        "machine": "mps2-an386 (Cortex-M4F), -icount shift=0",
        "host": platform.platform(),
        "notes": NOTES.strip(),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "c_engine.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    write_markdown(rows, meta, out / "c_engine.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
