"""The main job: train -> quantise int8 -> export TFLM C arrays -> verify, every artifact in one run folder.

``run_pipeline(PipelineOptions(...)) -> dict`` (the summary, also written as ``DIR/pipeline.json``)::

    DIR/train/                 model.keras, metadata.json, history.json, training.png
    DIR/model_int8.tflite      + DIR/model_int8.json (sidecar metadata)
    DIR/firmware/              C arrays, op resolver, manifest.json (tensor arena)
    DIR/verify/                report.json, report.md, report.html, plots/
    DIR/pipeline.json          the summary below

A linear driver of named stages; each stage is logged with its duration. ``summary["passed"]`` is the verify gate.
If a stage raises, the partly built run folder is removed (nothing half-written is left behind).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import toolchain
from toolchain.errors import UsageError

log = logging.getLogger("toolchain.pipeline")

SUMMARY_FORMAT = "toolchain-pipeline-summary/1"
DEFAULT_EPOCHS = 5  # seed001_basic_cnn on digits reaches >= 95 % int8 accuracy with this (see docs)


@dataclass
class PipelineOptions:
    output: str
    model: str = "seed001_basic_cnn"
    dataset: str = "digits"
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = 32
    seed: int = 0
    calibration_samples: int = 300
    max_accuracy_drop: float = 1.0
    min_accuracy: float | None = None
    layer_debug: bool = True
    latency_runs: int = 100
    threads: int | None = None
    force: bool = False

    def validate(self) -> None:
        if self.epochs < 1:
            raise UsageError("--epochs must be >= 1", received=self.epochs)
        if self.batch_size < 1:
            raise UsageError("--batch-size must be >= 1", received=self.batch_size)
        if self.calibration_samples < 1:
            raise UsageError("--calibration-samples must be >= 1", received=self.calibration_samples)
        if self.max_accuracy_drop < 0:
            raise UsageError("--max-accuracy-drop must be >= 0", received=self.max_accuracy_drop)
        if self.min_accuracy is not None and not 0 <= self.min_accuracy <= 1:
            raise UsageError("--min-accuracy must be a fraction in [0, 1]", received=self.min_accuracy)
        if self.latency_runs < 1:
            raise UsageError("--runs must be >= 1", received=self.latency_runs)


STAGES = ("train", "quantise", "export", "verify")


def run_pipeline(options: PipelineOptions, on_stage: Callable[[str, int, int], None] | None = None
                 ) -> dict[str, Any]:
    """Run every stage into ``options.output``; returns the summary dict (see the module docstring)."""
    import models
    from toolchain.specs import DatasetSpec
    from toolchain.fsutil import atomic_write_json, check_output_dir, output_dir
    from toolchain.results import PipelineSummary

    options.validate()
    models.get_spec(options.model)  # unknown model -> ModelError before any work
    DatasetSpec.parse(options.dataset)  # malformed dataset spec -> error before any work
    final = check_output_dir(options.output, options.force)
    timings: dict[str, float] = {}
    artifacts: dict[str, Any] = {}
    # The run is built in a temporary folder beside the output and swapped in atomically when complete (an existing
    # run stays at the path until then, also when this run fails or is killed); the absolute paths the stages
    # record are then rewritten from the temporary folder to the final one.
    with output_dir(final, options.force) as out:
        def stage(i: int, name: str):
            log.info("[%d/%d] %s", i, len(STAGES), name)
            if on_stage:
                on_stage(name, i, len(STAGES))
            return time.perf_counter()

        # 1. train
        t0 = stage(1, "train")
        from toolchain.train import TrainOptions, train

        train_meta = train(options.model, options.dataset, out / "train",
                           TrainOptions(epochs=options.epochs, batch_size=options.batch_size, seed=options.seed))
        timings["train"] = time.perf_counter() - t0
        keras_path = out / "train" / "model.keras"
        log.info("  float test accuracy %.2f %% (%.1f s)", 100 * train_meta["float_test_accuracy"], timings["train"])

        # 2. quantise
        t0 = stage(2, "quantise")
        from toolchain.quantise import QuantConfig, quantise

        tflite_path = out / "model_int8.tflite"
        quant_meta = quantise(keras_path, tflite_path,
                              config=QuantConfig(calibration_samples=options.calibration_samples, seed=options.seed))
        timings["quantise"] = time.perf_counter() - t0
        log.info("  %s: %d B (%.1f s)", tflite_path.name, tflite_path.stat().st_size, timings["quantise"])

        # 3. export
        t0 = stage(3, "export")
        from firmware_export import export_tflm

        manifest = export_tflm(tflite_path, out / "firmware", on_target=False)  # host figure: no silent TFLM build
        timings["export"] = time.perf_counter() - t0
        log.info("  firmware/: arena %s B recommended (%.1f s)", manifest["arena"]["recommended_bytes"],
                 timings["export"])

        # 4. verify
        t0 = stage(4, "verify")
        from toolchain.report import write_reports
        from toolchain.verify import VerifyOptions, verify

        vopts = VerifyOptions(max_accuracy_drop=options.max_accuracy_drop, min_accuracy=options.min_accuracy,
                              layer_debug=options.layer_debug, latency_runs=options.latency_runs,
                              threads=options.threads)
        report = verify(keras_path, tflite_path, vopts).to_json()
        write_reports(report, out / "verify")
        timings["verify"] = time.perf_counter() - t0
        log.info("  verify: %s (%.1f s)", "passed" if report["passed"] else "FAILED", timings["verify"])
        artifacts = {"train": train_meta, "quantise": quant_meta, "export": manifest}

        lat = report["latency_ms"]
        summary = PipelineSummary(
        format=SUMMARY_FORMAT,
        toolchain_version=toolchain.__version__,
        created_utc=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        model=options.model,
        dataset=options.dataset,
        epochs=options.epochs,
        epochs_run=artifacts["train"].get("epochs_run"),
        samples=report["samples"],
        float_accuracy=report["reference"]["accuracy"],
        int8_accuracy=report["candidate"]["accuracy"],
        accuracy_drop_pp=report["accuracy_drop_pp"],
        agreement=(report.get("comparison") or {}).get("agreement"),
        params=artifacts["export"].get("params", artifacts["train"].get("params")),
        macs=artifacts["export"].get("macs"),
        keras_bytes=report["reference"]["size_bytes"],
        int8_tflite_bytes=report["candidate"]["size_bytes"],
        arena_bytes=artifacts["export"]["arena"]["recommended_bytes"],
        arena_recorded_bytes=artifacts["export"]["arena"]["recorded_bytes"],
        latency_ms={"keras_median": lat["reference"]["median"], "int8_median": lat["candidate"]["median"],
                    "int8_p99": lat["candidate"]["p99"], "speedup": lat["speedup"]},
        checks=report["checks"],
        passed=report["passed"],
        stage_seconds=timings,
        artifacts={"train": "train/", "model": "model_int8.tflite", "sidecar": "model_int8.json",
                   "firmware": "firmware/", "verify": "verify/report.html"},
        ).to_json()
        atomic_write_json(out / "pipeline.json", summary)
        _relocate(out, final)
    return summary


def _relocate(tmp: Path, final: Path) -> None:
    """Rewrite the temporary folder's path to the final one in the run's text outputs (JSON, Markdown, HTML)."""
    olds = sorted({str(tmp), str(tmp.resolve())}, key=len, reverse=True)
    new = str(final.resolve())
    for f in tmp.rglob("*"):
        if f.suffix not in (".json", ".md", ".html") or not f.is_file():
            continue
        text = f.read_text(encoding="utf-8")
        changed = text
        for old in olds:
            changed = changed.replace(old, new)
        if changed != text:
            f.write_text(changed, encoding="utf-8")


def summary_rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    def pct(v):
        return "–" if v is None else f"{100 * v:.2f} %"

    lat = s["latency_ms"]
    return [
        ("model / dataset", f"{s['model']} on {s['dataset']} ({s['epochs_run']} epochs, {s['samples']} test samples)"),
        ("float accuracy", pct(s["float_accuracy"])),
        ("int8 accuracy", pct(s["int8_accuracy"])),
        ("accuracy drop", "–" if s["accuracy_drop_pp"] is None else f"{s['accuracy_drop_pp']:+.2f} pp"),
        ("agreement", pct(s["agreement"])),
        ("params / MACs", f"{s['params']:,} / {s['macs']:,}" if s.get("macs") is not None else "–"),
        ("size .keras / int8", f"{s['keras_bytes']:,} B / {s['int8_tflite_bytes']:,} B"),
        ("TFLM arena", f"{s['arena_bytes']:,} B (recorded {s['arena_recorded_bytes']:,} B)"),
        ("latency Keras / int8", f"{lat['keras_median']:.3f} ms / {lat['int8_median']:.4f} ms (median, "
                                 f"x{lat['speedup']:.1f})" if lat["speedup"] else "–"),
        ("gate", "PASSED" if s["passed"] else "FAILED: " + "; ".join(
            c["name"] for c in s["checks"] if not c["passed"])),
    ]
