"""The figures of a verify report as text: number formatting and the rows / lines of each report section, shared by
report.md, report.html (``toolchain.report``, ``toolchain.report_html``) and the ``toolchain verify`` summary.

Figures are rounded to what they can mean: latencies and throughputs to 4 significant digits, the size ratio to 3,
the speed-up to 2 (``6.7x``); a missing value (``None``) is shown as ``–``.
"""

from __future__ import annotations

import os
from typing import Any

from toolchain.timing import sig

DASH = "–"
LONG_NAME = 48  # characters: longer tensor names are shortened in the HTML per-layer table


def _fmt(v: Any, kind: str = "g") -> str:
    if v is None:
        return DASH
    if isinstance(v, bool):
        return "yes" if v else "no"
    if kind == "pct":
        return f"{100.0 * v:.2f} %"
    if kind == "pp":
        return f"{v:+.2f} pp"
    if kind == "ms":
        return f"{sig(v)} ms"
    if kind == "bytes":
        return f"{int(v):,} B"
    if kind == "x":  # a ratio: 0.25091 -> 0.251x, 6.7183 -> 6.7x, 31.92 -> 32x
        return f"{v:.0f}x" if v >= 10 else f"{v:.2g}x" if v >= 1 else f"{v:.3g}x"
    if kind == "rate":
        return f"{sig(v)} samples/s"
    if kind == "s":
        return f"{sig(v, 3)} s"
    if kind == "cos":  # its information is in the nines
        return f"{v:.6g}"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def short_name(name: str, limit: int = LONG_NAME) -> str:
    """``name`` if it has at most ``limit`` characters, else its start (two thirds: a fused name's first part names
    the layer) and its end around an ellipsis, ``limit`` characters in all."""
    if len(name) <= limit:
        return name
    head = 2 * (limit - 1) // 3
    return name[:head] + "…" + name[-(limit - 1 - head):]


def _batched_how(lat: dict[str, Any]) -> str:
    mode, n = lat.get("batch_mode") or "", lat.get("batch_samples")
    if mode.startswith("batched("):
        return f"{n} samples in batches of {mode[8:-1]}"
    return f"{n} samples one at a time"


def _throughput(lat: dict[str, Any] | None, key: str) -> str:
    if not lat or lat.get(key) is None:
        return DASH
    tp = _fmt(lat[key], "rate")
    if key == "batch_throughput_per_s":
        return f"{tp} ({_batched_how(lat)})"
    return f"{tp} ({lat['runs']} runs)"


