"""Device-side code paths: `toolchain bench` and `toolchain verify --candidate X.tflite --dataset npz:...` must work
with only numpy + typer + a TFLite runtime (no TensorFlow, Keras, scikit-learn or matplotlib).

* ``test_device_paths_without_host_libraries``: runs both commands in a subprocess of the main venv where importing
  tensorflow / keras / sklearn / matplotlib / PIL raises ImportError (LiteRT runtime).
* ``test_device_venv`` runs them in a real device venv (numpy<2 + tflite-runtime) when ``TOOLCHAIN_DEVICE_VENV``
  points at one; ``.ci/device_check.sh`` builds that venv and runs the same checks in CI.

``python tests/test_device.py make-fixture DIR`` (host venv) writes the fixture used by both: a small int8 CNN
trained on the 8x8 digits (``model_int8.tflite`` + sidecar ``model_int8.json`` with the preprocessing), the
raw test split as ``digits_test.npz`` and ``expected.json`` with the accuracy computed here with NumPy over the
LiteRT reference-kernel outputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
BLOCKED = ("tensorflow", "keras", "tf_keras", "sklearn", "matplotlib", "PIL", "tflite_micro")


def make_fixture(out: Path) -> dict:
    """Train a tiny CNN on the 8x8 digits, convert to full-int8 and write the device fixture into ``out``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import contextlib
    import io

    import keras
    import tensorflow as tf
    from sklearn.datasets import load_digits

    from toolchain.runtime import dequantize_output, quantize_input, reference_outputs

    out.mkdir(parents=True, exist_ok=True)
    d = load_digits()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(d.target))
    train_idx, test_idx = order[:1400], order[1400:]
    x_raw, y = d.images.astype(np.float32), d.target.astype(np.int64)
    x = (x_raw / 16.0)[..., None]
    keras.utils.set_random_seed(0)
    inp = keras.Input(shape=(8, 8, 1))
    h = keras.layers.Conv2D(8, 3, activation="relu")(inp)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(32, activation="relu")(h)
    outp = keras.layers.Dense(10, activation="softmax")(h)
    model = keras.Model(inp, outp)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x[train_idx], y[train_idx], epochs=8, batch_size=32, verbose=0)
    fixed = keras.models.clone_model(model, input_tensors=keras.Input(batch_shape=(1, 8, 8, 1)))
    fixed.set_weights(model.get_weights())

    def rep():
        for i in train_idx[:200]:
            yield [x[i:i + 1]]

    conv = tf.lite.TFLiteConverter.from_keras_model(fixed)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    with contextlib.redirect_stdout(io.StringIO()):
        data = conv.convert()
    model_path = out / "model_int8.tflite"
    model_path.write_bytes(data)
    labels = [str(i) for i in range(10)]
    sidecar = {"format": "toolchain-tflite-metadata/1", "model": "device_fixture_cnn", "dataset": "digits",
               "preprocessing": {"input_shape": [8, 8, 1], "scale": 1.0 / 16.0, "resize": "none", "channels": "keep"},
               "labels": labels, "num_classes": 10, "input_shape": [8, 8, 1], "seed": 0,
               "split": {"val_fraction": 0.1, "test_fraction": 0.2},
               "quantization": {"scheme": "full_int8", "io_dtype": "int8", "per_channel": True,
                                "calibration_samples": 200, "qat": False, "float_ops": []},
               "tflite_sha256": hashlib.sha256(data).hexdigest()}
    (out / "model_int8.json").write_text(json.dumps(sidecar, indent=2))
    npz = out / "digits_test.npz"
    np.savez(npz, x_train=x_raw[train_idx[:50]], y_train=y[train_idx[:50]], x_test=x_raw[test_idx], y_test=y[test_idx])
    # independent expected accuracy: NumPy preprocessing + quantisation, LiteRT reference kernels
    from ai_edge_litert.interpreter import Interpreter

    det = Interpreter(model_content=data).get_input_details()[0]
    odet = Interpreter(model_content=data).get_output_details()[0]
    xq = quantize_input(x[test_idx], det)
    outs = reference_outputs(model_path, [xq[i:i + 1] for i in range(len(xq))])
    probs = dequantize_output(np.concatenate(outs), odet)
    acc = float(np.mean(np.argmax(probs, axis=1) == y[test_idx]))
    expected = {"accuracy": acc, "samples": int(len(test_idx)), "model": str(model_path), "npz": str(npz)}
    (out / "expected.json").write_text(json.dumps(expected, indent=2))
    return expected


