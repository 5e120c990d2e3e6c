"""The verify gate: named checks with thresholds, baselines, and the messages of failed checks."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolchain.errors import UsageError
from toolchain.specs import InputStats

if TYPE_CHECKING:
    from toolchain.verify.driver import VerifyOptions

BASELINE_FORMAT = "toolchain-verify-baseline/1"


FOOTPRINT_KEYS = ("flash_bytes", "arena_bytes", "instructions_per_inference")
FOOTPRINT_NAMES = {"flash_bytes": "flash", "arena_bytes": "arena", "instructions_per_inference": "instructions"}


def footprint(candidate: dict[str, Any], target: dict[str, Any] | None) -> dict[str, Any]:
    """What the footprint gates compare: measured on the target when it ran (firmware flash = model + runtime code,
    the engine's arena, instructions per inference), else the candidate file (flash = its bytes; no arena, no
    instructions). ``kind`` says which, so a baseline is only compared with a footprint measured the same way."""
    if target:
        fl = target["flash"]
        return {"kind": f"{target['on']}:{target['engine']}", "flash_bytes": int(fl["model"] + fl["runtime"]),
                "flash_source": f"{target['engine_title']} firmware on {target['on']}: model {fl['model']:,} B + "
                                f"runtime code {fl['runtime']:,} B",
                "arena_bytes": int(target["arena_bytes"]), "arena_source": target["arena_source"],
                "instructions_per_inference": int(target["instructions_per_inference"])}
    return {"kind": "model-file", "flash_bytes": int(candidate["size_bytes"]),
            "flash_source": "the candidate .tflite file (no runtime code; --on qemu-m4 measures the firmware)",
            "arena_bytes": None, "arena_source": None, "instructions_per_inference": None}


def load_baseline(path: str | os.PathLike) -> dict[str, Any]:
    """Accuracy and footprint of a stored baseline: a verify ``report.json`` or a ``--write-baseline`` file."""
    import json

    p = Path(path)
    if not p.is_file():
        raise UsageError("baseline file not found", received=str(p))
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError("baseline file is not valid JSON", received=f"{p}: {exc}") from None
    acc = fp = None
    if isinstance(obj, dict):
        if isinstance(obj.get("candidate"), dict):
            acc = obj["candidate"].get("accuracy")
        elif "accuracy" in obj:
            acc = obj.get("accuracy")
        fp = obj.get("footprint")
    if fp is not None and not (isinstance(fp, dict) and isinstance(fp.get("kind"), str) and all(
            fp.get(k) is None or (isinstance(fp.get(k), int) and not isinstance(fp.get(k), bool) and fp[k] > 0)
            for k in FOOTPRINT_KEYS)):
        raise UsageError("baseline file has a malformed footprint (expected kind and positive integer "
                         f"{', '.join(FOOTPRINT_KEYS)})", received=str(p))
    if acc is not None and (not isinstance(acc, (int, float)) or not 0.0 <= float(acc) <= 1.0):
        raise UsageError("baseline file has an accuracy outside [0, 1]", received=f"{p}: accuracy {acc!r}")
    if acc is None and fp is None:
        raise UsageError("baseline file has neither an accuracy in [0, 1] nor a footprint (expected a verify "
                         "report.json or a file written by --write-baseline)", received=str(p))
    return {"path": str(p), "accuracy": None if acc is None else float(acc), "footprint": fp,
            "samples": obj.get("samples"),
            "dataset": (obj.get("dataset") or {}).get("spec") if isinstance(obj.get("dataset"), dict)
            else obj.get("dataset")}


def make_baseline(report: dict[str, Any]) -> dict[str, Any]:
    return {"format": BASELINE_FORMAT, "created_utc": report["created_utc"],
            "accuracy": report["candidate"].get("accuracy"),
            "reference_accuracy": (report.get("reference") or {}).get("accuracy"),
            "agreement": (report.get("comparison") or {}).get("agreement"),
            "samples": report["samples"], "dataset": report["dataset"]["spec"],
            "candidate_sha256": report["candidate"]["sha256"], "footprint": report.get("footprint")}


def _check(name: str, metric: str, op: str, threshold: float, value: float | None, detail: str = "") -> dict:
    if value is None:
        passed = False
        detail = detail or "value not available"
    else:
        passed = value <= threshold + 1e-12 if op == "<=" else value >= threshold - 1e-12
    return {"name": name, "metric": metric, "op": op, "threshold": threshold, "value": value, "passed": bool(passed),
            "detail": detail}


def evaluate_checks(report: dict[str, Any], options: "VerifyOptions", baseline: dict[str, Any] | None) -> list[dict]:
    checks = []
    cls = report["task"] == "classification"
    if options.max_accuracy_drop is not None and report.get("reference") is not None and cls:
        checks.append(_check("max_accuracy_drop", "accuracy_drop_pp", "<=", float(options.max_accuracy_drop),
                             report["accuracy_drop_pp"],
                             "reference accuracy - candidate accuracy, percentage points"))
    if options.min_agreement is not None:
        agreement = (report.get("comparison") or {}).get("agreement")
        checks.append(_check("min_agreement", "comparison.agreement", ">=", float(options.min_agreement), agreement,
                             "fraction of samples where candidate and reference pick the same class"
                             if agreement is not None else "needs a reference model and class outputs"))
    if options.min_accuracy is not None:
        checks.append(_check("min_accuracy", "candidate.accuracy", ">=", float(options.min_accuracy),
                             report["candidate"].get("accuracy"), "candidate top-1 accuracy vs ground truth"))
    if getattr(options, "min_target_agreement", None) is not None:
        target = report.get("target") or {}
        checks.append(_check("min_target_agreement", "target.agreement", ">=", float(options.min_target_agreement),
                             target.get("agreement"), f"fraction of samples where the {target.get('engine_title')} "
                             f"on {target.get('on')} and the host candidate pick the same class (outputs that are not "
                             "class scores: give identical outputs)"))
    fp = report.get("footprint") or {}
    for name, key, limit in (("max_flash", "flash_bytes", options.max_flash),
                             ("max_arena", "arena_bytes", options.max_arena),
                             ("max_instructions", "instructions_per_inference", options.max_instructions)):
        if limit is not None:
            source = fp.get("flash_source") if key == "flash_bytes" else fp.get("arena_source") \
                if key == "arena_bytes" else f"counted on {fp.get('kind')}"
            checks.append(_check(name, f"footprint.{key}", "<=", float(limit), fp.get(key), str(source)))
    if baseline is not None:
        if baseline["accuracy"] is not None:
            acc = report["candidate"].get("accuracy")
            reg = (baseline["accuracy"] - acc) * 100.0 if acc is not None else None
            checks.append(_check("max_regression", "baseline.regression_pp", "<=", float(options.max_regression),
                                 reg, f"baseline accuracy {baseline['accuracy']:.4f} ({baseline['path']}) - "
                                      "candidate"))
        checks += growth_checks(fp, baseline, float(options.max_growth))
    return checks


def growth_checks(fp: dict[str, Any], baseline: dict[str, Any], max_growth: float) -> list[dict]:
    """``baseline_<figure>_growth``: each footprint figure measured the same way in both runs may grow by at most
    ``max_growth`` percent over the baseline's."""
    base = baseline.get("footprint") or {}
    if not base or base.get("kind") != fp.get("kind"):
        return []
    out = []
    for key in FOOTPRINT_KEYS:
        if base.get(key) is None or fp.get(key) is None:
            continue
        growth = 100.0 * (fp[key] - base[key]) / base[key]
        out.append(_check(f"baseline_{FOOTPRINT_NAMES[key]}_growth", f"footprint.{key} growth_pct", "<=", max_growth,
                          round(growth, 4), f"{fp[key]:,} vs baseline {base[key]:,} ({baseline['path']}, "
                                            f"{fp['kind']})"))
    return out


