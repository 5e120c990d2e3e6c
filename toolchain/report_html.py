"""report.html of a verify report: the same sections as report.md, as one self-contained page (plots linked from
``plots/``) that fits a 1280 px wide window: long fused tensor names are shortened (the full name on hover)."""

from __future__ import annotations

import html
from typing import Any

from toolchain.report_sections import (FIRMWARE_HEADER, PER_CLASS_HEADER, ROW_KEYS, THROUGHPUT_NOTE, _fmt,
                                       _summary_rows, comparison_cells, data_line, firmware_section, per_class_rows,
                                       ratio_line, short_name, target_lines)

e = html.escape

STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:76em} table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right} th{background:#eee} .l{text-align:left}"
    "td.name{text-align:left;font-family:monospace}"
    "p,li{overflow-wrap:anywhere} .note{color:#555;font-size:0.9em}"
    ".pass{color:#070}.fail{color:#b00;font-weight:bold} img{max-width:100%;margin:0.5em;vertical-align:top}")


def table(header: list[str], rows: list[list[str]], left: tuple[int, ...] = (0,)) -> str:
    """An HTML table; ``header`` is plain text, the cells are HTML (already escaped); the ``left`` columns (text)
    are left-aligned, the others (figures) right-aligned."""
    def cls(i: int) -> str:
        return " class='l'" if i in left else ""

    out = ["<table><tr>" + "".join(f"<th{cls(i)}>{e(h)}</th>" for i, h in enumerate(header)) + "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(c if c.startswith("<td") else f"<td{cls(i)}>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>")
    return "\n".join(out) + "</table>"


def name_cell(name: str) -> str:
    """A tensor-name cell: the name shortened to ``short_name``, the full name in ``title`` when shortened."""
    short = short_name(name)
    title = f" title='{e(name, quote=True)}'" if short != name else ""
    return f"<td class='name'{title}>{e(short)}</td>"


def _sections(r: dict[str, Any]) -> list[str]:
    parts = ["<h2>Comparison</h2>",
             table(["row", *ROW_KEYS], [[e(row["name"])] + [e(c) for c in comparison_cells(row)]
                                        for row in r["rows"]]),
             "<h2>Checks</h2>"]
    if r["checks"]:
        parts.append(table(["check", "metric", "required", "value", "result"],
                           [[e(c["name"]), e(c["metric"]), e(f"{c['op']} {c['threshold']:g}"), e(_fmt(c["value"])),
                             "<span class='pass'>pass</span>" if c["passed"] else "<span class='fail'>FAIL</span>"]
                            for c in r["checks"]], left=(0, 1)))
    else:
        parts.append("<p>No checks applied.</p>")
    if r.get("target"):
        lines = target_lines(r["target"])
        parts += ["<h2>On the emulated Cortex-M4F</h2>", f"<p>{e(lines[0])}.</p>",
                  "<ul>" + "".join(f"<li>{e(x.strip())}</li>" for x in lines[1:]) + "</ul>"]
    if r.get("firmware"):
        board, rows, notes = firmware_section(r["firmware"])
        parts += ["<h2 id='firmware'>Firmware on the board</h2>", f"<p>{e(board)}.</p>",
                  table(FIRMWARE_HEADER, [[e(c) for c in row] for row in rows])]
        if notes:
            parts.append("<ul class='note'>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    le = r["layer_errors"]
    parts.append("<h2>Per-layer quantisation error</h2>")
    if le["status"] == "ok":
        parts.append(f"<p>QuantizationDebugger on {e(str(le['samples']))} samples.</p>")
        parts.append(table(["#", "op", "tensor", "RMSE", "scale", "RMSE/scale", "max abs err"],
                           [[str(i), e(str(w["op"])), name_cell(str(w["name"])), e(_fmt(w["rmse"])),
                             e(_fmt(w["scale"])), e(_fmt(w["rmse_over_scale"])), e(_fmt(w["max_abs_error"]))]
                            for i, w in enumerate(le["layers"])], left=(1, 2)))
    else:
        parts.append(f"<p>{e(le['status'])}: {e(str(le['reason']))}</p>")
    pc = per_class_rows(r)
    if pc:
        parts += ["<h2 id='per-class'>Per-class accuracy</h2>", table(PER_CLASS_HEADER, [[e(c) for c in row]
                                                                                        for row in pc])]
    return parts


def render_html(r: dict[str, Any], plots: list[str], plot_note: str | None) -> str:
    status = "PASSED" if r["passed"] else "FAILED"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Verification report</title>"
        f"<style>{STYLE}</style></head><body>",
        f"<h1>Verification report: <span class='{'pass' if r['passed'] else 'fail'}'>{status}</span></h1>",
        f"<p>{e(data_line(r))}. Created {e(r['created_utc'])}, toolchain {e(str(r['toolchain_version']))}.</p>",
        *[f"<p class='fail'>warning: {e(w)}</p>" for w in r.get("warnings") or []],
        table(["", "reference", "candidate"], [[e(a), e(b), e(c)] for a, b, c in _summary_rows(r)]),
        f"<p>{e(ratio_line(r))}.</p>",
        f"<p class='note'>{e(THROUGHPUT_NOTE)}</p>",
        *_sections(r),
        "<h2>Plots</h2>",
    ]
    if plots:
        parts += [f"<img src='plots/{e(p)}' alt='{e(p)}'>" for p in plots]
    else:
        parts.append(f"<p>{e(plot_note or 'no plots')}</p>")
    h = r["host"]
    parts.append(f"<p>Host: {e(str(h['cpu']))}, {h['cores']} cores, Python {e(h['python'])}, numpy {e(h['numpy'])}; "
                 + e(", ".join(f"{k} {v}" for k, v in h["runtimes"].items())) + "</p></body></html>")
    return "\n".join(parts) + "\n"
