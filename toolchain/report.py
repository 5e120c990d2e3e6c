"""Render a verify report dict (schema: ``toolchain.verify``) as report.json, report.md and report.html.

The sections' rows and number formatting live in ``toolchain.report_sections`` (re-exported here for the CLI), the
HTML page in ``toolchain.report_html``.

Plots (PNG files under ``plots/``, linked from the Markdown and the HTML) are drawn with matplotlib's Agg backend
when matplotlib is installed; on a device without it the reports say so and carry no plots.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.fsutil import atomic_write_json, atomic_write_text
from toolchain.report_html import render_html
from toolchain.report_sections import (FIRMWARE_HEADER, PER_CLASS_HEADER, ROW_KEYS, THROUGHPUT_NOTE,  # noqa: F401
                                       _fmt, _summary_rows, comparison_cells, data_line, firmware_section,
                                       per_class_rows, ratio_line, target_lines)

log = logging.getLogger("toolchain.report")


def _log_ms_axis(ax, values: list[float]) -> None:
    """A log x axis labelled with plain numbers (0.05, 0.1, 0.2, 0.5, 1, 2, 5 ms ...) rather than only 10^x: ticks at
    1, 2, 5 x 10^k, or at every integer multiple when the data spans less than a decade."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    pos = [v for v in values if v > 0]
    span = np.log10(max(pos) / min(pos)) if pos else 0.0
    subs = (1.0, 2.0, 5.0) if span >= 1 else (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.tick_params(axis="x", labelsize=8)


def _plots(report: dict[str, Any], out: Path) -> tuple[list[str], str | None]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "matplotlib is not installed: plots skipped"
    pdir = out / "plots"
    pdir.mkdir(parents=True, exist_ok=True)
    made: list[str] = []
    labels = report["dataset"].get("labels") or []
    for who in ("reference", "candidate"):
        info = report.get(who)
        if not info or not info.get("confusion_matrix"):
            continue
        cm = np.asarray(info["confusion_matrix"])
        fig, ax = plt.subplots(figsize=(5.2, 4.6), dpi=90)
        im = ax.imshow(cm, cmap="Blues")
        k = cm.shape[0]
        if k <= 20:
            for i in range(k):
                for j in range(k):
                    if cm[i, j]:
                        ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                                color="white" if cm[i, j] > cm.max() / 2 else "black")
            ticks = [str(x) for x in labels] if len(labels) == k else [str(i) for i in range(k)]
            ax.set_xticks(range(k), ticks, fontsize=7, rotation=90 if max(map(len, ticks)) > 2 else 0)
            ax.set_yticks(range(k), ticks, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{who}: accuracy {100 * info['accuracy']:.2f} %")
        fig.colorbar(im, ax=ax, fraction=0.046)
        fig.tight_layout()
        name = f"confusion_{who}.png"
        fig.savefig(pdir / name)
        plt.close(fig)
        made.append(name)
    layers = (report.get("layer_errors") or {}).get("layers") or []
    if layers:
        vals = [r["rmse_over_scale"] or 0.0 for r in layers]
        names = [f"{i}: {r['op']}" for i, r in enumerate(layers)]
        fig, ax = plt.subplots(figsize=(7, 0.3 * len(layers) + 1.5), dpi=90)
        ax.barh(range(len(vals)), vals, color="tab:orange")
        ax.set_yticks(range(len(vals)), names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("RMSE / scale (quantisation steps)")
        ax.set_title("per-layer quantisation error")
        fig.tight_layout()
        fig.savefig(pdir / "layer_error.png")
        plt.close(fig)
        made.append("layer_error.png")
    lat = report.get("latency_ms") or {}
    series = [(w, lat[w]["samples_ms"]) for w in ("reference", "candidate") if lat.get(w) and lat[w].get("samples_ms")]
    if series:
        fig, ax = plt.subplots(figsize=(6, 3.2), dpi=90)
        ax.boxplot([s for _, s in series], vert=False, showfliers=True)
        ax.set_yticks(range(1, len(series) + 1), [f"{w} ({lat[w]['runtime']})" for w, _ in series])
        _log_ms_axis(ax, [v for _, s in series for v in s])
        ax.set_xlabel("single-sample latency (ms, log scale)")
        ax.set_title("host latency distribution")
        fig.tight_layout()
        fig.savefig(pdir / "latency.png")
        plt.close(fig)
        made.append("latency.png")
    return made, None


def render_markdown(r: dict[str, Any], plots: list[str], plot_note: str | None) -> str:
    L = [f"# Verification report: {'PASSED' if r['passed'] else 'FAILED'}", ""]
    L.append(data_line(r)[0].upper() + data_line(r)[1:] + ".")
    L.append(f"Created {r['created_utc']}, toolchain {r['toolchain_version']}.")
    L += [f"- warning: {w}" for w in r.get("warnings") or []]
    L.append("")
    L += ["| | reference | candidate |", "|---|---|---|"]
    L += [f"| {a} | {b} | {c} |" for a, b, c in _summary_rows(r)]
    L += ["", ratio_line(r) + ".", "", THROUGHPUT_NOTE]
    L += ["", "## Comparison (as ST Edge AI validate)", "",
          "| row | " + " | ".join(ROW_KEYS) + " |", "|---" * (len(ROW_KEYS) + 1) + "|"]
    for row in r["rows"]:
        L.append(f"| {row['name']} | " + " | ".join(comparison_cells(row)) + " |")
    L += ["", "## Checks", ""]
    if r["checks"]:
        L += ["| check | metric | required | value | result |", "|---|---|---|---|---|"]
        for c in r["checks"]:
            L.append(f"| {c['name']} | {c['metric']} | {c['op']} {c['threshold']:g} | {_fmt(c['value'])} | "
                     f"{'pass' if c['passed'] else '**FAIL**'} |")
    else:
        L.append("No checks applied.")
    if r.get("target"):
        lines = target_lines(r["target"])
        L += ["", "## On the emulated Cortex-M4F", "", lines[0] + ".", ""] + [f"- {x.strip()}" for x in lines[1:]]
    if r.get("firmware"):
        board, rows, notes = firmware_section(r["firmware"])
        L += ["", "## Firmware on the board", "", board + ".", "", "| " + " | ".join(FIRMWARE_HEADER) + " |",
              "|---" * len(FIRMWARE_HEADER) + "|"] + ["| " + " | ".join(row) + " |" for row in rows]
        L += [""] + [f"- {n}" for n in notes] if notes else []
    le = r["layer_errors"]
    L += ["", "## Per-layer quantisation error", ""]
    if le["status"] == "ok":
        L.append(f"QuantizationDebugger on {le['samples']} samples; worst layers by RMSE / scale:")
        L += ["", "| op | tensor | RMSE | scale | RMSE/scale | max abs err |", "|---|---|---|---|---|---|"]
        for w in le["worst"]:
            L.append(f"| {w['op']} | {w['name']} | {_fmt(w['rmse'])} | {_fmt(w['scale'])} | "
                     f"{_fmt(w['rmse_over_scale'])} | {_fmt(w['max_abs_error'])} |")
    else:
        L.append(f"{le['status']}: {le['reason']}")
    pc = per_class_rows(r)
    if pc:
        L += ["", "## Per-class accuracy", "", "| " + " | ".join(PER_CLASS_HEADER) + " |",
              "|---" * len(PER_CLASS_HEADER) + "|"] + ["| " + " | ".join(row) + " |" for row in pc]
    L += ["", "## Plots", ""]
    if plots:
        L += [f"![{p}](plots/{p})" for p in plots]
    else:
        L.append(plot_note or "no plots")
    h = r["host"]
    L += ["", f"Host: {h['cpu']}, {h['cores']} cores, Python {h['python']}, numpy {h['numpy']}, runtimes "
          + ", ".join(f"{k} {v}" for k, v in h["runtimes"].items()) + "."]
    return "\n".join(L) + "\n"


def write_reports(report: dict[str, Any], out_dir: str | os.PathLike, plots: bool = True) -> dict[str, Path]:
    """Write report.json, report.md, report.html (+ plots/) into ``out_dir`` (an existing, fresh folder)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    made, note = _plots(report, out) if plots else ([], "plots disabled (--no-plots)")
    report["plots"] = made
    if note:
        report["plots_note"] = note
    paths = {"json": out / "report.json", "md": out / "report.md", "html": out / "report.html"}
    atomic_write_json(paths["json"], report)
    atomic_write_text(paths["md"], render_markdown(report, made, note))
    atomic_write_text(paths["html"], render_html(report, made, note))
    return paths