def failed_check_messages(report: dict[str, Any]) -> list[str]:
    out = []
    for c in report["checks"]:
        if not c["passed"]:
            v = "n/a" if c["value"] is None else f"{c['value']:.4g}"
            text = f"{c['name']}: {c['metric']} = {v} (required {c['op']} {c['threshold']:g})"
            if c["name"] in SANITY_CHECKS and c.get("detail"):
                text += f": {c['detail']}"
            out.append(text)
    return out


# ---------------------------------------------------------------------------------------------- sanity checks
# They guard the evaluation itself (right data, right preprocessing) and run whenever their inputs exist.

SANITY_CHECKS = ("input_distribution", "reference_sanity")
INPUT_DISTANCE_FAIL = 1.0
INPUT_DISTANCE_WARN = 0.25
MEAN_SHIFT_FAIL = 1.0           # |mean_eval - mean_cal| in calibration standard deviations
STD_LOG2_FAIL = 1.0             # |log2(std_eval / std_cal)|: a factor 2 either way
OUTSIDE_EXCESS_FAIL = 0.05      # extra share of values outside the int8 input range
REFERENCE_SHORTFALL_FAIL_PP = 20.0
REFERENCE_SHORTFALL_WARN_PP = 10.0


def input_distance(evaluated: InputStats, calibration: InputStats) -> float:
    """How far the evaluated inputs are from the calibration inputs, 1.0 = the failure threshold: the largest of
    the mean shift / 1 calibration std, |log2 of the std ratio| / 1, and the extra share of values outside the int8
    input range / 5 %."""
    std_c = max(calibration.std, 1e-12)
    parts = [abs(evaluated.mean - calibration.mean) / std_c / MEAN_SHIFT_FAIL,
             abs(math.log2(max(evaluated.std, 1e-12) / std_c)) / STD_LOG2_FAIL]
    if evaluated.outside_input_range is not None:
        parts.append(max(0.0, evaluated.outside_input_range - (calibration.outside_input_range or 0.0))
                     / OUTSIDE_EXCESS_FAIL)
    return float(max(parts))


