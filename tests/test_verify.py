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


def _litert_outputs(path: Path, x: np.ndarray, reference_kernels: bool = True) -> np.ndarray:
    """Dequantised LiteRT outputs, one sample at a time, with the input quantised here. ``reference_kernels``:
    BUILTIN_WITHOUT_DEFAULT_DELEGATES (no XNNPACK); else LiteRT's default (XNNPACK), the runtime `verify` runs."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kwargs = {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES} \
        if reference_kernels else {}
    it = Interpreter(model_path=str(path), **kwargs)
    it.allocate_tensors()
    din, dout = it.get_input_details()[0], it.get_output_details()[0]
    outs = []
    for i in range(len(x)):
        xi = x[i:i + 1]
        if din["dtype"] == np.int8:
            s, z = din["quantization"]
            v = xi / np.float32(s)  # TFLite QUANTIZE arithmetic: float32, ties away from zero
            xi = np.clip(np.sign(v) * np.floor(np.abs(v) + 0.5) + z, -128, 127).astype(np.int8)
        it.set_tensor(din["index"], xi.astype(din["dtype"]))
        it.invoke()
        o = it.get_tensor(dout["index"]).astype(np.float64)
        if dout["dtype"] == np.int8:
            s, z = dout["quantization"]
            o = (o - z) * s
        outs.append(o)
    return np.concatenate(outs)


def _op_outputs(path: Path) -> list[tuple[str, str, np.float32, int]]:
    """(operator, output tensor name, output scale, zero point) per operator, read from the flatbuffer."""
    import tflite

    model = tflite.Model.GetRootAsModel(path.read_bytes(), 0)
    g = model.Subgraphs(0)
    names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    out = []
    for k in range(g.OperatorsLength()):
        op = g.Operators(k)
        code = model.OperatorCodes(op.OpcodeIndex())
        t = g.Tensors(int(op.OutputsAsNumpy()[0]))
        q = t.Quantization()
        out.append((names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())], t.Name().decode(),
                    np.float32(q.ScaleAsNumpy()[0]), int(q.ZeroPointAsNumpy()[0])))
    return out


def _figures(cand: np.ndarray, ref: np.ndarray | None, y: np.ndarray) -> dict:
    """Accuracy, confusion matrix, top-3, and the candidate-vs-reference metrics, in NumPy."""
    cm = np.zeros((10, 10), dtype=np.int64)
    for t, p in zip(y, cand.argmax(1)):
        cm[t, p] += 1
    out = {"cand_acc": float(np.mean(cand.argmax(1) == y)), "cand_cm": cm,
           "cand_top3": float(np.mean([t in np.argsort(-row, kind="stable")[:3] for row, t in zip(cand, y)]))}
    if ref is None:
        return out
    d = cand - ref
    out.update({"ref_acc": float(np.mean(ref.argmax(1) == y)),
                "agreement": float(np.mean(ref.argmax(1) == cand.argmax(1))),
                "rmse": float(np.sqrt(np.mean(d ** 2))), "mae": float(np.mean(np.abs(d))),
                "max_abs_error": float(np.max(np.abs(d))),
                "l2r": float(np.linalg.norm(d) / np.linalg.norm(ref)),
                "cosine": float(np.dot(cand.ravel(), ref.ravel()) / np.linalg.norm(cand) / np.linalg.norm(ref)),
                "sqnr_db": float(10 * np.log10(np.sum(ref ** 2) / np.sum(d ** 2)))})
    return out


def _independent(root: Path, tflite: str, reference: str | None = "good") -> dict:
    """Every figure of the report recomputed here: the digits test split preprocessed by hand (x / 16), the
    reference run with Keras directly (or LiteRT for a .tflite reference), the candidate with LiteRT -- its
    reference kernels (``ind``) and its default XNNPACK kernels (``ind["default"]``, what `verify` runs) -- and the
    metrics in NumPy."""
    import keras

    from toolchain.data import load_dataset

    ds = load_dataset("digits", seed=0)
    x = (ds.x_test.astype(np.float32) / 16.0).reshape(-1, 8, 8, 1)
    y = ds.y_test.astype(np.int64)
    ref = ref_default = None
    if reference is not None and reference.endswith(".tflite"):
        ref = _litert_outputs(root / reference, x)
        ref_default = _litert_outputs(root / reference, x, reference_kernels=False)
    elif reference is not None:
        ref = np.asarray(keras.models.load_model(root / reference / "model.keras").predict(x, verbose=0), np.float64)
        ref_default = ref
    cand = _litert_outputs(root / tflite, x)
    cand_default = _litert_outputs(root / tflite, x, reference_kernels=False)
    out = {"n": len(y), "y": y, "ref": ref, "cand": cand, "cand_default": cand_default, **_figures(cand, ref, y)}
    out["default"] = _figures(cand_default, ref_default, y)
    return out


def _assert_comparison(rep: dict, ind: dict) -> None:
    """The report equals the independent NumPy figures: exactly (float tolerance) those of LiteRT's default kernels,
    which `verify` runs (relative 1e-4: a Keras reference evaluated here at batch 32 and by `verify` at batch 1024
    differs in the last float32 bits, oneDNN sums in another order); and the reference-kernel figures where the argmax decides (accuracy, agreement, confusion
    matrix), the continuous metrics within 2 % (XNNPACK's int8 kernels round differently from the reference kernels
    on a few output elements; the argmax is unchanged on these models)."""
    c, dflt = rep["comparison"], ind["default"]
    for k in ("agreement", "rmse", "mae", "max_abs_error", "l2r", "cosine", "sqnr_db"):
        assert c[k] == pytest.approx(dflt[k], rel=1e-4, abs=1e-9), k
        assert c[k] == pytest.approx(ind[k], rel=0.02), k
    assert c["agreement"] == pytest.approx(ind["agreement"], abs=1e-9)
    assert rep["reference"]["accuracy"] == pytest.approx(ind["ref_acc"], abs=1e-9)
    assert rep["candidate"]["accuracy"] == pytest.approx(ind["cand_acc"], abs=1e-9)
    assert rep["accuracy_drop_pp"] == pytest.approx((ind["ref_acc"] - ind["cand_acc"]) * 100, abs=1e-6)
    assert np.array_equal(np.array(rep["candidate"]["confusion_matrix"]), ind["cand_cm"])
    assert np.array_equal(dflt["cand_cm"], ind["cand_cm"])
    # XNNPACK vs reference kernels: measured 7 (good) and 24 (damaged) of 3,590 int8 output elements differ
    # (softmax output, up to 2 and 15 LSB); float16 outputs within 1.3e-6
    diff = np.abs(ind["cand_default"] - ind["cand"])
    assert np.count_nonzero(diff > 1e-5) <= 0.01 * diff.size


def test_good_int8_candidate_passes_and_matches_independent_figures(models_dir, tmp_path):
    out = tmp_path / "v"
    code = cli(["verify", "--reference", str(models_dir / "good"), "--candidate", str(models_dir / "good_int8.tflite"),
                "--output", str(out), "--runs", "20", "--layer-debug-samples", "20",
                "--write-baseline", str(tmp_path / "baseline.json")])
    assert code == 0
    rep = json.loads((out / "report.json").read_text())
    ind = _independent(models_dir, "good_int8.tflite")
    assert rep["samples"] == ind["n"] == 359
    _assert_comparison(rep, ind)
    # measured: float 94.99 %, int8 94.99 %, agreement 100 %, SQNR 40.8 dB, cosine 0.99996 (tiny CNN, 8 epochs)
    assert rep["reference"]["accuracy"] > 0.93 and ind["agreement"] >= 0.99 and ind["sqnr_db"] > 30
    assert rep["passed"] is True
    # the run metadata of this hand-made reference records no test accuracy: no reference_sanity check
    assert [c["name"] for c in rep["checks"]] == ["input_distribution", "max_accuracy_drop"]
    assert rep["checks"][-1]["threshold"] == 1.0
    assert rep["checks"][-1]["value"] == pytest.approx((ind["ref_acc"] - ind["cand_acc"]) * 100, abs=1e-6)
    rows = {r["name"]: r for r in rep["rows"]}
    assert list(rows) == ["reference vs ground truth", "candidate vs ground truth", "candidate vs reference"]
    onehot = np.eye(10)[ind["y"]]
    # vs one-hot labels: the candidate row is LiteRT's default kernels (exact), the reference kernels within 1 %
    for name, scores, rel in (("reference vs ground truth", ind["ref"], 1e-6),
                              ("candidate vs ground truth", ind["cand_default"], 1e-6),
                              ("candidate vs ground truth", ind["cand"], 0.01)):
        assert rows[name]["rmse"] == pytest.approx(np.sqrt(np.mean((scores - onehot) ** 2)), rel=rel)
        assert rows[name]["mae"] == pytest.approx(np.mean(np.abs(scores - onehot)), rel=rel)
    assert rows["candidate vs reference"]["rmse"] == pytest.approx(ind["default"]["rmse"], rel=1e-6)
    cm = ind["cand_cm"]
    assert rep["candidate"]["per_class_accuracy"] == pytest.approx(list(np.diag(cm) / cm.sum(axis=1)), abs=1e-12)
    assert rep["candidate"]["precision"] == "int8" and rep["reference"]["kind"] == "keras"
    assert rep["candidate"]["top_k_accuracy"]["3"] == pytest.approx(ind["cand_top3"], abs=1e-9)
    le = rep["layer_errors"]
    assert le["status"] == "ok", le
    # the per-layer debugger's model is the candidate: op for op, the same operator and output quantisation as the
    # candidate's flatbuffer (read here with the tflite package)
    ops = _op_outputs(models_dir / "good_int8.tflite")
    assert [r["op"] for r in le["layers"]] == [o[0] for o in ops] == \
        ["CONV_2D", "RESHAPE", "FULLY_CONNECTED", "FULLY_CONNECTED", "SOFTMAX"]
    assert [(np.float32(r["scale"]), r["zero_point"]) for r in le["layers"]] == [(o[2], o[3]) for o in ops]
    assert [r["name"] for r in le["layers"][:-1]] == [o[1] for o in ops[:-1]]  # the graph output is renamed
    for r in le["layers"]:
        assert r["rmse_over_scale"] == pytest.approx(r["rmse"] / r["scale"], rel=1e-9)
        assert r["max_abs_error"] >= r["rmse"] - 1e-12
        # rounding to int8 alone gives 1/sqrt(12) = 0.29 LSB RMS; measured 0.23-0.37 LSB; RESHAPE copies (~0)
        assert (r["rmse_over_scale"] < 1e-3) if r["op"] == "RESHAPE" else (0.1 < r["rmse_over_scale"] < 0.6), r
    assert le["worst"] == sorted(le["layers"], key=lambda r: -r["rmse_over_scale"])[:5]
    lat = rep["latency_ms"]
    for who in ("reference", "candidate"):
        assert lat[who]["runs"] == 20 and 0 < lat[who]["min"] <= lat[who]["median"] <= lat[who]["p90"] <= lat[who]["p99"]
    sizes = ((models_dir / "good_int8.tflite").stat().st_size, (models_dir / "good" / "model.keras").stat().st_size)
    assert (rep["candidate"]["size_bytes"], rep["reference"]["size_bytes"]) == sizes
    assert rep["sizes"]["ratio"] == pytest.approx(sizes[0] / sizes[1])
    for f in ("report.md", "report.html", "plots/confusion_candidate.png", "plots/layer_error.png", "plots/latency.png"):
        assert (out / f).is_file(), f
    html = (out / "report.html").read_text()
    assert "plots/confusion_candidate.png" in html and "PASSED" in html
    base = json.loads((tmp_path / "baseline.json").read_text())
    assert base["accuracy"] == pytest.approx(ind["cand_acc"], abs=1e-12)


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
    _assert_comparison(rep, ind)
    checks = {c["name"]: c for c in rep["checks"]}
    assert checks["min_agreement"]["value"] == pytest.approx(ind["agreement"], abs=1e-9) and ind["agreement"] < 0.95
    assert rep["accuracy_drop_pp"] > 5
    assert rep["layer_errors"]["status"] == "skipped"


def test_baseline_regression_is_caught(models_dir, tmp_path, capsys):
    good = tmp_path / "good"
    assert cli(["verify", "-c", str(models_dir / "good_int8.tflite"), "-o", str(good), "--runs", "5",
                "--min-accuracy", "0.5", "--write-baseline", str(tmp_path / "base.json")]) == 0
    good_acc = _independent(models_dir, "good_int8.tflite", reference=None)["cand_acc"]
    assert load_baseline(tmp_path / "base.json")["accuracy"] == pytest.approx(good_acc, abs=1e-12)
    assert load_baseline(good / "report.json")["accuracy"] == pytest.approx(good_acc, abs=1e-12)
    # candidate alone (no reference): only the baseline check applies
    code = cli(["verify", "-c", str(models_dir / "bad_int8.tflite"), "-o", str(tmp_path / "bad"), "--runs", "5",
                "--baseline", str(good / "report.json"), "--max-regression", "0.5"])
    assert code == 1
    assert "max_regression" in capsys.readouterr().err
    rep = json.loads((tmp_path / "bad" / "report.json").read_text())
    bad = _independent(models_dir, "bad_int8.tflite", reference=None)
    assert rep["reference"] is None and rep["comparison"] is None
    assert rep["candidate"]["accuracy"] == pytest.approx(bad["cand_acc"], abs=1e-9)
    assert np.array_equal(np.array(rep["candidate"]["confusion_matrix"]), bad["cand_cm"])
    assert rep["baseline"]["accuracy"] == pytest.approx(good_acc, abs=1e-9)
    assert rep["baseline"]["regression_pp"] == pytest.approx((good_acc - bad["cand_acc"]) * 100, abs=1e-6)
    assert rep["baseline"]["regression_pp"] > 0.5
    # the same candidate against its own baseline passes
    assert cli(["verify", "-c", str(models_dir / "good_int8.tflite"), "-o", str(tmp_path / "again"), "--runs", "5",
                "--baseline", str(tmp_path / "base.json")]) == 0


def test_footprint_gates_and_baseline_growth(models_dir, tmp_path, capsys):
    """--max-flash compares the candidate file's bytes (no target run); a baseline's footprint catches a larger
    model (the float16 file of the same network, same accuracy) with exit 1 naming the flash growth."""
    small, large = models_dir / "good_int8.tflite", models_dir / "good_f16.tflite"
    n_small, n_large = len(small.read_bytes()), len(large.read_bytes())
    assert n_large > 1.05 * n_small
    assert cli(["verify", "-c", str(small), "-o", str(tmp_path / "base"), "--runs", "5", "--no-plots",
                "--max-flash", str(n_small), "--write-baseline", str(tmp_path / "base.json")]) == 0
    rep = json.loads((tmp_path / "base" / "report.json").read_text())
    assert rep["footprint"]["kind"] == "model-file" and rep["footprint"]["flash_bytes"] == n_small
    assert rep["footprint"]["arena_bytes"] is None and rep["footprint"]["instructions_per_inference"] is None
    assert {c["name"]: c["passed"] for c in rep["checks"]}["max_flash"] is True
    assert load_baseline(tmp_path / "base.json")["footprint"]["flash_bytes"] == n_small
    capsys.readouterr()
    # one byte less than the file: max_flash fails, value = the file's size
    assert cli(["verify", "-c", str(small), "-o", str(tmp_path / "tight"), "--runs", "5", "--no-plots",
                "--max-flash", str(n_small - 1)]) == 1
    assert f"max_flash: footprint.flash_bytes = {n_small:.4g}" in capsys.readouterr().err
    # the larger model against the baseline: accuracy the same, flash grows
    assert cli(["verify", "-c", str(large), "-o", str(tmp_path / "grown"), "--runs", "5", "--no-plots",
                "--baseline", str(tmp_path / "base.json"), "--max-growth", "5"]) == 1
    err = capsys.readouterr().err
    assert "baseline_flash_growth" in err and "max_regression" not in err
    rep = json.loads((tmp_path / "grown" / "report.json").read_text())
    growth = {c["name"]: c for c in rep["checks"]}["baseline_flash_growth"]
    assert growth["value"] == pytest.approx(100 * (n_large - n_small) / n_small, abs=1e-3) and not growth["passed"]
    # within --max-growth it passes; the baseline report.json works as well as the baseline file
    assert cli(["verify", "-c", str(large), "-o", str(tmp_path / "ok"), "--runs", "5", "--no-plots",
                "--baseline", str(tmp_path / "base" / "report.json"),
                "--max-growth", str(100 * n_large / n_small)]) == 0
    # on-target figures without --on, and malformed values, are usage errors that write nothing
    for extra in (["--max-arena", "1000"], ["--max-instructions", "1000"], ["--max-flash", "0"],
                  ["--max-growth", "-1"]):
        assert cli(["verify", "-c", str(small), "-o", str(tmp_path / "u"), "--min-accuracy", "0", *extra]) == 2
        assert not (tmp_path / "u").exists()
    bad = tmp_path / "bad_base.json"
    bad.write_text(json.dumps({"footprint": {"kind": "model-file", "flash_bytes": -3}}))
    assert cli(["verify", "-c", str(small), "-o", str(tmp_path / "u"), "--baseline", str(bad)]) == 2
    assert "malformed footprint" in capsys.readouterr().err


def test_float16_candidate_and_float_tflite_reference(models_dir, tmp_path):
    out = tmp_path / "f16"
    assert cli(["verify", "-r", str(models_dir / "good"), "-c", str(models_dir / "good_f16.tflite"), "-o", str(out),
                "--runs", "5", "--min-agreement", "0.99", "--no-plots"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["candidate"]["precision"] == "float16"
    ind = _independent(models_dir, "good_f16.tflite")
    _assert_comparison(rep, ind)
    # measured: agreement 100 %, SQNR ~80 dB (float16 weights, float32 compute)
    assert ind["agreement"] >= 0.99 and ind["sqnr_db"] > 50
    assert rep["layer_errors"]["status"] == "skipped" and rep["plots"] == []
    # float .tflite as the reference of the int8 candidate
    out2 = tmp_path / "tfl"
    assert cli(["verify", "-r", str(models_dir / "good_f16.tflite"), "-c", str(models_dir / "good_int8.tflite"),
                "-o", str(out2), "--runs", "5", "--no-plots", "--max-accuracy-drop", "5"]) == 0
    rep2 = json.loads((out2 / "report.json").read_text())
    assert rep2["reference"]["kind"] == "tflite"
    _assert_comparison(rep2, _independent(models_dir, "good_int8.tflite", reference="good_f16.tflite"))


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
