"""Verification on the user's own data: the same test images as digits, an npz of float32 [0, 1], an npz of uint8
0-255 and an IDX copy all give the same accuracy; mis-scaled data fails ``input_distribution``; a gate with nothing
to check and a class-count mismatch are usage errors.

The expected accuracies are computed here independently: the images are resized with TensorFlow's
``tf.image.resize`` (not the toolchain's NumPy code), quantised with NumPy and run on LiteRT's reference kernels.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers import run_cli

FAST = ["--no-layer-debug", "--runs", "3", "--warmup", "0", "--no-plots"]


def _write_idx(path, arr: np.ndarray) -> None:
    arr = np.ascontiguousarray(arr)
    code = {np.dtype("uint8"): 0x08}[arr.dtype]
    header = bytes([0, 0, code, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(header + arr.tobytes())


@pytest.fixture(scope="module")
def user_data(trained_seed001, tmp_path_factory):
    """int8 model of the trained run + the digits test images in four containers."""
    import tensorflow as tf
    from sklearn.datasets import load_digits  # noqa: F401  (digits must be available)

    from toolchain.data import load_dataset
    from toolchain.quantise import QuantConfig, quantise

    root = tmp_path_factory.mktemp("userdata")
    cand = root / "model_int8.tflite"
    quantise(trained_seed001, cand, config=QuantConfig(calibration_samples=200))
    ds = load_dataset("digits")  # the run's split: seed 0, val 0.1, test 0.2 (recorded in metadata.json)
    meta = json.loads((trained_seed001 / "metadata.json").read_text())
    assert meta["split"]["seed"] == 0 and meta["split"]["test_fraction"] == 0.2

    def resized(x_raw):  # independent resize: TensorFlow's bilinear, half-pixel centres
        return tf.image.resize(x_raw[..., None].astype(np.float32) / 16.0, (28, 28), method="bilinear").numpy()

    x_test, x_train = resized(ds.x_test), resized(ds.x_train)
    f32 = root / "float01.npz"
    np.savez(f32, x_train=x_train, y_train=ds.y_train, x_test=x_test, y_test=ds.y_test)
    u8_test, u8_train = (np.clip(np.round(x * 255), 0, 255).astype(np.uint8)[..., 0] for x in (x_test, x_train))
    u8 = root / "uint8.npz"
    np.savez(u8, x_train=u8_train, y_train=ds.y_train, x_test=u8_test, y_test=ds.y_test)
    idx = root / "idx"
    idx.mkdir()
    _write_idx(idx / "train-images-idx3-ubyte", u8_train)
    _write_idx(idx / "train-labels-idx1-ubyte", ds.y_train.astype(np.uint8))
    _write_idx(idx / "t10k-images-idx3-ubyte", u8_test)
    _write_idx(idx / "t10k-labels-idx1-ubyte", ds.y_test.astype(np.uint8))
    small = root / "too_small.npz"  # 16x too small, and declared to be in [0, 1]
    np.savez(small, x_train=x_train / 16, y_train=ds.y_train, x_test=x_test / 16, y_test=ds.y_test,
             max_value=np.float32(1))
    sixteen = root / "sixteen_classes.npz"
    y16 = ds.y_test.copy()
    y16[:6] = np.arange(10, 16)
    np.savez(sixteen, x_train=x_train, y_train=ds.y_train, x_test=x_test, y_test=y16,
             labels=np.array([str(i) for i in range(16)]))
    return {"cand": cand, "f32": f32, "u8": u8, "idx": idx, "small": small, "sixteen": sixteen,
            "x_f32": x_test, "x_u8": u8_test[..., None].astype(np.float32) / 255.0, "y": ds.y_test}


def _litert_accuracy(model_path, x: np.ndarray, y: np.ndarray) -> float:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=str(model_path),
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    s, z = inp["quantization"]
    hits = 0
    for i in range(len(x)):
        v = x[i:i + 1].astype(np.float32) / np.float32(s)
        q = np.clip(np.sign(v) * np.floor(np.abs(v) + np.float32(0.5)) + z, -128, 127).astype(np.int8)
        it.set_tensor(inp["index"], q)
        it.invoke()
        hits += int(np.argmax(it.get_tensor(out["index"])[0]) == y[i])
    return hits / len(x)


def _verify(capsys, tmp_path, name, *args):
    code, out, err = run_cli(["verify", "--output", tmp_path / name, *FAST, *args], capsys)
    report = json.loads((tmp_path / name / "report.json").read_text()) if (tmp_path / name).is_dir() else None
    return code, out, err, report


def test_four_containers_of_the_same_images_give_the_same_accuracy(user_data, trained_seed001, tmp_path, capsys):
    expected_f32 = _litert_accuracy(user_data["cand"], user_data["x_f32"], user_data["y"])
    expected_u8 = _litert_accuracy(user_data["cand"], user_data["x_u8"], user_data["y"])
    n = len(user_data["y"])
    reports = {}
    for name, spec in (("digits", "digits"), ("f32", f"npz:{user_data['f32']}"), ("u8", f"npz:{user_data['u8']}"),
                       ("idx", f"idx:{user_data['idx']}")):
        code, out, err, rep = _verify(capsys, tmp_path, name, "--reference", trained_seed001,
                                      "--candidate", user_data["cand"], "--dataset", spec)
        assert code == 0, (name, out, err)
        reports[name] = rep
        assert rep["samples"] == n
        assert next(c for c in rep["checks"] if c["name"] == "input_distribution")["passed"]
        assert next(c for c in rep["checks"] if c["name"] == "reference_sanity")["passed"]
    # normalisation and its provenance: recorded for the run's own data, declared/inferred for the others
    assert reports["digits"]["dataset"]["normalisation"]["provenance"] == "recorded"
    assert reports["digits"]["dataset"]["normalisation"]["scale"] == pytest.approx(1 / 16)
    assert reports["f32"]["dataset"]["normalisation"] == {**reports["f32"]["dataset"]["normalisation"],
                                                          "scale": 1.0, "provenance": "inferred"}
    for name in ("u8", "idx"):
        assert reports[name]["dataset"]["normalisation"]["scale"] == pytest.approx(1 / 255)
        assert reports[name]["dataset"]["normalisation"]["provenance"] == "inferred"
    # independent accuracies (TF resize + NumPy quantisation + LiteRT reference kernels) match the reports exactly
    assert reports["f32"]["candidate"]["accuracy"] == pytest.approx(expected_f32)
    assert reports["u8"]["candidate"]["accuracy"] == pytest.approx(expected_u8)
    assert reports["idx"]["candidate"]["accuracy"] == pytest.approx(expected_u8)
    accs = [r["candidate"]["accuracy"] for r in reports.values()] + [r["reference"]["accuracy"]
                                                                     for r in reports.values()]
    assert max(accs) - min(accs) <= 1.0 / n + 1e-9, accs  # within one sample
    assert min(accs) > 0.85


def test_mis_scaled_data_fails_input_distribution(user_data, trained_seed001, tmp_path, capsys):
    code, out, err, rep = _verify(capsys, tmp_path, "small", "--reference", trained_seed001,
                                  "--candidate", user_data["cand"], "--dataset", f"npz:{user_data['small']}")
    assert code == 1, (out, err)
    check = next(c for c in rep["checks"] if c["name"] == "input_distribution")
    assert not check["passed"]
    evaluated, calibration = rep["input_statistics"]["evaluated"], rep["input_statistics"]["calibration"]
    assert evaluated["std"] == pytest.approx(calibration["std"] / 16, rel=0.15)  # measured: the data is 16x small
    assert "input_distribution" in err and "calibration inputs" in err and "evaluated inputs" in err
    assert not rep["passed"]


def test_declared_input_scale_fixes_mis_scaled_data(user_data, trained_seed001, tmp_path, capsys):
    code, out, err, rep = _verify(capsys, tmp_path, "fixed", "--reference", trained_seed001,
                                  "--candidate", user_data["cand"], "--dataset", f"npz:{user_data['small']}",
                                  "--input-scale", "16")
    assert code == 0, (out, err)
    assert rep["dataset"]["normalisation"] == {"scale": 16.0, "max_value": 1 / 16, "provenance": "declared",
                                               "detail": "--input-scale"}
    assert rep["candidate"]["accuracy"] == pytest.approx(
        _litert_accuracy(user_data["cand"], user_data["x_f32"], user_data["y"]), abs=1.0 / len(user_data["y"]))


@pytest.mark.parametrize("args, message", [
    ([], "nothing to check"),
    (["--max-accuracy-drop", "0.5"], "--max-accuracy-drop compares the candidate with a reference"),
    (["--min-agreement", "0.9"], "--min-agreement compares the candidate with a reference"),
])
def test_a_gate_with_nothing_to_check_is_a_usage_error(user_data, tmp_path, capsys, args, message):
    code, out, err, rep = _verify(capsys, tmp_path, "nothing", "--candidate", user_data["cand"],
                                  "--dataset", f"npz:{user_data['f32']}", *args)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert rep is None


def test_class_count_mismatch_is_a_usage_error(user_data, tmp_path, capsys):
    code, out, err, rep = _verify(capsys, tmp_path, "sixteen", "--candidate", user_data["cand"],
                                  "--dataset", f"npz:{user_data['sixteen']}", "--min-accuracy", "0.5")
    assert code == 2
    assert "number of classes" in err and "16 classes" in err and len(err.strip().splitlines()) == 1, err
    assert rep is None
