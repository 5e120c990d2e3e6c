"""The TFLM export on the emulated Cortex-M4F, built against ../shared/tflm with both kernel flavours.

Independent references: TFLM's own Python runtime (tflite-micro, reference kernels) for the outputs, bit for bit;
the host-measured arena (tflite-micro on x86-64) as an upper bound of the 32-bit one; LiteRT's reference kernels for
the C engine and for the per-layer comparison.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import REF_DIR, TFLM_DIR, run_cli


pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(any(shutil.which(t) is None for t in ("arm-none-eabi-g++", "qemu-system-arm")),
                       reason="needs arm-none-eabi-gcc/g++ and qemu-system-arm"),
    pytest.mark.skipif(not (TFLM_DIR / "tensorflow").is_dir(), reason=f"no TFLM tree at {TFLM_DIR}"),
]


def _ref(name: str) -> Path:
    p = REF_DIR / f"{name}.tflite"
    if not p.exists():
        pytest.skip(f"reference model {p} not present")
    return p


@pytest.fixture(scope="module")
def zoo_int8(tmp_path_factory) -> Path:
    from firmware_export.cgen.zoo import quantise_random

    return quantise_random("seed004_cs231n", tmp_path_factory.mktemp("zoo") / "seed004.tflite")


def _random_inputs(path: Path, n: int, seed: int = 0) -> list[np.ndarray]:
    from toolchain.tflite_model import load_tflite

    m = load_tflite(path)
    t = m.tensor(m.inputs[0])
    rng = np.random.default_rng(seed)
    return [rng.integers(-128, 128, size=tuple(t.shape)).astype(np.dtype(t.dtype)) for _ in range(n)]


def _tflm_python(path: Path, xs: list[np.ndarray]) -> list[np.ndarray]:
    """TFLM's Python runtime (reference kernels on the host): the independent reference."""
    from tflite_micro.python.tflite_micro import runtime

    interp = runtime.Interpreter.from_file(str(path), arena_size=4 * 1024 * 1024)
    outs = []
    for x in xs:
        interp.set_input(x, 0)
        interp.invoke()
        outs.append(np.array(interp.get_output(0)))
    return outs


@pytest.mark.parametrize("engine", ["tflm", "cmsis-nn"])
@pytest.mark.parametrize("model", ["zoo", "mlperftiny__pretrainedResnet_quant", "mlperftiny__kws_ref_model"])
def test_tflm_export_runs_on_cortex_m4(model, engine, zoo_int8, tmp_path):
    from firmware_export.arena import measure_arena
    from firmware_export.m4.target import run_on_target

    path = zoo_int8 if model == "zoo" else _ref(model)
    xs = _random_inputs(path, 4)
    run = run_on_target(path, engine, xs, tflm_dir=TFLM_DIR, keep_dir=tmp_path / "fw")
    want = _tflm_python(path, xs)
    got = np.stack([o.reshape(-1) for o in run.outputs]).astype(np.int32)
    ref = np.stack([o.reshape(-1) for o in want]).astype(np.int32)
    identical = float(np.mean(np.all(got == ref, axis=1))) * 100
    max_lsb = int(np.max(np.abs(got - ref)))
    if engine == "tflm":  # the same reference kernels, compiled for the M4: bit for bit
        assert max_lsb == 0, f"TFLM reference kernels on the M4 differ from tflite-micro on the host by {max_lsb}"
    else:  # measured with this tree on these 4 inputs: CMSIS-NN 100 % identical to the reference kernels, 0 LSB, on
        # all three models (CMSIS-NN may round differently elsewhere: this pins what was measured)
        assert (identical, max_lsb) == (100.0, 0), f"{model}: {identical:.0f} % identical, max {max_lsb} LSB"
    host = measure_arena(path)
    assert 0 < run.arena_bytes <= host.recorded_bytes  # 32-bit pointers and structs: never larger than the host's
    assert run.instructions_per_inference > run.macs / 4  # at least a quarter instruction per MAC (sanity bound)
    assert run.flash["model"] >= path.stat().st_size and run.flash["runtime"] > 10_000
    assert run.flash["firmware"] == run.flash["model"] + run.flash["runtime"] + run.flash["harness"]


