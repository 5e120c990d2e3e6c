"""Quantisation-aware training: the Keras 3 -> tf-keras rebuild is exact, tfmot annotates the supported layers,
and QAT int8 models are at least as accurate as post-training quantisation (within noise) on seed001_basic_cnn
and on resnet8 (residual Add)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.test_quantise import assert_int8_tensors, brief_train, int8_predict, run_cli, test_split

# Paired accuracy difference tolerated as noise on the ~360-sample digits test split (1 sample = 0.28 pp).
NOISE_PP = 1.5


def residual_model():
    """A small functional model with every layer family the rebuild supports."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(3)
    inp = keras.Input((12, 12, 1), name="image")
    x = layers.ZeroPadding2D(1, name="pad")(inp)
    x = layers.Conv2D(8, 3, name="conv0")(x)
    x = layers.BatchNormalization(name="bn0")(x)
    x = layers.ReLU(name="relu0")(x)
    y = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = layers.BatchNormalization(name="dw_bn")(y)
    y = layers.Activation("relu", name="dw_relu")(y)
    y = layers.Conv2D(8, 1, name="pw")(y)
    x = layers.add([x, y], name="add")
    x = layers.MaxPooling2D(2, name="maxpool")(x)
    x = layers.AveragePooling2D(2, name="avgpool")(x)
    a = layers.GlobalAveragePooling2D(name="gap")(x)
    b = layers.Flatten(name="flatten")(x)
    b = layers.Dropout(0.3, name="drop")(b)
    b = layers.Reshape((-1,), name="reshape")(b)
    x = layers.Concatenate(name="concat")([a, b])
    out = layers.Dense(4, activation="softmax", name="head")(x)
    model = keras.Model(inp, out, name="residual")
    rng = np.random.default_rng(0)
    for w in model.weights:  # non-trivial BN statistics and biases
        if w.path.endswith(("moving_mean", "beta", "bias")):
            w.assign(rng.normal(0.0, 0.2, tuple(w.shape)).astype("float32"))
        elif w.path.endswith(("moving_variance", "gamma")):
            w.assign(rng.uniform(0.5, 1.5, tuple(w.shape)).astype("float32"))
    return model


def test_rebuild_is_exact_and_annotation_is_logged():
    from toolchain.quant_qat import build_qat_model, check_equivalent, to_tf_keras

    model = residual_model()
    x = np.random.default_rng(1).random((16, 12, 12, 1), dtype=np.float32)
    rebuilt, pairs = to_tf_keras(model)
    assert len(pairs) == len(model.layers) - 1  # every layer but the InputLayer
    assert check_equivalent(model, rebuilt, x, atol=1e-5) <= 1e-5
    expected = np.asarray(model.predict(x, verbose=0))
    np.testing.assert_allclose(np.asarray(rebuilt.predict(x, verbose=0)), expected, atol=1e-5)

    qmodel, annotated, skipped = build_qat_model(model)
    for name in ("conv0", "dw", "pw", "add", "head", "avgpool", "gap", "concat"):
        assert name in annotated, (name, annotated)
    assert set(annotated).isdisjoint(s.split(" ")[0] for s in skipped)
    assert qmodel.output_shape == (None, 4)
    # fake-quantised model still computes (close to) the float function before any training
    assert np.asarray(qmodel.predict(x, verbose=0)).shape == (16, 4)


def _accuracy(path: Path, x, y) -> float:
    return float(np.mean(np.argmax(int8_predict(path, x), axis=-1) == y))


def _ptq_and_qat(run: Path, tmp_path: Path, capsys, qat_epochs: int, evaluate: bool = True):
    ptq, qat = tmp_path / "ptq.tflite", tmp_path / "qat.tflite"
    code, _, err = run_cli(["quantise", run, "-o", ptq, "-n", "200", "--no-eval"], capsys)
    assert code in (0, None), err
    code, stdout, err = run_cli(["quantise", run, "-o", qat, "-n", "200", "--qat", "--qat-epochs", str(qat_epochs),
                                 "--eval" if evaluate else "--no-eval"], capsys)
    assert code in (0, None), err
    assert "QAT" in stdout
    assert_int8_tensors(ptq)
    assert_int8_tensors(qat)
    x, y = test_split(run)
    ptq_acc, qat_acc = _accuracy(ptq, x, y), _accuracy(qat, x, y)
    side = json.loads(qat.with_suffix(".json").read_text())
    print(f"{run.name}: PTQ int8 {ptq_acc * 100:.2f} % QAT int8 {qat_acc * 100:.2f} % ({len(y)} test samples, "
          f"{qat_epochs} QAT epoch(s))")
    return ptq_acc, qat_acc, side


@pytest.mark.slow
def test_qat_seed001_at_least_as_accurate_as_ptq(trained_seed001, tmp_path, capsys):
    ptq_acc, qat_acc, side = _ptq_and_qat(trained_seed001, tmp_path, capsys, qat_epochs=1)
    q = side["quantization"]
    assert q["qat"] is True and q["qat_epochs"] == 1
    details = q["qat_details"]
    assert {"conv1", "conv2", "predictions"} <= set(details["annotated_layers"])
    assert details["rebuild_max_abs_diff"] <= 1e-4
    assert side["evaluation"]["tflite_accuracy"] == pytest.approx(qat_acc, abs=1e-9)
    assert qat_acc * 100 >= ptq_acc * 100 - NOISE_PP, f"QAT {qat_acc:.4f} vs PTQ {ptq_acc:.4f}"


def digits_subset(path: Path, train_samples: int) -> str:
    """``npz:`` spec of a stratified subset of the digits training split (keeps QAT epochs cheap) + its test split."""
    from toolchain.data import calibration_indices, load_dataset

    ds = load_dataset("digits", seed=0)
    idx = calibration_indices(ds.y_train, train_samples, seed=2)
    np.savez(path, x_train=ds.x_train[idx], y_train=ds.y_train[idx], x_test=ds.x_test, y_test=ds.y_test)
    return f"npz:{path}"


@pytest.mark.slow
def test_qat_resnet8_residual_add(tmp_path, capsys):
    dataset = digits_subset(tmp_path / "digits_600.npz", 600)
    run = brief_train("resnet8", tmp_path / "resnet8", epochs=3, samples=600, batch_size=16, dataset=dataset)
    ptq_acc, qat_acc, side = _ptq_and_qat(run, tmp_path, capsys, qat_epochs=1, evaluate=False)
    details = side["quantization"]["qat_details"]
    assert {"stack1_add", "stack2_add", "stack3_add", "conv0", "predictions"} <= set(details["annotated_layers"])
    assert ptq_acc > 0.5, f"float model too weak for a meaningful comparison ({ptq_acc:.3f})"
    assert qat_acc * 100 >= ptq_acc * 100 - NOISE_PP, f"QAT {qat_acc:.4f} vs PTQ {ptq_acc:.4f}"


def test_qat_needs_a_real_dataset(tmp_path, capsys):
    from tests.test_quantise import tiny_model

    model = tiny_model(tmp_path / "t.keras")
    code, _, err = run_cli(["quantise", model, "-o", tmp_path / "t.tflite", "-d", "random", "--qat"], capsys)
    assert code == 2 and "--qat needs a real dataset" in err
    assert not (tmp_path / "t.tflite").exists()
