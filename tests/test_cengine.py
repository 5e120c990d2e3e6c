"""Generated C engine on the host: bit-exact against the reference kernels (TFLM), memory planner, errors."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from firmware_export.cgen import build, golden, generate_c_engine, load_engine, write_engine
from firmware_export.cgen.planner import Buffer, check_plan, plan
from firmware_export.cgen.quant import multiply_by_quantized_multiplier, quantize_multiplier
from toolchain.errors import ExportError

REF_DIR = Path(__file__).resolve().parents[2] / "shared/models/reference"
REFERENCE_MODELS = [
    "tflm__hello_world_int8",
    "tflm__micro_speech_quantized",
    "mlperftiny__pretrainedResnet_quant",
    "mlperftiny__kws_ref_model",
]
ZOO_CLASSIFIERS = ["seed000_face", "seed001_basic_cnn", "seed002_keras_cnn", "seed003_fashion_cnn", "seed004_cs231n",
                   "resnet8", "ds_cnn", "mobilenet_v1_025"]
N_INPUTS = 100

needs_cc = pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None, reason="no C compiler")


def _ref(name: str) -> Path:
    p = REF_DIR / f"{name}.tflite"
    if not p.exists():
        pytest.skip(f"reference model {p} not present")
    return p


def assert_bit_exact_on_host(model_path: Path, work: Path, n: int = N_INPUTS, seed: int = 1) -> None:
    engine = load_engine(model_path)
    work.mkdir(parents=True, exist_ok=True)
    write_engine(engine, work)
    exe = build.build_host(work, engine.name, file_io=True)
    inputs = build.random_inputs(engine, n, seed=seed)
    expected = golden.reference_outputs(model_path, inputs).outputs
    got, res = build.run_host_file(exe, engine, inputs)
    assert res["runs"] == n
    bad = [i for i, (g, e) in enumerate(zip(got, expected)) if not np.array_equal(g, e.reshape(g.shape))]
    assert not bad, f"{model_path.name}: {len(bad)}/{n} outputs differ from the reference kernels, first at input {bad[0]}"


# ---- fixed-point helpers against TFLite's definitions ------------------------------------------------------

def test_quantize_multiplier_matches_tflite_definition():
    assert quantize_multiplier(0.5) == (1 << 30, 0)
    assert quantize_multiplier(1.0) == (1 << 30, 1)
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(2.0 ** -40) == (0, 0)  # shift < -31 flushes to zero
    rng = np.random.default_rng(0)
    for real in rng.uniform(1e-6, 4.0, size=200):
        q, shift = quantize_multiplier(float(real))
        assert (1 << 30) <= q <= (1 << 31) - 1
        assert abs(q * 2.0 ** (shift - 31) - real) <= 2.0 ** (shift - 32)


def test_multiply_by_quantized_multiplier_rounds_like_gemmlowp():
    q, shift = quantize_multiplier(0.25)
    x = np.array([-6, -5, -3, -2, 2, 3, 5, 6])
    # 0.25 = 2**30 * 2**-32: SaturatingRoundingDoublingHighMul rounds x/2 (ties up), RoundingDivideByPOT rounds the
    # result /2 (ties away from zero); the double rounding turns 5/4 = 1.25 into 2.5 -> 3 -> 1.5 -> 2.
    assert multiply_by_quantized_multiplier(x, q, shift).tolist() == [-2, -1, -1, -1, 1, 1, 2, 2]


# The kernels' output stage folds TFLite's two roundings (doubling high multiply, then RoundingDivideByPOT, half away
# from zero) into one 64-bit multiply-accumulate; this checks it against the two-step definition on random values.
REQUANT_CHECK_C = r"""
#include "ce_kernels.c"
#include <stdio.h>

static uint64_t state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd32(void)
{
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return (uint32_t)(state >> 16);
}

/* gemmlowp's definition in 64-bit arithmetic: hm = 2 * xs * m / 2^32 rounded half away from zero (truncating
 * division after a sign-dependent nudge), then hm / 2^r rounded half away from zero (remainder against a
 * sign-dependent threshold) */
