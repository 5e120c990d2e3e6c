"""A user sees only the toolchain's own lines: third-party log lines on fd 2 (absl/TensorFlow, LiteRT's delegate
notice) are filtered unless ``--verbose``."""

from __future__ import annotations

import os
import subprocess
import sys

from toolchain.native_stderr import NOISE


def _toolchain(*args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-m", "toolchain", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def test_bad_input_on_a_tensorflow_path_prints_one_line(trained_seed001, tmp_path):
    # quantise imports TensorFlow and Keras and loads the model before it reads the data set
    res = _toolchain("quantise", trained_seed001, "--dataset", f"npz:{tmp_path / 'missing.npz'}",
                     "--output", tmp_path / "q.tflite", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.splitlines() == [f"error: npz file not found. Received: {tmp_path / 'missing.npz'}"]
    assert not (tmp_path / "q.tflite").exists()


def test_verbose_keeps_the_third_party_lines(trained_seed001, tmp_path):
    res = _toolchain("--verbose", "quantise", trained_seed001, "--dataset", f"npz:{tmp_path / 'missing.npz'}",
                     "--output", tmp_path / "q.tflite", cwd=tmp_path)
    assert res.returncode == 2
    lines = res.stderr.splitlines()
    assert any(NOISE.match(line) for line in lines), lines  # measured: absl "I0000 ... port.cc" lines from TF
    assert any(line.startswith("error: npz file not found") for line in lines)


def test_noise_pattern_keeps_our_lines():
    ours = ["error: npz file not found. Received: x", "epoch 1/2: accuracy 0.75", "I am a line", "WARNING: disk"]
    noise = ["I0000 00:00:1796161560.041896    8891 port.cc:153] oneDNN custom operations are on.",
             "E0000 00:00:1796161564.331432    8891 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)",
             "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
             "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."]
    assert not any(NOISE.match(line) for line in ours)
    assert all(NOISE.match(line) for line in noise)
