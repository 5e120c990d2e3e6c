"""`toolchain pipeline`: train -> int8 -> TFLM export -> verify in one run folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toolchain.pipeline import DEFAULT_EPOCHS, DEFAULT_MODEL, DEFAULT_TARGET
from tests.helpers import cli_exit_code as cli




@pytest.mark.slow
def test_default_pipeline_reaches_95_percent_int8_on_digits(tmp_path, capsys):
    """The README's main job, with the default epochs (about 2 min on 2 shared cores): the model fits the default
    board with TFLM and the C engine, and (Arm toolchain + QEMU) runs on the emulated Cortex-M4F."""
    out = tmp_path / "demo"
    assert cli(["pipeline", "--output", str(out), "--runs", "20"]) == 0
    text = capsys.readouterr().out
    assert "pipeline summary" in text and "PASSED" in text
    s = json.loads((out / "pipeline.json").read_text())
    assert s["epochs"] == DEFAULT_EPOCHS and s["model"] == DEFAULT_MODEL == "seed002_keras_cnn"
    assert s["dataset"] == "digits" and s["target"] == DEFAULT_TARGET == "nrf52840"
    assert s["int8_accuracy"] >= 0.95, s
    assert s["passed"] is True and s["accuracy_drop_pp"] <= 1.0
    for f in ("train/model.keras", "train/metadata.json", "model_int8.tflite", "model_int8.json",
              "firmware/manifest.json", "c_engine/manifest.json", "verify/report.json", "verify/report.html"):
        assert (out / f).is_file(), f
    rep = json.loads((out / "verify" / "report.json").read_text())
    assert rep["candidate"]["accuracy"] == s["int8_accuracy"] and rep["reference"]["accuracy"] == s["float_accuracy"]
    # the int8 accuracy recomputed here: the test split preprocessed as recorded, LiteRT's reference kernels (the
    # report runs the default XNNPACK kernels, which may round a few outputs differently: 2 samples of slack)
    import hashlib

    import numpy as np

    from tests.helpers import flatbuffer_counts
    from tests.test_quantise import int8_predict, test_split

    int8 = out / "model_int8.tflite"
    x, y = test_split(out / "train")
    mine = float(np.mean(np.argmax(int8_predict(int8, x), axis=1) == y))
    assert abs(mine - s["int8_accuracy"]) <= 2 / len(y) and rep["samples"] == len(y)
    manifest = json.loads((out / "firmware" / "manifest.json").read_text())
    assert manifest["source"]["sha256"] == hashlib.sha256(int8.read_bytes()).hexdigest()
    assert s["arena_bytes"] == manifest["arena"]["recommended_bytes"] > 0
    # the recommended arena is enough for tflite-micro here, whose outputs equal LiteRT's reference kernels
    from ai_edge_litert.interpreter import Interpreter
    from tflite_micro.python.tflite_micro import runtime

    tflm = runtime.Interpreter.from_bytes(int8.read_bytes(), arena_size=s["arena_bytes"])
    s_in, z_in = Interpreter(model_path=str(int8)).get_input_details()[0]["quantization"]
    xq = np.clip(np.round(x[:10] / s_in) + z_in, -128, 127).astype(np.int8)
    for i in range(10):
        tflm.set_input(xq[i:i + 1], 0)
        tflm.invoke()
        assert np.array_equal(tflm.get_output(0).reshape(-1), int8_predict(int8, x[i:i + 1])[0].astype(np.int8))
    # params / MACs: the summary and the export manifest equal the counts from the flatbuffer's weight shapes
    counts = flatbuffer_counts(int8)
    assert (s["params"], s["macs"]) == (manifest["params"], manifest["macs"]) == (counts["params"], counts["macs"])
    # seed002_keras_cnn at 28x28x1, by hand: conv 5x5 1->32 @28x28, 32->64 @10x10, 64->128 @6x6, 128->64 @2x2,
    # dense 64->1024->10
    assert s["params"] == (25 * 32 + 32) + (25 * 32 * 64 + 64) + (25 * 64 * 128 + 128) + (25 * 128 * 64 + 64) \
        + (64 * 1024 + 1024) + (1024 * 10 + 10) == 538_698
    assert s["macs"] == 25 * 32 * 784 + 25 * 32 * 64 * 100 + 25 * 64 * 128 * 36 + 25 * 128 * 64 * 4 + 64 * 1024 \
        + 1024 * 10
    # the board fit: TFLM flash = the model file + the board profile's runtime estimate for the model's operators
    import tomllib

    from ai_edge_litert.interpreter import Interpreter as _I
    prof = tomllib.loads((Path(__file__).parents[1] / "toolchain" / "targets.toml").read_text())
    board, est = prof["boards"]["nrf52840"], prof["runtime_estimate"]["tflm"]
    n_ops = len({op["op_name"] for op in _I(model_path=str(int8))._get_ops_details()})
    fw = s["firmware"]
    tflm, ce = fw["engines"]
    assert tflm["engine"] == "TFLM" and ce["engine"] == "C engine"
    assert tflm["flash_bytes"] == len(int8.read_bytes()) + round((est["core_kb"] + est["per_op_kb"] * n_ops) * 1024)
    assert tflm["ram_bytes"] == s["arena_bytes"] + 28 * 28 + 10  # arena + one int8 input and output copy
    assert fw["board"]["flash_bytes"] == board["flash_kb"] * 1024 and fw["board"]["ram_bytes"] == board["ram_kb"] * 1024
    for r in (tflm, ce):
        assert r["flash_pct"] == round(100 * r["flash_bytes"] / fw["board"]["flash_bytes"], 2)
        assert r["fits"] is (r["flash_bytes"] <= fw["board"]["flash_bytes"] and r["ram_bytes"] <= fw["board"]["ram_bytes"])
    assert tflm["fits"] and ce["fits"] and fw["fits"] and fw["suggestions"] == []
    engine = json.loads((out / "c_engine" / "manifest.json").read_text())
    assert s["c_engine_arena_bytes"] == engine["arena_bytes"] == ce["arena_bytes"]
    assert ce["flash_bytes"] >= engine["weight_bytes"] >= s["params"]  # int8 weights + int32 biases, then code
    assert "FITS: flash" in text and "nrf52840" in text
    from firmware_export.m4.tools import tools_available

    if tools_available():  # the C engine ran the first 100 test samples on the emulated Cortex-M4F
        t = s["on_target"]
        assert t["samples"] == 100 and t["identical_pct"] == 100.0
        assert t["lower_bound_ms"] == round(t["instructions_per_inference"] / (board["clock_mhz"] * 1e3), 3)
        host = np.argmax(int8_predict(int8, x[:100]), axis=1)
        assert t["accuracy"] == pytest.approx(float(np.mean(host == y[:100])))  # bit-exact: the same predictions
        assert rep["target"]["instructions_per_inference"] == t["instructions_per_inference"] > s["macs"] // 4
        assert f"{t['instructions_per_inference']:,} instructions/inference" in text
        assert ce["flash_bytes"] == rep["target"]["flash"]["model"] + rep["target"]["flash"]["runtime"]
    else:
        assert s["on_target"] is None and "not run" in text
    assert f"{s['params']:,} / {s['macs']:,}" in text
    assert s["int8_tflite_bytes"] == len(int8.read_bytes())
    assert s["keras_bytes"] == len((out / "train" / "model.keras").read_bytes())
    sidecar = json.loads((out / "model_int8.json").read_text())
    assert sidecar["dataset"] == "digits" and sidecar["quantization"]["io_dtype"] == "int8"
    # the run was built in a temporary folder beside the output: every recorded path names the final folder
    assert sidecar["source_model"] == str((out / "train" / "model.keras").resolve())
    for f in out.rglob("*.json"):
        assert ".tmp" not in f.read_text(), f
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary folder left beside it
    # an existing run folder is not replaced without --force
    assert cli(["pipeline", "--output", str(out)]) == 2
    assert (out / "pipeline.json").is_file()


def test_pipeline_rejects_bad_input_before_any_work(tmp_path, capsys):
    assert cli(["pipeline", "--model", "no_such_model", "--output", str(tmp_path / "a")]) == 2
    assert cli(["pipeline", "--dataset", "bogus:thing", "--output", str(tmp_path / "b")]) == 2
    assert cli(["pipeline", "--epochs", "0", "--output", str(tmp_path / "c")]) == 2
    assert not any((tmp_path / n).exists() for n in "abc")
    err = capsys.readouterr().err
    assert err.count("error:") == 3 and "no_such_model" in err


def test_on_target_without_the_tools_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no arm-none-eabi-gcc, no qemu-system-arm
    assert cli(["pipeline", "--on-target", "--output", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "--on-target needs arm-none-eabi-gcc" in err and err.count("error:") == 1
    assert cli(["pipeline", "--target", "no_such_board", "--output", str(tmp_path / "b")]) == 2
    assert cli(["pipeline", "--on-target", "--no-c-engine", "--output", str(tmp_path / "c")]) == 2
    assert not any((tmp_path / n).exists() for n in "abc")


def test_firmware_section_says_what_would_fit(tmp_path):
    """seed001-sized figures on the nRF52840 (1 MB flash): nothing fits; boards with room and smaller zoo models
    are named; the percentages are the figures over the board's budgets."""
    from firmware_export.targets import get_target, load_targets
    from toolchain.pipeline_fit import firmware_section, fit_lines

    board = get_target("nrf52840")
    manifest = {"params": 1_199_882, "arena": {"recommended_bytes": 68_864, "margin_pct": 10.0,
                                                "recommended_from": "host"},
                "target": {"flash_bytes": 1_212_128 + 40_960, "model_bytes": 1_212_128,
                           "runtime_estimate_bytes": 40_960, "runtime_estimate_source": "estimate",
                           "ram_bytes": 68_864 + 794, "io_buffer_bytes": 794}}
    engine = {"arena_bytes": 59_648, "weight_bytes": 1_200_584}
    target = {"engine": "c", "machine": "mps2-an386", "flash": {"model": 1_203_128, "runtime": 3_805},
              "ram_bytes": 59_962, "static_ram_bytes": 100, "stack_bytes": 214, "instructions_per_inference": 16_538_027}
    fw = firmware_section(board, manifest, engine, target, "seed001_basic_cnn")
    tflm, ce = fw["engines"]
    assert not tflm["fits"] and not ce["fits"] and not fw["fits"]
    assert ce["flash_bytes"] == 1_203_128 + 3_805 and ce["ram_bytes"] == 59_962 + 794
    assert ce["flash_pct"] == round(100 * (1_203_128 + 3_805) / (1024 * 1024), 2)
    assert ce["lower_bound_ms"] == round(16_538_027 / 64e3, 3)
    roomy = sorted(t.key for t in load_targets().values() if t.runtime == "tflm" and t.flash_bytes >= 1_206_933
                   and t.ram_bytes >= 60_756)
    assert roomy and all(k in fw["suggestions"][0] for k in roomy)
    assert "int4 weights" in fw["suggestions"][1] and "estimate" in fw["suggestions"][1]
    assert f"{1_206_933 - 1_200_584 // 2:,} B" in fw["suggestions"][1]
    assert "seed002_keras_cnn" in fw["suggestions"][2] and "seed001_basic_cnn" not in fw["suggestions"][2]
    assert "estimate" in fw["suggestions"][2]
    rows = dict(fit_lines(fw))
    assert rows["C engine on the board"].startswith("DOES NOT FIT: flash 1,206,933 B (115.1 %)")
    assert "lower bound" in rows["C engine on target"] and "runtime code estimated" in rows["TFLM on the board"]
    # without the target run, the C engine's figures are labelled lower bounds
    fw2 = firmware_section(board, manifest, engine, None, "seed001_basic_cnn")
    assert fw2["engines"][1]["flash_bytes"] == 1_200_584 and fw2["engines"][1]["instructions_per_inference"] is None
    assert "lower bounds" in dict(fit_lines(fw2))["C engine on the board"]


