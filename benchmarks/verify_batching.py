"""How much faster is batched evaluation than a naive per-sample loop? (10,000 samples, small CNNs)

    python benchmarks/verify_batching.py [--models seed004_cs231n,seed001_basic_cnn] [--samples 10000]
                                         [--naive-samples 1000] [--out benchmarks/results]

For each model: train 1 epoch on ``digits`` (resized by the recorded preprocessing), quantise to int8, build a
10,000-sample test set (the 1,797 digits images repeated with small seeded noise) and time:

* Keras naive: ``model(x[i:i+1], training=False)`` per sample (timed on ``--naive-samples`` samples, rate
  extrapolated to the full set: the full loop would take minutes);
* Keras batched: what ``toolchain verify`` does (``predict_on_batch`` in chunks of 1,024);
* TFLite int8 naive: a fresh ``set_tensor / invoke / get_tensor`` loop written the obvious way, with
  ``get_input_details()`` looked up per sample;
* TFLite int8 as ``toolchain verify`` runs it (``Runner.run_many``: an interpreter resized to a batch of 256, on a
  copy with batch-agnostic RESHAPE targets when the model was converted with a fixed batch of 1; checked against
  single-sample results, else a tight loop);
* the whole ``toolchain.verify.verify`` call (both models, metrics, latency; no per-layer debugger).

Writes ``verify_batching.json`` and ``verify_batching.md``.
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


def measure(name: str, samples: int, naive_samples: int) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    import models
    from toolchain.data import load_dataset
    from toolchain.quantise import QuantConfig, quantise
    from toolchain.runtime import dequantize_output, load_keras_model, open_runtime, quantize_input
    from toolchain.train import TrainOptions, train
    from toolchain.data import load_split
    from toolchain.specs import DatasetSpec, RunRecord
    from toolchain.verify import VerifyOptions, verify

    shape = tuple(models.get_spec(name).input_shape)
    with tempfile.TemporaryDirectory(prefix="vb_") as tmp:
        tmp = Path(tmp)
        train(name, "digits", tmp / "run", TrainOptions(epochs=1, seed=0))
        cand = tmp / "int8.tflite"
        quantise(tmp / "run" / "model.keras", cand, config=QuantConfig(calibration_samples=200))
        ds = load_dataset("digits", seed=0)
        raw = np.concatenate([ds.x_train, ds.x_val, ds.x_test]).astype(np.float32)
        lab = np.concatenate([ds.y_train, ds.y_val, ds.y_test])
        rng = np.random.default_rng(0)
        idx = rng.integers(0, len(raw), samples)
        x_test = np.clip(raw[idx] + rng.normal(0, 0.5, raw[idx].shape).astype(np.float32), 0, 16)
        npz = tmp / "big.npz"
        np.savez(npz, x_train=raw[:100], y_train=lab[:100], x_test=x_test, y_test=lab[idx], max_value=np.float32(16))
        spec = f"npz:{npz}"
        meta = json.loads((tmp / "run" / "metadata.json").read_text())
        x = load_split(RunRecord.from_metadata(meta), "test", dataset=DatasetSpec.parse(spec), input_shape=shape).x
        n_naive = min(naive_samples, len(x))

        model = load_keras_model(tmp / "run" / "model.keras")
        for i in range(10):
            model(x[i:i + 1], training=False)
        t0 = time.perf_counter()
        for i in range(n_naive):
            model(x[i:i + 1], training=False)
        keras_naive = (time.perf_counter() - t0) / n_naive * len(x)
        keras_runner = open_runtime(tmp / "run" / "model.keras")
        keras_runner.run_many(x[:1024], batch_size=1024)
        t0 = time.perf_counter()
        y_keras = keras_runner.run_many(x, batch_size=1024)
        keras_batched = time.perf_counter() - t0

        it = Interpreter(model_path=str(cand))
        it.allocate_tensors()
        t0 = time.perf_counter()
        outs = []
        for i in range(len(x)):
            din = it.get_input_details()[0]
            s, z = din["quantization"]
            v = x[i:i + 1] / np.float32(s)
            q = np.sign(v) * np.floor(np.abs(v) + 0.5) + z
            it.set_tensor(din["index"], np.clip(q, -128, 127).astype(np.int8))
            it.invoke()
            outs.append(it.get_tensor(it.get_output_details()[0]["index"]).copy())
        tfl_naive = time.perf_counter() - t0
        runner = open_runtime(cand)
        t0 = time.perf_counter()
        y_int8 = dequantize_output(runner.run_many(quantize_input(x, runner.input_details[0])),
                                   runner.output_details[0])
        tfl_fast = time.perf_counter() - t0
        outputs_same = bool(np.array_equal(np.concatenate(outs).reshape(len(x), -1),
                                          quantize_input(y_int8, runner.output_details[0]).reshape(len(x), -1)))

        t0 = time.perf_counter()
        rep = verify(tmp / "run" / "model.keras", cand,
                     VerifyOptions(dataset=spec, layer_debug=False, latency_runs=50, latency_warmup=5)).to_json()
        verify_total = time.perf_counter() - t0
        from toolchain.model_inspect import inspect_keras

        macs = int(inspect_keras(tmp / "run" / "model.keras").totals.macs)

    return {
        "model": name,
        "macs": macs,
        "samples": int(len(x)),
        "keras_naive_seconds_extrapolated": keras_naive,
        "keras_batched_seconds": keras_batched,
        "keras_speedup": keras_naive / keras_batched,
        "tflite_naive_seconds": tfl_naive,
        "tflite_run_many_seconds": tfl_fast,
        "tflite_run_many_mode": runner.batch_mode,
        "tflite_speedup": tfl_naive / tfl_fast,
        "tflite_outputs_identical": outputs_same,
        "verify_total_seconds": verify_total,
        "verify_eval_seconds": {"reference": rep["reference"]["eval_seconds"],
                                "candidate": rep["candidate"]["eval_seconds"]},
        "verify_accuracy": {"float": rep["reference"]["accuracy"], "int8": rep["candidate"]["accuracy"]},
        "keras_vs_int8_agreement": float(np.mean(y_keras.argmax(1) == y_int8.argmax(1))),
        "naive_samples": n_naive,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=10000)
    ap.add_argument("--naive-samples", type=int, default=1000)
    ap.add_argument("--models", default="seed004_cs231n,seed001_basic_cnn")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = ap.parse_args()

    from toolchain.timing import host_info

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res: dict = {"created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "samples": args.samples,
                 "naive_samples": args.naive_samples, "machine": host_info(), "models": []}
    for name in args.models.split(","):
        sys.stderr.write(f"== {name}\n")
        res["models"].append(measure(name, args.samples, args.naive_samples))
    (out / "verify_batching.json").write_text(json.dumps(res, indent=2) + "\n")
    h = res["machine"]
    md = [
        "# Batched verification vs a naive per-sample loop", "",
        f"Generated {res['created_utc']} by `python benchmarks/verify_batching.py`. Machine: {h['cpu']}, "
        f"{h['cores']} cores (shared with other jobs while measured), Python {h['python']}; runtimes "
        + ", ".join(f"{k} {v}" for k, v in h["runtimes"].items()) + ".", "",
        f"Each model: 1 training epoch on digits, int8 quantisation, then {res['samples']:,} test samples (the digits "
        "images repeated with seeded noise). Naive Keras = `model(x[i:i+1], training=False)` per sample (timed on "
        "the first samples and extrapolated); naive TFLite = an obvious `set_tensor/invoke/get_tensor` loop; "
        "`toolchain verify` = `predict_on_batch` in chunks of 1,024 for Keras and `Runner.run_many` for TFLite "
        "(the interpreter resized to a batch of 256; for models converted with a fixed batch of 1, a copy whose "
        "RESHAPE targets read -1 instead of 1; batched results are checked against single-sample results, else it "
        "loops).", "",
        "| model | MACs/sample | Keras naive | Keras batched | speed-up | TFLite int8 naive | TFLite int8 run_many "
        "| speed-up | whole verify() | outputs identical |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in res["models"]:
        md.append(f"| {r['model']} | {r['macs']:,} | {r['keras_naive_seconds_extrapolated']:.1f} s* | "
                  f"{r['keras_batched_seconds']:.2f} s | x{r['keras_speedup']:.0f} | {r['tflite_naive_seconds']:.2f} s | "
                  f"{r['tflite_run_many_seconds']:.2f} s [{r['tflite_run_many_mode']}] | x{r['tflite_speedup']:.1f} | "
                  f"{r['verify_total_seconds']:.1f} s | {r['tflite_outputs_identical']} |")
    md += ["", f"\\* extrapolated from {res['naive_samples']:,} samples. `whole verify()` = both models over all "
           f"{res['samples']:,} samples, metrics, confusion matrices and a 50-run latency measurement of each model "
           "(no per-layer debugger). Accuracies (float / int8): " + "; ".join(
               f"{r['model']} {100 * r['verify_accuracy']['float']:.2f} % / {100 * r['verify_accuracy']['int8']:.2f} %"
               for r in res["models"]) + ".",
           "", "Batching is what makes the Keras reference fast (one graph call per 1,024 samples instead of one "
           "eager call per sample). LiteRT's per-invoke overhead is only microseconds, so batching the int8 "
           "interpreter gains little on this CPU; `run_many` keeps it because it never loses correctness (checked) "
           "and helps weight-heavy dense layers."]
    (out / "verify_batching.md").write_text("\n".join(md) + "\n")
    sys.stderr.write("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
