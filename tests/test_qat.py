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
    # fake-quantised model still computes (close to) the float function before any training, once its activation
    # ranges are calibrated (the warm-up QAT starts from): same class on all 16 inputs, and every softmax output
    # within 3 steps of an int8 softmax scale (1/256) of Keras' float output -- measured max 0.0090 (2.3 steps);
    # with tfmot's initial [-6, 6] ranges the error is 0.121 (31 steps)
    from toolchain.quant_qat import warm_up_ranges

    assert warm_up_ranges(qmodel, x) == 16
    fake_quant = np.asarray(qmodel.predict(x, verbose=0))
    assert fake_quant.shape == (16, 4)
    assert np.array_equal(fake_quant.argmax(1), expected.argmax(1))
    assert np.max(np.abs(fake_quant - expected)) <= 3 / 256
    assert not np.allclose(fake_quant, expected, atol=1e-5)  # it is quantised: not the float function itself


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
    close = _closeness_to_float(run / "model.keras", qat, x)
    print(f"{run.name}: QAT int8 vs float Keras: agreement {close['agreement'] * 100:.2f} %, mean |error| "
          f"{close['mean_steps']:.2f} output steps, p99 {close['p99_steps']:.2f}, max {close['max_steps']:.1f}")
    return ptq_acc, qat_acc, side, close


def _closeness_to_float(keras_path: Path, tflite_path: Path, x) -> dict:
    """The QAT int8 model's dequantised outputs (LiteRT reference kernels) against the float Keras model it was
    fine-tuned from (Keras directly), on the same preprocessed inputs; errors in output quantisation steps."""
    import keras

    from tests.test_quantise import reference_interpreter

    ref = np.asarray(keras.models.load_model(keras_path).predict(x, verbose=0), dtype=np.float64)
    scale, zero = reference_interpreter(tflite_path).get_output_details()[0]["quantization"]
    deq = (int8_predict(tflite_path, x).astype(np.float64) - zero) * scale
    steps = np.abs(deq - ref) / scale
    return {"agreement": float(np.mean(deq.argmax(1) == ref.argmax(1))), "mean_steps": float(steps.mean()),
            "p99_steps": float(np.percentile(steps, 99)), "max_steps": float(steps.max()), "scale": float(scale)}


@pytest.mark.slow
def test_qat_seed001_at_least_as_accurate_as_ptq(trained_seed001, tmp_path, capsys):
    ptq_acc, qat_acc, side, close = _ptq_and_qat(trained_seed001, tmp_path, capsys, qat_epochs=1)
    q = side["quantization"]
    assert q["qat"] is True and q["qat_epochs"] == 1
    details = q["qat_details"]
    assert {"conv1", "conv2", "predictions"} <= set(details["annotated_layers"])
    assert details["rebuild_max_abs_diff"] <= 1e-4
    assert side["evaluation"]["tflite_accuracy"] == pytest.approx(qat_acc, abs=1e-9)
    assert qat_acc * 100 >= ptq_acc * 100 - NOISE_PP, f"QAT {qat_acc:.4f} vs PTQ {ptq_acc:.4f}"
    # the QAT int8 model stays close to the float model it was fine-tuned from (one epoch moves the weights, so not
    # bit-close): measured agreement 96.94 %, mean |error| 2.40 output steps (softmax scale 1/256)
    assert close["agreement"] >= 0.93 and close["mean_steps"] <= 4.0, close


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
    ptq_acc, qat_acc, side, close = _ptq_and_qat(run, tmp_path, capsys, qat_epochs=1, evaluate=False)
    details = side["quantization"]["qat_details"]
    assert {"stack1_add", "stack2_add", "stack3_add", "conv0", "predictions"} <= set(details["annotated_layers"])
    assert ptq_acc > 0.5, f"float model too weak for a meaningful comparison ({ptq_acc:.3f})"
    assert qat_acc * 100 >= ptq_acc * 100 - NOISE_PP, f"QAT {qat_acc:.4f} vs PTQ {ptq_acc:.4f}"
    # measured against the float resnet8: agreement 96.10 %, mean |error| 5.16 output steps (softmax scale 1/256)
    assert close["agreement"] >= 0.92 and close["mean_steps"] <= 8.0, close


def test_qat_needs_a_real_dataset(tmp_path, capsys):
    from tests.test_quantise import tiny_model

    model = tiny_model(tmp_path / "t.keras")
    code, _, err = run_cli(["quantise", model, "-o", tmp_path / "t.tflite", "-d", "random", "--qat"], capsys)
    assert code == 2 and "--qat needs a real dataset" in err
    assert not (tmp_path / "t.tflite").exists()
