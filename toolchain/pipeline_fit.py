"""The pipeline's firmware facts: does the model fit the board, with TFLM and with the C engine, and what would.

``firmware_section(board, export_manifest, engine_manifest, target)`` -> the ``firmware`` section of the verify
report and of ``pipeline.json``::

    {"board": {key, display, core, clock_mhz, flash_bytes, ram_bytes},
     "engines": [{engine, arena_bytes, arena_source, flash_bytes, flash_source, ram_bytes, ram_source, flash_pct,
                  ram_pct, fits, instructions_per_inference, lower_bound_ms}, ...],
     "fits": bool (some engine fits), "notes": [...], "suggestions": [...]}

Figures and where they come from:

* TFLM: arena = the export's recommended arena (measured with tflite-micro, + margin); flash = model bytes + the
  TFLM runtime **estimate** of the board profile; RAM = arena + one application-side copy of the I/O.
* C engine, run on the emulated Cortex-M4F: flash = model constants + engine code from the linked ELF; RAM =
  arena + other static data + stack high-water mark + the caller's I/O buffers (all measured).
* C engine, not run on the target: flash = the weight bytes only and RAM = arena + I/O only, both labelled
  **lower bounds** (code, static data and stack not measured).

When no engine fits, the suggestions name the boards in ``toolchain/targets.toml`` whose flash and RAM hold the
smallest measured footprint (computed) and the zoo models whose int8 weights would fit at about one byte per
parameter (an **estimate**, labelled so).
"""

from __future__ import annotations

from typing import Any

from firmware_export.targets import Target, load_targets


def _pct(n: int, budget: int) -> float:
    return round(100.0 * n / budget, 2)


def _row(board: Target, engine: str, arena: int | None, arena_source: str, flash: int, flash_source: str,
         ram: int, ram_source: str, instructions: int | None = None) -> dict[str, Any]:
    lower_ms = round(instructions / (board.clock_mhz * 1e3), 3) if instructions else None
    return {"engine": engine, "arena_bytes": arena, "arena_source": arena_source,
            "flash_bytes": int(flash), "flash_source": flash_source, "flash_pct": _pct(flash, board.flash_bytes),
            "ram_bytes": int(ram), "ram_source": ram_source, "ram_pct": _pct(ram, board.ram_bytes),
            "fits": flash <= board.flash_bytes and ram <= board.ram_bytes,
            "instructions_per_inference": instructions, "lower_bound_ms": lower_ms}


def tflm_row(board: Target, manifest: dict[str, Any]) -> dict[str, Any]:
    fit = manifest["target"]
    arena = manifest["arena"]
    where = ("on the Cortex-M4F (QEMU, TFLM " + str((arena.get("target") or {}).get("kernels")) + ")"
             if arena.get("recommended_from") == "target" else "with tflite-micro on the 64-bit host")
    return _row(board, "TFLM", int(arena["recommended_bytes"]),
                f"measured {where} + {arena['margin_pct']:g} % margin",
                fit["flash_bytes"], f"model {fit['model_bytes']:,} B + runtime {fit['runtime_estimate_bytes']:,} B "
                                    f"(estimate: {fit['runtime_estimate_source']})",
                fit["ram_bytes"], f"arena + I/O buffers {fit['io_buffer_bytes']:,} B")


def c_engine_row(board: Target, engine: dict[str, Any], io_bytes: int, target: dict[str, Any] | None
                 ) -> dict[str, Any]:
    arena = int(engine["arena_bytes"])
    if target and target.get("engine") == "c":
        flash = target["flash"]
        return _row(board, "C engine", arena, "C engine offline memory plan",
                    flash["model"] + flash["runtime"],
                    f"measured in the Cortex-M4F ELF: model constants {flash['model']:,} B + engine code "
                    f"{flash['runtime']:,} B", target["ram_bytes"] + io_bytes,
                    f"measured: arena + static {target['static_ram_bytes']:,} B + stack "
                    f"{target['stack_bytes']:,} B, + I/O buffers {io_bytes:,} B",
                    int(target["instructions_per_inference"]))
    return _row(board, "C engine", arena, "C engine offline memory plan", int(engine["weight_bytes"]),
                "lower bound: weight bytes only (engine code not measured without the Arm toolchain)",
                arena + io_bytes, f"lower bound: arena + I/O buffers {io_bytes:,} B (static data and stack not "
                                  "measured without the target run)")


