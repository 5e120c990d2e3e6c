"""The figures the README quotes are the figures of the committed benchmark runs (benchmarks/results)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
RESULTS = ROOT / "benchmarks" / "results"


def _bench_module(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_pipeline_block_is_the_committed_run():
    bench = _bench_module("pipeline")
    s = json.loads((RESULTS / "pipeline.json").read_text(encoding="utf-8"))
    block = bench.render_block(s)
    assert block in README, "README's pipeline block is not benchmarks/results/pipeline.json: run " \
                            "`python benchmarks/pipeline.py --render`"
    summary = s["summary"]
    # the committed run is the README's main job with its defaults, and it reaches what the README promises
    from toolchain.pipeline import DEFAULT_EPOCHS, DEFAULT_MODEL, DEFAULT_TARGET

    assert (summary["model"], summary["epochs"], summary["target"]) == (DEFAULT_MODEL, DEFAULT_EPOCHS, DEFAULT_TARGET)
    assert summary["int8_accuracy"] >= 0.95 and summary["passed"] and summary["firmware"]["fits"]
    assert f"{100 * summary['int8_accuracy']:.2f} %" in block
    assert f"{summary['arena_bytes']:,} B" in block and f"{summary['c_engine_arena_bytes']:,} B" in block
    if summary["on_target"]:
        assert f"{summary['on_target']['instructions_per_inference']:,} instructions/inference" in block


def test_no_other_pipeline_accuracy_is_quoted_outside_the_block():
    """The same run is not quoted with another figure elsewhere (the issue: 96.1 / 95.54 / 94.15 % for one run)."""
    s = json.loads((RESULTS / "pipeline.json").read_text(encoding="utf-8"))["summary"]
    outside = README.split("<!-- pipeline figures")[0] + README.split("<!-- end of pipeline figures -->")[1]
    for line in outside.splitlines():
        if s["model"] in line and "epoch" in line:
            assert not re.search(r"\d+\.\d+ %", line), line


def test_m4_table_is_the_committed_run():
    m4 = json.loads((RESULTS / "m4.json").read_text(encoding="utf-8"))
    cell = _bench_module("m4")._cell
    for row in m4["rows"]:
        e = row["engines"]
        if row["model"].split(" (")[0] not in ("ResNet-8", "DS-CNN KWS", "micro_speech", "mobilenet_v1_025"):
            continue
        c, nn = e["c"], e["cmsis-nn"]
        for eng in (e["tflm"], nn, c):
            flash = eng["flash"]["model"] + eng["flash"]["runtime"]
            figure = f"{cell(eng, 'instructions_per_inference')}, {eng['arena_bytes']:,} B, {flash:,} B"
            assert figure in README, (row["model"], figure)
        q = row["ratios_c_vs_cmsis_nn"]
        assert f"{q['instructions_per_inference']:.2f}x, {q['arena_bytes']:.2f}x, {q['flash_bytes']:.2f}x" in README


def test_tune_figures_are_the_committed_run():
    s = json.loads((RESULTS / "tune.json").read_text(encoding="utf-8"))
    section = " ".join(README.split("### Architecture search (`toolchain tune`)")[1].split())
    w = s["winner"]["result"]
    assert s["counts"]["trials"] == 12 and s["settings"]["dataset"] == "digits" and s["board"]["key"] == "nrf52840"
    assert w["fits"] and w["int8_test_accuracy"] >= 0.95
    for figure in (f"{100 * w['int8_test_accuracy']:.2f} %", f"{w['flash_bytes']:,} B flash",
                   f"{w['ram_bytes']:,} B RAM", f"arena {w['c_engine_arena_bytes']:,} B", f"TFLM arena {w['tflm_arena_bytes']:,} B",
                   f"{w['instructions']:,} instructions"):
        assert figure in section, figure
    secs = [t["seconds"] for t in s["trials"]]
    assert f"{min(secs):.1f}–{max(secs):.1f} s" in section