static int32_t two_step(int32_t x, int32_t m, int32_t shift)
{
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = left - shift;
    const int64_t ab = (int64_t)(int32_t)((uint32_t)x << left) * m;
    const int64_t nudge = ab >= 0 ? ((int64_t)1 << 30) : 1 - ((int64_t)1 << 30);
    const int64_t hm = (ab + nudge) / ((int64_t)1 << 31);
    const int64_t mask = ((int64_t)1 << right) - 1;
    const int64_t rem = hm & mask, threshold = (mask >> 1) + (hm < 0 ? 1 : 0);
    return (int32_t)((hm >> right) + (rem > threshold ? 1 : 0));
}

int main(void)
{
    long i, bad = 0, n = 0;
    for (i = 0; i < 3000000; ++i) {
        const int32_t shift = (int32_t)(rnd32() % 40u) - 31;                /* -31 .. 8 */
        const int32_t m = (int32_t)(0x40000000u + (rnd32() & 0x3FFFFFFFu)); /* [2^30, 2^31) */
        const int32_t bits = shift > 0 ? 30 - shift : 31;                   /* no overflow of x << shift */
        const int32_t x = i % 5 ? (int32_t)(rnd32() >> (32 - bits)) - (int32_t)(((uint32_t)1 << bits) >> 1)
                                : (int32_t)rnd32() >> (shift > 0 ? shift + 1 : 1);
        const int32_t off = (int32_t)(rnd32() % 256u) - 128;
        const int32_t lo = i % 3 ? -128 : (int32_t)(rnd32() % 128u) - 128;
        const int32_t hi = i % 3 ? 127 : lo + (int32_t)(rnd32() % (uint32_t)(128 - lo));
        const int32_t x1 = (int32_t)(rnd32() % 2001u) - 1000;
        int32_t e0 = two_step(x, m, shift) + off, e1 = two_step(x1, m, shift) + off;
        int8_t d0, d1;
        e0 = e0 < lo ? lo : (e0 > hi ? hi : e0);
        e1 = e1 < lo ? lo : (e1 > hi ? hi : e1);
        bad += ce_mbqm_fold(x, m, shift) != two_step(x, m, shift);
        bad += ce_mbqm_fold(x1, m, shift) != two_step(x1, m, shift);
        bad += ce_requant(x, m, shift, off, lo, hi) != (int8_t)e0;
        ce_requant_pair(x, x1, m, shift, off, lo, hi, &d0, &d1);
        bad += d0 != (int8_t)e0 || d1 != (int8_t)e1;
        n += 4;
    }
    printf("checked=%ld mismatches=%ld\n", n, bad);
    return bad != 0;
}
"""


def _run_check_program(tmp_path, source: str, checked: int) -> None:
    """Compile a check program against the kernel template (portable path), run it, expect 0 mismatches."""
    import subprocess

    from firmware_export.cgen.generator import TEMPLATE_DIR

    cc = shutil.which("gcc") or shutil.which("cc")
    (tmp_path / "check.c").write_text(source)
    exe = tmp_path / "check"
    subprocess.run([cc, "-std=c99", "-O2", "-I", str(TEMPLATE_DIR), str(tmp_path / "check.c"), "-o",
                    str(exe)], check=True, capture_output=True, timeout=120)
    out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "mismatches=0" in out.stdout, out.stdout + out.stderr
    assert f"checked={checked}" in out.stdout


@needs_cc
def test_single_smlal_requantisation_equals_two_step_rounding(tmp_path):
    _run_check_program(tmp_path, REQUANT_CHECK_C, 12000000)


# The output stage of the depthwise tiles works on doubled accumulators (weights and bias doubled) so that one
# SMMLAR replaces the sign-dependent low word: check ce_fold2(2x, m, 2 khi, rs + 1) and ce_fold_rs(x, m, khi, rs)
# against the two-step definition plus the output zero point, for every shift the kernels take it for.
FOLD2_CHECK_C = REQUANT_CHECK_C[:REQUANT_CHECK_C.index("int main(void)")] + r"""
int main(void)
{
    long i, bad = 0, n = 0;
    for (i = 0; i < 3000000; ++i) {
        const int32_t shift = -2 - (int32_t)(rnd32() % 22u);               /* -23 .. -2 */
        const int32_t r = -shift;
        const int32_t m = (int32_t)(0x40000000u + (rnd32() & 0x3FFFFFFFu)); /* [2^30, 2^31) */
        const int32_t z = (int32_t)(rnd32() % 256u) - 128;
        const int32_t khi = (int32_t)(1u << (r - 2)) + z * (int32_t)(1u << (r - 1));
        const int32_t x = i % 4 ? (int32_t)(rnd32() >> 2) - (1 << 29) - (1 << 29)  /* [-2^30, 2^30) */
                                : (int32_t)(rnd32() % 600001u) - 300000;
        const int32_t e = two_step(x, m, shift) + z;
        bad += ce_fold2(2 * x, m, 2 * khi, r) != e;
        bad += ce_fold_rs(x, m, khi, r - 1) != e;
        n += 2;
    }
    printf("checked=%ld mismatches=%ld\n", n, bad);
    return bad != 0;
}
"""


@needs_cc
def test_doubled_accumulator_requantisation_equals_two_step_rounding(tmp_path):
    _run_check_program(tmp_path, FOLD2_CHECK_C, 6000000)


# ---- memory planner --------------------------------------------------------------------------------------------

def test_planner_reuses_memory_and_never_overlaps_live_buffers():
    bufs = [Buffer("a", 1000, 0, 1), Buffer("b", 1000, 1, 2), Buffer("c", 1000, 2, 3), Buffer("d", 10, 0, 3),
            Buffer("e", 500, 3, 4)]
    p = plan(bufs)
    assert check_plan(p) == []
    assert p.arena_bytes < p.naive_bytes
    assert p.arena_bytes == 2000 + 16  # two 1000-byte tensors live at once + the long-lived small one
    offsets = {b.name: b.offset for b in p.buffers}
    assert offsets["a"] == offsets["c"]  # a is dead when c is produced: same slot


@pytest.mark.parametrize("name", ["mlperftiny__kws_ref_model", "mlperftiny__pretrainedResnet_quant"])
def test_plan_smaller_than_tflm_arena_and_in_place_ops(name):
    engine = load_engine(_ref(name))
    assert check_plan(engine.plan) == []
    sizes = sorted((b.size for b in engine.plan.buffers if b.name.startswith("t")), reverse=True)
    largest = sizes[0]
    assert engine.plan.arena_bytes >= largest
    tflm = {"mlperftiny__kws_ref_model": 24272, "mlperftiny__pretrainedResnet_quant": 55984}[name]
    assert engine.plan.arena_bytes < tflm  # README: TFLM's measured arena
    if name == "mlperftiny__kws_ref_model":
        # depthwise (row ring) and pointwise convolutions run in place: about one 8000-byte activation + scratch
        assert engine.plan.arena_bytes <= 0.5 * tflm
        shared = [b for b in engine.plan.buffers if len(b.members) > 1]
        assert max(len(b.members) for b in shared) >= 9  # conv1 output + 4 dw + 4 pw outputs share one buffer


# ---- bit-exactness -------------------------------------------------------------------------------------------

@needs_cc
@pytest.mark.parametrize("name", REFERENCE_MODELS)
def test_reference_models_bit_exact_on_host(name, tmp_path):
    assert_bit_exact_on_host(_ref(name), tmp_path / name)


@pytest.fixture(scope="module")
def zoo_models(tmp_path_factory):
    pytest.importorskip("tensorflow")
    from firmware_export.cgen.zoo import quantise_random

    out = tmp_path_factory.mktemp("zoo")
    return {n: quantise_random(n, out / f"{n}.tflite") for n in ZOO_CLASSIFIERS}


@needs_cc
@pytest.mark.parametrize("name", ZOO_CLASSIFIERS)
def test_zoo_classifiers_bit_exact_on_host(name, zoo_models, tmp_path):
    assert_bit_exact_on_host(zoo_models[name], tmp_path / name)


def _convert(model, shape, path: Path, float_io: bool = False, span: float = 1.0) -> Path:
    """Full-integer conversion with a fixed batch of 1, calibrated on uniform inputs in [-span, span]."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    fn = tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec((1, *shape), tf.float32)],
                     autograph=False)
    conv = tf.lite.TFLiteConverter.from_concrete_functions([convert_variables_to_constants_v2(fn.get_concrete_function())])
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    conv.representative_dataset = lambda: ([(rng.random((1, *shape), dtype=np.float32) * 2 - 1) * span]
                                         for _ in range(16))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if not float_io:
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    path.write_bytes(conv.convert())
    return path


