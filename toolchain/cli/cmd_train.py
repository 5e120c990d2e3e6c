"""`toolchain train`: train a zoo model on a dataset into a run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from toolchain.cli.app import app, console


@app.command("train")
def train_cmd(
    model: Optional[str] = typer.Argument(None, help="Zoo model name (see `toolchain models`). Optional with "
                                                     "--init-from."),
    dataset: str = typer.Option("digits", "--dataset", "-d",
                                help="digits | npz:PATH | idx:DIR | folder:DIR | keras:NAME"),
    input_scale: Optional[float] = typer.Option(None, "--input-scale",
                                                help="Declare the data's normalisation: raw x SCALE = [0, 1] value "
                                                     "(default: the source's own, or inferred from dtype / range)."),
    output: Path = typer.Option(..., "--output", "-o", help="Run folder to create."),
    epochs: int = typer.Option(10, "--epochs", "-e", help="Maximum epochs."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="Global mini-batch size."),
    learning_rate: float = typer.Option(1e-3, "--learning-rate", "--lr", help="Adam learning rate."),
    patience: int = typer.Option(3, "--patience",
                                 help="Early stopping: epochs without validation-loss improvement (0 = off). "
                                      "The best weights are restored."),
    seed: int = typer.Option(0, "--seed", help="Seed for splits, initialisation and shuffling."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Fraction of the training data for validation."),
    augment: bool = typer.Option(False, "--augment", help="Random shift/rotation/zoom while training only."),
    init_from: Optional[str] = typer.Option(None, "--init-from",
                                            help="Start from a trained model (run folder or .keras file)."),
    freeze_conv: bool = typer.Option(False, "--freeze-conv",
                                     help="With --init-from: freeze the conv backbone, train a new head."),
    strategy: Optional[str] = typer.Option(None, "--strategy",
                                           help="Distribution strategy: mirrored (this machine's devices) | "
                                                "multi-worker (several processes/machines; cluster from --workers "
                                                "or TF_CONFIG)."),
    workers: Optional[str] = typer.Option(None, "--workers",
                                          help="Multi-worker: every worker's host:port, comma-separated, the chief "
                                               "first (instead of TF_CONFIG). The same list on every worker."),
    worker_index: Optional[int] = typer.Option(None, "--worker-index",
                                               help="Multi-worker with --workers: this worker's position in the "
                                                    "list (0 = chief, which writes the run folder)."),
    cluster_timeout: Optional[float] = typer.Option(None, "--cluster-timeout",
                                          help="Multi-worker: seconds to wait for every worker to start, then "
                                               "exit 2 (default 600)."),
    input_shape: Optional[str] = typer.Option(None, "--input-shape", help="Override the model input, H,W,C."),
    max_train_samples: Optional[int] = typer.Option(None, "--max-train-samples",
                                                    help="Train on a class-balanced subset of this size."),
    eager: bool = typer.Option(False, "--eager", help="Run eagerly (no graph tracing): faster for a few steps, "
                                                      "slower for real training."),
    force: bool = typer.Option(False, "--force", "-f", help="Replace an existing output folder."),
) -> None:
    """Train a model and write model.keras, metadata.json, history.json and training.png.

    The test accuracy in metadata.json is measured on the held-out test split with the best (restored) weights.

    Examples:

      toolchain train seed001_basic_cnn --dataset digits --epochs 5 --output runs/s1

      toolchain train resnet8 --dataset keras:cifar10 --augment --epochs 30 --output runs/resnet8

      toolchain train --init-from runs/s1 --freeze-conv --dataset npz:letters.npz --output runs/s1_letters

      toolchain train seed004_cs231n --input-shape 32,32,3 --strategy mirrored --output runs/cs231n

      toolchain train seed001_basic_cnn --strategy multi-worker --workers h0:2222,h1:2222 --worker-index 0 -o runs/mw
    """
    from toolchain.specs import DatasetSpec
    from toolchain.train import TrainOptions, train

    options = TrainOptions(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, patience=patience,
                           seed=seed, augment=augment, init_from=init_from, freeze_conv=freeze_conv,
                           strategy=strategy, val_fraction=val_fraction, input_shape=input_shape,
                           max_train_samples=max_train_samples, run_eagerly=eager, workers=workers,
                           worker_index=worker_index, cluster_timeout=cluster_timeout)
    meta = train(model, DatasetSpec.parse(dataset, input_scale), output, options, force=force)
    t = meta["training"]
    if t.get("worker_index", 0) != 0:
        console.print(f"worker {t['worker_index']} of {t['workers']} (multi-worker strategy, replicas: "
                      f"{t['replicas']}): trained {meta['epochs_run']} epochs in "
                      f"{t['seconds']:.1f} s; the run folder {output} is written by the chief (worker 0) only",
                      markup=False)
        return
    lines = [
        f"trained {meta['model']} on {meta['dataset']}: float test accuracy "
        f"{meta['float_test_accuracy'] * 100:.2f} % ({meta['samples']['test']} test samples)",
        f"params {meta['params']:,}; epochs run {meta['epochs_run']} (best {meta['best_epoch']}); "
        f"{t['seconds']:.1f} s" + (f"; {t['strategy']} strategy, replicas: {t['replicas']}" if t.get("strategy") else "")
        + (f", workers: {t['workers']}" if t.get("strategy") == "multi-worker" else ""),
        f"output: {output} (model.keras, metadata.json, history.json, training.png)",
    ]
    for line in lines:
        console.print(line, markup=False)
