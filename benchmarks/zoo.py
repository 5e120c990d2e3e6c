"""Benchmark every zoo model: params, MACs, digits accuracy (float / int8), sizes, host latency, TFLM arena.

    python benchmarks/zoo.py [--epochs 2] [--runs 200] [--models a,b] [--out benchmarks/results]

For each model: train on ``digits`` resized to the model input (``toolchain.train``) where a digits classifier makes
sense, quantise to full int8 (``toolchain.quantise``), convert a float32 .tflite, verify (accuracies on the held-out
test split), and time single-sample inference on this host:

* Keras float: the better (lower median) of ``model(x, training=False)`` (eager call) and
  ``model.predict_on_batch(x)`` on one sample; both are recorded.
* float32 TFLite and int8 TFLite: LiteRT ``interpreter.invoke()`` (XNNPACK default delegate) with 1 thread
  (``--threads``); Keras/TensorFlow uses every core, so the comparison is conservative for TFLite.

Every latency is the best median of 3 rounds (``runs / 3`` timed inferences each): the host's cores are shared,
and the least disturbed round is the fairest estimate for both sides.

Writes ``zoo.json`` and ``zoo.md`` (with a description of the machine) into the output folder.
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

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Models trained on digits resized to their input; the others are benchmarked untrained (random calibration):
# seed000_face (200x200x3, 2 classes) and fc_autoencoder (640-feature reconstruction) are not digit classifiers.
ROUNDS = 3  # latency: best median of 3 rounds (the 2 cores are shared; the best round is the least disturbed)
NO_DIGITS = {"seed000_face": "200x200x3 face detector: not a digits classifier",
             "fc_autoencoder": "autoencoder (reconstruction): no accuracy"}


def keras_latency(model, x: np.ndarray, runs: int, warmup: int) -> dict:
    from toolchain.timing import latency_stats

    x1 = x[:1]
    out = {}
    for how, fn in (("call", lambda: model(x1, training=False)), ("predict_on_batch", lambda: model.predict_on_batch(x1))):
        for _ in range(warmup):
            fn()
        rounds = []
        for _ in range(ROUNDS):
            ts = []
            for _ in range(max(1, runs // ROUNDS)):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            rounds.append(latency_stats(ts))
        out[how] = min(rounds, key=lambda r: r["median"])
    best = min(out, key=lambda k: out[k]["median"])
    return {"method": best, "median": out[best]["median"], "p90": out[best]["p90"], "p99": out[best]["p99"],
            "call_median": out["call"]["median"], "predict_on_batch_median": out["predict_on_batch"]["median"]}


def bench_model(name: str, work: Path, epochs: int, runs: int, threads: int) -> dict:
    import keras

    import models
    from firmware_export.arena import measure_arena
    from toolchain.bench import bench
    from toolchain.model_inspect import inspect_keras
    from toolchain.quantise import QuantConfig, convert, quantise
    from toolchain.runtime import load_keras_model
    from toolchain.train import TrainOptions, train
    from toolchain.verify import VerifyOptions, verify

    spec = models.get_spec(name)
    row: dict = {"model": name, "input_shape": list(spec.input_shape), "task": spec.task}
    run = work / name
    t0 = time.perf_counter()
    if name in NO_DIGITS:
        run.mkdir(parents=True, exist_ok=True)
        net = models.build(name)
        net.save(run / "model.keras")
        row["note"] = NO_DIGITS[name]
        row["epochs"] = 0
        quantise(run / "model.keras", work / f"{name}_int8.tflite", dataset="random",
                 config=QuantConfig(calibration_samples=50))
    else:
        meta = train(name, "digits", run, TrainOptions(epochs=epochs, seed=0, patience=0))
        row["epochs"] = meta["epochs_run"]
        quantise(run / "model.keras", work / f"{name}_int8.tflite", config=QuantConfig(calibration_samples=200))
    convert(run / "model.keras", work / f"{name}_f32.tflite", precision="float32")
    row["prepare_seconds"] = round(time.perf_counter() - t0, 1)
    keras_path = run / "model.keras"
    int8_path, f32_path = work / f"{name}_int8.tflite", work / f"{name}_f32.tflite"

    ins = inspect_keras(keras_path).totals
    row["params"], row["macs"] = int(ins.params), int(ins.macs)
    row["keras_bytes"] = keras_path.stat().st_size
    row["float_tflite_bytes"] = f32_path.stat().st_size
    row["int8_tflite_bytes"] = int8_path.stat().st_size

    if name not in NO_DIGITS:
        rep = verify(keras_path, int8_path, VerifyOptions(layer_debug=False, latency_runs=10, latency_warmup=2)).to_json()
        row["float_accuracy"] = rep["reference"]["accuracy"]
        row["int8_accuracy"] = rep["candidate"]["accuracy"]
        row["accuracy_drop_pp"] = rep["accuracy_drop_pp"]
        row["test_samples"] = rep["samples"]
    else:
        row["float_accuracy"] = row["int8_accuracy"] = row["accuracy_drop_pp"] = None

    model = load_keras_model(keras_path)
    x = np.random.default_rng(0).random((4, *spec.input_shape), dtype=np.float32)
    row["keras_latency_ms"] = keras_latency(model, x, runs=max(20, runs // 4), warmup=5)
    del model
    keras.backend.clear_session()
    for key, path in (("float_tflite_latency_ms", f32_path), ("int8_tflite_latency_ms", int8_path)):
        best = min((bench(path, runtime="litert", threads=threads, runs=max(1, runs // ROUNDS), warmup=20)
                    for _ in range(ROUNDS)), key=lambda b: b["latency_ms"]["median"])
        row[key] = {k: best["latency_ms"][k] for k in ("median", "p90", "p99")}
    k = row["keras_latency_ms"]["median"]
    row["int8_vs_keras"] = row["int8_tflite_latency_ms"]["median"] / k
    row["float_tflite_vs_keras"] = row["float_tflite_latency_ms"]["median"] / k
    row["int8_vs_float_tflite"] = row["int8_tflite_latency_ms"]["median"] / row["float_tflite_latency_ms"]["median"]
    try:
        arena = measure_arena(int8_path)
        row["arena_bytes"] = arena.recommended_bytes
        row["arena_recorded_bytes"] = arena.recorded_bytes
    except Exception as exc:  # one model failing to allocate in TFLM must not lose the other figures
        row["arena_bytes"] = None
        row["arena_error"] = f"{type(exc).__name__}: {exc}"
    return row


def machine() -> dict:
    from importlib import metadata

    from toolchain.timing import host_info

    h = host_info()
    for pkg in ("tensorflow", "keras", "ai-edge-litert", "tflite-micro"):
        try:
            h.setdefault("packages", {})[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return h


def to_markdown(result: dict) -> str:
    def pct(v):
        return "–" if v is None else f"{100 * v:.1f}"

    h = result["machine"]
    lines = ["# Model zoo benchmark", "",
             f"Generated {result['created_utc']} by `python benchmarks/zoo.py --epochs {result['epochs']} "
             f"--runs {result['runs']} --threads {result['threads']}`.", "",
             f"Machine: {h['cpu']}, {h['cores']} cores, {h['system']}, Python {h['python']}, numpy {h['numpy']}, "
             + ", ".join(f"{k} {v}" for k, v in h.get("packages", {}).items()) + ".", "",
             "Accuracy: `digits` (scikit-learn 8x8, resized to each model's input by the recorded preprocessing), "
             f"held-out test split, after {result['epochs']} training epochs (tiny data: the figures show that the "
             "pipeline works, not the architectures' quality). Latency: median single-sample inference on this host. "
             "Keras = the lower median of `model(x, training=False)` and `model.predict_on_batch(x)` (both in "
             "zoo.json); TFLite = LiteRT `invoke()` with "
             f"{result['threads']} thread(s) (Keras/TensorFlow uses all {h['cores']} cores); each figure is the best "
             "median of 3 rounds on this shared machine. Arena = TFLM recommended "
             "tensor arena (recorded + margin).", "",
             "| model | input | params | MACs | float acc % | int8 acc % | .keras B | float .tflite B | int8 .tflite B "
             "| Keras ms | float TFLite ms | int8 TFLite ms | int8 / Keras | int8 / float TFLite | arena B |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["models"]:
        if "error" in r:
            lines.append(f"| {r['model']} | error: {r['error']} |" + " |" * 13)
            continue
        lines.append(
            f"| {r['model']} | {'x'.join(map(str, r['input_shape']))} | {r['params']:,} | {r['macs']:,} | "
            f"{pct(r['float_accuracy'])} | {pct(r['int8_accuracy'])} | {r['keras_bytes']:,} | "
            f"{r['float_tflite_bytes']:,} | {r['int8_tflite_bytes']:,} | {r['keras_latency_ms']['median']:.3f} | "
            f"{r['float_tflite_latency_ms']['median']:.4f} | {r['int8_tflite_latency_ms']['median']:.4f} | "
            f"{r['int8_vs_keras']:.3f} | {r['int8_vs_float_tflite']:.2f} | "
            f"{'–' if r.get('arena_bytes') is None else format(r['arena_bytes'], ',')} |")
    notes = [f"- {r['model']}: {r['note']}" for r in result["models"] if r.get("note")]
    if notes:
        lines += ["", "Not trained on digits (untrained weights, random int8 calibration):", *notes]
    weak = [r["model"] for r in result["models"] if r.get("float_accuracy") is not None and r["float_accuracy"] < 0.5]
    if weak:
        lines += ["", f"Near-chance digits accuracy after {result['epochs']} epochs: {', '.join(weak)} (architectures "
                      "built for CIFAR-10 / keyword spotting / person detection, trained here for a few epochs on "
                      "1.3k upscaled 8x8 digits; their float and int8 figures still agree, which is what this table "
                      "checks)."]
    seeds = [r for r in result["models"] if r["model"].startswith("seed") and "int8_vs_keras" in r]
    if seeds:
        ratios = ", ".join(f"{r['model']} {r['int8_vs_keras']:.3f}" for r in seeds)
        met = [r["model"] for r in seeds if r["int8_vs_keras"] <= 0.3]
        missed = [r for r in seeds if r["int8_vs_keras"] > 0.3]
        lines += ["", f"Target int8 TFLite latency <= 0.3x Keras single-sample latency on the seed CNNs: {ratios}. "
                      f"Met by {', '.join(met) or 'none'}" + (
                          "; not met by " + ", ".join(
                              f"{r['model']} ({r['macs'] / 1e6:.0f}M MACs: compute-bound, where TensorFlow's float "
                              "convolutions on every core are as fast as 1-thread int8 XNNPACK on this x86 CPU)"
                              for r in missed) if missed else "") + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    import models

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--models", default=",".join(models.MODEL_NAMES))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="zoo_") as tmp:
        for name in args.models.split(","):
            t0 = time.perf_counter()
            sys.stderr.write(f"== {name}\n")
            try:
                row = bench_model(name, Path(tmp), args.epochs, args.runs, args.threads)
            except Exception as exc:  # keep benchmarking the other models; the table shows the error
                row = {"model": name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
            row["total_seconds"] = round(time.perf_counter() - t0, 1)
            sys.stderr.write(json.dumps({k: v for k, v in row.items() if not isinstance(v, dict)}) + "\n")
            rows.append(row)
    result = {"created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "epochs": args.epochs,
              "runs": args.runs, "threads": args.threads, "machine": machine(), "models": rows}
    (out / "zoo.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "zoo.md").write_text(to_markdown(result))
    sys.stderr.write(f"wrote {out / 'zoo.md'} and {out / 'zoo.json'}\n")


if __name__ == "__main__":
    main()
