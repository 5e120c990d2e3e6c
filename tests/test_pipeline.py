"""`toolchain pipeline`: train -> int8 -> TFLM export -> verify in one run folder."""

from __future__ import annotations

import json

import pytest

from toolchain.pipeline import DEFAULT_EPOCHS
from tests.helpers import cli_exit_code as cli




@pytest.mark.slow
def test_default_pipeline_reaches_95_percent_int8_on_digits(tmp_path, capsys):
    """The README's main job, with the default epochs (about 80 s on 2 shared cores)."""
    out = tmp_path / "demo"
    assert cli(["pipeline", "--output", str(out), "--runs", "20"]) == 0
    text = capsys.readouterr().out
    assert "pipeline summary" in text and "PASSED" in text
    s = json.loads((out / "pipeline.json").read_text())
    assert s["epochs"] == DEFAULT_EPOCHS and s["model"] == "seed001_basic_cnn" and s["dataset"] == "digits"
    assert s["int8_accuracy"] >= 0.95, s
    assert s["passed"] is True and s["accuracy_drop_pp"] <= 1.0
    for f in ("train/model.keras", "train/metadata.json", "model_int8.tflite", "model_int8.json",
              "firmware/manifest.json", "verify/report.json", "verify/report.html"):
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
    assert (s["params"], s["macs"]) == (1_199_882, 11_992_448)  # seed001_basic_cnn at 28x28x1, by hand
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
