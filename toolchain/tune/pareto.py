"""The Pareto front of ``toolchain tune`` and its table.

Axes: int8 accuracy on the validation split (higher is better), flash bytes (lower) and cost per inference (lower):
instructions per inference on the emulated Cortex-M4F when the study runs on target, else MACs (computed from the
model, not a latency). Only feasible trials (fit the board, within the accuracy and latency limits) take part. A
point is on the front when no other point is at least as good on every axis and better on one (identical points
are all on it). The winner is the most accurate feasible trial (ties: less flash, lower cost, lower number).
"""

from __future__ import annotations

from typing import Any, Sequence


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` dominates ``b``: accuracy (index 0) maximised, the other axes minimised."""
    ge = a[0] >= b[0] and all(x <= y for x, y in zip(a[1:], b[1:]))
    gt = a[0] > b[0] or any(x < y for x, y in zip(a[1:], b[1:]))
    return ge and gt


def front(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the non-dominated points, in input order."""
    return [i for i, p in enumerate(points) if not any(dominates(q, p) for j, q in enumerate(points) if j != i)]


def rows(trials: Sequence[dict[str, Any]], cost_key: str) -> list[dict[str, Any]]:
    """Feasible trained trials (``trial_records`` dicts) as points (accuracy, flash, cost), front flagged."""
    ok = [t for t in trials if t["state"] == "COMPLETE" and t.get("feasible")]
    pts = [(t["result"]["int8_val_accuracy"], t["result"]["flash_bytes"], t["result"][cost_key]) for t in ok]
    on = set(front(pts))
    return [{"number": t["number"], "accuracy": p[0], "flash_bytes": p[1], "cost": p[2], "pareto": i in on}
            for i, (t, p) in enumerate(zip(ok, pts))]


def winner(trials: Sequence[dict[str, Any]], cost_key: str) -> dict[str, Any] | None:
    ok = [t for t in trials if t["state"] == "COMPLETE" and t.get("feasible")]
    if not ok:
        return None
    return min(ok, key=lambda t: (-t["result"]["int8_val_accuracy"], t["result"]["flash_bytes"],
                                  t["result"][cost_key], t["number"]))


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


def table(trials: Sequence[dict[str, Any]], cost_key: str, only_front: bool = True) -> list[list[str]]:
    """Header + rows of the Pareto table (or of every trained trial with ``only_front=False``)."""
    by_number = {t["number"]: t for t in trials}
    pts = rows(trials, cost_key)
    cost_name = "instructions" if cost_key == "instructions" else "MACs (computed)"
    out = [["trial", "architecture", "val int8 %", "test int8 %", "flash B", "arena C / TFLM B", cost_name,
            "pareto"]]
    for p in sorted(pts, key=lambda p: (-p["accuracy"], p["flash_bytes"])):
        if only_front and not p["pareto"]:
            continue
        t = by_number[p["number"]]
        r = t["result"]
        out.append([str(t["number"]), t["describe"], _pct(r["int8_val_accuracy"]), _pct(r["int8_test_accuracy"]),
                    f"{r['flash_bytes']:,}", f"{r['c_engine_arena_bytes']:,} / {r['tflm_arena_bytes']:,}",
                    f"{r[cost_key]:,}", "*" if p["pareto"] else ""])
    return out