_BLOCKER = """
import sys, importlib.abc
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ImportError('blocked on the device: ' + name)
        return None
sys.meta_path.insert(0, _Block())
from toolchain.cli import main
try:
    main(sys.argv[1:])
finally:
    bad = sorted(m for m in sys.modules if m.split('.')[0] in {blocked!r})
    if bad:
        raise SystemExit('imported host-only modules: ' + ', '.join(bad))
"""


def run_device_cli(python: str, args: list[str], block: bool) -> subprocess.CompletedProcess:
    code = _BLOCKER.format(blocked=BLOCKED) if block else "import sys\nfrom toolchain.cli import main\nmain(sys.argv[1:])"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([python, "-c", code, *args], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=300)


def check_device_commands(python: str, fixture: Path, block: bool, runtime: str) -> None:
    expected = json.loads((fixture / "expected.json").read_text())
    model = fixture / "model_int8.tflite"
    npz = fixture / "digits_test.npz"
    bench_json = fixture / f"bench_{runtime}.json"
    r = run_device_cli(python, ["bench", str(model), "--runtime", runtime, "--runs", "50", "--warmup", "5",
                                "--json", str(bench_json), "--force"], block)
    assert r.returncode == 0, r.stdout + r.stderr
    b = json.loads(bench_json.read_text())
    assert b["runtime"] == runtime and b["runs"] == 50
    assert 0 < b["latency_ms"]["min"] <= b["latency_ms"]["median"] <= b["latency_ms"]["p99"]
    assert b["peak_rss_bytes"] > 0 and b["input"]["dtype"] == "int8"
    out = fixture / f"verify_{runtime}"
    min_acc = max(0.0, expected["accuracy"] - 0.02)
    r = run_device_cli(python, ["verify", "--candidate", str(model), "--dataset", f"npz:{npz}", "--runtime", runtime,
                                "--runs", "20", "--min-accuracy", f"{min_acc:.4f}", "--output", str(out), "--force"],
                       block)
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads((out / "report.json").read_text())
    assert rep["samples"] == expected["samples"]
    assert rep["reference"] is None and rep["comparison"] is None
    # the runtime's optimised kernels may differ from the reference kernels by 1 LSB on a few samples
    assert abs(rep["candidate"]["accuracy"] - expected["accuracy"]) <= 2.0 / expected["samples"]
    assert rep["passed"] is True and [c["name"] for c in rep["checks"]] == ["min_accuracy"]
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    assert rep["plots"] == [] and "matplotlib" in rep["plots_note"]  # no matplotlib on the device: noted, no plots
    # an impossible gate fails with exit 1 and names the check
    r = run_device_cli(python, ["verify", "--candidate", str(model), "--dataset", f"npz:{npz}", "--runtime", runtime,
                                "--runs", "5", "--min-accuracy", "1.0", "--no-plots", "--output", str(out) + "_fail",
                                "--force"], block)
    if rep["candidate"]["accuracy"] < 1.0:
        assert r.returncode == 1, r.stdout + r.stderr
        assert "min_accuracy" in r.stderr


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("device_fixture")
    make_fixture(out)
    return out


def test_fixture_model_is_good(fixture_dir):
    expected = json.loads((fixture_dir / "expected.json").read_text())
    assert expected["accuracy"] >= 0.85 and expected["samples"] == 397


def test_device_paths_without_host_libraries(fixture_dir):
    check_device_commands(sys.executable, fixture_dir, block=True, runtime="litert")


def test_device_venv(fixture_dir):
    venv = os.environ.get("TOOLCHAIN_DEVICE_VENV")
    if not venv:
        pytest.skip("TOOLCHAIN_DEVICE_VENV not set (.ci/device_check.sh runs the real device venv)")
    check_device_commands(str(Path(venv) / "bin" / "python"), fixture_dir, block=False, runtime="tflite-runtime")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "make-fixture":
        make_fixture(Path(sys.argv[2]))
    elif len(sys.argv) == 5 and sys.argv[1] == "check":
        # python tests/test_device.py check DEVICE_PYTHON FIXTURE_DIR RUNTIME
        check_device_commands(sys.argv[2], Path(sys.argv[3]), block=False, runtime=sys.argv[4])
    else:
        raise SystemExit("usage: test_device.py make-fixture DIR | check DEVICE_PYTHON FIXTURE_DIR RUNTIME")