def _summary_rows(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    ref, cand = r.get("reference") or {}, r["candidate"]
    lat = r["latency_ms"]
    lref, lcand = lat.get("reference") or {}, lat["candidate"]
    rows = [
        ("model", os.path.basename(ref.get("path", "")) or DASH, os.path.basename(cand["path"])),
        ("precision", ref.get("precision", DASH), cand.get("precision", DASH)),
        ("runtime", f"{ref.get('runtime', DASH)} {ref.get('runtime_version', '')}".strip(),
         f"{cand['runtime']} {cand['runtime_version']}"),
        ("accuracy (top-1)", _fmt(ref.get("accuracy"), "pct"), _fmt(cand.get("accuracy"), "pct")),
    ]
    for k in sorted((cand.get("top_k_accuracy") or {}), key=int):
        rows.append((f"top-{k} accuracy", _fmt((ref.get("top_k_accuracy") or {}).get(k), "pct"),
                     _fmt(cand["top_k_accuracy"][k], "pct")))
    rows.append(("size", _fmt(ref.get("size_bytes"), "bytes"), _fmt(cand.get("size_bytes"), "bytes")))
    for k in ("median", "p90", "p99"):
        rows.append((f"latency {k} (batch 1)", _fmt(lref.get(k), "ms"), _fmt(lcand.get(k), "ms")))
    rows += [
        ("throughput, batch 1", _throughput(lref, "throughput_per_s"), _throughput(lcand, "throughput_per_s")),
        ("throughput, batched", _throughput(lref, "batch_throughput_per_s"),
         _throughput(lcand, "batch_throughput_per_s")),
        ("evaluation time", f"{_fmt(ref.get('eval_seconds'), 's')} ({ref.get('eval_mode')})" if ref else DASH,
         f"{_fmt(cand.get('eval_seconds'), 's')} ({cand.get('eval_mode')})"),
    ]
    return rows


THROUGHPUT_NOTE = ("Latency rows: one sample per invocation (batch 1). Throughput, batch 1: samples per second of "
                   "that timed loop. Throughput, batched: samples per second of the batched evaluation path "
                   "(run_many), per model at the batch size shown; a float model can gain more from batching than "
                   "the int8 one, so this row need not follow the latency rows.")


def ratio_line(r: dict[str, Any]) -> str:
    """Accuracy drop, size ratio and speed-up, rounded to what they can mean."""
    drop = _fmt(r["accuracy_drop_pp"], "pp")
    return (f"Accuracy drop: {drop}; size ratio (candidate / reference): {_fmt(r['sizes']['ratio'], 'x')}; "
            f"speed-up (median batch-1 latency, reference / candidate): {_fmt(r['latency_ms']['speedup'], 'x')}")


ROW_KEYS = ("accuracy", "agreement", "rmse", "mae", "l2r", "cosine", "sqnr_db")


def comparison_cells(row: dict[str, Any]) -> list[str]:
    return [_fmt(row.get(k), "pct" if k in ("accuracy", "agreement") else "cos" if k == "cosine" else "g")
            for k in ROW_KEYS]


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


def per_class_rows(r: dict[str, Any]) -> list[list[str]]:
    """[class, samples, reference, candidate] per class (samples: the candidate confusion matrix's row sums)."""
    cand = r["candidate"]
    pc = cand.get("per_class_accuracy")
    if not pc:
        return []
    d = r["dataset"]
    labels = d.get("labels") or [str(i) for i in range(d["num_classes"])]
    ref_pc = (r.get("reference") or {}).get("per_class_accuracy") or [None] * len(labels)
    cm = cand.get("confusion_matrix") or []
    counts = [sum(row) for row in cm] if len(cm) == len(labels) else [None] * len(labels)
    return [[str(lab), _fmt(counts[i]), _fmt(ref_pc[i], "pct"), _fmt(pc[i], "pct")] for i, lab in enumerate(labels)]


PER_CLASS_HEADER = ["class", "samples", "reference", "candidate"]
FIRMWARE_HEADER = ["engine", "arena", "flash (% of board)", "RAM (% of board)", "fits",
                   "instructions / inference", "board-clock lower bound"]


def _bytes_pct(nbytes: Any, pct: Any, board_bytes: Any) -> str:
    if nbytes is None:
        return DASH
    if pct is None and board_bytes:
        pct = 100.0 * nbytes / board_bytes
    return _fmt(nbytes, "bytes") + (f" ({pct:.1f} %)" if pct is not None else "")


def firmware_section(fw: dict[str, Any]) -> tuple[str, list[list[str]], list[str]]:
    """(board line, one row per engine under ``FIRMWARE_HEADER``, notes) of the pipeline's ``firmware`` entry;
    every key may be missing or ``None``."""
    b = fw.get("board") or {}
    parts = [f"{b.get('display') or b.get('key') or DASH}" + (f" ({b['key']})" if b.get("key") and b.get("display")
                                                             else "")]
    if b.get("core"):
        parts.append(str(b["core"]))
    parts.append(f"{b['clock_mhz']:g} MHz" if b.get("clock_mhz") is not None else f"clock {DASH}")
    parts.append(f"flash {_fmt(b.get('flash_bytes'), 'bytes')}")
    parts.append(f"RAM {_fmt(b.get('ram_bytes'), 'bytes')}")
    board = "Board: " + ", ".join(parts)
    if fw.get("fits") is not None:  # the pipeline's verdict: some engine fits the board
        board += f"; the model fits (with at least one engine): {_fmt(fw['fits'])}"
    rows, notes = [], []
    for e in fw.get("engines") or []:
        lb = e.get("lower_bound_ms")
        instr = e.get("instructions_per_inference")
        rows.append([str(e.get("engine") or DASH), _fmt(e.get("arena_bytes"), "bytes"),
                     _bytes_pct(e.get("flash_bytes"), e.get("flash_pct"), b.get("flash_bytes")),
                     _bytes_pct(e.get("ram_bytes"), e.get("ram_pct"), b.get("ram_bytes")), _fmt(e.get("fits")),
                     f"{int(instr):,}" if instr is not None else DASH,
                     f">= {sig(lb)} ms" if lb is not None else DASH])
        src = [f"{what}: {e[k]}" for what, k in (("arena", "arena_source"), ("flash", "flash_source"),
                                                 ("RAM", "ram_source")) if e.get(k)]
        if src:
            notes.append(f"{e.get('engine') or DASH}: " + "; ".join(src))
    notes += [str(n) for n in fw.get("notes") or []]
    notes += [f"suggestion: {s}" for s in fw.get("suggestions") or []]
    return board, rows, notes