def _fmt_stats(s: InputStats) -> str:
    text = f"mean {s.mean:.4g}, std {s.std:.4g}, range [{s.min:.4g}, {s.max:.4g}]"
    if s.outside_input_range is not None:
        text += f", {s.outside_input_range * 100:.2f} % outside the int8 input range"
    return text


def input_distribution_check(evaluated: InputStats, calibration: InputStats) -> tuple[dict[str, Any], str | None]:
    """The ``input_distribution`` check and a warning text when the distance is between the warn and fail marks."""
    d = input_distance(evaluated, calibration)
    detail = f"evaluated inputs {_fmt_stats(evaluated)}; calibration inputs {_fmt_stats(calibration)}"
    warning = None
    if INPUT_DISTANCE_WARN < d <= INPUT_DISTANCE_FAIL:
        warning = f"input_distribution: distance {d:.3g} (warn above {INPUT_DISTANCE_WARN:g}): {detail}"
    return _check("input_distribution", "input_distribution.distance", "<=", INPUT_DISTANCE_FAIL, d, detail), warning


def reference_sanity_check(reference_accuracy: float, recorded_accuracy: float
                           ) -> tuple[dict[str, Any], str | None]:
    """``reference_sanity``: the reference must not fall far below the test accuracy recorded at training."""
    shortfall = (recorded_accuracy - reference_accuracy) * 100.0
    detail = (f"reference accuracy {reference_accuracy * 100:.2f} % vs {recorded_accuracy * 100:.2f} % recorded at "
              "training; a large shortfall means the data or its preprocessing does not match the training data")
    warning = None
    if REFERENCE_SHORTFALL_WARN_PP < shortfall <= REFERENCE_SHORTFALL_FAIL_PP:
        warning = f"reference_sanity: shortfall {shortfall:.2f} pp: {detail}"
    return _check("reference_sanity", "reference_shortfall_pp", "<=", REFERENCE_SHORTFALL_FAIL_PP, shortfall,
                  detail), warning

