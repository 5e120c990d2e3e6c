"""`verify --on qemu-m4`: the quantised test samples through the firmware on the emulated Cortex-M4F.

References: the host candidate on LiteRT's reference kernels (same samples), the ground-truth labels, and for the
per-layer location a model whose one layer was changed on purpose (the divergence must be named at that layer).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import REF_DIR, TFLM_DIR, litert_reference, run_cli


pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(any(shutil.which(t) is None for t in ("arm-none-eabi-gcc", "qemu-system-arm")),
                       reason="needs arm-none-eabi-gcc and qemu-system-arm"),
]


def _host_predictions(path: Path, xq: np.ndarray) -> np.ndarray:
    return np.array([int(np.argmax(o)) for o in litert_reference(path, xq)])


@pytest.mark.slow
def test_verify_on_qemu_c_engine_matches_the_host_candidate(trained_seed001, tmp_path, capsys):
    cand = tmp_path / "m_int8.tflite"
    code, _, err = run_cli(["quantise", trained_seed001, "--output", cand, "--calibration-samples", "64"], capsys)
    assert code == 0, err
    n = 40
    code, out, err = run_cli(["verify", "-c", cand, "--on", "qemu-m4", "--samples", n, "--min-target-agreement", "1",
                              "--no-layer-debug", "--no-plots", "--runs", "5", "-o", tmp_path / "v"], capsys)
    assert code == 0, out + err
    rep = json.loads((tmp_path / "v" / "report.json").read_text())
    t = rep["target"]
    assert t["engine"] == "c" and t["samples"] == n and t["comparison"]["identical_pct"] == 100.0
    rows = {r["name"]: r for r in t["rows"]}
    # the same samples the host evaluated: the test's own quantisation of them, predicted by LiteRT here
    from toolchain.data import load_split
    from toolchain.metadata import load_any_metadata
    from toolchain.runtime import quantize_input
    from toolchain.specs import RunRecord

    data = load_split(RunRecord.from_metadata(load_any_metadata(cand)), "test", input_shape=(28, 28, 1))
    from ai_edge_litert.interpreter import Interpreter

    din = Interpreter(model_path=str(cand)).get_input_details()[0]
    xq = quantize_input(data.x[:n], din)
    host_acc = float(np.mean(_host_predictions(cand, xq) == data.y[:n]))
    assert rows["target vs ground truth"]["accuracy"] == pytest.approx(host_acc, abs=1e-12)
    assert rows["host candidate vs ground truth (same samples)"]["accuracy"] == pytest.approx(host_acc, abs=1e-12)
    assert rows["target vs host candidate"]["agreement"] == 1.0
    assert any(c["name"] == "min_target_agreement" and c["passed"] for c in rep["checks"])
    assert "target vs host candidate: agreement 100.00 %, identical outputs 100 %" in out
    assert "On the emulated Cortex-M4F" in (tmp_path / "v" / "report.md").read_text()
    assert "QEMU run" in err


def _random_npz(path: Path, shape: tuple[int, ...], n: int) -> Path:
    rng = np.random.default_rng(1)
    x = rng.random((n, *shape), dtype=np.float32)
    np.savez(path, x_train=x, y_train=rng.integers(0, 10, n), x_test=x, y_test=rng.integers(0, 10, n))
    return path


def _with_changed_weights(src: Path, dst: Path, op_index: int) -> None:
    """A copy of ``src`` whose operator ``op_index`` has its first 64 weight bytes changed (the injected fault)."""
    from toolchain.tflite_model import load_tflite

    model = load_tflite(src)
    w = np.ascontiguousarray(model.tensor(model.operators[op_index].inputs[1]).data).view(np.uint8).reshape(-1)
    data = src.read_bytes()
    at = data.find(w.tobytes())
    assert at > 0 and data.find(w.tobytes(), at + 1) < 0  # the weights are found exactly once in the file
    bad = w.copy()
    bad[:64] ^= 0x55
    dst.write_bytes(data[:at] + bad.tobytes() + data[at + w.size:])


@pytest.mark.parametrize("engine", ["c", "tflm"])
def test_first_diverging_layer_is_named_for_an_injected_fault(engine, tmp_path):
    from firmware_export.cgen.zoo import quantise_random
    from toolchain.ontarget import first_divergence
    from toolchain.tflite_model import load_tflite

    if engine == "tflm" and not (TFLM_DIR / "tensorflow").is_dir():
        pytest.skip("no TFLM tree")
    good = quantise_random("seed004_cs231n", tmp_path / "good.tflite")
    model = load_tflite(good)
    convs = [op.index for op in model.operators if op.opcode == "CONV_2D"]
    victim = convs[1]  # the second convolution: the layers before it must still compare equal
    _with_changed_weights(good, tmp_path / "bad.tflite", victim)
    t = model.tensor(model.inputs[0])
    x = np.random.default_rng(0).integers(-128, 128, size=tuple(t.shape)).astype(np.int8)
    d = first_divergence(good, engine, x, tflm_dir=TFLM_DIR, target_model=tmp_path / "bad.tflite")
    assert d["status"] == "diverged" and d["op_index"] == victim and d["op"] == "CONV_2D"
    assert d["layers_compared"] >= 2 and d["differing_values"] > 0
    same = first_divergence(good, engine, x, tflm_dir=TFLM_DIR)
    assert same["status"] == "identical" and same["layers_compared"] >= len(convs)


def test_verify_on_qemu_resnet8_tflm_equals_the_reference_kernels(tmp_path, capsys):
    """ResNet-8 on TFLM (reference kernels, built from the tree, on the emulated core) gives exactly the host
    reference's outputs (TFLM's Python runtime): no divergence to locate. (LiteRT's default kernels differ from
    both by up to 25 LSB on these inputs: their CONV_2D rounds ties of the output stage towards +inf.)"""
    if not (TFLM_DIR / "tensorflow").is_dir():
        pytest.skip("no TFLM tree")
    model = REF_DIR / "mlperftiny__pretrainedResnet_quant.tflite"
    if not model.exists():
        pytest.skip("ResNet-8 not present")
    npz = _random_npz(tmp_path / "rand.npz", (32, 32, 3), 10)
    code, out, err = run_cli(["verify", "-c", model, "--dataset", f"npz:{npz}", "--input-scale", "1",
                              "--on", "qemu-m4", "--engine", "tflm", "--tflm-dir", TFLM_DIR,
                              "--no-layer-debug", "--no-plots", "--runs", "3", "-o", tmp_path / "v"], capsys)
    assert code == 0, out + err
    t = json.loads((tmp_path / "v" / "report.json").read_text())["target"]
    assert t["engine"] == "tflm" and t["arena_bytes"] <= 55_984  # the 64-bit host measure
    cmp = t["comparison"]
    assert cmp["identical_pct"] == 100 and cmp["max_lsb_diff"] == 0 and cmp["samples"] == 10
    assert t.get("divergence") is None and "first diverging layer" not in out


def test_footprint_gates_on_the_target(trained_seed001, tmp_path, capsys):
    """On the target the footprint is the firmware's: flash = model + runtime code, the C engine's arena, the
    instructions counted on QEMU; --max-instructions below the count fails naming it; a baseline of the same run
    passes with 0 % growth."""
    cand = tmp_path / "m_int8.tflite"
    code, _, err = run_cli(["quantise", trained_seed001, "--output", cand, "--calibration-samples", "32"], capsys)
    assert code == 0, err
    common = ["verify", "-c", cand, "--on", "qemu-m4", "--samples", 2, "--no-layer-debug", "--no-plots", "--runs", 3]
    code, out, err = run_cli(common + ["-o", tmp_path / "a", "--write-baseline", tmp_path / "b.json"], capsys)
    assert code == 0, out + err
    rep = json.loads((tmp_path / "a" / "report.json").read_text())
    t, fp = rep["target"], rep["footprint"]
    assert fp["kind"] == "qemu-m4:c" and fp["flash_bytes"] == t["flash"]["model"] + t["flash"]["runtime"]
    assert fp["arena_bytes"] == t["arena_bytes"] and fp["instructions_per_inference"] == t["instructions_per_inference"]
    from firmware_export.cgen import load_engine

    assert fp["arena_bytes"] == load_engine(cand).plan.arena_bytes
    n = fp["instructions_per_inference"]
    code, out, err = run_cli(common + ["-o", tmp_path / "c", "--max-instructions", n - 1, "--max-arena",
                                       fp["arena_bytes"], "--baseline", tmp_path / "b.json", "--max-growth", 0],
                             capsys)
    assert code == 1
    assert "max_instructions" in err and "max_arena" not in err and "growth" not in err
    checks = {c["name"]: c for c in json.loads((tmp_path / "c" / "report.json").read_text())["checks"]}
    assert checks["max_instructions"]["value"] == n and checks["max_arena"]["passed"]
    for k in ("flash", "arena", "instructions"):
        assert checks[f"baseline_{k}_growth"]["value"] == 0 and checks[f"baseline_{k}_growth"]["passed"]

