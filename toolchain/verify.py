"""Verify a deployed model (candidate, e.g. int8 .tflite) against its float reference and the ground truth.

``verify(reference, candidate, options)`` runs both models on the same preprocessed split, computes the three
comparison rows that ST Edge AI's ``validate`` reports (reference vs ground truth, candidate vs ground truth,
candidate vs reference), per-layer quantisation error (int8 candidates built from a ``.keras`` reference), host
latency and sizes, then evaluates the gate checks. ``toolchain.report.write_reports`` writes the files.

This module imports only NumPy at import time. The device path (candidate ``.tflite`` only, ``npz:`` data, a TFLite
runtime) imports neither TensorFlow, Keras, scikit-learn nor matplotlib.

report.json schema (``format: toolchain-verify-report/1``; accuracies are fractions in [0, 1], differences in
percentage points ``_pp``, latencies in milliseconds, sizes in bytes; ``null`` = not applicable)::

    format, toolchain_version, created_utc, task ("classification" | "outputs"), passed (bool)
    samples                      number of evaluated samples
    dataset      {spec, split, samples, num_classes, labels, preprocessing, seed, source}
    reference    null | {path, kind ("keras"|"tflite"), sha256, size_bytes, runtime, runtime_version,
                         accuracy, top_k_accuracy {k: acc}, per_class_accuracy [..], confusion_matrix [[..]],
                         vs_ground_truth {rmse, mae}, eval_seconds, eval_mode}
    candidate    {same keys as reference, kind "tflite", precision ("int8"|"float16"|"float32"|"dynamic"|...),
                  input {dtype, shape, scale, zero_point}, output {dtype, shape, scale, zero_point},
                  quantization (from the sidecar metadata, or null)}
    accuracy_drop_pp             (reference.accuracy - candidate.accuracy) * 100, or null
    comparison   null | {agreement, rmse, mae, max_abs_error, l2r, cosine, sqnr_db}   (candidate vs reference,
                 on dequantised outputs; l2r = ||c - r|| / ||r||; cosine over the flattened outputs;
                 sqnr_db = 10 log10(sum r^2 / sum (r - c)^2), null when the outputs are identical)
    rows         [{name, accuracy, top_k_accuracy, agreement, rmse, mae, l2r, cosine, sqnr_db}, ...]  the three
                 ST-style rows (vs ground truth = against one-hot labels)
    layer_errors {status ("ok"|"skipped"|"unavailable"), reason, samples, layers [{op, tensor, name, scale,
                  zero_point, rmse, rmse_over_scale, mean_error, max_abs_error, stddev}], worst [same, top 5]}
    latency_ms   {reference: null | L, candidate: L, speedup (reference median / candidate median) | null}
                 where L = {runtime, threads, runs, warmup, min, median, mean, p90, p99, max,
                            batch_throughput_per_s, batch_size, samples_ms [...]}
    sizes        {reference_bytes, candidate_bytes, ratio (candidate / reference)}
    baseline     null | {path, accuracy, regression_pp}
    checks       [{name, metric, op ("<="|">="), threshold, value, passed, detail}]
    host         {cpu, cores, machine, python, numpy, runtimes {name: version}}
    plots        [file names under plots/]
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

import toolchain
from toolchain.native_stderr import quiet_native_stderr
from toolchain.errors import DatasetError, ModelError, UsageError

log = logging.getLogger("toolchain.verify")

REPORT_FORMAT = "toolchain-verify-report/1"
BASELINE_FORMAT = "toolchain-verify-baseline/1"


@dataclass
class VerifyOptions:
    dataset: str | None = None          # dataset spec; default = the one recorded in the metadata
    split: str = "test"                 # test | val | train
    max_samples: int | None = None
    runtime: str = "auto"               # TFLite runtime for the candidate (and a .tflite reference)
    threads: int | None = None
    top_k: int = 3
    layer_debug: bool = True
    layer_debug_samples: int = 50
    latency_runs: int = 100
    latency_warmup: int = 10
    batch_size: int = 256
    max_accuracy_drop: float | None = 1.0   # percentage points
    min_agreement: float | None = None      # fraction
    min_accuracy: float | None = None       # fraction (candidate vs ground truth)
    baseline: str | None = None
    max_regression: float = 1.0             # percentage points, used with baseline
    plots: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.split not in ("test", "val", "train"):
            raise UsageError("split must be test, val or train", received=self.split)
        if self.max_samples is not None and self.max_samples < 1:
            raise UsageError("--max-samples must be >= 1", received=self.max_samples)
        if self.threads is not None and self.threads < 1:
            raise UsageError("--threads must be >= 1", received=self.threads)
        if self.top_k < 1:
            raise UsageError("--top-k must be >= 1", received=self.top_k)
        if self.layer_debug_samples < 1:
            raise UsageError("--layer-debug-samples must be >= 1", received=self.layer_debug_samples)
        if self.latency_runs < 1 or self.latency_warmup < 0:
            raise UsageError("--runs must be >= 1 and --warmup >= 0",
                             received=f"runs={self.latency_runs}, warmup={self.latency_warmup}")
        if self.max_accuracy_drop is not None and self.max_accuracy_drop < 0:
            raise UsageError("--max-accuracy-drop must be >= 0 percentage points", received=self.max_accuracy_drop)
        if self.min_agreement is not None and not 0.0 <= self.min_agreement <= 1.0:
            raise UsageError("--min-agreement must be a fraction in [0, 1]", received=self.min_agreement)
        if self.min_accuracy is not None and not 0.0 <= self.min_accuracy <= 1.0:
            raise UsageError("--min-accuracy must be a fraction in [0, 1]", received=self.min_accuracy)
        if self.max_regression < 0:
            raise UsageError("--max-regression must be >= 0 percentage points", received=self.max_regression)
        if self.batch_size < 1:
            raise UsageError("--batch-size must be >= 1", received=self.batch_size)


# ---------------------------------------------------------------------------------------------- metrics


def softmax_like(y: np.ndarray) -> bool:
    return y.ndim == 2 and y.shape[1] >= 2


def classification_metrics(scores: np.ndarray, y_true: np.ndarray, num_classes: int, top_k: int = 3
                           ) -> dict[str, Any]:
    """Top-1 / top-k accuracy, per-class accuracy and the confusion matrix (rows = true, columns = predicted)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(len(y_true), -1)
    y_true = np.asarray(y_true).astype(np.int64).reshape(-1)
    pred = np.argmax(scores, axis=1)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, np.clip(pred, 0, num_classes - 1)), 1)
    per_class = []
    for k in range(num_classes):
        total = int(cm[k].sum())
        per_class.append(float(cm[k, k] / total) if total else None)
    top = {}
    for k in sorted({top_k, 5} if top_k < 5 else {top_k}):
        if 1 < k < num_classes:
            topk = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            top[str(k)] = float(np.mean(np.any(topk == y_true[:, None], axis=1)))
    onehot = np.eye(num_classes)[y_true]
    diff = scores - onehot
    return {
        "accuracy": float(np.mean(pred == y_true)),
        "top_k_accuracy": top,
        "per_class_accuracy": per_class,
        "confusion_matrix": cm.tolist(),
        "vs_ground_truth": {"rmse": float(np.sqrt(np.mean(diff ** 2))), "mae": float(np.mean(np.abs(diff)))},
    }


