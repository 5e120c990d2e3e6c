"""``quantise --auto``: the smallest quantised model within an accuracy budget (and a board), by measurement.

``auto_quantise(model_path, output, options) -> sidecar`` (the chosen model written like ``quantise`` writes it,
with ``quantization.auto`` = every candidate tried).

Search (deterministic for a given model, data and seed; accuracy on the **validation** split with LiteRT's
reference kernels, the budget = float validation accuracy - candidate validation accuracy, in points):

1. ``int8``: per-channel int8 (the base every other candidate is derived from).
2. ``int4 (all)``: every CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED weight int4 (``toolchain.quant_int4``).
3. Per-layer sensitivity: each layer alone int4, its accuracy drop measured.
4. Greedy: layers in order of weights saved (largest first) made int4 one by one, a layer kept int8 when adding it
   breaks the budget; the least sensitive layers come first among equals.
5. When even int8 misses the budget: ``int16x8`` (16x8 activations; the converter quantises the whole graph, so
   int16 is global, not per layer) and, with ``allow_qat``, int8 after quantisation-aware training.

A candidate fits ``target`` when flash = .tflite bytes + the board profile's runtime estimate (an **estimate**,
labelled so) <= the board's flash, and RAM = the smallest arena of an engine that runs it (the C engine's offline
plan, or TFLM's arena measured with tflite-micro) + one I/O copy <= the board's RAM. The smallest candidate (file
bytes) within the budget that fits is chosen; when none is, the error says exactly why for the closest one.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.errors import ToolchainError, UsageError

log = logging.getLogger("toolchain.quantise")


@dataclass(frozen=True)
class AutoOptions:
    max_accuracy_drop: float = 1.0   # percentage points vs the float model on the validation split
    target: str | None = None
    allow_qat: bool = False

    def validate(self) -> None:
        if not 0 <= self.max_accuracy_drop <= 100:
            raise UsageError("--max-accuracy-drop must be in [0, 100] percentage points",
                             received=self.max_accuracy_drop)


def _footprint(data: bytes, board, io_bytes: int) -> dict[str, Any]:
    """Arena per engine (measured / planned) and the board fit of one candidate."""
    from firmware_export.arena import measure_arena
    from firmware_export.cgen import load_engine
    from firmware_export.targets import fit_report
    from toolchain.tflite_model import parse_tflite

    out: dict[str, Any] = {"c_engine_arena_bytes": None, "tflm_arena_bytes": None, "fit": None}
    with tempfile.TemporaryDirectory(prefix="auto_") as tmp:
        path = Path(tmp) / "candidate.tflite"
        path.write_bytes(data)
        try:
            out["c_engine_arena_bytes"] = int(load_engine(path).plan.arena_bytes)
        except ToolchainError as exc:
            out["c_engine_note"] = str(exc)
        try:
            m = measure_arena(path)
            out["tflm_arena_bytes"] = int(m.recommended_bytes) if m.proven else None
        except ToolchainError as exc:
            out["tflm_note"] = str(exc)
    if board is None:
        return out
    arenas = [a for a in (out["c_engine_arena_bytes"], out["tflm_arena_bytes"]) if a is not None]
    if not arenas:
        out["fit"] = {"fits": False, "reason": "no engine runs it (C engine: %s; TFLM: %s)" % (
            out.get("c_engine_note", "?"), out.get("tflm_note", "?"))}
        return out
    n_ops = len({op.opcode for op in parse_tflite(data).operators})
    fit = fit_report(board, len(data), min(arenas), io_bytes, n_ops)
    out["fit"] = {"fits": fit.fits, "flash_bytes": fit.flash_bytes, "flash_pct": fit.flash_pct,
                  "ram_bytes": fit.ram_bytes, "ram_pct": fit.ram_pct,
                  "reason": None if fit.fits else f"flash {fit.flash_pct:.1f} % (model + runtime estimate), "
                                                  f"RAM {fit.ram_pct:.1f} % of {board.key}"}
    return out


def auto_quantise(model_path: str | os.PathLike, output: str | os.PathLike, dataset=None, config=None,
                  options: AutoOptions = AutoOptions(), force: bool = False) -> dict[str, Any]:
    from toolchain.convert import layer_from_name, layer_names, load_keras_model
    from toolchain.data import prepare_data
    from toolchain.keras_io import check_keras_file
    from toolchain.metadata import load_run_metadata
    from toolchain.quant_config import QuantConfig
    from toolchain.quant_int4 import to_int4
    from toolchain.quantise import _check_tflite_output, quantise, tflite_predict
    from toolchain.specs import DatasetSpec, RunRecord
    options.validate()
    config = config or QuantConfig()
    if config.weights != "int8" or config.activations != "int8" or config.qat:
        raise UsageError("--auto chooses the weights and activations itself; drop --weights, --activations and "
                         "--qat (use --allow-qat to let it try QAT)", received="--auto with a fixed scheme")
    config.validate()
    board = None
    if options.target:
        from firmware_export.targets import get_target

        board = get_target(options.target)
    src = check_keras_file(model_path)
    out = _check_tflite_output(output, force, src)
    record = RunRecord.from_metadata(load_run_metadata(src))
    spec = DatasetSpec.parse(dataset) if isinstance(dataset, str) else dataset
    model = load_keras_model(src)
    names = layer_names(model)
    prepared = prepare_data(record, dataset=spec, input_shape=tuple(int(d) for d in model.input_shape[1:]))
    val = prepared.split("val")
    if len(val.y) == 0:
        raise UsageError("--auto measures accuracy on the validation split, which is empty", received=str(src))
    float_acc = float(np.mean(np.argmax(model.predict(val.x, batch_size=128, verbose=0), axis=-1) == val.y))
    io_bytes = int(np.prod(model.input_shape[1:])) + int(np.prod(model.output_shape[1:]))

    candidates: list[dict[str, Any]] = []

    def evaluate(name: str, data: bytes, choice: dict[str, Any], layers: dict[str, int]) -> dict[str, Any]:
        acc = float(np.mean(np.argmax(tflite_predict(data, val.x), axis=1) == val.y))
        c = {"name": name, "bytes": len(data), "val_accuracy": acc, "drop_pp": round((float_acc - acc) * 100, 4),
             "within_budget": (float_acc - acc) * 100 <= options.max_accuracy_drop + 1e-9, "choice": choice,
             "layers": layers}
        if c["within_budget"] or board is not None:
            c.update(_footprint(data, board, io_bytes))
        c["fits"] = board is None or bool((c.get("fit") or {}).get("fits"))
        candidates.append(c)
        log.info("auto: %-28s %9s B  val %.2f %% (drop %+.2f pp)%s", name, f"{len(data):,}", 100 * acc,
                 c["drop_pp"], "" if board is None else ("  fits " + board.key if c["fits"] else "  does not fit"))
        return c

    with tempfile.TemporaryDirectory(prefix="auto_") as tmp:
        base_path = Path(tmp) / "int8.tflite"
        quantise(src, base_path, dataset=spec, config=config, evaluate=False)
        base = base_path.read_bytes()

    def layer_of(tensor: str):
        return layer_from_name(tensor, names)

    all4, info = to_int4(base, layer_of)
    eligible = {e["layer"]: e["weights"] for e in info["layers"] if e["bits"] == 4}
    int8_c = evaluate("int8", base, {"weights": "int8"}, {k: 8 for k in eligible})
    evaluate("int4 (all layers)", all4, {"weights": "int4"}, {k: 4 for k in eligible})
    sens = {}
    for layer in eligible:
        data, _ = to_int4(base, layer_of, int4_layers=f"^{re.escape(layer)}$")
        c = evaluate(f"int4: {layer}", data, {"weights": "int4", "int4_layers": f"^{re.escape(layer)}$"},
                     {k: 4 if k == layer else 8 for k in eligible})
        sens[layer] = c["drop_pp"]
    chosen: list[str] = []
    for layer in sorted(eligible, key=lambda k: (-eligible[k], sens[k], k)):
        trial = chosen + [layer]
        regex = "^(" + "|".join(re.escape(k) for k in trial) + ")$"
        data, _ = to_int4(base, layer_of, int4_layers=regex)
        c = evaluate(f"greedy +{layer}", data, {"weights": "int4", "int4_layers": regex},
                     {k: 4 if k in trial else 8 for k in eligible})
        if c["within_budget"]:
            chosen = trial
    if not int8_c["within_budget"]:
        with tempfile.TemporaryDirectory(prefix="auto_") as tmp:
            p16 = Path(tmp) / "a16.tflite"
            quantise(src, p16, dataset=spec, config=replace(config, activations="int16"), evaluate=False)
            evaluate("int16x8", p16.read_bytes(), {"activations": "int16"}, {k: 8 for k in eligible})
            if options.allow_qat:
                pq = Path(tmp) / "qat.tflite"
                quantise(src, pq, dataset=spec, config=replace(config, qat=True), evaluate=False)
                evaluate("int8 QAT", pq.read_bytes(), {"weights": "int8", "qat": True}, {k: 8 for k in eligible})

    ok = [c for c in candidates if c["within_budget"] and c["fits"]]
    table = {"float_val_accuracy": float_acc, "max_accuracy_drop_pp": options.max_accuracy_drop,
             "target": board.key if board else None, "split": "val", "samples": int(len(val.y)),
             "sensitivity_pp": sens, "candidates": candidates}
    if not ok:
        # the smallest within the budget that some engine runs (its flash/RAM say why), else the smallest at all
        closest = min(candidates, key=lambda c: (not c["within_budget"], "flash_pct" not in (c.get("fit") or {}),
                                                 c["bytes"]))
        why = (f"the smallest within the budget, {closest['name']} ({closest['bytes']:,} B), does not fit: "
               f"{(closest.get('fit') or {}).get('reason')}" if closest["within_budget"]
               else f"none is within {options.max_accuracy_drop:g} pp of the float model's "
                    f"{100 * float_acc:.2f} % on the validation split (best: " +
               max(candidates, key=lambda c: c["val_accuracy"])["name"] + ")")
        raise UsageError(f"--auto found no candidate: {why}", received=f"{len(candidates)} candidates tried",
                         hint="raise --max-accuracy-drop, pick a larger board or a smaller model")
    best = min(ok, key=lambda c: (c["bytes"], c["drop_pp"], c["name"]))
    best["chosen"] = True
    ch = best["choice"]
    final = replace(config, weights=ch.get("weights", "int8"), int4_layers=ch.get("int4_layers"),
                    activations=ch.get("activations", "int8"), qat=bool(ch.get("qat")))
    return quantise(src, out, dataset=spec, config=final, force=force, auto=table)
