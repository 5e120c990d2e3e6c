"""int8 vs int4 weights vs `quantise --auto`, per zoo classifier trained on digits: size, accuracy, arenas, fit.

    python benchmarks/quant_schemes.py [--epochs 5] [--models a,b] [--target nrf52840] [--budget 1.0]

For each model: train on `digits` (toolchain.train, seed 0), then `quantise` three ways — per-channel int8,
`--weights int4` (every CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED), and `--auto --max-accuracy-drop BUDGET
--target BOARD` — and record the .tflite bytes, the test accuracy (LiteRT reference kernels, the sidecar's
evaluation), the C engine's planned arena and weight bytes, the TFLM arena measured with tflite-micro (host), and
whether the model fits the board (file + TFLM runtime estimate <= flash, smallest arena + I/O <= RAM). The C
engine's flash and instructions on the emulated Cortex-M4F are in benchmarks/results/int4.md.

Writes benchmarks/results/quant_schemes.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
MODELS = ("seed001_basic_cnn", "seed002_keras_cnn", "seed003_fashion_cnn", "seed004_cs231n", "resnet8", "ds_cnn")


def _figures(path: Path, side: dict, board) -> dict:
    from toolchain.quant_auto import _footprint

    data = path.read_bytes()
    import numpy as np

    io = int(np.prod(side["input_shape"])) + int(np.prod(side["output_shape"]))
    fp = _footprint(data, board, io)
    ev = side.get("evaluation") or {}
    target = _on_target(path) if fp["c_engine_arena_bytes"] is not None else None
    return {"bytes": len(data), "scheme": side["quantization"]["scheme"],
            "test_accuracy": ev.get("tflite_accuracy"), "float_test_accuracy": ev.get("float_accuracy"),
            "c_engine_arena_bytes": fp["c_engine_arena_bytes"], "tflm_arena_bytes": fp["tflm_arena_bytes"],
            "fits": (fp.get("fit") or {}).get("fits"), "fit": fp.get("fit"), "target": target,
            "int4_layers": [e["layer"] for e in (side["quantization"].get("int4") or {}).get("layers", [])
                            if e["bits"] == 4]}


def _on_target(path: Path) -> dict | None:
    """The C engine on the emulated Cortex-M4F (3 random inputs): flash = model + engine code, instructions, and
    whether its outputs equal the reference kernels (TFLM's)."""
    from firmware_export.m4.tools import tools_available

    if not tools_available():
        return None
    from firmware_export.cgen import build, load_engine
    from toolchain.ontarget import run_and_compare

    inputs = build.random_inputs(load_engine(path), 3, seed=0)
    run, cmp = run_and_compare(path, "c", inputs)
    return {"flash_bytes": run.flash["model"] + run.flash["runtime"],
            "instructions_per_inference": run.instructions_per_inference,
            "identical": cmp["identical"] == cmp["samples"]}


def bench(name: str, work: Path, epochs: int, board, budget: float) -> dict:
    from toolchain.quant_auto import AutoOptions, auto_quantise
    from toolchain.quantise import QuantConfig, quantise
    from toolchain.train import TrainOptions, train

    run = work / name
    t0 = time.perf_counter()
    train(name, "digits", run, TrainOptions(epochs=epochs, seed=0))
    row = {"model": name, "train_seconds": round(time.perf_counter() - t0, 1)}
    for scheme, fn in (
            ("int8", lambda out: quantise(run / "model.keras", out)),
            ("int4", lambda out: quantise(run / "model.keras", out, config=QuantConfig(weights="int4"))),
            ("auto", lambda out: auto_quantise(run / "model.keras", out, options=AutoOptions(
                max_accuracy_drop=budget, target=board.key)))):
        out = work / f"{name}_{scheme}.tflite"
        t0 = time.perf_counter()
        side = fn(out)
        row[scheme] = {**_figures(out, side, board), "seconds": round(time.perf_counter() - t0, 1)}
        if scheme == "auto":
            row[scheme]["chosen"] = next(c["name"] for c in side["auto"]["candidates"] if c.get("chosen"))
            row[scheme]["candidates"] = len(side["auto"]["candidates"])
    return row


def to_markdown(res: dict) -> str:
    m = res["meta"]
    L = ["# int8 vs int4 weights vs `quantise --auto`", "",
         f"Generated {m['created_utc']} by `python benchmarks/quant_schemes.py --epochs {m['epochs']} --target "
         f"{m['target']} --budget {m['budget']:g}` ({m['seconds']:.0f} s). Each model trained {m['epochs']} epochs on "
         "digits (seed 0); accuracy on the 359-sample test split with LiteRT's reference kernels (1 sample = "
         "0.28 pp); auto's budget is on the validation split. Arenas: C engine = offline plan, TFLM = measured with "
         "tflite-micro on the host (TFLM unpacks int4 weights into its arena; it refuses per-channel int4 "
         "FULLY_CONNECTED, shown as –). Fit: file + TFLM runtime estimate <= flash and the smaller arena + I/O <= "
         f"RAM of {m['target']}.", "",
         "C engine on target: flash (model + engine code) and instructions per inference on QEMU mps2-an386 "
         "(3 random inputs; = says its outputs equal the reference kernels, TFLM's).", "",
         "| model | scheme | .tflite B | vs int8 | test acc % | C arena B | TFLM arena B | C flash B | C instructions "
         "| fits | int4 layers |",
         "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]

    def n(v):
        return "–" if v is None else f"{v:,}"
    for r in res["rows"]:
        b8 = r["int8"]["bytes"]
        for s in ("int8", "int4", "auto"):
            f = r[s]
            acc = "–" if f["test_accuracy"] is None else f"{100 * f['test_accuracy']:.2f}"
            label = s if s != "auto" else f"auto ({f['chosen']})"
            t = f.get("target") or {}
            ins = "–" if not t else f"{t['instructions_per_inference'] / 1e6:.2f} M" + (" =" if t["identical"] else " ≠")
            L.append(f"| {r['model']} | {label} | {f['bytes']:,} | {f['bytes'] / b8:.3f}x | {acc} | "
                     f"{n(f['c_engine_arena_bytes'])} | {n(f['tflm_arena_bytes'])} | {n(t.get('flash_bytes'))} | {ins} | "
                     f"{'yes' if f['fits'] else 'no'} | {', '.join(f['int4_layers']) or '–'} |")
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--target", default="nrf52840")
    ap.add_argument("--budget", type=float, default=1.0)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    from firmware_export.targets import get_target

    board = get_target(args.target)
    t0 = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            rows.append(bench(name, Path(tmp), args.epochs, board, args.budget))
            print(json.dumps({k: v for k, v in rows[-1].items() if k in ("model",)}), flush=True)
    res = {"meta": {"created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "epochs": args.epochs,
                    "target": board.key, "budget": args.budget, "seconds": round(time.perf_counter() - t0, 1)},
           "rows": rows}
    out = Path(args.out)
    (out / "quant_schemes.json").write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    (out / "quant_schemes.md").write_text(to_markdown(res), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
