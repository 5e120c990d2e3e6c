"""Render a verify report dict (schema: ``toolchain.verify``) as report.json, report.md and report.html.

Plots (PNG files under ``plots/``, linked from the Markdown and the HTML) are drawn with matplotlib's Agg backend
when matplotlib is installed; on a device without it the reports say so and carry no plots.
"""

from __future__ import annotations

import html
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.fsutil import atomic_write_json, atomic_write_text

log = logging.getLogger("toolchain.report")


def _fmt(v: Any, kind: str = "g") -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if kind == "pct":
        return f"{100.0 * v:.2f} %"
    if kind == "pp":
        return f"{v:+.2f} pp"
    if kind == "ms":
        return f"{v:.4f} ms"
    if kind == "bytes":
        return f"{int(v):,} B"
    if isinstance(v, float):
        return f"{v:.5g}"
    return str(v)


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
        ax.set_xscale("log")
        ax.set_xlabel("single-sample latency (ms, log scale)")
        ax.set_title("host latency distribution")
        fig.tight_layout()
        fig.savefig(pdir / "latency.png")
        plt.close(fig)
        made.append("latency.png")
    return made, None


def _summary_rows(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    ref, cand = r.get("reference") or {}, r["candidate"]
    lat = r["latency_ms"]
    rows = [
        ("model", os.path.basename(ref.get("path", "")) or "–", os.path.basename(cand["path"])),
        ("precision", ref.get("precision", "–"), cand.get("precision", "–")),
        ("runtime", f"{ref.get('runtime', '–')} {ref.get('runtime_version', '')}".strip(),
         f"{cand['runtime']} {cand['runtime_version']}"),
        ("accuracy (top-1)", _fmt(ref.get("accuracy"), "pct"), _fmt(cand.get("accuracy"), "pct")),
    ]
    for k in sorted((cand.get("top_k_accuracy") or {}), key=int):
        rows.append((f"top-{k} accuracy", _fmt((ref.get("top_k_accuracy") or {}).get(k), "pct"),
                     _fmt(cand["top_k_accuracy"][k], "pct")))
    rows += [
        ("size", _fmt(ref.get("size_bytes"), "bytes"), _fmt(cand.get("size_bytes"), "bytes")),
        ("latency median", _fmt((lat.get("reference") or {}).get("median"), "ms"), _fmt(lat["candidate"]["median"], "ms")),
        ("latency p90", _fmt((lat.get("reference") or {}).get("p90"), "ms"), _fmt(lat["candidate"]["p90"], "ms")),
        ("latency p99", _fmt((lat.get("reference") or {}).get("p99"), "ms"), _fmt(lat["candidate"]["p99"], "ms")),
        ("batch throughput", _fmt((lat.get("reference") or {}).get("batch_throughput_per_s")) + " /s"
         if lat.get("reference") else "–", _fmt(lat["candidate"].get("batch_throughput_per_s")) + " /s"),
        ("evaluation time", _fmt(ref.get("eval_seconds")) + " s" if ref else "–", _fmt(cand.get("eval_seconds")) + " s"),
    ]
    return rows


_ROW_KEYS = ("accuracy", "agreement", "rmse", "mae", "l2r", "cosine", "sqnr_db")


def data_line(r: dict[str, Any]) -> str:
    """One line on the evaluated data: source, split, samples, normalisation and model input transform with their
    provenance."""
    d = r["dataset"]
    n, pp = d["normalisation"], d["preprocessing"]
    return (f"data: {d['spec']} {d['split']} split, {d['samples']} samples, {d['num_classes']} classes; "
            f"normalisation raw x {n['scale']:.6g} ({n['provenance']}: {n['detail']}); model input "
            f"{'x'.join(map(str, pp['input_shape']))} (resize {pp['resize']}, channels {pp['channels']}; transform "
            f"{d['transform_source']})")


def target_lines(t: dict) -> list[str]:
    """The on-target section of the verify summary."""
    lines = [f"on target ({t['engine_title']}, {t['machine']} Cortex-M4F, {t['samples']} samples, "
             f"{t['qemu_runs']} QEMU run(s)): {t['instructions_per_inference']:,} instructions/inference, "
             f"arena {t['arena_bytes']:,} B, flash {t['flash']['model'] + t['flash']['runtime']:,} B"]
    for r in t["rows"]:
        if r["accuracy"] is not None:
            lines.append(f"  {r['name']}: accuracy {100 * r['accuracy']:.2f} %")
        else:
            agree = "n/a" if r["agreement"] is None else f"{100 * r['agreement']:.2f} %"
            lsb = "" if r["max_lsb_diff"] is None else f", max {r['max_lsb_diff']} LSB"
            lines.append(f"  {r['name']}: agreement {agree}, identical outputs {r['identical_pct']:g} %{lsb} "
                         f"(host: {t['reference']})")
    d = t.get("divergence")
    if d and d.get("status") == "diverged":
        lines.append(f"  first diverging layer (sample {d['sample']}): op {d['op_index']} {d['op']} -> "
                     f"'{d['tensor']}' ({d['differing_values']}/{d['values']} values differ, max "
                     f"{d['max_abs_diff']:g})")
    elif d:
        lines.append(f"  per-layer comparison (sample {d['sample']}): {d['status']}"
                     + (f" ({d['reason']})" if d.get("reason") else ""))
    return lines


def render_markdown(r: dict[str, Any], plots: list[str], plot_note: str | None) -> str:
    L = [f"# Verification report: {'PASSED' if r['passed'] else 'FAILED'}", ""]
    L.append(data_line(r)[0].upper() + data_line(r)[1:] + ".")
    L.append(f"Created {r['created_utc']}, toolchain {r['toolchain_version']}.")
    L += [f"- warning: {w}" for w in r.get("warnings") or []]
    L.append("")
    L += ["| | reference | candidate |", "|---|---|---|"]
    L += [f"| {a} | {b} | {c} |" for a, b, c in _summary_rows(r)]
    L.append("")
    L.append(f"Accuracy drop: {_fmt(r['accuracy_drop_pp'], 'pp') if r['accuracy_drop_pp'] is not None else '–'}; "
             f"size ratio: {_fmt(r['sizes']['ratio'])}; speed-up (median latency): "
             f"{_fmt(r['latency_ms']['speedup'])}.")
    L += ["", "## Comparison (as ST Edge AI validate)", "",
          "| row | " + " | ".join(_ROW_KEYS) + " |", "|---" * (len(_ROW_KEYS) + 1) + "|"]
    for row in r["rows"]:
        vals = [_fmt(row.get(k), "pct") if k in ("accuracy", "agreement") else _fmt(row.get(k)) for k in _ROW_KEYS]
        L.append(f"| {row['name']} | " + " | ".join(vals) + " |")
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
    cand = r["candidate"]
    if cand.get("per_class_accuracy"):
        d = r["dataset"]
        labels = d.get("labels") or [str(i) for i in range(d["num_classes"])]
        ref_pc = (r.get("reference") or {}).get("per_class_accuracy") or [None] * len(labels)
        L += ["", "## Per-class accuracy", "", "| class | reference | candidate |", "|---|---|---|"]
        for i, lab in enumerate(labels):
            L.append(f"| {lab} | {_fmt(ref_pc[i], 'pct')} | {_fmt(cand['per_class_accuracy'][i], 'pct')} |")
    L += ["", "## Plots", ""]
    if plots:
        L += [f"![{p}](plots/{p})" for p in plots]
    else:
        L.append(plot_note or "no plots")
    h = r["host"]
    L += ["", f"Host: {h['cpu']}, {h['cores']} cores, Python {h['python']}, numpy {h['numpy']}, runtimes "
          + ", ".join(f"{k} {v}" for k, v in h["runtimes"].items()) + "."]
    return "\n".join(L) + "\n"


def render_html(r: dict[str, Any], plots: list[str], plot_note: str | None) -> str:
    e = html.escape

    def table(header: list[str], rows: list[list[str]]) -> str:
        out = ["<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>"]
        for row in rows:
            out.append("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
        return "\n".join(out) + "</table>"

    status = "PASSED" if r["passed"] else "FAILED"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Verification report</title><style>"
        "body{font-family:sans-serif;margin:2em;max-width:70em} table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right} th{background:#eee} td:first-child{text-align:left}"
        ".pass{color:#070}.fail{color:#b00;font-weight:bold} img{max-width:100%;margin:0.5em}</style></head><body>",
        f"<h1>Verification report: <span class='{'pass' if r['passed'] else 'fail'}'>{status}</span></h1>",
        f"<p>{e(data_line(r))}. Created {e(r['created_utc'])}.</p>",
        *[f"<p class='fail'>warning: {e(w)}</p>" for w in r.get("warnings") or []],
        table(["", "reference", "candidate"], [[e(a), e(b), e(c)] for a, b, c in _summary_rows(r)]),
        f"<p>Accuracy drop: {e(_fmt(r['accuracy_drop_pp'], 'pp') if r['accuracy_drop_pp'] is not None else '–')}; "
        f"size ratio {e(_fmt(r['sizes']['ratio']))}; speed-up {e(_fmt(r['latency_ms']['speedup']))}.</p>",
        "<h2>Comparison</h2>",
        table(["row", *_ROW_KEYS], [[e(row["name"])] + [e(_fmt(row.get(k), "pct") if k in ("accuracy", "agreement")
                                                         else _fmt(row.get(k))) for k in _ROW_KEYS]
                                    for row in r["rows"]]),
        "<h2>Checks</h2>",
    ]
    if r["checks"]:
        parts.append(table(["check", "metric", "required", "value", "result"],
                           [[e(c["name"]), e(c["metric"]), e(f"{c['op']} {c['threshold']:g}"), e(_fmt(c["value"])),
                             "<span class='pass'>pass</span>" if c["passed"] else "<span class='fail'>FAIL</span>"]
                            for c in r["checks"]]))
    else:
        parts.append("<p>No checks applied.</p>")
    if r.get("target"):
        lines = target_lines(r["target"])
        parts += ["<h2>On the emulated Cortex-M4F</h2>", f"<p>{e(lines[0])}.</p>",
                  "<ul>" + "".join(f"<li>{e(x.strip())}</li>" for x in lines[1:]) + "</ul>"]
    le = r["layer_errors"]
    parts.append("<h2>Per-layer quantisation error</h2>")
    if le["status"] == "ok":
        parts.append(table(["#", "op", "tensor", "RMSE", "scale", "RMSE/scale", "max abs err"],
                           [[str(i), e(str(w["op"])), e(str(w["name"])), e(_fmt(w["rmse"])), e(_fmt(w["scale"])),
                             e(_fmt(w["rmse_over_scale"])), e(_fmt(w["max_abs_error"]))]
                            for i, w in enumerate(le["layers"])]))
    else:
        parts.append(f"<p>{e(le['status'])}: {e(str(le['reason']))}</p>")
    parts.append("<h2>Plots</h2>")
    if plots:
        parts += [f"<img src='plots/{e(p)}' alt='{e(p)}'>" for p in plots]
    else:
        parts.append(f"<p>{e(plot_note or 'no plots')}</p>")
    h = r["host"]
    parts.append(f"<p>Host: {e(str(h['cpu']))}, {h['cores']} cores, Python {e(h['python'])}, numpy {e(h['numpy'])}; "
                 + e(", ".join(f"{k} {v}" for k, v in h["runtimes"].items())) + "</p></body></html>")
    return "\n".join(parts) + "\n"


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
