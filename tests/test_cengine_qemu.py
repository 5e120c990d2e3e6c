"""Generated C engine on an emulated Cortex-M4 (QEMU MPS2 AN386): bit-exact, instruction counts, footprint."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from firmware_export.cgen import build, golden, load_engine
from firmware_export.cgen.bench import run_c_bench

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                       reason="needs arm-none-eabi-gcc and qemu-system-arm"),
]

REF_DIR = Path(__file__).resolve().parents[2] / "shared/models/reference"
# model -> (MACs from the README, TFLM flash baseline = .tflite bytes + 9.7 KB TFLM core)
REFERENCE_MODELS = {
    "tflm__hello_world_int8": 288,
    "tflm__micro_speech_quantized": 336_000,
    "mlperftiny__pretrainedResnet_quant": 12_501_632,
    "mlperftiny__kws_ref_model": 2_656_768,
}


def _ref(name: str) -> Path:
    p = REF_DIR / f"{name}.tflite"
    if not p.exists():
        pytest.skip(f"reference model {p} not present")
    return p


@pytest.mark.parametrize("name", sorted(REFERENCE_MODELS))
def test_reference_models_bit_exact_on_cortex_m4(name, tmp_path):
    path = _ref(name)
    res = run_c_bench(path, runtime="qemu-m4", runs=100, seed=3, keep_dir=tmp_path / name)
    assert res["runs"] == 100
    assert res["outputs_match"], res.get("first_mismatch")
    assert res["macs"] == REFERENCE_MODELS[name]
    # every MAC needs at least half an instruction even with dual-MAC SMLAD; and the count is deterministic
    assert res["instructions_per_inference"] >= res["macs"] / 2
    assert res["macs_per_instruction"] == pytest.approx(res["macs"] / res["instructions_per_inference"], rel=1e-3)
    # footprint: the weights are in flash, the arena in RAM. Convolutions whose weights serve >= 64 output pixels
    # keep them as int16 (packing.WIDE_MIN_PIXELS): at most twice the weight bytes, plus < 16 KB of engine code
    # (benchmarks/results/m4.md compares with TFLM + CMSIS-NN's linked flash)
    tflite_bytes = path.stat().st_size
    assert res["flash_bytes"] <= 2 * tflite_bytes + 16 * 1024
    assert res["ram_bytes"] >= res["arena_bytes"] and res["stack_bytes"] > 0
    # the DSP path really is compiled in: SMLAD in the linked firmware
    if res["macs"] > 10_000:
        dis = build._run(["arm-none-eabi-objdump", "-d", str(tmp_path / name / "run0" / "build_m4" / f"{res['name']}.elf")],
                         tmp_path, 60, "objdump").stdout
        assert "smlad" in dis


def test_instruction_count_is_deterministic_and_scales(tmp_path):
    path = _ref("mlperftiny__kws_ref_model")
    a = run_c_bench(path, runtime="qemu-m4", runs=2, seed=1)
    b = run_c_bench(path, runtime="qemu-m4", runs=4, seed=2)
    assert a["outputs_match"] and b["outputs_match"]
    # per-inference counts agree within 0.5 % whatever the inputs and the batch size
    assert abs(a["instructions_per_inference"] - b["instructions_per_inference"]) <= 0.005 * a[
        "instructions_per_inference"]


def test_dwt_cycle_counter_build_compiles(tmp_path):
    """The real-board variant (DWT->CYCCNT instead of SysTick) compiles from the same sources."""
    from firmware_export.cgen import write_engine

    path = _ref("tflm__hello_world_int8")
    engine = load_engine(path)
    xs = build.random_inputs(engine, 2)
    write_engine(engine, tmp_path, xs, golden.reference_outputs(path, xs).outputs)
    paths = build.build_m4(tmp_path, engine.name, timer="dwt")
    assert paths["elf"].is_file()
    sections = build.section_sizes(paths["elf"])
    assert sections[".text"] > 0 and ".golden" in sections


def test_person_detection_style_quantized_dimension_3_bit_exact_on_cortex_m4(tmp_path):
    """Per-tensor depthwise weights and 1-D biases with quantized_dimension 3 (LiteRT refuses the file; the golden
    outputs come from TFLM's reference kernels)."""
    from tests.model_edit import per_tensor_depthwise_qdim3

    data, _ = per_tensor_depthwise_qdim3(_ref("mlperftiny__kws_ref_model").read_bytes())
    path = tmp_path / "pd_style.tflite"
    path.write_bytes(data)
    res = run_c_bench(path, runtime="qemu-m4", runs=100, seed=5, keep_dir=tmp_path / "pd")
    assert res["runs"] == 100 and res["outputs_match"], res.get("first_mismatch")


@pytest.mark.parametrize("name", ["activations_chain", "sub_broadcast", "transpose", "maximum_constant"])
def test_new_operators_bit_exact_on_cortex_m4(name, tmp_path):
    pytest.importorskip("keras")
    from tests.test_cengine import _convert
    from tests.test_cengine_ops import GRAPHS, _two_branch

    path = _convert(_two_branch(GRAPHS[name][0]), (6, 6, 8), tmp_path / f"{name}.tflite")
    res = run_c_bench(path, runtime="qemu-m4", runs=100, seed=2, keep_dir=tmp_path / name)
    assert res["runs"] == 100 and res["outputs_match"], res.get("first_mismatch")


def test_dynamic_batch_conversion_bit_exact_on_cortex_m4(tmp_path):
    pytest.importorskip("tensorflow")
    from tests.test_cengine_ops import dynamic_batch_model

    path = dynamic_batch_model(tmp_path / "dynamic.tflite")
    res = run_c_bench(path, runtime="qemu-m4", runs=100, seed=4, keep_dir=tmp_path / "dyn")
    assert res["runs"] == 100 and res["outputs_match"], res.get("first_mismatch")


def test_uint8_io_model_bit_exact_on_cortex_m4(tmp_path):
    pytest.importorskip("tensorflow")
    from tests.test_cengine_ops import uint8_io_model

    path = uint8_io_model(tmp_path / "u8.tflite")
    res = run_c_bench(path, runtime="qemu-m4", runs=100, seed=6, keep_dir=tmp_path / "u8")
    assert res["runs"] == 100 and res["outputs_match"], res.get("first_mismatch")
