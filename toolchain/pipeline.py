"""The main job: train -> quantise int8 -> firmware (TFLM C arrays, C engine) -> verify (host and on target),
every artifact in one run folder, and whether the model fits the board.

``run_pipeline(PipelineOptions(...)) -> dict`` (the summary, also written as ``DIR/pipeline.json``)::

    DIR/train/                 model.keras, metadata.json, history.json, training.png
    DIR/model_int8.tflite      + DIR/model_int8.json (sidecar metadata)
    DIR/firmware/              TFLM C arrays, op resolver, manifest.json (measured tensor arena, board fit)
    DIR/c_engine/              the standalone C engine (no interpreter) and its manifest.json
    DIR/verify/                report.json, report.md, report.html, plots/ (+ the on-target rows)
    DIR/pipeline.json          the summary below

A linear driver of named stages; each stage is logged with its duration. ``summary["passed"]`` is the verify gate.
With the Arm toolchain and QEMU present (or ``on_target=True``) the verify stage also runs the test samples through
the C engine on the emulated Cortex-M4F: instructions per inference, the board-clock lower bound, agreement with
the host. ``summary["firmware"]`` says whether TFLM and the C engine fit the board (``toolchain.pipeline_fit``).
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
DEFAULT_EPOCHS = 5  # the default model on digits reaches >= 95 % int8 accuracy with this (README, test)
DEFAULT_MODEL = "seed002_keras_cnn"  # fits DEFAULT_TARGET (seed001_basic_cnn's 1.2 MB of int8 weights do not)
DEFAULT_TARGET = "nrf52840"
DEFAULT_TARGET_SAMPLES = 100


@dataclass
class PipelineOptions:
    output: str
    model: str = DEFAULT_MODEL
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
    target: str = DEFAULT_TARGET
    c_engine: bool = True
    on_target: bool | None = None        # None: when arm-none-eabi-gcc/g++ and qemu-system-arm are present
    target_samples: int = DEFAULT_TARGET_SAMPLES
    tflm_dir: str | None = None          # also measure the TFLM arena on the target (TFLM + CMSIS-NN)

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
        if self.target_samples < 1:
            raise UsageError("--target-samples must be >= 1", received=self.target_samples)
        if self.on_target and not self.c_engine:
            raise UsageError("--on-target runs the C engine on the emulated Cortex-M4F; --no-c-engine turns it off",
                             received="--on-target --no-c-engine")
        if self.on_target is False and self.tflm_dir is not None:
            raise UsageError("--tflm-dir is for the on-target arena measurement, which --host-only turns off",
                             received=f"--host-only --tflm-dir {self.tflm_dir}")

    def run_on_target(self) -> bool:
        """Whether the verify stage runs the C engine on QEMU (RuntimeUnavailableError if required and missing)."""
        from firmware_export.m4.tools import tools_available

        if not self.c_engine or self.on_target is False:
            return False
        have = tools_available()
        if self.on_target and not have:
            from toolchain.errors import RuntimeUnavailableError

            raise RuntimeUnavailableError(
                "--on-target needs arm-none-eabi-gcc, arm-none-eabi-g++ and qemu-system-arm on PATH",
                received="--on-target", hint="apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi "
                                             "qemu-system-arm, or run with --host-only")
        return have


STAGES = ("train", "quantise", "export", "c-engine", "verify")


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
    from firmware_export.targets import get_target

    board = get_target(options.target)  # unknown board -> UsageError before any work
    on_target = options.run_on_target()
    final = check_output_dir(options.output, options.force)
    timings: dict[str, float] = {}
    # The run is built in a temporary folder beside the output and swapped in atomically when complete (an existing
    # run stays at the path until then, also when this run fails or is killed); the absolute paths the stages
    # record are then rewritten from the temporary folder to the final one.
    with output_dir(final, options.force) as out:
        def stage(i: int, name: str):
            log.info("[%d/%d] %s", i, len(STAGES), name)
            if on_stage:
                on_stage(name, i, len(STAGES))
            return time.perf_counter()

        def progress(message: str) -> None:
            log.info("  %s", message)

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

        # 3. export (TFLM C arrays, the board fit; the TFLM arena on the target only with --tflm-dir)
        t0 = stage(3, "export")
        from firmware_export import export_tflm

        manifest = export_tflm(tflite_path, out / "firmware", target=board.key, on_target=options.tflm_dir is not None,
                               tflm_dir=options.tflm_dir, progress=progress)
        timings["export"] = time.perf_counter() - t0
        log.info("  firmware/: TFLM arena %s B recommended (%.1f s)", f"{manifest['arena']['recommended_bytes']:,}",
                 timings["export"])

        # 4. the standalone C engine
        t0 = stage(4, "c-engine")
        engine_manifest = None
        if options.c_engine:
            from firmware_export.cgen import generate_c_engine

            engine_manifest = generate_c_engine(tflite_path, out / "c_engine", measure_tflm=False)
            log.info("  c_engine/: arena %s B, weights %s B (%.1f s)", f"{engine_manifest['arena_bytes']:,}",
                     f"{engine_manifest['weight_bytes']:,}", time.perf_counter() - t0)
        else:
            log.info("  skipped (--no-c-engine)")
        timings["c-engine"] = time.perf_counter() - t0

        # 5. verify (host; and the C engine on the emulated Cortex-M4F when the tools are there)
        t0 = stage(5, "verify")
        from toolchain.report import write_reports
        from toolchain.verify import VerifyOptions, verify

        runner = None
        if on_target:
            import functools

            from toolchain.ontarget import verify_on_target

            runner = functools.partial(verify_on_target, engine="c", progress=progress)
        else:
            log.info("  on target: %s", "off (--host-only)" if options.on_target is False or not options.c_engine
                     else "skipped: arm-none-eabi-gcc/g++ or qemu-system-arm not found")
        vopts = VerifyOptions(max_accuracy_drop=options.max_accuracy_drop, min_accuracy=options.min_accuracy,
                              layer_debug=options.layer_debug, latency_runs=options.latency_runs,
                              threads=options.threads, on_target="qemu-m4" if on_target else None,
                              target_engine="c", target_samples=options.target_samples if on_target else None)
        report = verify(keras_path, tflite_path, vopts, target_runner=runner).to_json()
        from toolchain.pipeline_fit import firmware_section

        firmware = firmware_section(board, manifest, engine_manifest, report.get("target"), options.model)
        report["firmware"] = firmware
        write_reports(report, out / "verify")
        timings["verify"] = time.perf_counter() - t0
        log.info("  verify: %s (%.1f s)", "passed" if report["passed"] else "FAILED", timings["verify"])

        lat = report["latency_ms"]
        tgt = report.get("target")
        summary = PipelineSummary(
            format=SUMMARY_FORMAT,
            toolchain_version=toolchain.__version__,
            created_utc=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            model=options.model,
            dataset=options.dataset,
            epochs=options.epochs,
            epochs_run=train_meta.get("epochs_run"),
            samples=report["samples"],
            float_accuracy=report["reference"]["accuracy"],
            int8_accuracy=report["candidate"]["accuracy"],
            accuracy_drop_pp=report["accuracy_drop_pp"],
            agreement=(report.get("comparison") or {}).get("agreement"),
            params=manifest.get("params", train_meta.get("params")),
            macs=manifest.get("macs"),
            keras_bytes=report["reference"]["size_bytes"],
            int8_tflite_bytes=report["candidate"]["size_bytes"],
            arena_bytes=manifest["arena"]["recommended_bytes"],
            arena_recorded_bytes=manifest["arena"]["recorded_bytes"],
            c_engine_arena_bytes=None if engine_manifest is None else engine_manifest["arena_bytes"],
            latency_ms={"keras_median": lat["reference"]["median"], "int8_median": lat["candidate"]["median"],
                        "int8_p99": lat["candidate"]["p99"], "speedup": lat["speedup"]},
            target=board.key,
            firmware=firmware,
            on_target=None if not tgt else {
                "engine": tgt["engine"], "machine": tgt["machine"], "samples": tgt["samples"],
                "instructions_per_inference": tgt["instructions_per_inference"],
                "lower_bound_ms": firmware["engines"][-1]["lower_bound_ms"],
                "identical_pct": tgt["comparison"]["identical_pct"], "agreement": tgt["agreement"],
                "accuracy": next((r["accuracy"] for r in tgt["rows"] if r["name"] == "target vs ground truth"),
                                 None), "reference": tgt["reference"]},
            checks=report["checks"],
            passed=report["passed"],
            stage_seconds=timings,
            artifacts={"train": "train/", "model": "model_int8.tflite", "sidecar": "model_int8.json",
                       "firmware": "firmware/", **({"c_engine": "c_engine/"} if engine_manifest else {}),
                       "verify": "verify/report.html"},
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


def _target_rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    t = s.get("on_target")
    if not t:
        return [("on target", "not run (" + ("needs arm-none-eabi-gcc and qemu-system-arm" if s.get("firmware")
                                              else "no board") + ")")]
    acc = "" if t["accuracy"] is None else f", accuracy {100 * t['accuracy']:.2f} %"
    return [("on target vs host", f"{t['samples']} test samples on QEMU {t['machine']}: {t['identical_pct']:g} % "
                                  f"outputs identical to the host int8 model{acc}")]


def summary_rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    from toolchain.pipeline_fit import fit_lines

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
        ("C engine arena", "–" if s.get("c_engine_arena_bytes") is None else f"{s['c_engine_arena_bytes']:,} B"),
        ("host latency Keras / int8", f"{lat['keras_median']:.3f} ms / {lat['int8_median']:.4f} ms (median, "
                                 f"x{lat['speedup']:.1f})" if lat["speedup"] else "–"),
    ] + (fit_lines(s["firmware"]) if s.get("firmware") else []) + _target_rows(s) + [
        ("gate", "PASSED" if s["passed"] else "FAILED: " + "; ".join(
            c["name"] for c in s["checks"] if not c["passed"])),
    ]
