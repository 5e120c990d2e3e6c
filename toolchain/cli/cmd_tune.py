"""`toolchain tune`: architecture search for the most accurate int8 model that fits a board."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from toolchain.cli.app import app, console
from toolchain.tune.run import DEFAULT_EPOCHS, DEFAULT_TRIALS


def trial_line(t: dict[str, Any]) -> str:
    """One progress line per finished trial."""
    head = f"trial {t['number']:>3} {t['describe']:<44}"
    w = t.get("worker") or {}
    who = f"pid {w.get('pid')}" if w else ""
    if t["state"] == "PRUNED":
        p = t.get("pruned") or {}
        when = "before training" if p.get("before_training") else "after training"
        return f"{head} pruned {when}: {p.get('reason')}  {who}"
    if t["state"] != "COMPLETE":
        return f"{head} {t['state'].lower()}  {who}"
    r = t["result"]
    cost = (f"{r['instructions']:,} instr" if r.get("instructions") is not None else f"{r['macs']:,} MACs")
    verdict = "feasible" if t["feasible"] else "NOT feasible"
    return (f"{head} val int8 {100 * r['int8_val_accuracy']:.2f} %  test {100 * (r['int8_test_accuracy'] or 0):.2f} %"
            f"  flash {r['flash_bytes']:,} B  arena {r['c_engine_arena_bytes']:,} B  {cost}  {verdict}"
            f"  {t['seconds']:.1f} s (train {t['train_seconds']:.1f} s)  {who}")


@app.command("tune")
def tune_cmd(
    dataset: str = typer.Option("digits", "--dataset", "-d", help="digits | npz:PATH | idx:DIR | folder:DIR | "
                                                                  "keras:NAME"),
    target: str = typer.Option("nrf52840", "--target", "-t", help="Board to fit (see `toolchain targets`)."),
    output: Path = typer.Option(..., "--output", "-o", help="Study folder (study.db, trials/, winner/, pareto.json, "
                                                            "report.html); rerun the same command to resume."),
    trials: int = typer.Option(DEFAULT_TRIALS, "--trials", "-n", help="Trials in the study in total (finished ones "
                                                                      "are kept when resuming)."),
    max_latency_ms: Optional[float] = typer.Option(
        None, "--max-latency-ms", help="Limit on the board-clock lower bound (instructions counted on QEMU / clock); "
                                       "needs arm-none-eabi-gcc and qemu-system-arm."),
    max_accuracy_drop: Optional[float] = typer.Option(None, "--max-accuracy-drop",
                                                      help="Limit on float - int8 accuracy (validation split, pp)."),
    space: str = typer.Option("all", "--space", help="Search space: all | cnn | dscnn (depthwise-separable)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampler, splits, initialisation and calibration."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Study database shared by many machines (e.g. "
                                                                  "postgresql://... or sqlite:///path); default "
                                                                  "sqlite:///OUTPUT/study.db."),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", help="Local worker processes (default: one per "
                                                                        "core)."),
    epochs: int = typer.Option(DEFAULT_EPOCHS, "--epochs", "-e", help="Maximum training epochs per trial (early "
                                                                      "stopping on validation loss)."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="Training mini-batch size."),
    max_train_samples: Optional[int] = typer.Option(None, "--max-train-samples",
                                                    help="Train each trial on a subset (quick runs)."),
    on_target: Optional[bool] = typer.Option(
        None, "--on-target/--host-only", help="Measure each trial's C engine on the emulated Cortex-M4F (flash, RAM, "
                                              "instructions). Default: when the Arm toolchain and QEMU are on PATH."),
) -> None:
    """Search the seed CNN families for the most accurate int8 model that fits the board; print the Pareto front.

    Each trial draws an architecture (blocks of conv -> ReLU -> pool, filters, kernel 3/5, stride, padding, dense
    width, dropout, input resolution; plain or depthwise-separable), is pruned before training when its int8
    weights exceed the flash or its activations the RAM, else trains briefly, is quantised to int8 and measured
    (C engine memory plan, TFLM arena, on QEMU: flash, RAM, instructions). The winner's run folder is
    OUTPUT/winner/ (export and verify it like any run).

    Examples:

      toolchain tune --dataset digits --target nrf52840 --trials 12 --output runs/tune

      toolchain tune --output runs/tune --trials 24        # resume the same study with 12 more trials

      toolchain tune --output runs/tune --storage postgresql://user@db/tune --workers 2   # on every machine
    """
    from toolchain.tune.pareto import table
    from toolchain.tune.run import TuneOptions, run_tune

    options = TuneOptions(output=str(output), dataset=dataset, target=target, trials=trials,
                          max_latency_ms=max_latency_ms, max_accuracy_drop=max_accuracy_drop, space=space, seed=seed,
                          storage=storage, workers=workers, epochs=epochs, batch_size=batch_size,
                          max_train_samples=max_train_samples, on_target=on_target)
    s = run_tune(options, on_trial=lambda t: console.print(trial_line(t), markup=False))
    c = s["counts"]
    console.print("")
    console.print(f"tune: {c['trials']} trials ({c['new_this_run']} run now, {c['trained']} trained, "
                  f"{c['pruned_before_training']} pruned before training, {c['feasible']} feasible) in "
                  f"{s['wall_seconds']:.1f} s", markup=False)
    rows = table(s["trials"], s["cost_axis"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    console.print("Pareto front (feasible trials; accuracy up, flash and cost down):", markup=False)
    for r in rows:
        console.print("  " + "  ".join(c.ljust(w) if i == 1 else c.rjust(w) for i, (c, w) in
                                       enumerate(zip(r, widths))), markup=False)
    w = s["winner"]
    if w is None:
        console.print("no feasible trial: nothing fits the board within the limits (see pareto.json)", markup=False)
    else:
        r = w["result"]
        console.print(f"winner: trial {w['number']} ({w['describe']}): int8 accuracy "
                      f"{100 * r['int8_test_accuracy']:.2f} % test / {100 * r['int8_val_accuracy']:.2f} % val, "
                      f"flash {r['flash_bytes']:,} B, RAM {r['ram_bytes']:,} B, C engine arena "
                      f"{r['c_engine_arena_bytes']:,} B, TFLM arena {r['tflm_arena_bytes']:,} B "
                      f"({r['fit_engine']})", markup=False)
        if w["run_folder"]:
            console.print(f"  run folder {output}/winner/ (toolchain export {output}/winner/model_int8.tflite ...)",
                          markup=False)
        else:
            console.print(f"  run folder {r['run']} on {(w.get('worker') or {}).get('host')} (trained by another "
                          "machine)", markup=False)
    console.print(f"  {output}/pareto.json, {output}/report.html", markup=False)
