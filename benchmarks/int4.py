"""int8 vs packed int4 weights in the C engine, per zoo classifier, on the emulated Cortex-M4F.

    python benchmarks/int4.py [--runs 3] [--models a,b] [--out benchmarks/results]

Every model is built untrained and quantised to int8 with random weights and random calibration inputs
(``firmware_export.cgen.zoo.quantise_random``: sizes, arena and instruction counts do not depend on training), then
rewritten with int4 weights in every CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED (``toolchain.quant_int4.to_int4``,
the code behind ``quantise --weights int4``). Per model and weight type: .tflite bytes, C-engine flash (model
constants + engine code in the linked firmware, test harness excluded), arena (offline plan), instructions per
inference (QEMU ``mps2-an386 -icount shift=0``, SysTick ticks x 40) and whether the outputs of ``--runs`` random
int8 inputs equal the reference kernels (TFLM's, on the int8 twin: ``firmware_export.cgen.golden``) byte for byte. Writes ``int4.json`` and ``int4.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ZOO = ["seed000_face", "seed001_basic_cnn", "seed002_keras_cnn", "seed003_fashion_cnn", "seed004_cs231n", "resnet8",
       "ds_cnn", "mobilenet_v1_025"]


def measure(path: Path, runs: int) -> dict:
    import numpy as np

    from firmware_export.cgen import build, golden, load_engine
    from firmware_export.m4.target import run_on_target
    from toolchain.errors import ToolchainError

    row = {"tflite_bytes": path.stat().st_size}
    try:
        engine = load_engine(path)
        xs = build.random_inputs(engine, runs, seed=0)
        run = run_on_target(path, "c", xs)
        ref = golden.reference_outputs(path, xs).outputs
    except ToolchainError as exc:
        return {**row, "error": str(exc)}
    row.update(flash_bytes=run.flash["model"] + run.flash["runtime"], flash=run.flash, arena_bytes=run.arena_bytes,
               instructions_per_inference=run.instructions_per_inference, macs=run.macs,
               weight_bytes=engine.weight_bytes,
               bit_exact=all(np.array_equal(g, e.reshape(g.shape)) for g, e in zip(run.outputs, ref)),
               kernels=sorted({s.body.split("(", 1)[0].strip() for s in engine.steps
                               if s.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")}))
    return row


def write_markdown(rows: list[dict], meta: dict, path: Path) -> None:
    lines = [
        "# C engine: int8 vs packed int4 weights on the emulated Cortex-M4F",
        "",
        f"Generated {meta['date']} by `python benchmarks/int4.py --runs {meta['runs']}`; machine `{meta['machine']}`.",
        "",
        "Untrained zoo models: random weights, int8 quantisation calibrated on random inputs "
        "(`firmware_export.cgen.zoo.quantise_random`), then every CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED made "
        "int4 (`toolchain.quant_int4.to_int4`). Flash: model constants + engine code in the linked firmware "
        "(`arm-none-eabi-size`, harness excluded). Arena: the engine's offline plan (int4 unpacks in registers, no "
        "buffer). Instructions per inference counted by QEMU (`-icount shift=0`), not cycles. Bit-exact: the outputs "
        f"of {meta['runs']} random int8 inputs equal the reference kernels (TFLM's) byte for byte.",
        "",
        "| model | weights | .tflite B | flash B | flash int4/int8 | arena B | instructions | instr int4/int8 | "
        "bit-exact |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        for kind in ("int8", "int4"):
            e = r[kind]
            if "error" in e:
                name = r["model"] if kind == "int8" else ""
                lines.append(f"| {name} | {kind} | {e['tflite_bytes']:,} | n/a | | n/a | n/a | | {e['error']} |")
                continue
            q = r.get("ratios", {})
            fr = f"{q['flash_bytes']:.3f}x" if kind == "int4" and q else ""
            ir = f"{q['instructions_per_inference']:.3f}x" if kind == "int4" and q else ""
            exact = "yes" if e["bit_exact"] else "NO"
            lines.append(f"| {r['model'] if kind == 'int8' else ''} | {kind} | {e['tflite_bytes']:,} | "
                         f"{e['flash_bytes']:,} | {fr} | {e['arena_bytes']:,} | "
                         f"{e['instructions_per_inference'] / 1e6:.2f} M | {ir} | {exact} |")
    qs = [r["ratios"] for r in rows if r.get("ratios")]
    if qs:
        f = [q["flash_bytes"] for q in qs]
        i = [q["instructions_per_inference"] for q in qs]
        lines += ["", "## Summary", "",
                  f"- Flash int4 / int8: {min(f):.3f}-{max(f):.3f}x (weights are half a byte; biases, requantisation "
                  "constants, tables and code are not halved, so small models save less).",
                  f"- Instructions int4 / int8: {min(i):.3f}-{max(i):.3f}x: unpacking costs a shift and ANDs per word "
                  "of 8 weights (and a reload of the weight word: the SMLAD loop has no spare register).",
                  _arena_line(rows)]
    lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")


def _arena_line(rows) -> str:
    """The int4 kernels unpack in registers (no scratch); the fused steps (residual blocks, convolution -> dense)
    run int8 weights only, so a model they apply to keeps its unfused arena with int4 weights."""
    grown = [f"{r['model']} {r['int8']['arena_bytes']:,} -> {r['int4']['arena_bytes']:,} B" for r in rows
             if "int4" in r and r["int4"]["arena_bytes"] != r["int8"]["arena_bytes"]]
    if not grown:
        return "- Arena: unchanged (the int4 kernels unpack in registers)."
    return ("- Arena: unchanged (the int4 kernels unpack in registers) except where the int8 model runs a fused step "
            "(residual block or convolution -> dense: int8 weights only): " + ", ".join(grown) + ".")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="random inputs per model and weight type")
    ap.add_argument("--models", default="", help="comma-separated subset of the zoo classifiers")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results"))
    args = ap.parse_args(argv)
    from firmware_export.cgen.zoo import quantise_random
    from firmware_export.m4.tools import QEMU_MACHINE
    from toolchain.quant_int4 import to_int4

    wanted = [m.strip() for m in args.models.split(",") if m.strip()] or ZOO
    rows = []
    with tempfile.TemporaryDirectory(prefix="int4_bench_") as tmp:
        for name in wanted:
            print(f"[{name}] quantising", file=sys.stderr)
            p8 = quantise_random(name, Path(tmp) / f"{name}_int8.tflite")
            p4 = Path(tmp) / f"{name}_int4.tflite"
            p4.write_bytes(to_int4(p8.read_bytes(), lambda n: None)[0])
            row = {"model": name}
            for kind, p in (("int8", p8), ("int4", p4)):
                print(f"[{name}] {kind}: building and running on QEMU", file=sys.stderr)
                row[kind] = measure(p, args.runs)
            a, b = row["int8"], row["int4"]
            if "error" not in a and "error" not in b:
                row["ratios"] = {k: round(b[k] / a[k], 3) for k in
                                 ("tflite_bytes", "flash_bytes", "arena_bytes", "instructions_per_inference")}
            rows.append(row)
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "runs": args.runs,
            "machine": QEMU_MACHINE, "calibration": "random (untrained zoo models)"}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "int4.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n", encoding="utf-8")
    write_markdown(rows, meta, out / "int4.md")
    print(f"wrote {out / 'int4.md'} and {out / 'int4.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
