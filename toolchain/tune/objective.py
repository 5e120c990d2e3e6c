"""One trial of ``toolchain tune``: draw an architecture, prune it from its static costs or train, quantise and
measure it.

Before training (figures computed from the architecture, ``toolchain.tune.space.static_costs``):

* flash: int8 weights + int32 biases > the board's flash -> pruned (every engine stores at least these bytes);
* RAM: the largest input + output activation pair of one layer + the model's I/O buffers > the board's RAM;
* latency (``max_latency_ms``): MACs / 2 / clock > the limit (a Cortex-M4 does at most 2 MACs per instruction,
  SMLAD, and at least one cycle per instruction, so this is a lower bound on the time);
* an architecture whose feature map shrinks below 1x1.

A pruned trial has no training time, no run folder and ``user_attrs["pruned"] = {reason, ...}``.

Otherwise the trial trains ``trials/NNNN/`` with ``toolchain.train.train`` (a normal run folder), quantises it
to int8 with ``toolchain.quantise.quantise`` (``model_int8.tflite`` + sidecar), and measures: int8 accuracy on
the validation split (the objective; LiteRT reference kernels) and on the test split (quantise's evaluation), the C
engine's planned arena (``firmware_export.cgen``), TFLM's arena (tflite-micro, ``firmware_export.arena``) and, on
target (arm-none-eabi-gcc + qemu-system-arm), the C engine's flash and RAM measured in the linked Cortex-M4F image
and its instructions per inference on QEMU (``TARGET_SAMPLES`` validation samples, outputs compared with the host
int8 model). The trial is feasible when it fits the board (on target: the measured
C engine flash and RAM + I/O; otherwise TFLM: model + the profile's runtime **estimate**, measured arena + I/O),
its float -> int8 drop on the validation split is within ``max_accuracy_drop`` and its board-clock lower bound is
within ``max_latency_ms``; violations go to ``user_attrs["constraints"]`` (> 0 = violated) for the sampler.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.errors import ToolchainError
from toolchain.tune.space import InvalidArchitecture, static_costs, suggest

TARGET_SAMPLES = 4  # validation samples run on QEMU per trial (instructions per inference: their mean)


@dataclass
class TrialContext:
    board: Any                 # firmware_export.targets.Target
    dataset: str
    space: str
    trials_dir: Path
    channels: int
    num_classes: int
    epochs: int
    batch_size: int
    seed: int
    max_train_samples: int | None
    max_accuracy_drop: float | None
    max_latency_ms: float | None
    on_target: bool


def _prune(trial, reason: str, violations: list[float], **figures: Any):
    import optuna

    trial.set_user_attr("pruned", {"reason": reason, "before_training": True, **figures})
    trial.set_user_attr("constraints", [max(v, 1e-6) for v in violations] or [1.0])
    trial.set_user_attr("train_seconds", 0.0)
    raise optuna.TrialPruned(reason)


def precheck(arch, ctx: TrialContext) -> tuple[dict[str, int] | None, str | None, list[float]]:
    """(static costs, reason to prune or None, violation ratios) from the architecture alone."""
    try:
        costs = static_costs(arch, ctx.channels, ctx.num_classes)
    except InvalidArchitecture as exc:
        return None, f"invalid architecture: {exc}", [1.0]
    b = ctx.board
    reasons, viol = [], []
    if costs["int8_weight_bytes"] > b.flash_bytes:
        reasons.append(f"int8 weights + biases {costs['int8_weight_bytes']:,} B > {b.key} flash {b.flash_bytes:,} B")
        viol.append(costs["int8_weight_bytes"] / b.flash_bytes - 1)
    ram = costs["arena_lower_bound_bytes"] + costs["io_bytes"]
    if ram > b.ram_bytes:
        reasons.append(f"arena lower bound {costs['arena_lower_bound_bytes']:,} B + I/O {costs['io_bytes']:,} B > "
                       f"{b.key} RAM {b.ram_bytes:,} B")
        viol.append(ram / b.ram_bytes - 1)
    if ctx.max_latency_ms is not None:
        ms = costs["macs"] / 2 / (b.clock_mhz * 1e3)
        if ms > ctx.max_latency_ms:
            reasons.append(f"latency lower bound {ms:.2f} ms (MACs / 2 / clock) > --max-latency-ms "
                           f"{ctx.max_latency_ms:g}")
            viol.append(ms / ctx.max_latency_ms - 1)
    return costs, "; ".join(reasons) or None, viol


def _measure(tflite: Path, x_val: np.ndarray, ctx: TrialContext, io_bytes: int) -> dict[str, Any]:
    from firmware_export.arena import measure_arena
    from firmware_export.cgen import load_engine
    from firmware_export.targets import fit_report
    from toolchain.tflite_model import parse_tflite

    data = tflite.read_bytes()
    engine = load_engine(tflite)
    m: dict[str, Any] = {"tflite_bytes": len(data), "c_engine_arena_bytes": int(engine.plan.arena_bytes),
                         "c_engine_weight_bytes": int(engine.weight_bytes), "macs": int(engine.macs)}
    arena = measure_arena(tflite)
    m["tflm_arena_bytes"] = int(arena.recommended_bytes)
    n_ops = len({op.opcode for op in parse_tflite(data).operators})
    fit = fit_report(ctx.board, len(data), m["tflm_arena_bytes"], io_bytes, n_ops)
    m["tflm"] = {"flash_bytes": fit.flash_bytes, "ram_bytes": fit.ram_bytes, "fits": fit.fits,
                 "flash_source": f"model + runtime estimate {fit.runtime_estimate_bytes:,} B (estimate)"}
    if ctx.on_target:
        from toolchain.ontarget import run_and_compare
        from toolchain.runtime import open_runtime, quantize_input

        detail = open_runtime(data, runtime="litert", reference_kernels=True).input_details[0]
        q = quantize_input(x_val[:TARGET_SAMPLES], detail)
        run, cmp = run_and_compare(tflite, "c", [q[i:i + 1] for i in range(len(q))])
        s = run.summary()
        m["target_samples"], m["target_identical_pct"] = len(q), cmp["identical_pct"]
        flash = s["flash"]["model"] + s["flash"]["runtime"]
        ram = int(s["ram_bytes"]) + io_bytes
        m["c_engine"] = {"flash_bytes": int(flash), "ram_bytes": ram,
                         "fits": flash <= ctx.board.flash_bytes and ram <= ctx.board.ram_bytes,
                         "flash_source": "measured in the Cortex-M4F ELF (model constants + engine code)",
                         "ram_source": "measured: arena + static data + stack + I/O buffers"}
        m["instructions"] = int(s["instructions_per_inference"])
        m["lower_bound_ms"] = round(m["instructions"] / (ctx.board.clock_mhz * 1e3), 4)
        m["flash_bytes"], m["ram_bytes"], m["fits"] = flash, ram, m["c_engine"]["fits"]
        m["fit_engine"] = "C engine (measured on QEMU)"
    else:
        m["flash_bytes"], m["ram_bytes"], m["fits"] = fit.flash_bytes, fit.ram_bytes, fit.fits
        m["fit_engine"] = "TFLM (runtime flash estimated)"
    return m


def _val_accuracy(tflite: Path, keras_path: Path) -> tuple[float, np.ndarray]:
    from toolchain.data import prepare_data
    from toolchain.metadata import load_run_metadata
    from toolchain.quantise import tflite_predict
    from toolchain.specs import RunRecord

    record = RunRecord.from_metadata(load_run_metadata(keras_path))
    val = prepare_data(record).split("val")
    return float(np.mean(np.argmax(tflite_predict(tflite.read_bytes(), val.x), axis=1) == val.y)), val.x


def objective(trial, ctx: TrialContext, sampler) -> float:
    """The trial's int8 validation accuracy (the value Optuna maximises); everything else in user_attrs."""
    from toolchain.tune.study import SurplusTrial, worker_id

    t0 = time.perf_counter()
    trial.set_user_attr("worker", worker_id())
    if sampler.surplus:
        trial.set_user_attr("surplus", True)
        raise SurplusTrial(f"trial {trial.number} is beyond --trials")
    arch = suggest(trial, ctx.space)
    trial.set_user_attr("architecture", arch.to_dict())
    costs, reason, viol = precheck(arch, ctx)
    if costs is not None:
        trial.set_user_attr("static", costs)
    if reason:
        _prune(trial, reason, viol)
    try:
        return _train_and_measure(trial, arch, costs, ctx, t0)
    except ToolchainError as exc:  # e.g. an operator an engine refuses: the trial is out, the search goes on
        trial.set_user_attr("constraints", [1.0])
        trial.set_user_attr("pruned", {"reason": f"error: {exc}", "before_training": False})
        import optuna

        raise optuna.TrialPruned(str(exc)) from exc