def test_failed_stage_leaves_nothing_behind(tmp_path):
    """A data set that cannot be loaded fails in the train stage; the partly built folder is removed."""
    out = tmp_path / "run"
    assert cli(["pipeline", "--dataset", f"npz:{tmp_path / 'missing.npz'}", "--output", str(out)]) == 2
    assert not out.exists()


def test_summary_rows_show_params_and_macs():
    from toolchain.pipeline import summary_rows

    s = {"model": "m", "dataset": "digits", "epochs_run": 1, "samples": 10, "float_accuracy": 0.9,
         "int8_accuracy": 0.9, "accuracy_drop_pp": 0.0, "agreement": 1.0, "params": 1234, "macs": 56789,
         "keras_bytes": 10, "int8_tflite_bytes": 5, "arena_bytes": 64, "arena_recorded_bytes": 60,
         "latency_ms": {"keras_median": 1.0, "int8_median": 0.5, "speedup": 2.0}, "passed": True, "checks": []}
    assert ("params / MACs", "1,234 / 56,789") in summary_rows(s)


def test_forced_run_that_fails_keeps_the_previous_run(tmp_path, monkeypatch):
    """--force replaces a run folder only when the new run completes; a failed run leaves the old one intact."""
    from toolchain.errors import ToolchainError
    from toolchain.pipeline import PipelineOptions, run_pipeline

    out = tmp_path / "demo"
    out.mkdir()
    (out / "pipeline.json").write_text("previous run")

    def failing_train(model, dataset, run_dir, *args, **kwargs):
        run_dir.mkdir(parents=True)  # the new run has started writing (in its temporary folder)
        assert run_dir.parent != out
        raise ToolchainError("training failed", received="test")

    monkeypatch.setattr("toolchain.train.train", failing_train)
    with pytest.raises(ToolchainError, match="training failed"):
        run_pipeline(PipelineOptions(output=str(out), force=True))
    assert sorted(p.name for p in out.iterdir()) == ["pipeline.json"]
    assert (out / "pipeline.json").read_text() == "previous run"
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]