def suggestions(board: Target, rows: list[dict[str, Any]], model_name: str, params: int | None) -> list[str]:
    """What would fit when nothing does: boards (computed from the measured needs) and zoo models (estimate)."""
    import models

    out = []
    boards = [t for t in load_targets().values() if t.runtime == "tflm" and t.key != board.key and any(
        r["flash_bytes"] <= t.flash_bytes and r["ram_bytes"] <= t.ram_bytes for r in rows)]
    if boards:
        out.append("a board with room for it (by the figures above): " + ", ".join(
            f"{t.key} ({t.flash_kb:,} KB flash, {t.ram_kb:,} KB RAM)" for t in boards))
    c_row = next((r for r in rows if r["engine"] == "C engine"), None)
    if c_row is not None and c_row.get("weights_bytes"):
        half = c_row["flash_bytes"] - c_row["weights_bytes"] // 2
        if half <= board.flash_bytes and c_row["ram_bytes"] <= board.ram_bytes:
            out.append(f"int4 weights with the C engine (estimate: flash ~{half:,} B, half the weight bytes): "
                       "`toolchain quantise RUN --auto --target " + board.key + "` or `--weights int4`")
    code = _code_bytes(rows)
    small = [s for s in models.list_specs()
             if s.name != model_name and s.task == "classification" and s.params is not None
             and (params is None or s.params < params)]
    small = [s for s in small if s.params + code <= board.flash_bytes]
    if small:
        out.append(f"a smaller zoo model (estimate: int8 weights ~1 B per parameter + {code:,} B "
                   f"engine code): " + ", ".join(f"{s.name} ({s.params:,} params)"
                                                 for s in sorted(small, key=lambda s: -s.params)[:4]))
    return out


def _code_bytes(rows: list[dict[str, Any]]) -> int:
    """The smallest measured or estimated non-weight flash (runtime code) among the engines."""
    return min(int(r.get("code_bytes") or 0) for r in rows)


def firmware_section(board: Target, export_manifest: dict[str, Any], engine_manifest: dict[str, Any] | None,
                     target: dict[str, Any] | None, model_name: str) -> dict[str, Any]:
    io_bytes = int(export_manifest["target"]["io_buffer_bytes"])
    rows = [tflm_row(board, export_manifest)]
    rows[0]["code_bytes"] = export_manifest["target"]["runtime_estimate_bytes"]
    notes = []
    if engine_manifest is not None:
        rows.append(c_engine_row(board, engine_manifest, io_bytes, target))
        rows[-1]["code_bytes"] = rows[-1]["flash_bytes"] - int(engine_manifest["weight_bytes"])
        rows[-1]["weights_bytes"] = int(engine_manifest["weight_bytes"])
    if not target:
        notes.append("not run on the emulated Cortex-M4F: no instruction counts (needs arm-none-eabi-gcc and "
                     "qemu-system-arm)")
    else:
        notes.append(f"instructions per inference counted on QEMU {target['machine']} (-icount); the board-clock "
                     "time is a lower bound: instructions / clock, a real core needs >= 1 cycle per instruction")
    fits = any(r["fits"] for r in rows)
    return {"board": {"key": board.key, "display": board.display, "core": board.core, "clock_mhz": board.clock_mhz,
                      "flash_bytes": board.flash_bytes, "ram_bytes": board.ram_bytes},
            "engines": rows, "fits": fits, "notes": notes,
            "suggestions": [] if fits else suggestions(board, rows, model_name, export_manifest.get("params"))}


def fit_lines(fw: dict[str, Any]) -> list[tuple[str, str]]:
    """The summary rows of the firmware section."""
    b = fw["board"]
    out = [("board", f"{b['key']}: {b['display']}, {b['clock_mhz']:g} MHz, {b['flash_bytes'] // 1024:,} KB flash, "
                     f"{b['ram_bytes'] // 1024:,} KB RAM")]
    for r in fw["engines"]:
        verdict = "FITS" if r["fits"] else "DOES NOT FIT"
        src = r["flash_source"]
        lb = (" (lower bounds: code, static data and stack not measured)" if "lower bound" in src
              else ", runtime code estimated" if "estimate" in src else ", measured")
        out.append((f"{r['engine']} on the board",
                    f"{verdict}: flash {r['flash_bytes']:,} B ({r['flash_pct']:.1f} %), RAM {r['ram_bytes']:,} B "
                    f"({r['ram_pct']:.1f} %), arena {r['arena_bytes']:,} B{lb}"))
        if r["instructions_per_inference"]:
            out.append((f"{r['engine']} on target", f"{r['instructions_per_inference']:,} instructions/inference "
                                                    f"(QEMU Cortex-M4F) -> >= {r['lower_bound_ms']:.1f} ms at "
                                                    f"{b['clock_mhz']:g} MHz (lower bound)"))
    for s in fw["suggestions"]:
        out.append(("would fit", s))
    return out
