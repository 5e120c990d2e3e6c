"""The outputs of ``toolchain tune``: ``pareto.json``, ``report.html`` (+ ``plots/pareto.png``) and ``winner/``.

The HTML page uses the verify report's style (``toolchain.report_html``), is self-contained (no network assets)
and links the plot from ``plots/``. ``winner/`` is a copy of the winner's trial run folder (paths in its JSON
files rewritten to the copy), so ``toolchain export DIR/winner/model_int8.tflite`` and
``toolchain verify --reference DIR/winner/model.keras --candidate DIR/winner/model_int8.tflite`` work as on any run.
"""

from __future__ import annotations

import html
import shutil
from pathlib import Path
from typing import Any, Sequence

from toolchain.fsutil import atomic_write_json, atomic_write_text, output_dir
from toolchain.tune import pareto


def copy_run(src: Path, dst: Path) -> None:
    """Copy run folder ``src`` to ``dst`` atomically (replacing it), with ``src``'s path rewritten in JSON files."""
    with output_dir(dst, force=True) as tmp:
        for f in src.iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)
        olds = sorted({str(src), str(src.resolve())}, key=len, reverse=True)
        for f in tmp.glob("*.json"):
            text = f.read_text(encoding="utf-8")
            new = text
            for old in olds:
                new = new.replace(old, str(dst.resolve()))
            if new != text:
                f.write_text(new, encoding="utf-8")


def _plot(trials: Sequence[dict[str, Any]], cost_key: str, path: Path, title: str) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = pareto.rows(trials, cost_key)
    other = [t for t in trials if t["state"] == "COMPLETE" and not t.get("feasible")]
    if not pts and not other:
        return False
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    if other:
        ax.scatter([t["result"]["flash_bytes"] / 1024 for t in other],
                   [100 * t["result"]["int8_val_accuracy"] for t in other], marker="x", c="#b00",
                   label="trained, not feasible")
    if pts:
        sc = ax.scatter([p["flash_bytes"] / 1024 for p in pts], [100 * p["accuracy"] for p in pts],
                        c=[p["cost"] for p in pts], cmap="viridis", s=[70 if p["pareto"] else 25 for p in pts],
                        edgecolors=["k" if p["pareto"] else "none" for p in pts], label="feasible (front: ringed)")
        fig.colorbar(sc, ax=ax, label="instructions / inference" if cost_key == "instructions" else "MACs")
        for p in pts:
            if p["pareto"]:
                ax.annotate(str(p["number"]), (p["flash_bytes"] / 1024, 100 * p["accuracy"]), fontsize=8,
                            xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("flash (KB)")
    ax.set_ylabel("int8 accuracy, validation split (%)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return True


def render_html(s: dict[str, Any], plotted: bool) -> str:
    from toolchain.report_html import STYLE, table

    e = html.escape
    tab = pareto.table(s["trials"], s["cost_axis"])
    w = s.get("winner")
    b = s["board"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>toolchain tune</title><style>{STYLE}</style>"
             "</head><body>", "<h1>Architecture search</h1>",
             f"<p>{e(s['settings']['dataset'])} on {e(b['key'])} ({e(b['display'])}: {b['flash_kb']:,} KB flash, "
             f"{b['ram_kb']:,} KB RAM); {len(s['trials'])} trials ({s['counts']['trained']} trained, "
             f"{s['counts']['pruned_before_training']} pruned before training, {s['counts']['feasible']} "
             f"feasible).</p>"]
    if w:
        r = w["result"]
        parts.append(f"<p><b>Winner</b>: trial {w['number']} ({e(w['describe'])}): int8 accuracy "
                     f"{100 * r['int8_val_accuracy']:.2f} % validation, "
                     f"{100 * (r['int8_test_accuracy'] or 0):.2f} % test; flash {r['flash_bytes']:,} B "
                     f"({e(r['fit_engine'])}); run folder <code>{e(w['run_folder'] or w['result']['run'])}</code>.</p>")
    else:
        parts.append("<p class='fail'>No trial is feasible: nothing fits the board within the limits.</p>")
    parts += ["<h2>Pareto front</h2>", table(tab[0], [[e(c) for c in row] for row in tab[1:]], left=(1,))]
    if plotted:
        parts.append("<img src='plots/pareto.png' alt='accuracy vs flash'>")
    parts += ["<h2>Notes</h2>", "<ul>" + "".join(f"<li>{e(n)}</li>" for n in s["notes"]) + "</ul>",
              "</body></html>"]
    return "\n".join(parts)


def finish(out: Path, trials: list[dict[str, Any]], board, settings: dict[str, Any], requested: int,
           before: set[int], on_target: bool, wall_s: float, head: dict[str, Any]) -> dict[str, Any]:
    from dataclasses import asdict

    cost_key = "instructions" if on_target else "macs"
    w = pareto.winner(trials, cost_key)
    winner_folder = None
    if w is not None and Path(w["result"]["run"]).is_dir():
        copy_run(Path(w["result"]["run"]), out / "winner")
        winner_folder = "winner/"
    notes = [
        "accuracy: int8 model (LiteRT reference kernels) on the validation split (the search objective); test split "
        "in the table",
        ("flash and RAM: the C engine measured in the linked Cortex-M4F image; cost: instructions per inference "
         "counted on QEMU (-icount), a board-clock time from them is a lower bound") if on_target else
        ("flash: model + the TFLM runtime estimate of the board profile (an estimate); RAM: TFLM arena measured "
         "with tflite-micro + I/O; cost: MACs computed from the model (not a latency)"),
        "pruned before training: int8 weight + bias bytes > flash, or the largest activation pair + I/O > RAM "
        "(computed from the architecture)",
    ]
    if w is not None and winner_folder is None:
        notes.append(f"the winner was trained by another machine ({(w.get('worker') or {}).get('host')}); its run "
                     f"folder is {w['result']['run']} there")
    trained = [t for t in trials if t["state"] == "COMPLETE"]
    s = {**head, "settings": settings, "board": asdict(board), "trials_requested": requested,
         "cost_axis": cost_key, "on_target": on_target,
         "counts": {"trials": len(trials), "trained": len(trained),
                    "pruned_before_training": sum(1 for t in trials if (t["pruned"] or {}).get("before_training")),
                    "feasible": sum(1 for t in trained if t["feasible"]),
                    "new_this_run": sum(1 for t in trials if t["number"] not in before)},
         "wall_seconds": round(wall_s, 1), "pareto": pareto.rows(trials, cost_key),
         "winner": None if w is None else {**w, "run_folder": winner_folder}, "trials": trials, "notes": notes}
    plotted = _plot(trials, cost_key, out / "plots" / "pareto.png", f"{settings['dataset']} on {board.key}")
    atomic_write_text(out / "report.html", render_html(s, plotted))
    atomic_write_json(out / "pareto.json", s)
    return s