@pytest.mark.parametrize("kernels", ["reference", "cmsis-nn"])
@pytest.mark.parametrize("model", ["zoo", "tflm__keyword_scrambled_8bit"])
def test_generated_main_cc_runs_in_the_recommended_arena(model, kernels, zoo_int8, tmp_path, monkeypatch):
    """The export's own NAME_main.cc, with the arena recommended from the target measurement (a relative output
    folder, as a user types it), compiled against the tree and run on QEMU: it returns 0 only when
    AllocateTensors() and Invoke() succeed in that arena. keyword_scrambled needs more arena during
    AllocateTensors() than arena_used_bytes() reports afterwards (measured, reference kernels: used 8,052 B, smallest
    arena that runs 10,400 B), so the recommendation must come from the smallest arena that runs."""
    import json

    from firmware_export import export_tflm
    from firmware_export.m4.target import tflm_library
    from firmware_export.m4.tflm_firmware import build_example
    from firmware_export.m4.tools import run_qemu

    path = zoo_int8 if model == "zoo" else _ref(model)
    monkeypatch.chdir(tmp_path)
    export_tflm(path, "fw", name="demo", tflm_dir=TFLM_DIR, target_kernels=kernels)
    a = json.loads((tmp_path / "fw" / "manifest.json").read_text())["arena"]
    t = a["target"]
    assert a["recommended_from"] == "target" and t["smallest_allocating_bytes"] >= 16
    assert a["recommended_bytes"] >= max(t["used_bytes"], t["smallest_allocating_bytes"])
    lib = tflm_library(TFLM_DIR, "tflm" if kernels == "reference" else "cmsis-nn")
    elf = build_example(tmp_path / "fw", "demo", lib, "build")
    proc = run_qemu(elf, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_inputs_beyond_one_image_run_in_several_qemu_runs(zoo_int8, tmp_path, monkeypatch):
    """With the flash image shrunk so that only 3 inputs fit per run, 7 inputs take 3 QEMU runs and come back in
    order, equal to a single-run result."""
    import firmware_export.m4.target as target
    import firmware_export.m4.tflm_firmware as fw
    from firmware_export.m4.target import run_on_target

    xs = _random_inputs(zoo_int8, 7, seed=4)
    one = run_on_target(zoo_int8, "tflm", xs, tflm_dir=TFLM_DIR)
    in_bytes = xs[0].nbytes
    monkeypatch.setattr(fw, "FLASH_LIMIT", zoo_int8.stat().st_size + fw._CODE_HEADROOM + 3 * in_bytes)
    monkeypatch.setattr(target, "FLASH_LIMIT", zoo_int8.stat().st_size + 512 * 1024 + 3 * in_bytes)
    for engine in ("tflm", "c"):
        split = run_on_target(zoo_int8, engine, xs, tflm_dir=TFLM_DIR)
        assert split.qemu_runs == 3
        assert all(np.array_equal(a, b) for a, b in zip(split.outputs, one.outputs))
        assert split.instructions_per_inference > 0


def test_export_recommends_the_arena_measured_on_target(zoo_int8, tmp_path, capsys):
    import json

    code, out, err = run_cli(["export", str(zoo_int8), "-o", str(tmp_path / "fw"), "--name", "m", "--on-target",
                              "--tflm-dir", str(TFLM_DIR), "--kernels", "reference"], capsys)
    assert code == 0, err
    manifest = json.loads((tmp_path / "fw" / "manifest.json").read_text())
    a = manifest["arena"]
    t = a["target"]
    assert a["recommended_from"] == "target" and t["pointer_bits"] == 32 and t["kernels"] == "reference"
    assert t["used_bytes"] <= a["recorded_bytes"]
    base = max(t["used_bytes"], t["smallest_allocating_bytes"])
    assert base * 1.1 <= a["recommended_bytes"] < base * 1.1 + 16  # +10 %, 16-byte multiple
    assert a["recommended_bytes"] % 16 == 0 and a["recommended_bytes"] <= a["host_recommended_bytes"]
    header = (tmp_path / "fw" / "m_model_config.h").read_text()
    assert f"#define M_TENSOR_ARENA_SIZE {a['recommended_bytes']}u" in header
    assert f"arena_used_bytes() = {t['used_bytes']}" in header
    assert f"proven: the model allocates and runs in exactly {a['host_recommended_bytes']} bytes" in header
    assert "tensor arena (target): arena_used_bytes" in out


def test_bench_qemu_m4_engines_report_and_agree(tmp_path, capsys):
    import json

    path = _ref("tflm__micro_speech_quantized")
    results = {}
    for engine in ("c", "cmsis-nn"):
        js = tmp_path / f"{engine}.json"
        tree = [] if engine == "c" else ["--tflm-dir", str(TFLM_DIR)]  # --tflm-dir is refused with --engine c
        code, out, err = run_cli(["bench", str(path), "--runtime", "qemu-m4", "--engine", engine, "--runs", "3",
                                  *tree, "--target", "nrf52840", "--json", str(js)], capsys)
        assert code == 0, err
        assert "instructions / inference" in out and "identical" in out and "lower bound" in out
        assert "QEMU run" in err  # progress while it builds and runs
        results[engine] = json.loads(js.read_text())
    c, nn = results["c"], results["cmsis-nn"]
    assert c["identical_pct"] == 100.0 and c["max_lsb_diff"] == 0
    assert nn["max_lsb_diff"] <= 1
    assert c["instructions_per_inference"] < nn["instructions_per_inference"]
    bt = c["board_time"]
    assert bt["lower_bound_ms"] == pytest.approx(c["instructions_per_inference"] / (bt["clock_mhz"] * 1e3), rel=1e-3)