@pytest.fixture(scope="module")
def ops_models(tmp_path_factory):
    """A small graph with PAD, strided RELU6 conv, depthwise (multiplier 2), CONCATENATION, odd channel counts,
    MAX_POOL, MEAN."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    i = keras.Input((12, 12, 3))
    x = keras.layers.ZeroPadding2D(((1, 2), (2, 1)))(i)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu6")(x)
    a = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(x)
    b = keras.layers.Conv2D(16, 1)(x)
    x = keras.layers.Concatenate()([a, b])
    x = keras.layers.Conv2D(7, 3, padding="same")(x)  # odd output channels: single-row kernel tail
    x = keras.layers.MaxPooling2D(2, padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(5)(x)
    model = keras.Model(i, x)
    out = tmp_path_factory.mktemp("ops")
    k = keras.Input((8, 8, 4))
    y = keras.layers.Conv2D(8, 3, padding="same")(k)
    y = keras.layers.GlobalAveragePooling2D(keepdims=True)(y)
    keep = keras.Model(k, keras.layers.Dense(4)(keras.layers.Reshape((8,))(y)))
    return {"int8": _convert(model, (12, 12, 3), out / "ops_int8.tflite"),
            "float": _convert(model, (12, 12, 3), out / "ops_float.tflite", float_io=True),
            "keepdims": _convert(keep, (8, 8, 4), out / "keepdims.tflite")}


@needs_cc
@pytest.mark.parametrize("kind", ["int8", "float"])
def test_operator_coverage_bit_exact(kind, ops_models, tmp_path):
    from toolchain.tflite_model import load_tflite

    ops = set(load_tflite(ops_models[kind]).opcode_names())
    assert {"PAD", "CONCATENATION", "MAX_POOL_2D", "MEAN", "DEPTHWISE_CONV_2D"} <= ops
    if kind == "float":
        assert {"QUANTIZE", "DEQUANTIZE"} <= ops
        assert "int " + load_engine(ops_models[kind]).name + "_invoke_float" in load_engine(ops_models[kind]).header
    assert_bit_exact_on_host(ops_models[kind], tmp_path / kind)


# Depthwise shapes on which LiteRT's optimised kernels round the output stage's ties differently (towards +inf on
# some, away from zero on others); the engine follows the reference kernels on all of them: generic kernel with
# odd / multiplier-2 / strided channels, and the 3x3 stride-1 row-ring kernel (channels % 4 == 0).
DEPTHWISE_CASES = {  # name: (input shape, kernel, depth multiplier, stride, padding)
    "5ch_3x3_same": ((10, 10, 5), 3, 1, 1, "same"), "6ch_5x5": ((10, 10, 6), 5, 1, 1, "same"),
    "3ch_dm2": ((9, 9, 3), 3, 2, 1, "same"), "4ch_dm2": ((9, 9, 4), 3, 2, 1, "same"),
    "10ch_valid_s2": ((11, 11, 10), 3, 1, 2, "valid"), "8ch_valid": ((8, 8, 8), 3, 1, 1, "valid"),
    "16ch_3x3_s1": ((8, 8, 16), 3, 1, 1, "same"), "4ch_3x3_s1": ((8, 8, 4), 3, 1, 1, "same"),
    "12ch_3x3_s1_valid": ((8, 8, 12), 3, 1, 1, "valid"),
}


@needs_cc
@pytest.mark.parametrize("case", sorted(DEPTHWISE_CASES))
def test_depthwise_rounding_follows_the_reference_kernels(case, tmp_path):
    keras = pytest.importorskip("keras")
    shape, k, dm, stride, padding = DEPTHWISE_CASES[case]
    keras.utils.set_random_seed(3)
    i = keras.Input(shape)
    x = keras.layers.DepthwiseConv2D(k, strides=stride, padding=padding, depth_multiplier=dm,
                                     bias_initializer="random_normal")(i)
    model = keras.Model(i, x)  # no activation: a ReLU would clamp the negative ties away
    assert_bit_exact_on_host(_convert(model, shape, tmp_path / f"{case}.tflite"), tmp_path / case, n=40)


@needs_cc
def test_mean_keepdims_bit_exact(ops_models, tmp_path):
    from toolchain.tflite_model import load_tflite

    mean = [op for op in load_tflite(ops_models["keepdims"]).operators if op.opcode == "MEAN"]
    assert mean and mean[0].options.get("keep_dims")
    assert_bit_exact_on_host(ops_models["keepdims"], tmp_path / "keepdims")


@needs_cc
def test_per_tensor_depthwise_with_quantized_dimension_3_bit_exact(tmp_path):
    """TFLM's person-detection layout: per-tensor depthwise weights with quantized_dimension 3 and 1-D biases with
    quantized_dimension 3 (beyond their rank), which LiteRT refuses and TFLM runs."""
    from ai_edge_litert.interpreter import Interpreter

    from tests.model_edit import per_tensor_depthwise_qdim3

    data, edited = per_tensor_depthwise_qdim3(_ref("mlperftiny__kws_ref_model").read_bytes())
    assert edited == 4
    path = tmp_path / "pd_style.tflite"
    path.write_bytes(data)
    with pytest.raises(ValueError, match="quantized_dimension must be in range"):
        Interpreter(model_path=str(path)).allocate_tensors()
    assert golden.reference_outputs(path, build.random_inputs(load_engine(path), 1)).reference == "tflm"
    assert_bit_exact_on_host(path, tmp_path / "pd_style")


# ---- generate_c_engine / CLI -----------------------------------------------------------------------------------

def test_unsupported_operators_are_listed():
    with pytest.raises(ExportError) as exc:
        load_engine(_ref("tflm__keyword_scrambled_8bit"))
    assert "SVDF" in str(exc.value)
    assert "does not support" in str(exc.value)


def test_cli_export_c_refuses_svdf_with_exit_2(tmp_path, capsys):
    from toolchain.cli import main

    out = tmp_path / "ks"
    with pytest.raises(SystemExit) as exc:
        main(["export", str(_ref("tflm__keyword_scrambled_8bit")), "--output", str(out), "--format", "c"])
    assert exc.value.code == 2
    assert "SVDF" in capsys.readouterr().err
    assert not out.exists()


@needs_cc
def test_generate_c_engine_outputs_compile_and_pass_golden_test(tmp_path):
    model = _ref("tflm__micro_speech_quantized")
    out = tmp_path / "ms"
    manifest = generate_c_engine(model, out, name="micro_speech", measure_tflm=False)
    for f in ("micro_speech.h", "micro_speech.c", "ce_kernels.c", "ce_kernels.h", "micro_speech_test.c",
              "micro_speech_golden.h", "Makefile", "manifest.json", "ce_m4_startup.c", "mps2_an386.ld"):
        assert (out / f).is_file(), f
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["arena_bytes"] == manifest["arena_bytes"] > 0
    assert on_disk["macs"] == 336000  # README: micro_speech MACs
    header = (out / "micro_speech.h").read_text()
    assert f"#define MICRO_SPEECH_ARENA_BYTES {manifest['arena_bytes']}" in header
    assert "int micro_speech_invoke(const int8_t *input, int8_t *output);" in header
    res = build.run_host(build.build_host(out, "micro_speech"))
    assert res["mismatches"] == 0 and res["runs"] == manifest["golden_vectors"] > 0
    # requantisation constants are TFLite's QuantizeMultiplier values
    src = (out / "micro_speech.c").read_text()
    assert "micro_speech_l0_mult" in src and "micro_speech_l0_shift" in src
    with pytest.raises(Exception, match="already exists"):
        generate_c_engine(model, out, name="micro_speech", measure_tflm=False)
    generate_c_engine(model, out, name="micro_speech", force=True, golden_vectors=0, measure_tflm=False)


def test_manifest_compares_with_tflm_arena(tmp_path):
    pytest.importorskip("tflite_micro")
    manifest = generate_c_engine(_ref("mlperftiny__kws_ref_model"), tmp_path / "kws", golden_vectors=0)
    tflm = manifest["tflm_arena"]
    assert tflm is not None and tflm["recorded_bytes"] > manifest["arena_bytes"]
    assert math.isclose(manifest["arena_vs_tflm"], manifest["arena_bytes"] / tflm["recorded_bytes"], abs_tol=1e-3)
