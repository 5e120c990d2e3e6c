"""report.md / report.html of a verify report dict: sections, figures (checked against values computed here from the
dict), rounding, shortened tensor names, the latency plot's ticks; the throughput labels of verify and bench."""

from __future__ import annotations

import copy
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from toolchain.report import render_html, render_markdown, write_reports

LONG = ("model_1/conv2d_3/Relu;model_1/conv2d_3/BiasAdd;model_1/conv2d_3/Conv2D;model_1/batch_normalization_3/"
        "FusedBatchNormV3")  # a fused TFLite tensor name, 108 characters


def _lat(median: float, runtime: str, tp: float, btp: float, mode: str) -> dict:
    return {"runtime": runtime, "runtime_version": "1.0", "threads": None, "runs": 100, "warmup": 10,
            "min": median * 0.9, "median": median, "mean": median * 1.1, "p90": median * 1.2, "p99": median * 1.5,
            "max": median * 2, "throughput_per_s": tp, "batch_throughput_per_s": btp, "batch_samples": 256,
            "batch_passes": 3, "batch_mode": mode, "samples_ms": [median * f for f in (0.9, 1.0, 1.1, 1.5, 2.0)]}


def _report(**over) -> dict:
    cm = [[5, 1, 0], [0, 3, 1], [0, 0, 7]]
    ref_cm = [[6, 0, 0], [0, 4, 0], [1, 0, 6]]
    r = {
        "format": "toolchain-verify-report/1", "toolchain_version": "0.1.0", "created_utc": "2026-01-01T00:00:00Z",
        "task": "classification", "passed": True, "samples": 23,
        "dataset": {"spec": "digits", "split": "test", "samples": 23, "num_classes": 3, "labels": ["cat", "dog", "owl"],
                    "seed": 0, "normalisation": {"scale": 0.0625, "max_value": 16, "provenance": "declared",
                                                 "detail": "pixels 0..16"},
                    "preprocessing": {"input_shape": [8, 8, 1], "scale": 0.0625, "resize": "none", "channels": "keep"},
                    "transform_source": "recorded"},
        "reference": {"path": "/x/model.keras", "kind": "keras", "size_bytes": 2_317_811, "runtime": "keras",
                      "runtime_version": "3.1", "precision": "float32", "accuracy": 16 / 23,
                      "per_class_accuracy": [1.0, 1.0, 6 / 7], "confusion_matrix": ref_cm, "eval_seconds": 0.57213,
                      "eval_mode": "batched(1024)"},
        "candidate": {"path": "/x/model_int8.tflite", "kind": "tflite", "size_bytes": 581_568, "runtime": "litert",
                      "runtime_version": "2.3.0", "precision": "int8", "accuracy": 15 / 23,
                      "per_class_accuracy": [5 / 6, 3 / 4, 1.0], "confusion_matrix": cm, "eval_seconds": 0.18531,
                      "eval_mode": "batched(256)"},
        "accuracy_drop_pp": 100 / 23, "comparison": None,
        "rows": [{"name": "candidate vs reference", "accuracy": None, "agreement": 0.95652, "rmse": 0.0024771,
                  "mae": 0.00060253, "l2r": 0.0079761, "cosine": 0.99997213, "sqnr_db": 41.96123}],
        "layer_errors": {"status": "ok", "samples": 20, "layers": [], "worst": []},
        "latency_ms": {"reference": _lat(0.41234, "keras", 221.76, 1529.23, "batched(256)"),
                       "candidate": _lat(0.061634, "litert", 681.53, 4074.43, "batched(256)"), "speedup": 6.7183},
        "sizes": {"reference_bytes": 2_317_811, "candidate_bytes": 581_568, "ratio": 0.25091},
        "baseline": None, "checks": [], "warnings": [], "input_statistics": {},
        "host": {"cpu": "cpu", "cores": 2, "python": "3.11", "numpy": "2", "runtimes": {"litert": "2.3.0"}},
        "target": None, "plots": [],
        "firmware": {"board": {"key": "nrf52840", "display": "Nordic nRF52840 DK", "clock_mhz": 64.0,
                               "flash_bytes": 1_048_576, "ram_bytes": 262_144},
                     "engines": [{"engine": "TFLM", "arena_bytes": 49_136,
                                  "arena_source": "measured with tflite-micro on the host + 10 % margin",
                                  "flash_bytes": 610_000, "flash_source": "model 581,184 B + runtime estimate 44 KB",
                                  "ram_bytes": 52_000, "flash_pct": 58.17, "ram_pct": 19.84, "fits": True,
                                  "instructions_per_inference": None, "lower_bound_ms": None},
                                 {"engine": "C engine", "arena_bytes": 31_360, "arena_source": "offline plan",
                                  "flash_bytes": 555_061, "flash_source": "measured in the ELF", "ram_bytes": 32_522,
                                  "flash_pct": 52.93, "ram_pct": 12.41, "fits": True,
                                  "instructions_per_inference": 16_711_627, "lower_bound_ms": 261.1191}],
                     "fits": True, "notes": ["the board-clock time is a lower bound"]},
    }
    layers = [{"op": "CONV_2D", "tensor": 7, "name": LONG, "scale": 0.0042284215, "zero_point": -128,
               "rmse": 0.001048053195, "rmse_over_scale": 0.247859205, "max_abs_error": 0.0046868934},
              {"op": "SOFTMAX", "tensor": 9, "name": "Identity", "scale": 0.00390625, "zero_point": -128,
               "rmse": 0.0010490, "rmse_over_scale": 0.26854, "max_abs_error": 0.003014}]
    r["layer_errors"].update(layers=layers, worst=layers)
    r.update(over)
    return r


