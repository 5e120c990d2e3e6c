"""toolchain.runtime: one interface over LiteRT / tflite-runtime / tf.lite / TFLM / Keras."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from toolchain import runtime as R
from toolchain.errors import ModelError, RuntimeUnavailableError, UsageError

REF_DIR = Path(__file__).resolve().parents[2] / "shared/models/reference"
RESNET = REF_DIR / "mlperftiny__pretrainedResnet_quant.tflite"
KWS = REF_DIR / "mlperftiny__kws_ref_model.tflite"
HELLO = REF_DIR / "tflm__hello_world_int8.tflite"


def need(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"reference model missing: {path}")
    return path


def test_import_does_not_load_tensorflow():
    code = ("import sys, toolchain.runtime as r; r.available_runtimes(); "
            "bad=[m for m in ('tensorflow','keras','ai_edge_litert','tflite_micro') if m in sys.modules]; "
            "print(','.join(bad)); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_available_runtimes_in_host_venv():
    rts = R.available_runtimes()
    assert "litert" in rts and "tflm" in rts and "keras" in rts


def test_quantize_dequantize_match_numpy_formula():
    detail = {"dtype": np.int8, "quantization": (0.05, -3)}
    x = np.array([-10.0, -6.55, -0.024, 0.0, 0.026, 1.0, 6.5, 100.0], dtype=np.float32)
    q = R.quantize_input(x, detail)
    v = x / np.float32(0.05)  # float32 arithmetic, ties away from zero (TFLite's QUANTIZE kernel)
    expected = np.clip(np.where(v >= 0, np.floor(v + 0.5), np.ceil(v - 0.5)) - 3, -128, 127).astype(np.int8)
    assert q.dtype == np.int8 and np.array_equal(q, expected)
    assert q[0] == -128 and q[-1] == 127  # clipped
    ties = R.quantize_input(np.array([0.5, -0.5, 1.5, 2.5], np.float32), {"dtype": np.int8, "quantization": (1.0, 0)})
    assert ties.tolist() == [1, -1, 2, 3]  # not numpy's round-half-to-even
    back = R.dequantize_output(q, detail)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, (q.astype(np.float64) + 3) * 0.05, rtol=1e-6)
    # uint8 and float tensors
    assert R.quantize_input(np.array([0.0, 1.0]), {"dtype": np.uint8, "quantization": (1 / 255, 0)}).tolist() == [0, 255]
    f = R.quantize_input(np.array([0.25], dtype=np.float64), {"dtype": np.float32, "quantization": (0.0, 0)})
    assert f.dtype == np.float32 and f[0] == 0.25
    # LiteRT-style details without the "quantization" tuple
    d2 = {"dtype": np.int8, "quantization_parameters": {"scales": np.array([0.5]), "zero_points": np.array([1])}}
    assert R.quantize_input(np.array([1.0]), d2)[0] == 3


def test_litert_reference_kernels_match_reference_outputs_and_batching():
    path = need(RESNET)
    runner = R.open_runtime(path, runtime="litert", reference_kernels=True)
    assert runner.name == "litert" and runner.version.startswith("2.")
    d = runner.input_details[0]
    assert d["shape"] == (1, 32, 32, 3) and d["dtype"] == np.int8 and d["quantization"] == (1.0, -128)
    x = np.random.default_rng(0).integers(-128, 128, (6, 32, 32, 3)).astype(np.int8)
    ref = R.reference_outputs(path, [x[i:i + 1] for i in range(6)])
    assert len(ref) == 6 and ref[0].shape == (1, 10) and ref[0].dtype == np.int8
    loop = np.concatenate([runner.run(x[i:i + 1]) for i in range(6)])
    assert np.array_equal(loop, np.concatenate(ref))
    many = runner.run_many(x, batch_size=4)
    assert np.array_equal(many, loop)
    # inputs given without the batch dimension are accepted
    assert np.array_equal(R.reference_outputs(path, [x[0]])[0], ref[0])


def test_run_many_falls_back_to_loop_for_fixed_batch_graphs():
    path = need(KWS)
    runner = R.open_runtime(path)
    x = np.random.default_rng(1).integers(-128, 128, (5, 49, 10, 1)).astype(np.int8)
    many = runner.run_many(x)
    loop = np.concatenate([runner.run(x[i:i + 1]) for i in range(5)])
    assert np.array_equal(many, loop)
    assert runner.batch_mode.startswith(("loop", "batched"))


def test_tflm_runtime_close_to_litert_reference():
    path = need(RESNET)
    runner = R.open_runtime(path, runtime="tflm")
    assert runner.name == "tflm" and runner.input_details[0]["shape"] == (1, 32, 32, 3)
    x = np.random.default_rng(2).integers(-128, 128, (3, 32, 32, 3)).astype(np.int8)
    got = np.concatenate([runner.run(x[i:i + 1]) for i in range(3)])
    ref = np.concatenate(R.reference_outputs(path, [x[i:i + 1] for i in range(3)]))
    assert got.shape == ref.shape
    # TFLM's int8 softmax differs slightly from TFLite's reference kernel: compare probabilities
    dout = runner.output_details[0]
    assert np.max(np.abs(R.dequantize_output(got, dout) - R.dequantize_output(ref, dout))) < 0.03
    assert np.array_equal(np.argmax(got, 1), np.argmax(ref, 1))


def test_hello_world_sine_through_quantisation():
    path = need(HELLO)
    runner = R.open_runtime(path)
    din, dout = runner.input_details[0], runner.output_details[0]
    xs = np.linspace(0.0, 2 * np.pi, 16, dtype=np.float32).reshape(16, 1)
    y = R.dequantize_output(runner.run_many(R.quantize_input(xs, din)), dout).reshape(-1)
    assert np.max(np.abs(y - np.sin(xs.reshape(-1)))) < 0.2  # the published model approximates sin(x)


def test_errors():
    path = need(RESNET)
    if "tflite-runtime" not in R.available_runtimes():
        with pytest.raises(RuntimeUnavailableError) as exc:
            R.open_runtime(path, runtime="tflite-runtime")
        assert "pip install" in str(exc.value) and "tflite-runtime" in str(exc.value)
    with pytest.raises(UsageError):
        R.open_runtime(path, runtime="onnx")
    with pytest.raises(UsageError):
        R.open_runtime(path, threads=0)
    with pytest.raises(ModelError):
        R.open_runtime(REF_DIR / "does_not_exist.tflite")
    with pytest.raises(ModelError):
        R.open_runtime(b"not a flatbuffer at all")
    runner = R.open_runtime(path)
    with pytest.raises(UsageError):
        runner.run(np.zeros((1, 32, 32, 3), np.float32))  # wrong dtype: must be quantised first
    with pytest.raises(UsageError):
        runner.run(np.zeros((1, 10), np.int8))


def test_keras_runner(tmp_path):
    import keras

    inp = keras.Input(shape=(4, 4, 1))
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(inp))
    model = keras.Model(inp, out)
    path = tmp_path / "m.keras"
    model.save(path)
    runner = R.open_runtime(path)
    assert runner.name == "keras" and runner.input_details[0]["shape"] == (1, 4, 4, 1)
    x = np.random.default_rng(3).random((10, 4, 4, 1), dtype=np.float32)
    want = model.predict(x, verbose=0)
    np.testing.assert_allclose(runner.run_many(x, batch_size=4), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(runner.run(x[:1]), want[:1], rtol=1e-5, atol=1e-6)
    with pytest.raises(UsageError):
        R.open_runtime(path, runtime="litert")


def test_fixed_batch_flatten_model_is_evaluated_batched(tmp_path):
    """Models converted with batch 1 flatten to RESHAPE [1, N]; run_many evaluates a -1 copy, bit-identically."""
    import keras

    from toolchain.quantise import convert

    keras.utils.set_random_seed(0)
    inp = keras.Input(shape=(6, 6, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu")(inp)
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(h))
    keras.Model(inp, out).save(tmp_path / "m.keras")
    convert(tmp_path / "m.keras", tmp_path / "m.tflite", precision="float32")
    data = (tmp_path / "m.tflite").read_bytes()
    patched = R.batch_agnostic_reshapes(data)
    assert patched is not None and len(patched) == len(data) and patched != data
    assert R.batch_agnostic_reshapes(patched) is None  # nothing left to patch
    runner = R.open_runtime(tmp_path / "m.tflite", reference_kernels=True)
    x = np.random.default_rng(4).random((300, 6, 6, 1), dtype=np.float32)
    many = runner.run_many(x, batch_size=128)
    assert runner.batch_mode == "batched(128)"
    loop = np.concatenate([runner.run(x[i:i + 1]) for i in range(300)])
    np.testing.assert_allclose(many, loop, rtol=1e-5, atol=1e-6)


def test_threads_rejected_where_the_runtime_cannot_use_them(tmp_path):
    """TFLM and Keras ignore a thread count; asking for one is an error, not a misleading `threads 2` figure."""
    hello = need(HELLO)
    with pytest.raises(UsageError, match="--threads"):
        R.open_runtime(hello, runtime="tflm", threads=2)
    assert R.open_runtime(hello, runtime="litert", threads=2).threads == 2
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(UsageError, match="--threads"):
        R.open_runtime(bad, runtime="keras", threads=2)
    # a corrupt .keras is named as such (before Keras is imported), not reported as "file not found"
    with pytest.raises(ModelError, match="not a valid .keras file"):
        R.check_keras_file(bad)
    with pytest.raises(ModelError, match="not a valid .keras file"):
        R.open_runtime(bad, runtime="keras")
