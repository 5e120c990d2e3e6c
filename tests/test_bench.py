"""`toolchain bench`: latency statistics, JSON output, runtimes, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from toolchain.bench import bench, host_info
from tests.helpers import cli_exit_code as cli

REF_DIR = Path(__file__).resolve().parents[2] / "shared/models/reference"
KWS = REF_DIR / "mlperftiny__kws_ref_model.tflite"
HELLO = REF_DIR / "tflm__hello_world_int8.tflite"




def need(p: Path) -> Path:
    if not p.is_file():
        pytest.skip(f"reference model missing: {p}")
    return p


def test_bench_cli_writes_consistent_json(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert cli(["bench", str(need(KWS)), "--runs", "30", "--warmup", "3", "--threads", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "latency median" in text and "peak RSS" in text
    r = json.loads(out.read_text())
    assert r["runtime"] == "litert" and r["runs"] == 30 and r["threads"] == 1
    assert r["size_bytes"] == KWS.stat().st_size
    assert r["input"] == {"shape": [1, 49, 10, 1], "dtype": "int8", "source": "random"}
    lat = r["latency_ms"]
    assert 0 < lat["min"] <= lat["median"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    # throughput is runs / wall time of the timed loop: at most 1000 / mean latency (+ timer overhead slack)
    assert 0 < r["throughput_per_s"] <= 1000.0 / lat["mean"] * 1.05
    assert r["peak_rss_bytes"] > 10 * 2**20
    assert r["host"]["cores"] >= 1 and "litert" in r["host"]["runtimes"]
    # existing --json is not overwritten without --force
    assert cli(["bench", str(KWS), "--runs", "2", "--json", str(out)]) == 2
    assert cli(["bench", str(KWS), "--runs", "2", "--json", str(out), "--force"]) == 0


def test_bench_tflm_and_keras(tmp_path):
    r = bench(need(HELLO), runtime="tflm", runs=10, warmup=1)
    assert r["runtime"] == "tflm" and r["input"]["dtype"] == "int8" and r["latency_ms"]["median"] > 0
    import keras

    inp = keras.Input(shape=(6,))
    model = keras.Model(inp, keras.layers.Dense(2)(inp))
    path = tmp_path / "m.keras"
    model.save(path)
    rk = bench(path, runs=5, warmup=1)
    assert rk["runtime"] == "keras" and rk["input"] == {"shape": [1, 6], "dtype": "float32", "source": "random"}


def test_bench_with_dataset_inputs(tmp_path):
    """Dataset inputs are the preprocessed, quantised test samples (an npz of raw 8x8 digits here)."""
    from sklearn.datasets import load_digits

    from toolchain.data import Preprocessing
    from toolchain.runtime import open_runtime, quantize_input
    from toolchain.bench import _inputs_for

    d = load_digits()
    npz = tmp_path / "d.npz"
    np.savez(npz, x_train=d.images[:20], y_train=d.target[:20], x_test=d.images[20:40], y_test=d.target[20:40])
    model = need(REF_DIR / "tflm__micro_speech_quantized.tflite")  # int8 [1, 1960]: flatten preprocessing
    runner = open_runtime(model)
    x, source = _inputs_for(runner, f"npz:{npz}", 8)
    assert source.startswith("dataset") and x.dtype == np.int8 and x.shape == (8, 1960)
    prep = Preprocessing(input_shape=(1960,), scale=1 / 255.0, resize="flatten", channels="keep")
    want = quantize_input(prep.apply(d.images[20:28]), runner.input_details[0])
    assert np.array_equal(x, want)


def test_bench_errors(tmp_path, capsys):
    assert cli(["bench", str(tmp_path / "nope.tflite")]) == 2
    assert cli(["bench", str(need(KWS)), "--runtime", "onnx"]) == 2
    assert cli(["bench", str(KWS), "--runs", "0"]) == 2
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    assert cli(["bench", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 4 and "Traceback" not in err


def test_bench_c_engine_rejects_threads_and_honours_runs_with_dataset(tmp_path, monkeypatch, capsys):
    """--threads does not apply to the C engine (error, not silently ignored); with --dataset the C engine still
    runs --runs inferences (the distinct samples are cycled) and its wall-clock figure is labelled a mean."""
    import firmware_export.cgen.bench as cbench
    from toolchain.bench import bench, format_bench

    assert cli(["bench", str(need(HELLO)), "--runtime", "qemu-m4", "--threads", "2"]) == 2
    assert "--threads" in capsys.readouterr().err
    seen = {}

    def fake_run_c_bench(model_path, runtime, runs=10, inputs=None):
        seen["n"] = len(inputs)
        return {"runtime": runtime, "runs": len(inputs), "outputs_match": True, "latency_ms": 0.5}

    monkeypatch.setattr(cbench, "run_c_bench", fake_run_c_bench)
    d = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(d, x_train=rng.random((40, 1), dtype=np.float32), y_train=np.zeros(40, np.int64),
             x_test=rng.random((30, 1), dtype=np.float32), y_test=np.zeros(30, np.int64))
    r = bench(need(HELLO), runtime="c-host", runs=20, dataset=f"npz:{d}")
    assert seen["n"] == 20 and r["runs"] == 20
    assert ("latency mean (wall clock)", "0.5000 ms") in format_bench(r)


def test_host_info_reads_cpu_model():
    h = host_info()
    assert h["cpu"] and h["cores"] >= 1 and h["numpy"] == np.__version__


def _have(tool: str) -> bool:
    import shutil

    return shutil.which(tool) is not None


def test_bench_c_host_delegates_to_the_c_engine(tmp_path, capsys):
    if not _have("gcc"):
        pytest.skip("gcc not installed")
    out = tmp_path / "c.json"
    assert cli(["bench", str(need(HELLO)), "--runtime", "c-host", "--runs", "8", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["runtime"] == "c-host" and r["outputs_match"] is True and r["latency_ms"] > 0
    assert "outputs match" in capsys.readouterr().out


@pytest.mark.qemu
def test_bench_qemu_m4(tmp_path):
    if not (_have("arm-none-eabi-gcc") and _have("qemu-system-arm")):
        pytest.skip("arm-none-eabi-gcc / qemu-system-arm not installed")
    r = bench(need(HELLO), runtime="qemu-m4", runs=3)
    assert r["runtime"] == "qemu-m4" and r["outputs_match"] is True
    assert r["instructions_per_inference"] > 288  # at least one instruction per MAC of the 3 FC layers
