"""``toolchain tune``: architecture search for the most accurate int8 model that fits a board.

``run_tune(TuneOptions(...), on_trial=callback) -> summary`` (also ``DIR/pareto.json``)::

    DIR/study.db        the Optuna study (unless --storage names another database); rerun to resume
    DIR/trials/NNNN/    the run folder of every trained trial (model.keras, metadata.json, model_int8.tflite, ...)
    DIR/winner/         a copy of the winner's run folder (``toolchain export/verify`` take it as any run folder)
    DIR/pareto.json     settings, every trial, the Pareto front, the winner
    DIR/report.html     the Pareto table and plot (plots/pareto.png)

Workers are local processes (``workers``, default: one per core), each running trials of the shared study; the
same study can take workers from other machines with ``--storage`` (e.g. a PostgreSQL URL, the same command on
each). ``on_trial(record)`` is called in this process once per trial that finished during the run.
Determinism, resuming and surplus trials: ``toolchain.tune.study``; what a trial does: ``toolchain.tune.objective``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import toolchain
from toolchain.errors import UsageError
from toolchain.tune.workers import default_workers

log = logging.getLogger("toolchain.tune")

DEFAULT_TRIALS = 12
DEFAULT_EPOCHS = 15
SUMMARY_FORMAT = "toolchain-tune/1"


@dataclass
class TuneOptions:
    output: str
    dataset: str = "digits"
    target: str = "nrf52840"
    trials: int = DEFAULT_TRIALS
    max_latency_ms: float | None = None
    max_accuracy_drop: float | None = None
    space: str = "all"
    seed: int = 0
    storage: str | None = None
    workers: int | None = None
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = 32
    max_train_samples: int | None = None
    on_target: bool | None = None      # None: when arm-none-eabi-gcc/g++ and qemu-system-arm are on PATH
    board: Any = None                  # a firmware_export.targets.Target instead of ``target`` (tests)

    def validate(self) -> None:
        from toolchain.tune.space import check_space

        if self.trials < 1:
            raise UsageError("--trials must be >= 1", received=self.trials)
        if self.workers is not None and self.workers < 1:
            raise UsageError("--workers must be >= 1", received=self.workers)
        if self.epochs < 1:
            raise UsageError("--epochs must be >= 1", received=self.epochs)
        if self.batch_size < 1:
            raise UsageError("--batch-size must be >= 1", received=self.batch_size)
        if self.seed < 0:
            raise UsageError("--seed must be >= 0", received=self.seed)
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise UsageError("--max-train-samples must be >= 1", received=self.max_train_samples)
        if self.max_latency_ms is not None and not self.max_latency_ms > 0:
            raise UsageError("--max-latency-ms must be > 0", received=self.max_latency_ms)
        if self.max_accuracy_drop is not None and not 0 <= self.max_accuracy_drop <= 100:
            raise UsageError("--max-accuracy-drop must be in [0, 100] percentage points",
                             received=self.max_accuracy_drop)
        check_space(self.space)


def _on_target(options: TuneOptions) -> bool:
    from firmware_export.m4.tools import tools_available

    have = tools_available()
    if options.on_target and not have:
        from toolchain.errors import RuntimeUnavailableError

        raise RuntimeUnavailableError("--on-target needs arm-none-eabi-gcc, arm-none-eabi-g++ and qemu-system-arm",
                                      received="--on-target", hint="install them, or run with --host-only")
    on = have if options.on_target is None else bool(options.on_target)
    if options.max_latency_ms is not None and not on:
        raise UsageError("--max-latency-ms needs instructions measured on the emulated Cortex-M4F (arm-none-eabi-gcc "
                         "and qemu-system-arm on PATH, not --host-only)", received=f"--max-latency-ms "
                                                                                   f"{options.max_latency_ms:g}")
    return on


def _check_output(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError("output path exists and is not a directory", received=f"--output {out}")
    if out.is_dir() and any(out.iterdir()) and not (out / "pareto.json").exists() and not (out / "study.db").exists():
        raise UsageError("output folder exists and is not a tune study (no study.db or pareto.json)",
                         received=f"--output {out}", hint="use an empty or new folder, or the folder of an earlier "
                                                          "`toolchain tune` to resume it")


def _record(t) -> dict[str, Any]:
    from toolchain.tune.space import Architecture

    ua = t.user_attrs
    arch = ua.get("architecture")
    return {"number": t.number, "state": t.state.name, "value": t.value, "params": dict(t.params),
            "describe": Architecture.from_dict(arch).describe() if arch else "–", "architecture": arch,
            "worker": ua.get("worker"), "pruned": ua.get("pruned"), "static": ua.get("static"),
            "result": ua.get("result"), "feasible": bool(ua.get("feasible")), "constraints": ua.get("constraints"),
            "train_seconds": ua.get("train_seconds"), "seconds": ua.get("seconds"),
            "surplus": bool(ua.get("surplus")), "retry_of": t.system_attrs.get("failed_trial")}


def run_tune(options: TuneOptions, on_trial: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    from toolchain.specs import DatasetSpec
    from toolchain.tune import study as tstudy

    options.validate()
    t_start = time.perf_counter()
    if options.board is not None:
        board = options.board
    else:
        from firmware_export.targets import get_target

        board = get_target(options.target)
    spec = DatasetSpec.parse(options.dataset)
    on_target = _on_target(options)
    out = Path(options.output)
    _check_output(out)
    from toolchain import data as tdata

    ds = tdata.load_dataset(spec)  # class and channel count (the trials load it again with the training split)
    channels = int(ds.sample_shape[-1]) if len(ds.sample_shape) == 3 else 1
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    url = options.storage or f"sqlite:///{out.resolve() / 'study.db'}"
    workers = options.workers or default_workers()
    settings = {"format": tstudy.FORMAT, "dataset": spec.text, "target": board.key, "space": options.space,
                "seed": options.seed, "epochs": options.epochs, "batch_size": options.batch_size,
                "max_train_samples": options.max_train_samples, "max_accuracy_drop": options.max_accuracy_drop,
                "max_latency_ms": options.max_latency_ms, "on_target": on_target, "lag": workers,
                "startup_trials": tstudy.STARTUP_TRIALS}
    try:
        study = tstudy.open_study(url, settings, create=True)
    except UsageError:
        if created and not any(out.iterdir()):
            out.rmdir()  # leave nothing behind for a storage that cannot be opened
        raise
    settings = tstudy.settings_of(study)
    requeued = tstudy.recover(study)
    if requeued:
        log.info("resuming: interrupted trial(s) %s queued again with the same architecture",
                 ", ".join(map(str, requeued)))
    before = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    ctx = {"board": asdict(board), "dataset": spec.text, "space": options.space, "trials_dir": str(out / "trials"),
           "channels": channels, "num_classes": int(ds.num_classes), "epochs": options.epochs,
           "batch_size": options.batch_size, "seed": options.seed, "max_train_samples": options.max_train_samples,
           "max_accuracy_drop": options.max_accuracy_drop, "max_latency_ms": options.max_latency_ms,
           "on_target": on_target}
    remaining = options.trials - tstudy.counted(study)
    if remaining > 0:
        from toolchain.tune.workers import run_workers

        run_workers(url, options.trials, ctx, settings, min(workers, remaining), study, before, _record, on_trial)
    from optuna.trial import TrialState

    every = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    trials = [_record(t) for t in every if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    interrupted = [t.number for t in every if t.state == TrialState.FAIL and not t.user_attrs.get("surplus")]
    from toolchain.tune.report import finish

    return finish(out, trials, board, settings, options.trials, before, on_target, time.perf_counter() - t_start,
                  {"format": SUMMARY_FORMAT, "toolchain_version": toolchain.__version__,
                   "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                   "storage": options.storage or "sqlite:///DIR/study.db", "workers": min(workers, max(remaining, 1)),
                   "interrupted_trials": interrupted})
