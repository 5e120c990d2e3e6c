"""``verify(reference, candidate, options) -> VerifyReport``: the linear driver of verification.

Stages: open the artifacts (once) → settle the data and its preprocessing (``toolchain.data.load_split``) → run both
models → metrics (``metrics``) → per-layer error (``layer_debug``) → latency (``toolchain.timing``) → checks
(``gates``). Writes nothing; ``toolchain.report.write_reports`` writes the files. The device path (candidate
``.tflite`` only, ``npz:`` data, a TFLite runtime) imports neither TensorFlow, Keras, scikit-learn nor matplotlib.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

import toolchain
from toolchain.artifacts import ModelArtifact, open_artifact
from toolchain.errors import DatasetError, ModelError, UsageError
from toolchain.results import VerifyReport
from toolchain.specs import DatasetSpec
from toolchain.verify.gates import (evaluate_checks, footprint, input_distribution_check, load_baseline,
                                    reference_sanity_check)
from toolchain.verify.metrics import classification_metrics, compare_outputs, softmax_like

log = logging.getLogger("toolchain.verify")

REPORT_FORMAT = "toolchain-verify-report/1"
DEFAULT_MAX_ACCURACY_DROP = 1.0  # percentage points, applied when a reference is given
TARGET_ENGINES = ("c", "tflm", "cmsis-nn")  # firmware_export.m4.target.ENGINES (this layer does not import it)


@dataclass
class VerifyOptions:
    dataset: str | DatasetSpec | None = None   # default = the one recorded in the metadata
    input_scale: float | None = None           # declared source normalisation (raw x scale -> [0, 1])
    split: str = "test"                        # test | val | train
    max_samples: int | None = None
    runtime: str = "auto"                      # TFLite runtime for the candidate (and a .tflite reference)
    threads: int | None = None
    top_k: int = 3
    layer_debug: bool = True
    layer_debug_samples: int = 50
    latency_runs: int = 100
    latency_warmup: int = 10
    batch_size: int = 256
    max_accuracy_drop: float | None = None     # percentage points; DEFAULT_MAX_ACCURACY_DROP with a reference
    min_agreement: float | None = None         # fraction
    min_accuracy: float | None = None          # fraction (candidate vs ground truth)
    baseline: str | None = None
    max_regression: float = 1.0                # percentage points, used with baseline
    input_check: bool = True                   # the input_distribution / reference_sanity checks
    plots: bool = True
    on_target: str | None = None               # "qemu-m4": also run the samples on the emulated Cortex-M4F
    target_engine: str = "c"                   # c | tflm | cmsis-nn
    target_samples: int | None = None          # default: every evaluated sample
    min_target_agreement: float | None = None  # fraction: target top-1 == host candidate top-1
    max_flash: int | None = None               # bytes: firmware (on target) or the candidate file
    max_arena: int | None = None               # bytes, on target
    max_instructions: int | None = None        # per inference, on target
    max_growth: float = 5.0                    # percent, each footprint figure vs --baseline

    def validate(self) -> None:
        if self.split not in ("test", "val", "train"):
            raise UsageError("split must be test, val or train", received=self.split)
        for name, v, lo in (("--max-samples", self.max_samples, 1), ("--threads", self.threads, 1),
                            ("--top-k", self.top_k, 1), ("--layer-debug-samples", self.layer_debug_samples, 1),
                            ("--batch-size", self.batch_size, 1)):
            if v is not None and v < lo:
                raise UsageError(f"{name} must be >= {lo}", received=v)
        if self.latency_runs < 1 or self.latency_warmup < 0:
            raise UsageError("--runs must be >= 1 and --warmup >= 0",
                             received=f"runs={self.latency_runs}, warmup={self.latency_warmup}")
        if self.max_accuracy_drop is not None and self.max_accuracy_drop < 0:
            raise UsageError("--max-accuracy-drop must be >= 0 percentage points", received=self.max_accuracy_drop)
        for name, v in (("--min-agreement", self.min_agreement), ("--min-accuracy", self.min_accuracy)):
            if v is not None and not 0.0 <= v <= 1.0:
                raise UsageError(f"{name} must be a fraction in [0, 1]", received=v)
        if self.on_target not in (None, "qemu-m4"):
            raise UsageError("--on must be qemu-m4 (the emulated Cortex-M4F)", received=f"--on {self.on_target}")
        if self.on_target is None:
            for name, v in (("--min-target-agreement", self.min_target_agreement),
                            ("--samples", self.target_samples)):
                if v is not None:
                    raise UsageError(f"{name} needs --on qemu-m4", received=f"{name} {v:g}")
        if self.target_engine not in TARGET_ENGINES:
            raise UsageError(f"--engine must be one of {', '.join(TARGET_ENGINES)}", received=self.target_engine)
        if self.target_samples is not None and self.target_samples < 1:
            raise UsageError("--samples must be >= 1", received=self.target_samples)
        if self.min_target_agreement is not None and not 0.0 <= self.min_target_agreement <= 1.0:
            raise UsageError("--min-target-agreement must be a fraction in [0, 1]", received=self.min_target_agreement)
        if self.max_regression < 0:
            raise UsageError("--max-regression must be >= 0 percentage points", received=self.max_regression)
        for name, v in (("--max-flash", self.max_flash), ("--max-arena", self.max_arena),
                        ("--max-instructions", self.max_instructions)):
            if v is not None and v < 1:
                raise UsageError(f"{name} must be >= 1", received=v)
        if self.on_target is None:
            for name, v in (("--max-arena", self.max_arena), ("--max-instructions", self.max_instructions)):
                if v is not None:
                    raise UsageError(f"{name} is measured on the target; add --on qemu-m4", received=f"{name} {v}")
        if not 0 <= self.max_growth < 1e6:
            raise UsageError("--max-growth must be a percentage >= 0", received=self.max_growth)

    def check_gate(self, has_reference: bool) -> None:
        """A gate with nothing to check, or a threshold that needs a missing reference, is a usage error."""
        if not has_reference:
            for name, v in (("--max-accuracy-drop", self.max_accuracy_drop), ("--min-agreement", self.min_agreement)):
                if v is not None:
                    raise UsageError(f"{name} compares the candidate with a reference; pass --reference MODEL",
                                     received=f"{name} {v:g} without --reference")
            if self.min_accuracy is None and self.baseline is None and self.on_target is None \
                    and self.max_flash is None:
                raise UsageError("verify has nothing to check: pass --reference MODEL (accuracy drop vs the float "
                                 "model), --min-accuracy F or --baseline FILE", received="--candidate only")

    def gate_max_accuracy_drop(self, has_reference: bool) -> float | None:
        if not has_reference:
            return None
        return DEFAULT_MAX_ACCURACY_DROP if self.max_accuracy_drop is None else float(self.max_accuracy_drop)


def _evaluate(runner, x_float: np.ndarray, batch_size: int) -> tuple[np.ndarray, float]:
    from toolchain.runtime import dequantize_output, quantize_input

    din, dout = runner.input_details[0], runner.output_details[0]
    xq = quantize_input(x_float, din)
    t0 = time.perf_counter()
    y = runner.run_many(xq, batch_size=batch_size)
    dt = time.perf_counter() - t0
    return dequantize_output(y, dout), dt


def _model_info(art: ModelArtifact, runner) -> dict[str, Any]:
    info = {"path": str(art.path), "kind": art.kind, "sha256": art.sha256, "size_bytes": art.size_bytes,
            "runtime": runner.name, "runtime_version": runner.version, "precision": art.precision}
    if art.kind == "tflite":
        for key, d in (("input", runner.input_details[0]), ("output", runner.output_details[0])):
            s, z = d["quantization"]
            info[key] = {"dtype": np.dtype(d["dtype"]).name, "shape": list(d["shape"]), "scale": s, "zero_point": z}
    return info


def _is_classifier(record, y_out: np.ndarray, num_classes: int, model: str) -> bool:
    """A classifier's output width must equal the data's class count (exit 2 otherwise)."""
    recorded = record is not None and record.labels is not None
    width = int(np.prod(y_out.shape[1:])) if y_out.ndim > 1 else 1
    if recorded and width != num_classes:
        raise DatasetError("the dataset's number of classes does not match the model",
                           received=f"{num_classes} classes in the data, {model} outputs {width} "
                                    f"(trained with {len(record.labels)} classes)")
    return softmax_like(y_out) and width == num_classes


def verify(reference: str | os.PathLike | None, candidate: str | os.PathLike,
           options: VerifyOptions | None = None, target_runner=None) -> VerifyReport:
    """Run the verification and return the report (see ``VerifyReport``). Writes nothing.

    ``target_runner(candidate, inputs, labels) -> dict`` runs the quantised samples on the target for
    ``options.on_target`` (the application layer passes ``toolchain.ontarget.verify_on_target``).
    """
    from toolchain.data import input_statistics, prepare_data
    from toolchain.runtime import open_runtime, quantize_input, resolve_runtime
    from toolchain.timing import host_info, measure_latency
    from toolchain.verify.layer_debug import layer_errors_section

    options = options or VerifyOptions()
    options.validate()
    options.check_gate(reference is not None)
    spec = options.dataset if isinstance(options.dataset, DatasetSpec) or options.dataset is None \
        else DatasetSpec.parse(options.dataset, options.input_scale)
    if spec is not None and options.input_scale is not None and spec.input_scale is None:
        spec = DatasetSpec(spec.kind, spec.arg, options.input_scale)
    cand = open_artifact(candidate, "candidate")
    if cand.kind != "tflite":
        raise UsageError("the candidate must be a .tflite model", received=str(cand.path))
    ref = open_artifact(reference, "reference") if reference is not None else None
    resolve_runtime(cand.path, options.runtime)
    baseline = load_baseline(options.baseline) if options.baseline else None

    cand_rt = open_runtime(cand.path, runtime=options.runtime, threads=options.threads)
    ref_rt = None
    if options.on_target and target_runner is None:
        raise UsageError("on-target verification is not available here", received=f"--on {options.on_target}")
    if ref is not None:  # open (and so validate) the reference before any evaluation work
        ref_runtime = "keras" if ref.kind == "keras" else options.runtime
        ref_rt = open_runtime(ref.path, runtime=ref_runtime,  # Keras picks its own thread pool
                              threads=None if ref_runtime == "keras" else options.threads)
        if tuple(ref_rt.input_shape[1:]) != tuple(cand_rt.input_shape[1:]):
            raise ModelError("reference and candidate have different input shapes",
                             received=f"{ref_rt.input_shape} vs {cand_rt.input_shape}")
    record = cand.record or (ref.record if ref is not None else None)
    if spec is None and options.input_scale is not None and record is not None:
        spec = DatasetSpec(record.dataset.kind, record.dataset.arg, options.input_scale)
    if spec is None and record is None:
        raise UsageError("no dataset given and none recorded in the model metadata; pass --dataset SPEC",
                         received="--dataset (missing)")
    prepared = prepare_data(record, dataset=spec, input_shape=tuple(cand_rt.input_shape[1:]))
    data = prepared.split(options.split, max_samples=options.max_samples)
    x, y = data.x, data.y
    log.debug("evaluating %d %s samples of %s; normalisation %s; model input %s (resize %s, channels %s, %s)",
             len(y), data.split, data.spec.text, data.normalisation.describe(),
             "x".join(map(str, data.preprocessing.input_shape)), data.preprocessing.resize,
             data.preprocessing.channels, data.transform_source)

    y_cand, t_cand = _evaluate(cand_rt, x, options.batch_size)
    cand_info = _model_info(cand, cand_rt)
    cand_info.update(eval_seconds=t_cand, eval_mode=cand_rt.batch_mode,
                     quantization=(cand.metadata or {}).get("quantization"))
    y_ref = ref_info = None
    if ref is not None:
        y_ref, t_ref = _evaluate(ref_rt, x, max(options.batch_size, 1024) if ref_rt.name == "keras"
                                 else options.batch_size)
        ref_info = _model_info(ref, ref_rt)
        ref_info.update(eval_seconds=t_ref, eval_mode=ref_rt.batch_mode)
        if y_ref.shape != y_cand.shape:
            raise ModelError("reference and candidate have different output shapes",
                             received=f"{y_ref.shape} vs {y_cand.shape}")

    num_classes = data.num_classes
    classification = _is_classifier(record, y_cand, num_classes, str(cand.path.name))
    if classification and int(y.max(initial=0)) >= num_classes:
        raise DatasetError("labels exceed the model's classes", received=f"label {int(y.max())}, {num_classes} classes")
    rows = []
    for info, out in ((cand_info, y_cand), (ref_info, y_ref)):
        if info is not None:
            info.update(classification_metrics(out, y, num_classes, options.top_k) if classification
                        else {"accuracy": None})
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

    target = None
    if options.on_target:
        n = min(len(y), options.target_samples or len(y))
        if options.target_samples is not None and options.target_samples > len(y):
            log.warning("--samples %d: the %s split has %d samples; all of them run on the target",
                        options.target_samples, data.split, len(y))
        xq = quantize_input(x[:n], cand_rt.input_details[0])
        target = target_runner(cand.path, [xq[i:i + 1] for i in range(n)], y[:n] if classification else None)
        rows += target["rows"]

    layer_errors = layer_errors_section(
        enabled=options.layer_debug, reference=ref.path if ref is not None else None,
        reference_kind=ref.kind if ref is not None else None, candidate_precision=cand.precision,
        cand_meta=cand.metadata, data=data, samples=options.layer_debug_samples)

    lat_cand = measure_latency(cand_rt, quantize_input(x, cand_rt.input_details[0]), options.latency_runs,
                               options.latency_warmup, options.batch_size)
    lat_ref = None
    if ref_rt is not None:
        lat_ref = measure_latency(ref_rt, quantize_input(x, ref_rt.input_details[0]), options.latency_runs,
                                  options.latency_warmup, options.batch_size)
    speedup = (lat_ref["median"] / lat_cand["median"]) if lat_ref and lat_cand["median"] > 0 else None
    acc_drop = (ref_info["accuracy"] - cand_info["accuracy"]) * 100.0 if ref_info is not None and classification \
        else None

    # sanity checks on the evaluation itself
    evaluated = input_statistics(x, cand.tflite.input_quant_range() if cand.tflite is not None else None)
    calibration = record.calibration if record is not None else None
    sanity, warnings = [], []
    if options.input_check and calibration is not None:
        check, warning = input_distribution_check(evaluated, calibration)
        sanity.append(check)
        warnings += [warning] if warning else []
    recorded_acc = (ref.record.test_accuracy if ref is not None and ref.record is not None else None) \
        or (record.test_accuracy if record is not None else None)
    if options.input_check and ref_info is not None and classification and recorded_acc is not None:
        check, warning = reference_sanity_check(ref_info["accuracy"], recorded_acc)
        sanity.append(check)
        warnings += [warning] if warning else []
    for w in warnings:
        log.warning("%s", w)

    report = VerifyReport(
        format=REPORT_FORMAT, toolchain_version=toolchain.__version__,
        created_utc=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        task="classification" if classification else "outputs", passed=False, samples=int(len(y)),
        dataset=data.describe(), reference=ref_info, candidate=cand_info, accuracy_drop_pp=acc_drop,
        comparison=comparison, rows=rows, layer_errors=layer_errors,
        latency_ms={"reference": lat_ref, "candidate": lat_cand, "speedup": speedup},
        sizes={"reference_bytes": ref_info["size_bytes"] if ref_info else None,
               "candidate_bytes": cand_info["size_bytes"],
               "ratio": (cand_info["size_bytes"] / ref_info["size_bytes"]) if ref_info else None},
        baseline=None, checks=[], warnings=warnings,
        input_statistics={"evaluated": evaluated.to_dict(),
                          "calibration": calibration.to_dict() if calibration is not None else None},
        host=host_info(), target=target, footprint=footprint(cand_info, target))
    if baseline is not None:
        acc = cand_info.get("accuracy")
        baseline["regression_pp"] = (baseline["accuracy"] - acc) * 100.0 \
            if acc is not None and baseline["accuracy"] is not None else None
        report.baseline = baseline
    gate_options = VerifyOptions(**{**asdict(options), "dataset": None,
                                    "max_accuracy_drop": options.gate_max_accuracy_drop(ref is not None)})
    report.checks = sanity + evaluate_checks(report.to_json(), gate_options, baseline)
    report.passed = all(c["passed"] for c in report.checks)
    return report