def _train_and_measure(trial, arch, costs, ctx: TrialContext, t0: float) -> float:
    from toolchain.quantise import QuantConfig, quantise
    from toolchain.train import TrainOptions, train
    from toolchain.tune.space import ArchitectureBuilder

    run = ctx.trials_dir / f"{trial.number:04d}"
    meta = train(None, ctx.dataset, run, TrainOptions(epochs=ctx.epochs, batch_size=ctx.batch_size, seed=ctx.seed,
                                                     max_train_samples=ctx.max_train_samples),
                 force=True, architecture=ArchitectureBuilder(arch, ctx.channels))
    train_s = time.perf_counter() - t0
    trial.set_user_attr("train_seconds", round(train_s, 2))
    tflite = run / "model_int8.tflite"
    side = quantise(run / "model.keras", tflite, config=QuantConfig(seed=ctx.seed), force=True)
    val_acc, x_val = _val_accuracy(tflite, run / "model.keras")
    m = _measure(tflite, x_val, ctx, costs["io_bytes"])
    ev = side.get("evaluation") or {}
    drop = round((meta["float_val_accuracy"] - val_acc) * 100, 4)
    viol = [0.0 if m["fits"] else max(m["flash_bytes"] / ctx.board.flash_bytes,
                                      m["ram_bytes"] / ctx.board.ram_bytes) - 1]
    if ctx.max_accuracy_drop is not None:
        viol.append(drop - ctx.max_accuracy_drop)
    if ctx.max_latency_ms is not None:
        viol.append(m["lower_bound_ms"] / ctx.max_latency_ms - 1)
    trial.set_user_attr("result", {
        "run": str(run), "params": meta["params"], "epochs_run": meta["epochs_run"],
        "float_val_accuracy": meta["float_val_accuracy"], "int8_val_accuracy": val_acc, "val_drop_pp": drop,
        "float_test_accuracy": ev.get("float_accuracy"), "int8_test_accuracy": ev.get("tflite_accuracy"),
        "test_samples": ev.get("samples"), **m})
    trial.set_user_attr("constraints", [float(v) for v in viol])
    trial.set_user_attr("feasible", all(v <= 0 for v in viol))
    trial.set_user_attr("seconds", round(time.perf_counter() - t0, 2))
    return val_acc


def context_from(ctx: dict[str, Any]) -> TrialContext:
    """The TrialContext of a worker from the picklable dict ``run_tune`` passes."""
    from firmware_export.targets import Target

    b = dict(ctx["board"])
    b["aliases"] = tuple(b.get("aliases", ()))
    return TrialContext(board=Target(**b), **{k: (Path(v) if k == "trials_dir" else v) for k, v in ctx.items()
                                             if k != "board"})
