"""`toolchain pipeline`: the main job (train -> int8 -> firmware -> verify, on the board) into one run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from toolchain.cli.app import app, console
from toolchain.pipeline import DEFAULT_EPOCHS, DEFAULT_MODEL, DEFAULT_TARGET, DEFAULT_TARGET_SAMPLES


@app.command("pipeline")
def pipeline_cmd(
    output: Path = typer.Option(..., "--output", "-o", help="Run folder to create (train/, model_int8.tflite, "
                                                             "firmware/, c_engine/, verify/, pipeline.json)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Zoo model name (see `toolchain models`)."),
    dataset: str = typer.Option("digits", "--dataset", "-d",
                                help="digits | npz:PATH | idx:DIR | folder:DIR | keras:NAME"),
    epochs: int = typer.Option(DEFAULT_EPOCHS, "--epochs", "-e", help="Maximum training epochs."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="Training mini-batch size."),
    seed: int = typer.Option(0, "--seed", help="Seed for splits, initialisation and calibration."),
    calibration_samples: int = typer.Option(300, "--calibration-samples", help="Int8 calibration samples."),
    max_accuracy_drop: float = typer.Option(1.0, "--max-accuracy-drop",
                                            help="Gate: float - int8 accuracy, percentage points."),
    min_accuracy: Optional[float] = typer.Option(None, "--min-accuracy",
                                                 help="Gate: minimum int8 accuracy (fraction, e.g. 0.95)."),
    layer_debug: bool = typer.Option(True, "--layer-debug/--no-layer-debug",
                                     help="Per-layer quantisation error in the verify report."),
    runs: int = typer.Option(100, "--runs", help="Timed single-sample inferences per model in verify."),
    target: str = typer.Option(DEFAULT_TARGET, "--target", "-t",
                               help="Board to fit (see `toolchain targets`): flash and RAM % for TFLM and the C engine."),
    c_engine: bool = typer.Option(True, "--c-engine/--no-c-engine", help="Also generate the standalone C engine."),
    on_target: Optional[bool] = typer.Option(
        None, "--on-target/--host-only",
        help="Run the test samples through the C engine on the emulated Cortex-M4F (QEMU). Default: when "
             "arm-none-eabi-gcc/g++ and qemu-system-arm are on PATH."),
    target_samples: int = typer.Option(DEFAULT_TARGET_SAMPLES, "--target-samples",
                                       help="Test samples run on the emulated target."),
    tflm_dir: Optional[Path] = typer.Option(None, "--tflm-dir",
                                            help="TFLM source tree: also measure the TFLM arena on the target "
                                                 "(TFLM + CMSIS-NN, library built once and cached)."),
    force: bool = typer.Option(False, "--force", "-f", help="Replace an existing run folder."),
) -> None:
    """Train, quantise to int8, export for the board and verify, into one run folder; exit 1 if the gate fails.

    Stages: train (train/), int8 post-training quantisation calibrated on the training split (model_int8.tflite),
    TFLM export with a measured tensor arena and the board fit (firmware/), the standalone C engine (c_engine/),
    verify against the float model (verify/report.html) and, with the Arm toolchain and QEMU, the test samples
    through the C engine on the emulated Cortex-M4F (instructions per inference, board-clock lower bound).
    The summary (accuracies, sizes, both arenas, flash/RAM % of the board, on-target figures, latencies) is
    printed and written to pipeline.json.

    Examples:

      toolchain pipeline --output runs/demo

      toolchain pipeline --model seed004_cs231n --target stm32l4r5zi --epochs 8 --output runs/s4 --force

      toolchain pipeline --dataset npz:my_data.npz --min-accuracy 0.9 --output runs/custom
    """
    from toolchain.errors import CheckFailed
    from toolchain.pipeline import PipelineOptions, run_pipeline, summary_rows

    options = PipelineOptions(output=str(output), model=model, dataset=dataset, epochs=epochs,
                              batch_size=batch_size, seed=seed, calibration_samples=calibration_samples,
                              max_accuracy_drop=max_accuracy_drop, min_accuracy=min_accuracy,
                              layer_debug=layer_debug, latency_runs=runs, force=force, target=target,
                              c_engine=c_engine, on_target=on_target, target_samples=target_samples,
                              tflm_dir=None if tflm_dir is None else str(tflm_dir))
    summary = run_pipeline(options)
    rows = summary_rows(summary)
    w = max(len(a) for a, _ in rows)
    console.print("")
    console.print("pipeline summary", markup=False)
    for a, b in rows:
        console.print(f"  {a:<{w}}  {b}", markup=False)
    console.print(f"  {'artifacts':<{w}}  {output}/ (" + ", ".join(summary["artifacts"].values())
                  + ", pipeline.json)", markup=False)
    if not summary["passed"]:
        raise CheckFailed([f"{c['name']}: {c['metric']} = {c['value']} (required {c['op']} {c['threshold']:g})"
                           for c in summary["checks"] if not c["passed"]])
