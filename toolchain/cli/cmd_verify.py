"""`toolchain verify`: compare a deployed model with its float reference and the ground truth; gate on the result."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from toolchain.cli.app import app, console
from toolchain.errors import UsageError


@app.command("verify")
def verify_cmd(
    candidate: Path = typer.Option(..., "--candidate", "-c", help="Model under test: .tflite (int8, float16, "
                                                                   "dynamic or float32)."),
    reference: Optional[Path] = typer.Option(None, "--reference", "-r",
                                             help="Float reference: .keras, a training run folder or a float "
                                                  ".tflite. Omit on a device: candidate vs ground truth only."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d",
                                          help="digits | npz:PATH | idx:DIR | folder:DIR | keras:NAME. Default: "
                                               "the dataset recorded in the model metadata."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for report.json, report.md, report.html, plots/."),
    split: str = typer.Option("test", "--split", help="test | val | train."),
    max_samples: Optional[int] = typer.Option(None, "--max-samples", help="Evaluate only the first N samples."),
    runtime: str = typer.Option("auto", "--runtime",
                                help="TFLite runtime: auto | litert | tflite-runtime | tensorflow | tflm."),
    threads: Optional[int] = typer.Option(None, "--threads", "-t", help="Interpreter threads (default: runtime's)."),
    runs: int = typer.Option(100, "--runs", help="Timed single-sample inferences per model."),
    warmup: int = typer.Option(10, "--warmup", help="Untimed warm-up inferences per model."),
    top_k: int = typer.Option(3, "--top-k", help="Also report top-k accuracy (and top-5); a k >= the number of "
                                                    "classes is left out of the report."),
    input_scale: Optional[float] = typer.Option(None, "--input-scale",
                                                help="Declare the data's normalisation: raw value x SCALE = [0, 1] "
                                                     "value (default: the source's own, or inferred from the dtype "
                                                     "/ value range)."),
    max_accuracy_drop: Optional[float] = typer.Option(None, "--max-accuracy-drop",
                                                      help="Gate: reference - candidate accuracy, percentage points "
                                                           "(default 1.0 with --reference; needs --reference)."),
    min_agreement: Optional[float] = typer.Option(None, "--min-agreement",
                                                  help="Gate: minimum fraction of same-argmax predictions."),
    min_accuracy: Optional[float] = typer.Option(None, "--min-accuracy",
                                                 help="Gate: minimum candidate accuracy (fraction, e.g. 0.95)."),
    baseline: Optional[Path] = typer.Option(None, "--baseline",
                                            help="Stored report.json or baseline file to compare against."),
    max_regression: float = typer.Option(1.0, "--max-regression",
                                         help="Gate with --baseline: maximum accuracy loss in percentage points."),
    write_baseline: Optional[Path] = typer.Option(None, "--write-baseline",
                                                  help="Write this run's accuracy and footprint as a baseline file."),
    max_flash: Optional[int] = typer.Option(None, "--max-flash",
                                            help="Gate: maximum flash bytes (with --on: firmware model + runtime "
                                                 "code, measured; without: the candidate file)."),
    max_arena: Optional[int] = typer.Option(None, "--max-arena", help="Gate with --on: maximum arena bytes."),
    max_instructions: Optional[int] = typer.Option(None, "--max-instructions",
                                                   help="Gate with --on: maximum instructions per inference."),
    max_growth: float = typer.Option(5.0, "--max-growth",
                                     help="Gate with --baseline: maximum growth of flash, arena and instructions "
                                          "(each measured the same way in both runs), percent."),
    layer_debug: bool = typer.Option(True, "--layer-debug/--no-layer-debug",
                                     help="Per-layer int8 error with TF's QuantizationDebugger (needs a .keras "
                                          "reference and TensorFlow)."),
    layer_debug_samples: int = typer.Option(50, "--layer-debug-samples", help="Samples for the per-layer debugger."),
    input_check: bool = typer.Option(True, "--input-check/--no-input-check",
                                     help="Sanity checks of the evaluation: input_distribution (inputs vs the "
                                          "recorded calibration inputs) and reference_sanity (reference vs its "
                                          "training-time test accuracy)."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="PNG plots in the HTML/Markdown report."),
    on: Optional[str] = typer.Option(None, "--on", help="qemu-m4: also run the quantised samples through the "
                                                        "firmware on the emulated Cortex-M4F."),
    engine: str = typer.Option("c", "--engine", help="With --on: c (C engine) | tflm (TFLM reference kernels) | "
                                                     "cmsis-nn (TFLM + CMSIS-NN)."),
    samples: Optional[int] = typer.Option(None, "--samples", help="With --on: the first N evaluated samples "
                                                                  "(default: all)."),
    min_target_agreement: Optional[float] = typer.Option(None, "--min-target-agreement",
                                                         help="Gate: fraction of samples where the target and the "
                                                              "host candidate pick the same class."),
    tflm_dir: Optional[Path] = typer.Option(None, "--tflm-dir", help="TFLM source tree for --engine tflm/cmsis-nn "
                                                                     "(default: $TOOLCHAIN_TFLM_DIR)."),
    force: bool = typer.Option(False, "--force", "-f", help="Replace an existing output folder / baseline file."),
) -> None:
    """Verify CANDIDATE against REFERENCE and the ground truth; exit 1 when a gate check fails.

    Reports three rows (reference vs ground truth, candidate vs ground truth, candidate vs reference) with top-1 /
    top-k accuracy, agreement, RMSE, MAE, L2 relative error, cosine similarity and SQNR; confusion matrices;
    per-layer quantisation error; host latency (median / p90 / p99), throughput and sizes.

    Examples:

      toolchain verify --reference runs/s1/model.keras --candidate runs/s1_int8.tflite --output runs/s1_verify

      toolchain verify -r runs/s1 -c model_int8.tflite --max-accuracy-drop 0.5 --min-agreement 0.98 -o out/v

      toolchain verify -c model_int8.tflite --dataset npz:test.npz --min-accuracy 0.95 -o out/device

      toolchain verify -r runs/s1 -c new_int8.tflite --baseline out/v/report.json --max-regression 0.5 -o out/v2

      toolchain verify -c model_int8.tflite --on qemu-m4 --samples 200 --min-target-agreement 1.0 -o out/m4

      toolchain verify -c new_int8.tflite --on qemu-m4 --samples 20 --baseline main/report.json --max-growth 2 \
        --max-flash 900000 --max-arena 65536 --max-instructions 30000000 -o out/footprint
    """
    from toolchain.errors import CheckFailed
    from toolchain.fsutil import atomic_write_json, check_output_dir, check_output_file, output_dir
    from toolchain.report import write_reports
    from toolchain.verify import VerifyOptions, failed_check_messages, make_baseline, verify

    options = VerifyOptions(dataset=dataset, input_scale=input_scale, split=split, max_samples=max_samples,
                            runtime=runtime, threads=threads,
                            top_k=top_k, layer_debug=layer_debug, layer_debug_samples=layer_debug_samples,
                            latency_runs=runs, latency_warmup=warmup, max_accuracy_drop=max_accuracy_drop,
                            min_agreement=min_agreement, min_accuracy=min_accuracy,
                            baseline=str(baseline) if baseline else None, max_regression=max_regression,
                            input_check=input_check, plots=plots, on_target=on, target_engine=engine,
                            target_samples=samples, min_target_agreement=min_target_agreement,
                            max_flash=max_flash, max_arena=max_arena, max_instructions=max_instructions,
                            max_growth=max_growth)
    options.validate()
    runner = None
    if on is not None:
        import functools

        from firmware_export.m4.target import supported_engine
        from toolchain.cli.app import progress_printer
        from toolchain.ontarget import verify_on_target

        ok, reason = supported_engine(engine)
        if not ok:
            raise UsageError(reason, received=f"--engine {engine}")
        _check_target(candidate, engine, tflm_dir)
        runner = functools.partial(verify_on_target, engine=engine, tflm_dir=tflm_dir, progress=progress_printer())
    elif engine != "c" or tflm_dir is not None:
        raise UsageError("--engine and --tflm-dir need --on qemu-m4", received="--on (missing)")
    options.check_gate(reference is not None)
    check_output_dir(output, force)
    if write_baseline is not None:
        check_output_file(write_baseline, force, option="--write-baseline")
    report = verify(reference, candidate, options, target_runner=runner).to_json()
    with output_dir(output, force) as tmp:
        write_reports(report, tmp, plots=plots)
    if write_baseline is not None:
        atomic_write_json(write_baseline, make_baseline(report))
    render_summary(report)
    console.print(f"reports: {output}/report.json, report.md, report.html")
    if write_baseline is not None:
        console.print(f"baseline: {write_baseline}")
    if not report["passed"]:
        raise CheckFailed(failed_check_messages(report))
    console.print("verify: PASSED")


def _check_target(candidate: Path, engine: str, tflm_dir: Optional[Path]) -> None:
    """Refuse what the on-target run would refuse, before the host evaluation spends its time."""
    if candidate.suffix.lower() != ".tflite":
        raise UsageError("--on qemu-m4 needs a .tflite candidate", received=str(candidate))
    if engine == "c":
        if tflm_dir is not None:
            raise UsageError("--tflm-dir is for --engine tflm or cmsis-nn", received=f"--engine c --tflm-dir {tflm_dir}")
        from firmware_export.cgen import load_engine

        load_engine(candidate)  # ExportError naming the unsupported operators
    else:
        from firmware_export.m4.tflm_lib import TflmTree

        TflmTree.open(tflm_dir)


def _out(text: str) -> None:
    console.print(text, markup=False)


def render_summary(report: dict) -> None:
    from toolchain.report import _fmt, _summary_rows, data_line

    _out(data_line(report))
    for w in report.get("warnings") or []:
        _out(f"warning: {w}")
    rows = _summary_rows(report)
    w = max(len(a) for a, _, _ in rows)
    w2 = max([len("reference")] + [len(b) for _, b, _ in rows])  # the header must fit a '–' column too
    _out(f"{'':<{w}}  {'reference':<{w2}}  candidate")
    for a, b, c in rows:
        _out(f"{a:<{w}}  {b:<{w2}}  {c}")
    comp = report.get("comparison")
    if comp:
        _out("candidate vs reference: agreement " + _fmt(comp["agreement"], "pct") + f", RMSE {_fmt(comp['rmse'])}"
             f", MAE {_fmt(comp['mae'])}, L2r {_fmt(comp['l2r'])}, cosine {_fmt(comp['cosine'], 'cos')}, "
             f"SQNR {_fmt(comp['sqnr_db'])} dB")
    if report.get("accuracy_drop_pp") is not None:
        _out(f"accuracy drop: {report['accuracy_drop_pp']:+.2f} pp")
    le = report["layer_errors"]
    if le["status"] == "ok" and le["worst"]:
        w0 = le["worst"][0]
        _out(f"worst layer: {w0['op']} {w0['name']} (RMSE/scale {_fmt(w0['rmse_over_scale'])})")
    elif le["status"] != "ok":
        _out(f"per-layer error: {le['status']} ({le['reason']})")
    t = report.get("target")
    if t:
        from toolchain.report import target_lines

        for line in target_lines(t):
            _out(line)
    for c in report["checks"]:
        v = "n/a" if c["value"] is None else f"{c['value']:.4g}"
        _out(f"check {c['name']}: {v} {c['op']} {c['threshold']:g} -> {'pass' if c['passed'] else 'FAIL'}")