def compare_outputs(candidate: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """Candidate vs reference outputs (both float, same shape)."""
    c = np.asarray(candidate, dtype=np.float64).reshape(len(candidate), -1)
    r = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    if c.shape != r.shape:
        raise ModelError("candidate and reference outputs have different shapes",
                         received=f"{c.shape} vs {r.shape}")
    d = c - r
    err = float(np.sum(d ** 2))
    sig = float(np.sum(r ** 2))
    norm_c, norm_r = float(np.linalg.norm(c)), float(np.linalg.norm(r))
    return {
        "agreement": float(np.mean(np.argmax(c, axis=1) == np.argmax(r, axis=1))) if c.shape[1] > 1 else None,
        "rmse": float(np.sqrt(np.mean(d ** 2))),
        "mae": float(np.mean(np.abs(d))),
        "max_abs_error": float(np.max(np.abs(d))) if d.size else 0.0,
        "l2r": float(np.sqrt(err) / norm_r) if norm_r > 0 else None,
        "cosine": float(np.sum(c * r) / (norm_c * norm_r)) if norm_c > 0 and norm_r > 0 else None,
        "sqnr_db": float(10.0 * np.log10(sig / err)) if err > 0 and sig > 0 else None,
    }


def latency_stats(samples_s: list[float]) -> dict[str, float]:
    a = np.asarray(samples_s, dtype=np.float64) * 1e3
    return {
        "min": float(a.min()), "median": float(np.median(a)), "mean": float(a.mean()),
        "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99)), "max": float(a.max()),
    }


def measure_latency(runner, x: np.ndarray, runs: int = 100, warmup: int = 10, batch_size: int = 256,
                    batch_samples: int | None = None) -> dict[str, Any]:
    """Warm up, then time ``runs`` single-sample inferences (cycling through ``x``, already in the input dtype) and
    one batched pass (``runner.run_many``) for the throughput."""
    n = int(x.shape[0])
    for i in range(warmup):
        runner.run(x[i % n:i % n + 1])
    times = []
    for i in range(runs):
        xi = x[i % n:i % n + 1]
        t0 = time.perf_counter()
        runner.run(xi)
        times.append(time.perf_counter() - t0)
    stats = latency_stats(times)
    m = min(n, batch_samples or max(batch_size, 256))
    xb = x[:m]
    runner.run_many(xb[: min(m, batch_size)], batch_size=batch_size)  # warm the batched path
    t0 = time.perf_counter()
    runner.run_many(xb, batch_size=batch_size)
    dt = time.perf_counter() - t0
    return {
        "runtime": runner.name, "runtime_version": runner.version, "threads": runner.threads,
        "runs": runs, "warmup": warmup, **stats,
        "throughput_per_s": float(1e3 / stats["mean"]) if stats["mean"] > 0 else None,
        "batch_throughput_per_s": float(m / dt) if dt > 0 else None, "batch_samples": m,
        "batch_mode": runner.batch_mode,
        "samples_ms": [round(t * 1e3, 5) for t in times],
    }


# ---------------------------------------------------------------------------------------------- data


def _model_kind(path: Path) -> str:
    suf = path.suffix.lower()
    if suf == ".tflite":
        return "tflite"
    if suf in (".keras", ".h5"):
        return "keras"
    raise ModelError("unsupported model file type (expected .tflite or .keras)", received=str(path))


def load_eval_data(options: VerifyOptions, metas: list[dict[str, Any] | None], input_shape: tuple[int, ...]
                   ) -> dict[str, Any]:
    """Load the split to evaluate, preprocessed with the recorded preprocessing (or one built for the input)."""
    from toolchain import data as tdata

    meta = next((m for m in metas if m), None) or {}
    spec = options.dataset or meta.get("dataset")
    if not spec:
        raise UsageError("no dataset given and none recorded in the model metadata; pass --dataset SPEC",
                         received="--dataset (missing)")
    split = meta.get("split") or {}
    seed = int(meta.get("seed", 0) or 0)
    ds = tdata.load_dataset(spec, seed=seed, val_fraction=float(split.get("val_fraction", 0.1)),
                            test_fraction=float(split.get("test_fraction", 0.2)))
    sample_shape = tuple(int(s) for s in input_shape[1:])
    if meta.get("preprocessing"):
        prep = tdata.Preprocessing.from_dict(meta["preprocessing"])
        if tuple(prep.input_shape) != sample_shape:
            raise UsageError("the recorded preprocessing is for another input shape than the model's",
                             received=f"{prep.input_shape} vs model input {sample_shape}")
        source = "metadata"
    else:
        prep = tdata.make_preprocessing(ds, sample_shape)
        source = "derived from the data set"
    x_raw, y = {"test": (ds.x_test, ds.y_test), "val": (ds.x_val, ds.y_val),
                "train": (ds.x_train, ds.y_train)}[options.split]
    if len(y) == 0:
        raise DatasetError(f"the {options.split} split is empty", received=spec)
    if options.max_samples is not None:
        x_raw, y = x_raw[: options.max_samples], y[: options.max_samples]
    x = prep.apply(x_raw)
    return {"spec": spec, "split": options.split, "x": x, "y": np.asarray(y, dtype=np.int64), "ds": ds,
            "prep": prep, "labels": list(ds.labels), "num_classes": ds.num_classes, "seed": seed,
            "preprocessing_source": source}


# ---------------------------------------------------------------------------------------------- models


def _tflite_precision(path: Path) -> str:
    """int8 (integer io or int8 weights with quantised activations), float16, dynamic, float32."""
    from toolchain.tflite_model import load_tflite

    m = load_tflite(path)
    io_dtypes = {m.tensor(i).dtype for i in list(m.inputs) + list(m.outputs)}
    ops = set(m.opcode_names())
    const_dtypes = {t.dtype for t in m.tensors if t.data is not None}
    if io_dtypes & {"int8", "uint8"}:
        return "int8"
    if "int16" in io_dtypes:
        return "int16x8"
    if "QUANTIZE" in ops and "int8" in const_dtypes:
        return "int8"
    if "float16" in const_dtypes:
        return "float16"
    if "int8" in const_dtypes:
        return "dynamic"
    return "float32"


def _evaluate(runner, x_float: np.ndarray, batch_size: int) -> tuple[np.ndarray, float]:
    from toolchain.runtime import dequantize_output, quantize_input

    din, dout = runner.input_details[0], runner.output_details[0]
    xq = quantize_input(x_float, din)
    t0 = time.perf_counter()
    y = runner.run_many(xq, batch_size=batch_size)
    dt = time.perf_counter() - t0
    return dequantize_output(y, dout), dt


def _model_info(path: Path, runner) -> dict[str, Any]:
    from toolchain.fsutil import sha256_file

    info = {"path": str(path), "kind": _model_kind(path), "sha256": sha256_file(path),
            "size_bytes": path.stat().st_size, "runtime": runner.name, "runtime_version": runner.version}
    if info["kind"] == "tflite":
        info["precision"] = _tflite_precision(path)
        for key, d in (("input", runner.input_details[0]), ("output", runner.output_details[0])):
            s, z = d["quantization"]
            info[key] = {"dtype": np.dtype(d["dtype"]).name, "shape": list(d["shape"]), "scale": s, "zero_point": z}
    else:
        info["precision"] = "float32"
    return info


# ---------------------------------------------------------------------------------------------- layer debug


def _layer_debug_mismatch(cand_meta: dict[str, Any] | None, reference: Path) -> str | None:
    """Why the debugger's re-conversion of ``reference`` (post-training quantisation with the candidate's
    calibration config) would not describe the candidate, or None when it does."""
    from toolchain.fsutil import sha256_file

    meta = cand_meta or {}
    if (meta.get("quantization") or {}).get("qat"):
        return "candidate is quantisation-aware trained; a post-training re-conversion of the reference would not " \
               "describe its weights"
    src = meta.get("source_sha256")
    if src and src != sha256_file(reference):
        return "candidate was not converted from this reference: its source_sha256 differs"
    return None


def _calibration_config(cand_meta: dict[str, Any] | None) -> dict[str, Any]:
    q = (cand_meta or {}).get("quantization") or {}
    seed = q.get("calibration_seed", (cand_meta or {}).get("seed", 0))
    return {"samples": int(q.get("calibration_samples", 300) or 300), "per_channel": bool(q.get("per_channel", True)),
            "seed": int(seed or 0)}


def layer_quantisation_errors(reference: Path, data: dict[str, Any], cand_meta: dict[str, Any] | None,
                              samples: int = 50) -> dict[str, Any]:
    """Per-layer error of the int8 quantisation with ``tf.lite.experimental.QuantizationDebugger``.

    The converter is rebuilt from the ``.keras`` reference (fixed batch 1) with the candidate's calibration
    config (calibration sample count and seed from its sidecar metadata; stratified training samples) and float
    I/O, so the debugger can compare every quantised tensor with its float counterpart on ``samples`` split samples.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import warnings

    import tensorflow as tf

    from toolchain import data as tdata
    from toolchain.runtime import load_keras_model

    cfg = _calibration_config(cand_meta)
    model = load_keras_model(reference)
    ds, prep = data["ds"], data["prep"]
    idx = tdata.calibration_indices(ds.y_train, cfg["samples"], seed=cfg["seed"])
    x_cal = prep.apply(ds.x_train[idx])
    x_dbg = data["x"][:samples]

    def representative():
        for i in range(len(x_cal)):
            yield [x_cal[i:i + 1]]

    def debug_data():
        for i in range(len(x_dbg)):
            yield [x_dbg[i:i + 1]]

    converter = _fixed_batch_converter(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    if not cfg["per_channel"]:
        converter._experimental_disable_per_channel = True
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), quiet_native_stderr(log):
        warnings.simplefilter("ignore")
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=debug_data)
        debugger.run()
    layers = []
    for name, st in debugger.layer_statistics.items():
        scale = float(st.get("scale", 0.0) or 0.0)
        rmse = float(np.sqrt(max(float(st.get("mean_squared_error", 0.0)), 0.0)))
        layers.append({"name": name, "tensor": int(st.get("tensor_idx", -1)) if "tensor_idx" in st else None,
                       "op": st.get("op_name"), "scale": scale, "zero_point": int(st.get("zero_point", 0) or 0),
                       "rmse": rmse, "rmse_over_scale": rmse / scale if scale > 0 else None,
                       "mean_error": float(st.get("mean_error", 0.0)),
                       "max_abs_error": float(st.get("max_abs_error", 0.0)),
                       "stddev": float(st.get("stddev", 0.0))})
    if not layers or layers[0]["op"] is None:
        buf = io.StringIO()
        debugger.layer_statistics_dump(buf)
        layers = _parse_layer_dump(buf.getvalue())
    worst = sorted(layers, key=lambda r: -(r["rmse_over_scale"] or 0.0))[:5]
    return {"status": "ok", "reason": None, "samples": len(x_dbg), "calibration": cfg, "layers": layers,
            "worst": worst}


def _fixed_batch_converter(model):
    """The same converter ``toolchain.quantise`` uses: ``model(x, training=False)`` traced with batch 1, frozen."""
    import tensorflow as tf

    try:
        from toolchain.quantise import frozen_concrete_function
    except ImportError:
        import keras

        shape = tuple(int(s) for s in model.inputs[0].shape[1:])
        fixed = keras.models.clone_model(model, input_tensors=keras.Input(batch_shape=(1,) + shape))
        fixed.set_weights(model.get_weights())
        return tf.lite.TFLiteConverter.from_keras_model(fixed)
    return tf.lite.TFLiteConverter.from_concrete_functions([frozen_concrete_function(model)])


def _parse_layer_dump(text: str) -> list[dict[str, Any]]:
    import csv

    rows = []
    for r in csv.DictReader(io.StringIO(text)):
        scale = float(r.get("scale") or 0.0)
        rmse = float(np.sqrt(max(float(r.get("mean_squared_error") or 0.0), 0.0)))
        rows.append({"name": r.get("tensor_name"), "tensor": int(float(r.get("tensor_idx") or -1)),
                     "op": r.get("op_name"), "scale": scale, "zero_point": int(float(r.get("zero_point") or 0)),
                     "rmse": rmse, "rmse_over_scale": rmse / scale if scale > 0 else None,
                     "mean_error": float(r.get("mean_error") or 0.0),
                     "max_abs_error": float(r.get("max_abs_error") or 0.0), "stddev": float(r.get("stddev") or 0.0)})
    return rows


# ---------------------------------------------------------------------------------------------- baseline & checks


def load_baseline(path: str | os.PathLike) -> dict[str, Any]:
    """Accuracy of a stored baseline: a verify ``report.json`` (candidate.accuracy) or a baseline file."""
    import json

    p = Path(path)
    if not p.is_file():
        raise UsageError("baseline file not found", received=str(p))
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError("baseline file is not valid JSON", received=f"{p}: {exc}") from None
    acc = None
    if isinstance(obj, dict):
        if isinstance(obj.get("candidate"), dict):
            acc = obj["candidate"].get("accuracy")
        elif "accuracy" in obj:
            acc = obj.get("accuracy")
    if not isinstance(acc, (int, float)) or not 0.0 <= float(acc) <= 1.0:
        raise UsageError("baseline file has no accuracy in [0, 1] (expected a verify report.json or a file "
                         "written by --write-baseline)", received=str(p))
    return {"path": str(p), "accuracy": float(acc), "samples": obj.get("samples"),
            "dataset": (obj.get("dataset") or {}).get("spec") if isinstance(obj.get("dataset"), dict)
            else obj.get("dataset")}


def make_baseline(report: dict[str, Any]) -> dict[str, Any]:
    return {"format": BASELINE_FORMAT, "created_utc": report["created_utc"],
            "accuracy": report["candidate"].get("accuracy"),
            "reference_accuracy": (report.get("reference") or {}).get("accuracy"),
            "agreement": (report.get("comparison") or {}).get("agreement"),
            "samples": report["samples"], "dataset": report["dataset"]["spec"],
            "candidate_sha256": report["candidate"]["sha256"]}


def _check(name: str, metric: str, op: str, threshold: float, value: float | None, detail: str = "") -> dict:
    if value is None:
        passed = False
        detail = detail or "value not available"
    else:
        passed = value <= threshold + 1e-12 if op == "<=" else value >= threshold - 1e-12
    return {"name": name, "metric": metric, "op": op, "threshold": threshold, "value": value, "passed": bool(passed),
            "detail": detail}


def evaluate_checks(report: dict[str, Any], options: VerifyOptions, baseline: dict[str, Any] | None) -> list[dict]:
    checks = []
    cls = report["task"] == "classification"
    if options.max_accuracy_drop is not None and report.get("reference") is not None and cls:
        checks.append(_check("max_accuracy_drop", "accuracy_drop_pp", "<=", float(options.max_accuracy_drop),
                             report["accuracy_drop_pp"],
                             "reference accuracy - candidate accuracy, percentage points"))
    if options.min_agreement is not None:
        agreement = (report.get("comparison") or {}).get("agreement")
        checks.append(_check("min_agreement", "comparison.agreement", ">=", float(options.min_agreement), agreement,
                             "fraction of samples where candidate and reference pick the same class"
                             if agreement is not None else "needs a reference model and class outputs"))
    if options.min_accuracy is not None:
        checks.append(_check("min_accuracy", "candidate.accuracy", ">=", float(options.min_accuracy),
                             report["candidate"].get("accuracy"), "candidate top-1 accuracy vs ground truth"))
    if baseline is not None:
        acc = report["candidate"].get("accuracy")
        reg = (baseline["accuracy"] - acc) * 100.0 if acc is not None else None
        checks.append(_check("max_regression", "baseline.regression_pp", "<=", float(options.max_regression), reg,
                             f"baseline accuracy {baseline['accuracy']:.4f} ({baseline['path']}) - candidate"))
    return checks


def failed_check_messages(report: dict[str, Any]) -> list[str]:
    out = []
    for c in report["checks"]:
        if not c["passed"]:
            v = "n/a" if c["value"] is None else f"{c['value']:.4g}"
            out.append(f"{c['name']}: {c['metric']} = {v} (required {c['op']} {c['threshold']:g})")
    return out


# ---------------------------------------------------------------------------------------------- main entry


def verify(reference: str | os.PathLike | None, candidate: str | os.PathLike, options: VerifyOptions | None = None
           ) -> dict[str, Any]:
    """Run the verification and return the report dict (see the module docstring). Writes nothing."""
    from toolchain.metadata import load_any_metadata
    from toolchain.runtime import check_keras_file, open_runtime, resolve_runtime
    from toolchain.tflite_model import load_tflite

    options = options or VerifyOptions()
    options.validate()
    cand_path = Path(candidate)
    if not cand_path.is_file():
        raise ModelError("candidate model not found", received=str(cand_path))
    if _model_kind(cand_path) != "tflite":
        raise UsageError("the candidate must be a .tflite model", received=str(cand_path))
    ref_path = Path(reference) if reference is not None else None
    if ref_path is not None and ref_path.is_dir() and (ref_path / "model.keras").is_file():
        ref_path = ref_path / "model.keras"
    if ref_path is not None and not ref_path.is_file():
        raise ModelError("reference model not found", received=str(ref_path))
    if ref_path is not None and _model_kind(ref_path) == "tflite":
        load_tflite(ref_path)  # corrupt / truncated -> ModelError before any runtime is opened
    elif ref_path is not None:
        check_keras_file(ref_path)
    load_tflite(cand_path)
    resolve_runtime(cand_path, options.runtime)
    baseline = load_baseline(options.baseline) if options.baseline else None

    cand_meta = load_any_metadata(cand_path)
    ref_meta = load_any_metadata(ref_path) if ref_path is not None else None

    cand = open_runtime(cand_path, runtime=options.runtime, threads=options.threads)
    input_shape = cand.input_shape
    ref = None
    if ref_path is not None:  # open (and so validate) the reference before any evaluation work
        ref_runtime = "keras" if _model_kind(ref_path) == "keras" else options.runtime
        ref = open_runtime(ref_path, runtime=ref_runtime,  # Keras picks its own thread pool
                           threads=None if ref_runtime == "keras" else options.threads)
        if tuple(ref.input_shape[1:]) != tuple(input_shape[1:]):
            raise ModelError("reference and candidate have different input shapes",
                             received=f"{ref.input_shape} vs {input_shape}")
    data = load_eval_data(options, [cand_meta, ref_meta], input_shape)
    x, y = data["x"], data["y"]
    log.info("evaluating %d %s samples of %s", len(y), data["split"], data["spec"])

    y_cand, t_cand = _evaluate(cand, x, options.batch_size)
    cand_info = _model_info(cand_path, cand)
    cand_info.update(eval_seconds=t_cand, eval_mode=cand.batch_mode,
                     quantization=(cand_meta or {}).get("quantization"))
    log.info("candidate %s: %.2f s (%s)", cand.name, t_cand, cand.batch_mode)

    y_ref = None
    ref_info = None
    if ref is not None:
        y_ref, t_ref = _evaluate(ref, x, max(options.batch_size, 1024) if ref.name == "keras" else options.batch_size)
        ref_info = _model_info(ref_path, ref)
        ref_info.update(eval_seconds=t_ref, eval_mode=ref.batch_mode)
        log.info("reference %s: %.2f s (%s)", ref.name, t_ref, ref.batch_mode)
        if y_ref.shape != y_cand.shape:
            raise ModelError("reference and candidate have different output shapes",
                             received=f"{y_ref.shape} vs {y_cand.shape}")

    num_classes = data["num_classes"]
    classification = softmax_like(y_cand) and y_cand.shape[1] == num_classes and int(y.max(initial=0)) < num_classes
    rows = []
    if classification:
        cand_info.update(classification_metrics(y_cand, y, num_classes, options.top_k))
        if ref_info is not None:
            ref_info.update(classification_metrics(y_ref, y, num_classes, options.top_k))
    else:
        cand_info["accuracy"] = None
        if ref_info is not None:
            ref_info["accuracy"] = None
    comparison = compare_outputs(y_cand, y_ref) if y_ref is not None else None

    def gt_row(name: str, info: dict) -> dict:
        return {"name": name, "accuracy": info.get("accuracy"), "top_k_accuracy": info.get("top_k_accuracy"),
                "agreement": None, **(info.get("vs_ground_truth") or {"rmse": None, "mae": None}),
                "l2r": None, "cosine": None, "sqnr_db": None}

    if ref_info is not None and classification:
        rows.append(gt_row("reference vs ground truth", ref_info))
    if classification:
        rows.append(gt_row("candidate vs ground truth", cand_info))
    if comparison is not None:
        rows.append({"name": "candidate vs reference", "accuracy": None, "top_k_accuracy": None, **comparison})

    # per-layer quantisation error
    layer_errors: dict[str, Any]
    if not options.layer_debug:
        layer_errors = {"status": "skipped", "reason": "--no-layer-debug", "layers": [], "worst": []}
    elif ref_path is None or _model_kind(ref_path) != "keras":
        layer_errors = {"status": "skipped", "reason": "needs a .keras reference", "layers": [], "worst": []}
    elif cand_info.get("precision") != "int8":
        layer_errors = {"status": "skipped", "reason": f"candidate is {cand_info.get('precision')}, not int8",
                        "layers": [], "worst": []}
    elif _layer_debug_mismatch(cand_meta, ref_path):
        layer_errors = {"status": "skipped", "reason": _layer_debug_mismatch(cand_meta, ref_path), "layers": [],
                        "worst": []}
    else:
        try:
            t0 = time.perf_counter()
            layer_errors = layer_quantisation_errors(ref_path, data, cand_meta, options.layer_debug_samples)
            log.info("per-layer quantisation error: %d layers (%.1f s)", len(layer_errors["layers"]),
                     time.perf_counter() - t0)
        except ImportError as exc:
            layer_errors = {"status": "unavailable", "reason": f"TensorFlow is needed ({exc.name} missing)",
                            "layers": [], "worst": []}
        except Exception as exc:  # the converter/debugger raises many types; the rest of the report stays valid
            layer_errors = {"status": "unavailable", "reason": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
                            if str(exc) else type(exc).__name__, "layers": [], "worst": []}
            log.warning("per-layer quantisation debugging failed: %s", layer_errors["reason"])

    # latency
    from toolchain.runtime import quantize_input

    lat_cand = measure_latency(cand, quantize_input(x, cand.input_details[0]), options.latency_runs,
                               options.latency_warmup, options.batch_size)
    lat_ref = None
    if ref is not None:
        lat_ref = measure_latency(ref, quantize_input(x, ref.input_details[0]), options.latency_runs,
                                  options.latency_warmup, options.batch_size)
    speedup = (lat_ref["median"] / lat_cand["median"]) if lat_ref and lat_cand["median"] > 0 else None

    acc_drop = None
    if ref_info is not None and classification:
        acc_drop = (ref_info["accuracy"] - cand_info["accuracy"]) * 100.0
    from toolchain.bench import host_info

    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "toolchain_version": toolchain.__version__,
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "task": "classification" if classification else "outputs",
        "samples": int(len(y)),
        "dataset": {"spec": data["spec"], "split": data["split"], "samples": int(len(y)), "num_classes": num_classes,
                    "labels": data["labels"], "preprocessing": data["prep"].to_dict(), "seed": data["seed"],
                    "preprocessing_source": data["preprocessing_source"]},
        "reference": ref_info,
        "candidate": cand_info,
        "accuracy_drop_pp": acc_drop,
        "comparison": comparison,
        "rows": rows,
        "layer_errors": layer_errors,
        "latency_ms": {"reference": lat_ref, "candidate": lat_cand, "speedup": speedup},
        "sizes": {"reference_bytes": ref_info["size_bytes"] if ref_info else None,
                  "candidate_bytes": cand_info["size_bytes"],
                  "ratio": (cand_info["size_bytes"] / ref_info["size_bytes"]) if ref_info else None},
        "baseline": None,
        "host": host_info(),
        "plots": [],
    }
    if baseline is not None:
        acc = cand_info.get("accuracy")
        baseline["regression_pp"] = (baseline["accuracy"] - acc) * 100.0 if acc is not None else None
        report["baseline"] = baseline
    report["checks"] = evaluate_checks(report, options, baseline)
    report["passed"] = all(c["passed"] for c in report["checks"])
    return report
