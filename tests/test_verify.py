"""`toolchain verify`: figures checked against independent NumPy computations; gates; baseline; errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from toolchain.verify import classification_metrics, compare_outputs, load_baseline
from tests.helpers import cli_exit_code as cli

DIGITS_PREP = {"input_shape": [8, 8, 1], "scale": 1.0 / 16.0, "resize": "none", "channels": "keep"}




def _run_folder(folder: Path, model, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    meta = {"model": name, "dataset": "digits", "preprocessing": DIGITS_PREP, "labels": [str(i) for i in range(10)],
            "num_classes": 10, "input_shape": [8, 8, 1], "seed": 0,
            "split": {"val_fraction": 0.1, "test_fraction": 0.2}, "params": int(model.count_params())}
    (folder / "metadata.json").write_text(json.dumps(meta))
    return folder / "model.keras"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """A small CNN trained on the 8x8 digits (run folder + int8 + float16), and a damaged copy."""
    import keras

    from toolchain.data import load_dataset
    from toolchain.quantise import QuantConfig, convert, quantise

    root = tmp_path_factory.mktemp("verify_models")
    ds = load_dataset("digits", seed=0)
    x = (ds.x_train.astype(np.float32) / 16.0).reshape(-1, 8, 8, 1)
    keras.utils.set_random_seed(0)
    inp = keras.Input(shape=(8, 8, 1))
    h = keras.layers.Conv2D(8, 3, activation="relu")(inp)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(32, activation="relu")(h)
    out = keras.layers.Dense(10, activation="softmax")(h)
    model = keras.Model(inp, out)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, ds.y_train, epochs=8, batch_size=32, verbose=0)
    good = _run_folder(root / "good", model, "tiny_cnn")
    quantise(good, root / "good_int8.tflite", config=QuantConfig(calibration_samples=100))
    convert(good, root / "good_f16.tflite", precision="float16")
    # damaged: the same network with heavily perturbed weights, quantised the same way
    rng = np.random.default_rng(0)
    model.set_weights([w + rng.normal(0, 1.5 * (np.std(w) + 1e-3), w.shape).astype(w.dtype)
                       for w in model.get_weights()])
    bad = _run_folder(root / "bad", model, "tiny_cnn_damaged")
    quantise(bad, root / "bad_int8.tflite", config=QuantConfig(calibration_samples=100))
    return root


def _independent(root: Path, tflite: str) -> dict:
    """Accuracy / agreement with our own Keras + LiteRT calls and NumPy."""
    import keras
    from ai_edge_litert.interpreter import Interpreter

    from toolchain.data import load_dataset

    ds = load_dataset("digits", seed=0)
    x = (ds.x_test.astype(np.float32) / 16.0).reshape(-1, 8, 8, 1)
    y = ds.y_test
    ref = keras.models.load_model(root / "good" / "model.keras").predict(x, verbose=0)
    it = Interpreter(model_path=str(root / tflite))
    it.allocate_tensors()
    din, dout = it.get_input_details()[0], it.get_output_details()[0]
    outs = []
    for i in range(len(x)):
        xi = x[i:i + 1]
        if din["dtype"] == np.int8:
            s, z = din["quantization"]
            v = xi / np.float32(s)  # TFLite QUANTIZE arithmetic: float32, ties away from zero
            xi = np.clip(np.sign(v) * np.floor(np.abs(v) + 0.5) + z, -128, 127).astype(np.int8)
        it.set_tensor(din["index"], xi)
        it.invoke()
        o = it.get_tensor(dout["index"]).astype(np.float64)
        if dout["dtype"] == np.int8:
            s, z = dout["quantization"]
            o = (o - z) * s
        outs.append(o)
    cand = np.concatenate(outs)
    return {"n": len(y), "ref_acc": float(np.mean(ref.argmax(1) == y)), "cand_acc": float(np.mean(cand.argmax(1) == y)),
            "agreement": float(np.mean(ref.argmax(1) == cand.argmax(1))),
            "rmse": float(np.sqrt(np.mean((cand - ref) ** 2)))}


def test_good_int8_candidate_passes_and_matches_independent_figures(models_dir, tmp_path):
    out = tmp_path / "v"
    code = cli(["verify", "--reference", str(models_dir / "good"), "--candidate", str(models_dir / "good_int8.tflite"),
                "--output", str(out), "--runs", "20", "--layer-debug-samples", "20",
                "--write-baseline", str(tmp_path / "baseline.json")])
    assert code == 0
    rep = json.loads((out / "report.json").read_text())
    ind = _independent(models_dir, "good_int8.tflite")
    assert rep["samples"] == ind["n"] == 359
    assert rep["reference"]["accuracy"] == pytest.approx(ind["ref_acc"], abs=1e-9)
    assert rep["candidate"]["accuracy"] == pytest.approx(ind["cand_acc"], abs=1e-9)
    assert rep["comparison"]["agreement"] == pytest.approx(ind["agreement"], abs=1e-9)
    assert rep["comparison"]["rmse"] == pytest.approx(ind["rmse"], rel=1e-3, abs=1e-6)
    assert rep["accuracy_drop_pp"] == pytest.approx((ind["ref_acc"] - ind["cand_acc"]) * 100, abs=1e-6)
    assert rep["reference"]["accuracy"] > 0.85
    assert rep["passed"] is True
    # the run metadata of this hand-made reference records no test accuracy: no reference_sanity check
    assert [c["name"] for c in rep["checks"]] == ["input_distribution", "max_accuracy_drop"]
    assert rep["checks"][-1]["threshold"] == 1.0
    assert [r["name"] for r in rep["rows"]] == ["reference vs ground truth", "candidate vs ground truth",
                                               "candidate vs reference"]
    cm = np.array(rep["candidate"]["confusion_matrix"])
    assert cm.sum() == 359 and np.trace(cm) == round(ind["cand_acc"] * 359)
    assert rep["candidate"]["precision"] == "int8" and rep["reference"]["kind"] == "keras"
    assert rep["comparison"]["sqnr_db"] > 10 and 0.9 < rep["comparison"]["cosine"] <= 1.0
    assert "3" in rep["candidate"]["top_k_accuracy"] and rep["candidate"]["top_k_accuracy"]["3"] >= rep["candidate"]["accuracy"]
    le = rep["layer_errors"]
    assert le["status"] == "ok", le
    assert len(le["layers"]) >= 4 and {"CONV_2D", "FULLY_CONNECTED"} <= {r["op"] for r in le["layers"]}
    assert all(r["rmse"] >= 0 for r in le["layers"]) and len(le["worst"]) <= 5
    lat = rep["latency_ms"]
    for who in ("reference", "candidate"):
        assert lat[who]["runs"] == 20 and 0 < lat[who]["min"] <= lat[who]["median"] <= lat[who]["p90"] <= lat[who]["p99"]
    assert rep["sizes"]["ratio"] == pytest.approx(rep["candidate"]["size_bytes"] / rep["reference"]["size_bytes"])
    for f in ("report.md", "report.html", "plots/confusion_candidate.png", "plots/layer_error.png", "plots/latency.png"):
        assert (out / f).is_file(), f
    html = (out / "report.html").read_text()
    assert "plots/confusion_candidate.png" in html and "PASSED" in html
    base = json.loads((tmp_path / "baseline.json").read_text())
    assert base["accuracy"] == rep["candidate"]["accuracy"]


def test_damaged_candidate_fails_the_gate(models_dir, tmp_path, capsys):
    out = tmp_path / "v"
    code = cli(["verify", "-r", str(models_dir / "good" / "model.keras"), "-c", str(models_dir / "bad_int8.tflite"),
                "-o", str(out), "--runs", "5", "--no-layer-debug", "--min-agreement", "0.95"])
    assert code == 1
    err = capsys.readouterr().err
    assert "max_accuracy_drop" in err and "min_agreement" in err
    rep = json.loads((out / "report.json").read_text())  # the reports are written before exit 1
    assert rep["passed"] is False
    assert {c["name"]: c["passed"] for c in rep["checks"]} == {"input_distribution": True, "max_accuracy_drop": False,
                                                                 "min_agreement": False}
    ind = _independent(models_dir, "bad_int8.tflite")
    assert rep["candidate"]["accuracy"] == pytest.approx(ind["cand_acc"], abs=1e-9)
    assert rep["accuracy_drop_pp"] > 5
    assert rep["layer_errors"]["status"] == "skipped"


def test_baseline_regression_is_caught(models_dir, tmp_path, capsys):
    good = tmp_path / "good"
    assert cli(["verify", "-c", str(models_dir / "good_int8.tflite"), "-o", str(good), "--runs", "5",
                "--min-accuracy", "0.5", "--write-baseline", str(tmp_path / "base.json")]) == 0
    assert load_baseline(tmp_path / "base.json")["accuracy"] == load_baseline(good / "report.json")["accuracy"]
    # candidate alone (no reference): only the baseline check applies
    code = cli(["verify", "-c", str(models_dir / "bad_int8.tflite"), "-o", str(tmp_path / "bad"), "--runs", "5",
                "--baseline", str(good / "report.json"), "--max-regression", "0.5"])
    assert code == 1
    assert "max_regression" in capsys.readouterr().err
    rep = json.loads((tmp_path / "bad" / "report.json").read_text())
    assert rep["reference"] is None and rep["baseline"]["regression_pp"] > 0.5
    # the same candidate against its own baseline passes
    assert cli(["verify", "-c", str(models_dir / "good_int8.tflite"), "-o", str(tmp_path / "again"), "--runs", "5",
                "--baseline", str(tmp_path / "base.json")]) == 0


def test_float16_candidate_and_float_tflite_reference(models_dir, tmp_path):
    out = tmp_path / "f16"
    assert cli(["verify", "-r", str(models_dir / "good"), "-c", str(models_dir / "good_f16.tflite"), "-o", str(out),
                "--runs", "5", "--min-agreement", "0.99", "--no-plots"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["candidate"]["precision"] == "float16"
    assert rep["comparison"]["agreement"] >= 0.99 and rep["comparison"]["sqnr_db"] > 30
    assert rep["layer_errors"]["status"] == "skipped" and rep["plots"] == []
    # float .tflite as the reference of the int8 candidate
    out2 = tmp_path / "tfl"
    assert cli(["verify", "-r", str(models_dir / "good_f16.tflite"), "-c", str(models_dir / "good_int8.tflite"),
                "-o", str(out2), "--runs", "5", "--no-plots", "--max-accuracy-drop", "5"]) == 0
    assert json.loads((out2 / "report.json").read_text())["reference"]["kind"] == "tflite"


def test_usage_errors_exit_2_and_write_nothing(models_dir, tmp_path, capsys):
    cand = str(models_dir / "good_int8.tflite")
    assert cli(["verify", "-c", str(tmp_path / "missing.tflite"), "-o", str(tmp_path / "a")]) == 2
    assert cli(["verify", "-c", str(models_dir / "good" / "model.keras"), "-o", str(tmp_path / "b")]) == 2
    assert cli(["verify", "-c", cand, "-o", str(tmp_path / "c"), "--min-agreement", "1.5"]) == 2
    assert cli(["verify", "-c", cand, "-o", str(tmp_path / "d"), "--dataset", "npz:/nonexistent.npz"]) == 2
    assert cli(["verify", "-c", cand, "-o", str(tmp_path / "e"), "--baseline", str(tmp_path / "nope.json")]) == 2
    assert not any((tmp_path / n).exists() for n in "abcde")
    existing = tmp_path / "exists"
    existing.mkdir()
    (existing / "keep.txt").write_text("x")
    assert cli(["verify", "-c", cand, "-o", str(existing)]) == 2
    assert (existing / "keep.txt").read_text() == "x"
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_bad_reference_and_options_fail_before_any_evaluation(models_dir, tmp_path, capsys):
    """A corrupt reference / unwritable baseline / nonsense sample count: one error line, no progress, nothing left."""
    cand = str(models_dir / "good_int8.tflite")
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(b"\x00" * 64)
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    capsys.readouterr()
    assert cli(["verify", "-c", cand, "-r", str(corrupt), "-o", str(tmp_path / "a")]) == 2
    gate = ["--min-accuracy", "0.5"]
    assert cli(["verify", "-c", cand, "-o", str(tmp_path / "b"), "--layer-debug-samples", "0", *gate]) == 2
    assert cli(["verify", "-c", cand, "-o", str(tmp_path / "c"), *gate, "--write-baseline",
                str(blocker / "sub" / "base.json")]) == 2
    assert cli(["verify", "-c", cand, "-o", str(blocker / "sub" / "out"), *gate]) == 2
    bad_keras = tmp_path / "bad.keras"
    bad_keras.write_bytes(b"not a zip archive")
    assert cli(["verify", "-c", cand, "-r", str(bad_keras), "-o", str(tmp_path / "d")]) == 2
    cap = capsys.readouterr()
    lines = [line for line in cap.err.splitlines() if line.strip()]
    assert len(lines) == 5 and all(line.startswith("error: ") for line in lines), cap.err
    assert "evaluating" not in cap.err + cap.out  # rejected before the candidate was evaluated
    assert "--write-baseline=" in lines[2]
    assert "not a valid .keras file" in lines[4]  # not Keras' misleading "File not found"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.keras", "blocker", "corrupt.tflite"]


def test_metric_functions_against_hand_computed_values():
    r = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])
    c = np.array([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.3, 0.3, 0.4]])
    m = compare_outputs(c, r)
    d = c - r
    assert m["agreement"] == pytest.approx(2 / 3)
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean(d ** 2)))
    assert m["mae"] == pytest.approx(np.mean(np.abs(d)))
    assert m["l2r"] == pytest.approx(np.linalg.norm(d) / np.linalg.norm(r))
    assert m["cosine"] == pytest.approx(np.sum(c * r) / np.linalg.norm(c) / np.linalg.norm(r))
    assert m["sqnr_db"] == pytest.approx(10 * np.log10(np.sum(r ** 2) / np.sum(d ** 2)))
    assert compare_outputs(r, r)["sqnr_db"] is None  # identical outputs: infinite SQNR reported as null
    cm = classification_metrics(c, np.array([0, 1, 2]), 3, top_k=2)
    assert cm["accuracy"] == pytest.approx(2 / 3)
    assert cm["confusion_matrix"] == [[1, 0, 0], [1, 0, 0], [0, 0, 1]]
    assert cm["per_class_accuracy"] == [1.0, 0.0, 1.0]
    assert cm["top_k_accuracy"] == {"2": 1.0}


def test_summary_columns_align_without_a_reference(monkeypatch, capsys):
    """Candidate-only (device) runs have a '–' reference column: the header must still line up."""
    import toolchain.report as report_mod
    from toolchain.cli.cmd_verify import render_summary

    monkeypatch.setattr(report_mod, "_summary_rows",
                        lambda r: [("model", "–", "m.tflite"), ("accuracy (top-1)", "–", "94.96 %")])
    monkeypatch.setattr(report_mod, "data_line", lambda r: "data: (not under test)")
    render_summary({"comparison": None, "accuracy_drop_pp": None, "checks": [],
                    "layer_errors": {"status": "skipped", "reason": "needs a .keras reference"}})
    lines = capsys.readouterr().out.splitlines()[1:]
    col = lines[0].index("candidate")
    assert lines[0].index("reference") < col
    assert lines[1].index("m.tflite") == col and lines[2].index("94.96 %") == col


def test_layer_debug_skipped_when_it_would_describe_another_model(tmp_path):
    """The per-layer debugger re-converts the reference with post-training quantisation: for a QAT candidate, or a
    candidate converted from another .keras, its figures would belong to a different model, so it is skipped."""
    import hashlib

    from toolchain.verify.layer_debug import _layer_debug_mismatch

    ref = tmp_path / "model.keras"
    ref.write_bytes(b"weights")
    sha = hashlib.sha256(b"weights").hexdigest()
    ptq = {"source_sha256": sha, "quantization": {"qat": False}}
    assert _layer_debug_mismatch(ptq, ref) is None
    assert _layer_debug_mismatch(None, ref) is None  # no metadata: nothing to contradict
    assert "quantisation-aware" in _layer_debug_mismatch({"source_sha256": sha, "quantization": {"qat": True}}, ref)
    assert "source_sha256" in _layer_debug_mismatch({"source_sha256": "0" * 64, "quantization": {}}, ref)
