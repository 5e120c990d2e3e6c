"""`toolchain bench`: latency / throughput / memory of one model on one runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from toolchain.cli.app import app, console


@app.command("bench")
def bench_cmd(
    model: Path = typer.Argument(..., help=".tflite (any installed runtime) or .keras (Keras float reference)."),
    runtime: str = typer.Option("auto", "--runtime",
                                help="auto | litert | tflite-runtime | tensorflow | tflm | keras | c-host | qemu-m4."),
    threads: Optional[int] = typer.Option(None, "--threads", "-t", help="Interpreter threads (default: runtime's)."),
    runs: int = typer.Option(200, "--runs", "-n", help="Timed single-sample inferences."),
    warmup: int = typer.Option(20, "--warmup", help="Untimed warm-up inferences."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d",
                                          help="Use preprocessed test samples of this dataset instead of random "
                                               "inputs (e.g. npz:test.npz)."),
    engine: str = typer.Option("c", "--engine",
                               help="qemu-m4 only: c (standalone C engine) | tflm (TFLM reference kernels) | "
                                    "cmsis-nn (TFLM + CMSIS-NN)."),
    tflm_dir: Optional[Path] = typer.Option(None, "--tflm-dir",
                                            help="TFLM source tree for --engine tflm/cmsis-nn (default: "
                                                 "$TOOLCHAIN_TFLM_DIR); its library is built once and cached."),
    target: Optional[str] = typer.Option(None, "--target",
                                         help="qemu-m4 only: board whose clock turns instructions into a latency "
                                              "lower bound (see `toolchain targets`)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the result as JSON to this file."),
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite an existing --json file."),
) -> None:
    """Measure single-sample latency (min / median / p90 / p99), throughput and peak RSS of MODEL.

    Works on an edge device with only numpy, typer and a TFLite runtime (tflite-runtime or ai-edge-litert)
    installed. c-host / qemu-m4 run the generated standalone C engine on this host / a Cortex-M4 in QEMU.

    Examples:

      toolchain bench runs/demo/model_int8.tflite

      toolchain bench model_int8.tflite --runtime tflite-runtime --threads 1 --runs 500 --json bench.json

      toolchain bench runs/demo/train/model.keras --runs 50

      toolchain bench model_int8.tflite --runtime qemu-m4

      toolchain bench model_int8.tflite --runtime qemu-m4 --engine cmsis-nn --tflm-dir ~/tflm --target nrf52840
    """
    from toolchain.bench import bench, format_bench
    from toolchain.cli.app import progress_printer
    from toolchain.errors import UsageError
    from toolchain.fsutil import atomic_write_json, check_output_file

    if json_out is not None:
        check_output_file(json_out, force, option="--json")
    if runtime != "qemu-m4":
        given = [o for o, v in (("--engine", engine != "c"), ("--tflm-dir", tflm_dir), ("--target", target)) if v]
        if given:
            raise UsageError(f"{', '.join(given)} only apply to --runtime qemu-m4", received=f"--runtime {runtime}")
    result = bench(model, runtime=runtime, threads=threads, runs=runs, warmup=warmup, dataset=dataset,
                   engine=engine, tflm_dir=tflm_dir, board=target,
                   progress=progress_printer() if runtime == "qemu-m4" else None)
    rows = format_bench(result)
    w = max(len(a) for a, _ in rows)
    for a, b in rows:
        console.print(f"{a:<{w}}  {b}", markup=False)
    if json_out is not None:
        atomic_write_json(json_out, result)
        console.print(f"json: {json_out}")
