"""`toolchain bench`: latency statistics, JSON output, runtimes, errors."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from toolchain.bench import bench, format_bench, host_info
from toolchain.timing import sig
from tests.helpers import cli_exit_code as cli
from tests.helpers import litert_reference, run_cli

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
    # both throughputs printed per sample, each with how it was measured, as the JSON has them
    assert r["batch_mode"] == "batched(64)" and r["batch_samples"] == 64 and 1 <= r["batch_passes"] <= 20
    assert re.search(rf"throughput, batch 1 +{re.escape(sig(r['throughput_per_s']))} samples/s \(batch-1 model "
                     r"invoked 30 times", text)
    assert re.search(rf"throughput, batched +{re.escape(sig(r['batch_throughput_per_s']))} samples/s \(one batch "
                     r"of 64 on a batch-resized interpreter", text)
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


def test_bench_c_engine_rejects_threads(capsys):
    """--threads does not apply to the single-threaded C engine: an error, not silently ignored."""
    assert cli(["bench", str(need(HELLO)), "--runtime", "qemu-m4", "--threads", "2"]) == 2
    assert "--threads" in capsys.readouterr().err


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
    assert r["runtime"] == "c-host" and r["outputs_match"] is True and r["mismatches"] == 0 and r["runs"] == 8
    assert r["latency_ms"] > 0 and ("latency mean (wall clock)", f"{sig(r['latency_ms'])} ms") in format_bench(r)
    assert r["macs"] == 288 and r["instructions_per_inference"] is None  # 1x16 + 16x16 + 16x1 MACs
    assert "outputs match" in capsys.readouterr().out


# ------------------------------------------------------------------------------------ C engine on a Cortex-M4 (QEMU)

QEMU_CMD = ["qemu-system-arm", "-M", "mps2-an386", "-icount", "shift=0", "-nographic", "-semihosting", "-monitor",
            "none", "-serial", "none", "-kernel"]
# mps2-an386 SysTick runs at 25 MHz; under -icount shift=0 one instruction takes 1 ns: 40 instructions per tick.
NS_PER_TICK = 40


def _need_arm_tools():
    if not (_have("arm-none-eabi-gcc") and _have("arm-none-eabi-size") and _have("qemu-system-arm")):
        pytest.skip("arm-none-eabi-gcc / arm-none-eabi-size / qemu-system-arm not installed")


def _golden(header: str, array: str) -> np.ndarray:
    """The rows of ``static const ... ce_golden_<array>[N][M] = {{...}, ...};`` parsed back from the header."""
    body = re.search(rf"ce_golden_{array}\[CE_GOLDEN_N\]\[CE_GOLDEN_\w+\][^=]*=\s*\{{(.*?)\}};", header, re.S).group(1)
    return np.array([[int(v) for v in row.split(",")] for row in re.findall(r"\{([^{}]*)\}", body)], dtype=np.int64)


def _size_a(path: Path) -> dict[str, int]:
    """``arm-none-eabi-size -A`` of an ELF or object: section -> bytes (parsed here, not by the toolchain)."""
    text = subprocess.run(["arm-none-eabi-size", "-A", str(path)], capture_output=True, text=True, check=True).stdout
    out: dict[str, int] = {}
    for line in text.splitlines()[2:]:
        parts = line.split()
        if len(parts) == 3 and parts[0] != "Total":
            out[parts[0]] = out.get(parts[0], 0) + int(parts[1])
    return out


def _qemu_result(elf: Path) -> dict[str, int]:
    proc = subprocess.run(QEMU_CMD + [str(elf)], capture_output=True, text=True, timeout=120, cwd=elf.parent)
    m = re.search(r"CE_RESULT runs=(\d+) mismatches=(\d+) first=(-?\d+) elapsed=(\d+) unit=ticks stack=(\d+)",
                  proc.stdout + proc.stderr)
    assert m, proc.stdout + proc.stderr
    return dict(zip(("runs", "mismatches", "first", "ticks", "stack"), map(int, m.groups())))


@pytest.mark.qemu
def test_bench_qemu_m4_figures_against_independent_facts(tmp_path, monkeypatch):
    """A real `bench --runtime qemu-m4 --runs 20 --dataset npz:...` of hello_world (3 FULLY_CONNECTED), the build
    folder kept for inspection (the real run_on_target, only with keep_dir set), every figure checked against what
    the test finds itself: the firmware's inputs are the dataset samples quantised here (one per run), the outputs
    it wrote back equal LiteRT's reference kernels run here on those inputs, re-running the ELF in QEMU reproduces
    the count, MACs come from the flatbuffer, flash / RAM from arm-none-eabi-size."""
    import firmware_export.m4.target as target

    from tests.helpers import flatbuffer_counts

    _need_arm_tools()
    model = need(HELLO)
    work = tmp_path / "work"
    real = target.run_on_target
    monkeypatch.setattr(target, "run_on_target", lambda *a, **k: real(*a, **{**k, "keep_dir": work}))
    d = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    x_test = rng.random((30, 1), dtype=np.float32)
    np.savez(d, x_train=rng.random((40, 1), dtype=np.float32), y_train=np.zeros(40, np.int64),
             x_test=x_test, y_test=np.zeros(30, np.int64))
    runs = 20
    r = bench(model, runtime="qemu-m4", runs=runs, dataset=f"npz:{d}")
    assert r["runtime"] == "qemu-m4" and r["engine"] == "c" and r["runs"] == runs
    assert r["size_bytes"] == model.stat().st_size
    assert r["latency_ms"] is None  # no wall clock under QEMU: instructions instead

    # firmware inputs: the dataset samples, quantised here (TFLite QUANTIZE: round half away from zero), one test
    # sample per run; the outputs the firmware wrote back equal LiteRT's reference kernels run here
    build_dir = work / "run0" / "build_m4"
    header = next((work / "run0").glob("*_golden.h")).read_text()
    assert "ce_golden_out" not in header  # the firmware does not compare: the host does
    gin = _golden(header, "in")
    from ai_edge_litert.interpreter import Interpreter

    s, z = Interpreter(model_path=str(model)).get_input_details()[0]["quantization"]  # 0.02448, -128
    v = x_test[:runs, 0] / np.float32(s)
    q = np.clip(np.sign(v) * np.floor(np.abs(v) + 0.5) + z, -128, 127).astype(np.int64)
    assert gin.shape == (runs, 1) and np.array_equal(gin[:, 0], q)
    written = np.frombuffer((build_dir / "ce_outputs.bin").read_bytes(), dtype=np.int8).reshape(runs, -1)
    assert np.array_equal(written, litert_reference(model, gin.astype(np.int8)))
    assert r["outputs_match"] is True and r["mismatches"] == 0 and r["identical_pct"] == 100.0
    assert "TFLM's reference kernels" in r["reference"]

    # MACs: 1x16 + 16x16 + 16x1 = 288 from the flatbuffer's weight shapes
    counts = flatbuffer_counts(model)
    assert counts["macs"] == 288 and r["macs"] == counts["macs"]

    # instructions: re-running the same ELF under QEMU (deterministic with -icount) gives the same SysTick count
    elf = next(build_dir.glob("*.elf"))
    again = _qemu_result(elf)
    assert again["runs"] == runs
    assert r["instructions_per_inference"] == round(again["ticks"] * NS_PER_TICK / runs)
    # measured 2,436 instructions per inference (~8.5 per MAC: 3 tiny layers, requantisation dominates)
    assert counts["macs"] < r["instructions_per_inference"] < 10_000
    assert r["macs_per_instruction"] == pytest.approx(counts["macs"] / r["instructions_per_inference"], abs=1e-4)

    # flash / RAM from arm-none-eabi-size -A, parsed here: whole firmware = .text + .rodata + .data (golden vectors
    # live in their own .golden section); the engine's share excludes the harness + startup objects
    sec = _size_a(elf)
    firmware = sec[".text"] + sec[".rodata"] + sec.get(".data", 0) + sec.get(".ARM.exidx", 0)
    assert r["firmware_flash_bytes"] == firmware
    harness = 0
    for obj in ("tflm_hello_world_int8_test.o", "ce_m4_startup.o"):
        harness += sum(n for k, n in _size_a(build_dir / obj).items() if k.startswith((".text", ".rodata", ".data")))
    assert r["flash_bytes"] == firmware - harness and r["flash"]["harness"] == harness
    # the engine holds at least the weights (288 int8) and biases (33 int32) -- measured 1,531 B in all
    assert 288 + 4 * 33 <= r["flash_bytes"] < r["firmware_flash_bytes"]
    results_buffer = runs * 1  # the harness's int8 [20][1] output buffer in .bss
    assert r["static_ram_bytes"] == sec.get(".data", 0) + sec[".bss"] - results_buffer - r["arena_bytes"]
    assert r["stack_bytes"] == again["stack"] > 0
    assert r["ram_bytes"] == r["arena_bytes"] + r["static_ram_bytes"] + r["stack_bytes"]


def test_target_output_comparison_counts_lsb_and_first_mismatch():
    from toolchain.ontarget import compare_outputs

    want = [np.full((1, 4), i, dtype=np.int8) for i in range(20)]
    got = [w.copy() for w in want]
    got[5][0, 2] += 1
    got[9][0, 0] -= 3
    c = compare_outputs(got, want)
    assert (c["identical"], c["identical_pct"], c["first_mismatch"], c["max_lsb_diff"]) == (18, 90.0, 5, 3)


def test_unknown_engine_is_refused(capsys):
    code, _, err = run_cli(["bench", str(need(HELLO)), "--runtime", "qemu-m4", "--engine", "x"],
                           capsys)
    assert code == 2 and "--engine must be c" in err
    code, _, err = run_cli(["bench", str(need(HELLO)), "--engine", "tflm"], capsys)
    assert code == 2 and "only apply to --runtime qemu-m4" in err
    code, _, err = run_cli(["bench", str(need(HELLO)), "--runtime", "qemu-m4", "--tflm-dir", "/nonexistent"], capsys)
    assert code == 2 and "--tflm-dir is for --engine tflm or cmsis-nn" in err