class _Tables(HTMLParser):
    """Every <h2> and <table> of a page in order: tables as rows of (text, attributes) cells."""

    def __init__(self):
        super().__init__()
        self.items: list = []
        self._cell = self._h2 = None
        self._p = None

    def handle_starttag(self, tag, attrs):
        if tag == "h2":
            self._h2 = ""
        elif tag == "p":
            self._p = ""
        elif tag == "table":
            self.items.append(("table", []))
        elif tag == "tr":
            self.items[-1][1].append([])
        elif tag in ("td", "th"):
            self._cell = ["", dict(attrs)]

    def handle_endtag(self, tag):
        if tag == "h2":
            self.items.append(("h2", self._h2))
            self._h2 = None
        elif tag == "p" and self._p is not None:
            self.items.append(("p", self._p))
            self._p = None
        elif tag in ("td", "th") and self._cell is not None:
            self.items[-1][1][-1].append(tuple(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[0] += data
        if self._h2 is not None:
            self._h2 += data
        if self._p is not None:
            self._p += data


def _parse(page: str) -> list:
    p = _Tables()
    p.feed(page)
    return p.items


def _section(items: list, heading: str) -> tuple[list[str], list]:
    """(paragraphs, first table) following the <h2> ``heading``."""
    i = items.index(("h2", heading))
    paras, j = [], i + 1
    while items[j][0] == "p":
        paras.append(items[j][1])
        j += 1
    assert items[j][0] == "table", items[j]
    return paras, items[j][1]


def _texts(rows: list) -> list[list[str]]:
    return [[c[0] for c in row] for row in rows]


def test_per_class_table_in_html_and_markdown():
    r = _report()
    _, rows = _section(_parse(render_html(r, [], None)), "Per-class accuracy")
    rows = _texts(rows)
    assert rows[0] == ["class", "samples", "reference", "candidate"]
    counts = np.asarray(r["candidate"]["confusion_matrix"]).sum(axis=1)
    for i, lab in enumerate(r["dataset"]["labels"]):
        want = [lab, str(counts[i]), f"{100 * r['reference']['per_class_accuracy'][i]:.2f} %",
                f"{100 * r['candidate']['per_class_accuracy'][i]:.2f} %"]
        assert rows[i + 1] == want
    assert rows[2] == ["dog", "4", "100.00 %", "75.00 %"]  # 3 of the 4 dogs right: the row read off by hand
    md = render_markdown(r, [], None)
    assert "## Per-class accuracy" in md and "| dog | 4 | 100.00 % | 75.00 % |" in md


def test_firmware_section_figures_come_from_the_dict():
    r = _report()
    fw = r["firmware"]
    paras, rows = _section(_parse(render_html(r, [], None)), "Firmware on the board")
    rows = _texts(rows)
    assert rows[0] == ["engine", "arena", "flash (% of board)", "RAM (% of board)", "fits",
                       "instructions / inference", "board-clock lower bound"]
    b = fw["board"]
    assert b["display"] in paras[0] and "64 MHz" in paras[0] and f"{b['flash_bytes']:,} B" in paras[0] \
        and f"{b['ram_bytes']:,} B" in paras[0]
    for e, row in zip(fw["engines"], rows[1:], strict=True):
        assert row[0] == e["engine"]
        assert row[1] == f"{e['arena_bytes']:,} B"
        assert row[2] == f"{e['flash_bytes']:,} B ({e['flash_pct']:.1f} %)"
        assert row[3] == f"{e['ram_bytes']:,} B ({e['ram_pct']:.1f} %)"
        assert row[4] == "yes"
        n = e["instructions_per_inference"]
        assert row[5] == (f"{n:,}" if n is not None else "–")
        assert row[6] == ("–" if e["lower_bound_ms"] is None else ">= 261.1 ms")
    assert paras[0].endswith("the model fits (with at least one engine): yes.")
    nofit = copy.deepcopy(r)
    nofit["firmware"]["fits"] = False
    assert "the model fits (with at least one engine): no." in render_markdown(nofit, [], None)
    page = render_html(r, [], None)
    assert fw["notes"][0] in page and fw["engines"][0]["arena_source"] in page
    md = render_markdown(r, [], None)
    assert "## Firmware on the board" in md
    assert "| C engine | 31,360 B | 555,061 B (52.9 %) | 32,522 B (12.4 %) | yes | 16,711,627 | >= 261.1 ms |" in md


def test_firmware_section_tolerates_missing_values():
    fw = {"board": {"key": "b", "display": None, "clock_mhz": None, "flash_bytes": None, "ram_bytes": 1000},
          "engines": [{"engine": "TFLM", "arena_bytes": None, "flash_bytes": 250, "flash_pct": None, "ram_bytes": 100,
                       "ram_pct": None, "fits": None, "instructions_per_inference": None, "lower_bound_ms": None}],
          "notes": None}
    r = _report(firmware=fw)
    _, rows = _section(_parse(render_html(r, [], None)), "Firmware on the board")
    # RAM % computed from the board's RAM when the entry has none; no board flash: no flash %
    assert _texts(rows)[1] == ["TFLM", "–", "250 B", "100 B (10.0 %)", "–", "–", "–"]
    assert "## Firmware on the board" in render_markdown(r, [], None)
    for empty in ({}, {"board": None, "engines": None, "notes": None}):
        assert "Firmware on the board" in render_html(_report(firmware=empty | {"notes": ["n"]}), [], None)
    assert "Firmware on the board" not in render_html(_report(firmware=None), [], None)


def test_long_tensor_names_are_shortened_with_the_full_name_on_hover():
    _, rows = _section(_parse(render_html(_report(), [], None)), "Per-layer quantisation error")
    (text, attrs), (short_text, short_attrs) = rows[1][2], rows[2][2]
    assert len(LONG) > 48 and len(text) == 48 and "…" in text
    head, tail = text.split("…")
    assert LONG.startswith(head) and LONG.endswith(tail) and len(head) > len(tail) > 0
    assert attrs["title"] == LONG
    assert short_text == "Identity" and "title" not in short_attrs


def test_figures_are_rounded():
    r = _report()
    page, md = render_html(r, [], None), render_markdown(r, [], None)
    for text in (page, md):
        for raw in ("0.25091", "6.7183", "0.061634", "681.53", "4074.43", "0.57213", "41.961", "0.0024771"):
            assert raw not in text, raw
        assert "size ratio (candidate / reference): 0.251x" in text
        assert "reference / candidate): 6.7x" in text
        assert "0.06163 ms" in text and "0.4123 ms" in text  # 4 significant digits
        assert "681.5 samples/s" in text and "0.185 s" in text
    # no figure in the page carries more than 6 significant digits (cosine 0.999972 is the longest by design)
    numbers = re.findall(r"(?<![\w.])\d+\.\d+", re.sub(r"<[^>]+>", " ", page))
    assert numbers and max(len(n.replace(".", "").lstrip("0")) for n in numbers) <= 6


def test_throughput_rows_say_batch_1_or_batched_and_how():
    from toolchain.report import _summary_rows

    r = _report()
    r["latency_ms"]["candidate"]["batch_mode"] = "loop"
    rows = {a: (b, c) for a, b, c in _summary_rows(r)}
    assert rows["throughput, batch 1"] == ("221.8 samples/s (100 runs)", "681.5 samples/s (100 runs)")
    assert rows["throughput, batched"] == ("1,529 samples/s (256 samples in batches of 256)",
                                           "4,074 samples/s (256 samples one at a time)")
    assert {"latency median (batch 1)", "latency p90 (batch 1)", "latency p99 (batch 1)"} <= set(rows)
    assert not any(k == "batch throughput" for k in rows)


def test_bench_throughput_rows():
    from toolchain.bench import throughput_rows

    r = {"runtime": "litert", "runs": 200, "throughput_per_s": 15826.1, "batch_throughput_per_s": 17956.4,
         "batch_samples": 64, "batch_mode": "batched(64)", "batch_passes": 20}
    assert throughput_rows(r) == [
        ("throughput, batch 1", "15,826 samples/s (batch-1 model invoked 200 times back to back)"),
        ("throughput, batched", "17,956 samples/s (one batch of 64 on a batch-resized interpreter; 20 timed passes)")]
    r.update(batch_mode="loop", batch_passes=1, runtime="tflm")
    assert throughput_rows(r)[1] == ("throughput, batched", "17,956 samples/s (64 samples one at a time: the model "
                                                            "cannot be batch-resized; 1 timed pass)")


def test_sig_rounds_to_significant_digits():
    from toolchain.timing import sig

    cases = {0.061634: "0.06163", 261.1191: "261.1", 15826.1: "15,826", 681.53: "681.5", 999.96: "1,000",
             0.99996: "1.000", 0.000123456: "0.0001235", 3.2e-6: "3.2e-06", 0.0: "0"}
    assert {v: sig(v) for v in cases} == cases


class _ClockRunner:
    """run_many advances a fake clock by 5 ms per call, plus 10 ms on the first (the resized interpreter built)."""
    batch_mode = "batched(8)"

    def __init__(self):
        self.calls, self.now = 0, 100.0

    def perf_counter(self) -> float:
        return self.now

    def run_many(self, x, batch_size=256):
        self.calls += 1
        self.now += 0.015 if self.calls == 1 else 0.005
        return x


def test_time_batched_times_inference_not_setup(monkeypatch):
    import toolchain.timing as timing

    runner = _ClockRunner()
    monkeypatch.setattr(timing.time, "perf_counter", runner.perf_counter)
    per_s, passes = timing.time_batched(runner, np.zeros((8, 2)), 8, min_seconds=0.0495)
    # the untimed first pass, then 5 ms passes until >= 0.0495 s: 10 passes of 8 samples in 0.05 s (setup not counted)
    assert runner.calls == passes + 1 and passes == 10
    assert per_s == pytest.approx(8 / 0.005)
    runner = _ClockRunner()
    monkeypatch.setattr(timing.time, "perf_counter", runner.perf_counter)
    assert timing.time_batched(runner, np.zeros((8, 2)), 8, min_seconds=10.0, max_passes=4)[1] == 4


def test_runner_keeps_the_checked_batched_interpreter():
    from toolchain.runtime import open_runtime

    model = Path(__file__).resolve().parents[2] / "shared/models/reference/mlperftiny__kws_ref_model.tflite"
    if not model.is_file():
        pytest.skip(f"reference model missing: {model}")
    runner = open_runtime(model, runtime="litert")
    built = []
    real = runner._batched
    runner._batched = lambda bs: built.append(bs) or real(bs)
    x = np.random.default_rng(0).integers(-128, 128, (16, 49, 10, 1)).astype(np.int8)
    first = runner.run_many(x, batch_size=8)
    second = runner.run_many(x, batch_size=8)
    assert built == [8] and runner.batch_mode == "batched(8)"
    single = np.concatenate([runner.run(x[i:i + 1]) for i in range(len(x))])
    assert np.array_equal(first, single) and np.array_equal(second, single)


def test_latency_axis_has_plain_number_ticks():
    mpl = pytest.importorskip("matplotlib")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    from toolchain.report import _log_ms_axis

    for values, want in (([0.05, 0.08, 0.3, 1.2, 4.4], {"0.1", "0.2", "0.5", "1", "2"}),
                         ([0.11, 0.13, 0.18], {"0.15"})):  # less than a decade: more ticks inside it
        fig, ax = plt.subplots()
        ax.boxplot([values], vert=False)
        _log_ms_axis(ax, values)
        fig.canvas.draw()
        lo, hi = ax.get_xlim()
        labels = {t.get_text() for t in ax.get_xticklabels() if lo <= t.get_position()[0] <= hi and t.get_text()}
        plt.close(fig)
        assert want <= labels, labels
        assert not any("10^" in t or "$" in t for t in labels), labels


def test_write_reports_writes_the_sections(tmp_path):
    r = copy.deepcopy(_report())
    paths = write_reports(r, tmp_path / "rep", plots=False)
    page = paths["html"].read_text()
    assert "id='firmware'" in page and "id='per-class'" in page
    assert "plots disabled" in paths["md"].read_text()


def test_page_fits_1280_px_in_chromium(tmp_path):
    """The real page in headless chromium (when installed; CI has none): no horizontal scroll at 1280 px."""
    import importlib.util

    if shutil.which("chromium") is None:
        pytest.skip("chromium not installed")
    spec = importlib.util.spec_from_file_location(
        "report_screenshot", Path(__file__).resolve().parents[1] / "benchmarks" / "report_screenshot.py")
    shot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shot)
    paths = write_reports(copy.deepcopy(_report()), tmp_path / "rep", plots=True)
    m = shot.measure(shot.chromium(), paths["html"], 1280)
    assert m["client_width"] == 1280 and m["scroll_width"] <= 1280, m
    wide = tmp_path / "wide.html"  # the measurement itself sees an overflow
    wide.write_text("<html><body><div style='width:2000px'>x</div></body></html>")
    assert shot.measure(shot.chromium(), wide, 1280)["scroll_width"] > 1280
