"""The C engine's operator registry (firmware_export/cgen/ops): every rule carries its message, every refusal of a
model is reported at once, and the support rules refuse what the lowering cannot reproduce."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from tests import fuzz_models as fz
from toolchain.errors import ExportError


@pytest.fixture(scope="module")
def models(reference_models_dir):
    return fz.reference_models()


def _parsed(models, name):
    from toolchain.tflite_model import parse_tflite

    return parse_tflite(models[name], f"{name}.tflite")


def _ops(m, opcode):
    return [op for op in m.operators if op.opcode == opcode]


def _build(m):
    from firmware_export.cgen.generator import build_engine
    from firmware_export.cgen.validate import check_model

    check_model(m, source="m.tflite")  # the edits below keep the model well-formed: only support rules refuse it
    return build_engine(m, "m")


def test_registry_rules_are_documented_and_every_family_lowers():
    from firmware_export.cgen import ops

    assert set(ops.SUPPORTED_OPS) == {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "AVERAGE_POOL_2D",
                                      "MAX_POOL_2D", "ADD", "MEAN", "SOFTMAX", "PAD", "CONCATENATION", "RESHAPE",
                                      "QUANTIZE", "DEQUANTIZE", "RELU", "RELU6", "LEAKY_RELU", "LOGISTIC", "TANH",
                                      "HARD_SWISH", "SUB", "MUL", "MAXIMUM", "MINIMUM", "TRANSPOSE"}
    for opcode, family in ops.REGISTRY.items():
        assert callable(family.lower)
        rules = ops.constraints(opcode)
        assert rules, opcode
        for rule in rules:
            assert (rule.__doc__ or "").strip(), f"{family.__name__}.{rule.__name__} has no message"
            assert list(inspect.signature(rule).parameters) == ["bld", "op"]


def test_unmodified_reference_models_lower(models):
    for name in ("mlperftiny__kws_ref_model", "mlperftiny__pretrainedResnet_quant", "tflm__hello_world_int8",
                 "tflm__micro_speech_quantized"):
        engine = _build(_parsed(models, name))
        assert engine.steps and engine.plan.arena_bytes > 0


def test_every_refused_operator_is_listed_at_once(models):
    m = _parsed(models, "mlperftiny__kws_ref_model")
    dw = _ops(m, "DEPTHWISE_CONV_2D")
    dw[0].options["fused_activation_function"] = "TANH"
    dw[2].options["fused_activation_function"] = "SIGN_BIT"
    pool = _ops(m, "AVERAGE_POOL_2D")[0]
    m.tensors[pool.outputs[0]].scale = np.asarray(m.tensors[pool.outputs[0]].scale, np.float32) * 2
    with pytest.raises(ExportError) as exc:
        _build(m)
    msg = str(exc.value)
    assert msg.startswith("the C engine cannot lower this model:") and "\n" not in msg
    assert f"operator {dw[0].index} (DEPTHWISE_CONV_2D): supports the fused activations" in msg and "(TANH)" in msg
    assert f"operator {dw[2].index} (DEPTHWISE_CONV_2D)" in msg and "(SIGN_BIT)" in msg
    assert f"operator {pool.index} (AVERAGE_POOL_2D): needs the same quantisation" in msg


def test_refusals_beyond_the_first_four_are_counted(models):
    m = _parsed(models, "mlperftiny__kws_ref_model")
    convs = _ops(m, "CONV_2D") + _ops(m, "DEPTHWISE_CONV_2D")
    for op in convs:
        op.options["fused_activation_function"] = "TANH"
    with pytest.raises(ExportError) as exc:
        _build(m)
    assert str(exc.value).count("supports the fused activations") == 4
    assert f"; {len(convs) - 4} more" in str(exc.value)


def test_quantize_inside_the_graph_and_non_symmetric_weights_are_refused(models):
    m = _parsed(models, "tflm__hello_world_int8")
    fc = _ops(m, "FULLY_CONNECTED")
    w = m.tensors[fc[1].inputs[1]]
    w.zero_point = np.full_like(np.asarray(w.zero_point), 3)
    with pytest.raises(ExportError, match=rf"operator {fc[1].index} \(FULLY_CONNECTED\): needs constant 2-D int8 or "
                                          r"int4 weights .*non-zero weight zero point"):
        _build(m)
    from firmware_export.cgen.ops import boundary
    from firmware_export.cgen.builder import Builder

    m = _parsed(models, "tflm__hello_world_int8")
    quant = type(fc[0])(index=99, opcode="QUANTIZE", inputs=[fc[0].outputs[0]], outputs=[fc[1].inputs[2]])
    ok, detail = boundary.at_supported_boundary(Builder(m, "m"), quant)
    assert not ok and detail == "int8 -> int32"
    requant = type(fc[0])(index=98, opcode="QUANTIZE", inputs=[fc[0].outputs[0]], outputs=[fc[1].outputs[0]])
    assert boundary.at_supported_boundary(Builder(m, "m"), requant)[0]  # int8 -> int8 requantisation: a table


# -- activations, element-wise binary operators, TRANSPOSE: bit-exact against TFLM's reference kernels ----------

ACTIVATIONS = ("relu", "relu6", "leaky_relu", "sigmoid", "tanh", "hard_swish")


def _activation(name):
    import keras

    return {"relu": keras.layers.ReLU(), "relu6": keras.layers.ReLU(6.0), "leaky_relu": keras.layers.LeakyReLU(0.15),
            "sigmoid": keras.layers.Activation("sigmoid"), "tanh": keras.layers.Activation("tanh"),
            "hard_swish": keras.layers.Activation("hard_swish")}[name]


def test_fixed_point_logistic_and_tanh_approximate_the_functions():
    import math

    from firmware_export.cgen import fixedpoint as fx

    for v in np.linspace(-7.9, 7.9, 97):
        raw = int(round(v * (1 << 27)))  # Q4.27
        assert abs(fx.logistic(raw, 4) / 2 ** 31 - 1 / (1 + math.exp(-v))) < 2e-6
        assert abs(fx.tanh(raw, 4) / 2 ** 31 - math.tanh(v)) < 2e-6
    assert fx.logistic(0, 4) == 1 << 30 and fx.tanh(0, 4) == 0


@pytest.mark.parametrize("span", [1.0, 8.0])
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_tables_equal_tflm_on_every_int8_value(name, span, tmp_path):
    """A single-operator model fed all 256 int8 values: the generated table is TFLM's kernel, value for value."""
    keras = pytest.importorskip("keras")
    from firmware_export.cgen import build, golden, load_engine, write_engine
    from tests.test_cengine import _convert
    from toolchain.tflite_model import load_tflite

    i = keras.Input((16, 16, 1))
    path = _convert(keras.Model(i, _activation(name)(i)), (16, 16, 1), tmp_path / f"{name}.tflite", span=span)
    opcode = {"relu": "RELU", "relu6": "RELU6", "leaky_relu": "LEAKY_RELU", "sigmoid": "LOGISTIC", "tanh": "TANH",
              "hard_swish": "HARD_SWISH"}[name]
    assert load_tflite(path).opcode_names() == [opcode]
    engine = load_engine(path)
    (tmp_path / "c").mkdir()
    write_engine(engine, tmp_path / "c")
    exe = build.build_host(tmp_path / "c", engine.name, file_io=True)
    xs = [np.arange(-128, 128, dtype=np.int8).reshape(1, 16, 16, 1)]
    expected = golden.reference_outputs(path, xs)
    assert expected.reference == "tflm"
    got, _ = build.run_host_file(exe, engine, xs)
    bad = np.flatnonzero(got[0].reshape(-1) != expected.outputs[0].reshape(-1))
    assert bad.size == 0, f"{name}: {bad.size} of 256 values differ, first input {int(bad[0]) - 128}"


def _two_branch(fn):
    import keras

    i = keras.Input((6, 6, 8))
    a = keras.layers.Conv2D(8, 3, padding="same")(i)
    b = keras.layers.Conv2D(8, 1)(i)
    return keras.Model(i, fn(keras, a, b))


GRAPHS = {  # name: (graph, operators it must contain)
    "sub": (lambda k, a, b: k.layers.Subtract()([a, b]), {"SUB"}),
    "mul": (lambda k, a, b: k.layers.Multiply()([a, b]), {"MUL"}),
    "maximum": (lambda k, a, b: k.layers.Maximum()([a, b]), {"MAXIMUM"}),
    "minimum": (lambda k, a, b: k.layers.Minimum()([a, b]), {"MINIMUM"}),
    "mul_broadcast": (lambda k, a, b: k.layers.Multiply()([a, k.layers.GlobalAveragePooling2D(keepdims=True)(b)]),
                      {"MUL", "MEAN"}),
    "sub_broadcast": (lambda k, a, b: k.layers.Subtract()([a, k.layers.GlobalAveragePooling2D(keepdims=True)(b)]),
                      {"SUB", "MEAN"}),
    "maximum_constant": (lambda k, a, b: k.layers.Lambda(lambda t: k.ops.maximum(t, 0.25))(a), {"MAXIMUM"}),
    "transpose": (lambda k, a, b: k.layers.Permute((3, 1, 2))(k.layers.Add()([a, b])), {"TRANSPOSE"}),
    "activations_chain": (lambda k, a, b: k.layers.Activation("hard_swish")(k.layers.LeakyReLU(0.2)(
        k.layers.Multiply()([k.layers.Activation("sigmoid")(a), k.layers.Activation("tanh")(b)]))),
        {"LOGISTIC", "TANH", "MUL", "LEAKY_RELU", "HARD_SWISH"}),
}


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_new_operators_bit_exact_on_host(name, tmp_path):
    pytest.importorskip("keras")
    from tests.test_cengine import _convert, assert_bit_exact_on_host
    from toolchain.tflite_model import load_tflite

    fn, ops = GRAPHS[name]
    path = _convert(_two_branch(fn), (6, 6, 8), tmp_path / f"{name}.tflite")
    assert ops <= set(load_tflite(path).opcode_names())
    assert_bit_exact_on_host(path, tmp_path / name, n=100)


def test_transpose_and_broadcast_rules_refuse_what_the_kernels_cannot_run(models):
    from firmware_export.cgen.builder import Builder
    from firmware_export.cgen.ops import binary, layout

    m = _parsed(models, "mlperftiny__kws_ref_model")
    b = Builder(m, "m")
    conv = _ops(m, "CONV_2D")[0]
    fake = type(conv)(index=99, opcode="SUB", inputs=[conv.inputs[0], conv.outputs[0]], outputs=[conv.outputs[0]])
    ok, detail = binary.broadcastable(b, fake)  # [1,49,10,1] vs [1,25,5,64]: neither equal nor 1
    assert not ok and "[1, 49, 10, 1] and [1, 25, 5, 64]" in detail
    perm = type(conv)(index=98, opcode="TRANSPOSE", inputs=[conv.outputs[0], conv.inputs[1]], outputs=[conv.outputs[0]])
    assert not layout.transpose_permutation(b, perm)[0]  # a weight tensor is no permutation


def dynamic_batch_model(path):
    """What a plain ``TFLiteConverter.from_keras_model`` makes of Conv2D → Flatten → Dense: a dynamic batch, the
    RESHAPE target computed by SHAPE → STRIDED_SLICE → PACK."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(1)
    i = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(4, 3, activation="relu")(i)
    x = keras.layers.Dense(5)(keras.layers.Flatten()(x))
    return _full_integer(tf.lite.TFLiteConverter.from_keras_model(keras.Model(i, x)), (8, 8, 2), tf.int8, path)


def _full_integer(conv, shape, io_type, path):
    """Full-integer quantisation calibrated on uniform [0, 1) inputs, ``io_type`` at the model's boundary."""
    import tensorflow as tf

    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    conv.representative_dataset = lambda: ([rng.random((1, *shape), dtype=np.float32)] for _ in range(8))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = io_type
    path.write_bytes(conv.convert())
    return path


def test_dynamic_batch_conversion_folds_its_shape_arithmetic_and_is_bit_exact(tmp_path):
    pytest.importorskip("tensorflow")
    from firmware_export.cgen import load_engine
    from tests.test_cengine import assert_bit_exact_on_host
    from toolchain.tflite_model import load_tflite

    path = dynamic_batch_model(tmp_path / "dynamic.tflite")
    m = load_tflite(path)
    assert {"SHAPE", "STRIDED_SLICE", "PACK"} <= set(m.opcode_names())
    assert m.tensor(m.inputs[0]).shape_signature[0] == -1
    engine = load_engine(path)
    assert [s.opcode for s in engine.steps] == ["CONV_2D", "FULLY_CONNECTED"]  # RESHAPE aliases, the rest folded
    assert_bit_exact_on_host(path, tmp_path / "dyn", n=100)


def test_shape_arithmetic_that_cannot_be_folded_is_refused(tmp_path):
    pytest.importorskip("tensorflow")
    from firmware_export.cgen import load_engine
    from toolchain.tflite_model import load_tflite

    path = dynamic_batch_model(tmp_path / "dynamic.tflite")
    m = load_tflite(path)
    sl = _ops(m, "STRIDED_SLICE")[0]
    sl.options["ellipsis_mask"] = 1
    from firmware_export.cgen.generator import build_engine

    with pytest.raises(ExportError, match="does not support these operators: PACK, STRIDED_SLICE\\."):
        build_engine(m, "m")
    assert load_engine(path).steps  # the unmodified file folds


def uint8_io_model(path):
    """A full-integer model with uint8 input and output (converter ``inference_input_type=tf.uint8``): QUANTIZE
    uint8 -> int8 after the input, int8 -> uint8 before the output."""
    import keras
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    keras.utils.set_random_seed(2)
    i = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(4, 3, activation="relu")(i)
    x = keras.layers.Softmax()(keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(x)))
    model = keras.Model(i, x)
    fn = tf.function(lambda t: model(t, training=False), input_signature=[tf.TensorSpec((1, 8, 8, 2), tf.float32)],
                     autograph=False)
    conv = tf.lite.TFLiteConverter.from_concrete_functions([convert_variables_to_constants_v2(fn.get_concrete_function())])
    return _full_integer(conv, (8, 8, 2), tf.uint8, path)


def test_uint8_io_model_bit_exact_with_a_uint8_api(tmp_path):
    pytest.importorskip("tensorflow")
    from firmware_export.cgen import load_engine
    from tests.test_cengine import assert_bit_exact_on_host
    from toolchain.tflite_model import load_tflite

    path = uint8_io_model(tmp_path / "u8.tflite")
    m = load_tflite(path)
    assert [m.tensor(t).dtype for t in (*m.inputs, *m.outputs)] == ["uint8", "uint8"]
    assert "QUANTIZE" in m.opcode_names()
    engine = load_engine(path)
    assert f"int {engine.name}_invoke(const uint8_t *input, uint8_t *output);" in engine.header
    assert f"{engine.name.upper()}_INPUT_ZERO_POINT (0)" in engine.header  # the uint8 input's quantisation
    assert_bit_exact_on_host(path, tmp_path / "u8", n=100)


def test_requantize_table_against_the_real_valued_rescaling(models):
    """QUANTIZE between 8-bit types: exact for equal scales (TFLM's shift by 128), within rounding otherwise."""
    from firmware_export.cgen.builder import Builder
    from firmware_export.cgen.ops import boundary

    m = _parsed(models, "tflm__hello_world_int8")
    fc = _ops(m, "FULLY_CONNECTED")[0]
    x, y = m.tensors[fc.inputs[0]], m.tensors[fc.outputs[0]]
    op = type(fc)(index=50, opcode="QUANTIZE", inputs=(x.index,), outputs=(y.index,))
    for src, dst, sx, zx, sy, zy in [("uint8", "int8", 0.5, 0, 0.5, -128), ("int8", "uint8", 0.25, -128, 0.25, 0),
                                     ("int8", "int8", 0.1, 3, 0.37, -7), ("uint8", "int8", 0.02, 128, 0.005, 0)]:
        x.dtype, y.dtype = src, dst
        x.scale, x.zero_point = np.array([sx], np.float32), np.array([zx])
        y.scale, y.zero_point = np.array([sy], np.float32), np.array([zy])
        table = boundary.requantize_table(Builder(m, "m"), op)
        lo, hi = boundary.RANGES[dst]
        for s in range(-128, 128):
            v = s if src == "int8" else s & 0xFF
            got = table[s + 128] & 0xFF if dst == "uint8" else table[s + 128]
            real = (v - zx) * float(np.float32(sx)) / float(np.float32(sy)) + zy
            want = int(np.clip(np.floor(abs(real - zy) + 0.5) * np.sign(real - zy) + zy, lo, hi))
            if sx == sy:
                assert got == int(np.clip(v - zx + zy, lo, hi)), (src, dst, v)
            assert abs(got - want) <= 1, (src, dst, v, got, want)


# -- C hygiene: sanitizers, placement macros, alignment, designated initialisers -----------------------------------

def _sanitized_run(path, work, n=6):
    from firmware_export.cgen import build, golden, load_engine, write_engine

    engine = load_engine(path)
    work.mkdir(parents=True, exist_ok=True)
    write_engine(engine, work)
    exe = build.build_host(work, engine.name, file_io=True, extra_cflags=build.SANITIZE_CFLAGS)
    xs = build.random_inputs(engine, n, seed=9)
    got, _ = build.run_host_file(exe, engine, xs)  # a sanitizer report fails the run (-fno-sanitize-recover)
    expected = golden.reference_outputs(path, xs).outputs
    assert all(np.array_equal(g, e.reshape(g.shape)) for g, e in zip(got, expected)), path.name


@pytest.mark.parametrize("name", ["mlperftiny__kws_ref_model", "mlperftiny__pretrainedResnet_quant",
                                  "tflm__micro_speech_quantized", "tflm__hello_world_int8"])
def test_reference_models_run_clean_under_address_and_undefined_behaviour_sanitizers(name, tmp_path):
    from tests.test_cengine import _ref

    _sanitized_run(_ref(name), tmp_path / name)


@pytest.mark.parametrize("name", ["activations_chain", "sub_broadcast", "transpose", "uint8"])
def test_new_operators_run_clean_under_sanitizers(name, tmp_path):
    pytest.importorskip("keras")
    from tests.test_cengine import _convert

    path = (uint8_io_model(tmp_path / "u8.tflite") if name == "uint8" else
            _convert(_two_branch(GRAPHS[name][0]), (6, 6, 8), tmp_path / f"{name}.tflite"))
    _sanitized_run(path, tmp_path / name)


def test_placement_macros_alignment_and_designated_initialisers(tmp_path):
    import shutil
    import subprocess

    from firmware_export.cgen import build, load_engine, write_engine
    from tests.test_cengine import _ref

    if shutil.which("gcc") is None or shutil.which("objdump") is None:
        pytest.skip("needs gcc and objdump")
    engine = load_engine(_ref("mlperftiny__kws_ref_model"))
    write_engine(engine, tmp_path)
    up = engine.name.upper()
    assert ".in_h = " in engine.source and ".weights = " in engine.source and ".mult = " in engine.source
    obj = tmp_path / "m.o"
    subprocess.run(["gcc", *build.HOST_CFLAGS, f"-D{up}_ARENA_SECTION=__attribute__((section(\".ce_arena\")))",
                    f"-D{up}_WEIGHTS_SECTION=__attribute__((section(\".ce_weights\")))", "-c",
                    f"{engine.name}.c", "-o", str(obj)], cwd=tmp_path, check=True, capture_output=True)
    table = subprocess.run(["objdump", "-t", str(obj)], capture_output=True, text=True, check=True).stdout
    syms = {parts[-1]: (parts[-3], int(parts[0], 16)) for parts in (line.split() for line in table.splitlines())
            if len(parts) >= 5 and parts[-1].startswith(("ce_arena", f"{engine.name}_l"))}
    weights = {k: v for k, v in syms.items()
               if k.endswith(("_weights", "_weights16", "_bias", "_mult", "_shift", "_rq"))}
    assert syms["ce_arena"][0] == ".ce_arena"
    assert len(weights) >= 4 * 10 and all(sec == ".ce_weights" for sec, _ in weights.values()), weights
    assert all(addr % 4 == 0 for _, addr in weights.values())  # word-aligned constant tables


def test_portable_smlad_wraps_like_the_instruction_without_undefined_behaviour(tmp_path):
    import shutil
    import subprocess

    from firmware_export.cgen import build
    from firmware_export.cgen.generator import kernel_sources

    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    for fname, text in kernel_sources().items():
        (tmp_path / fname).write_text(text)
    (tmp_path / "t.c").write_text(
        '#include "ce_kernels.c"\n#include <stdio.h>\nint main(void)\n{\n'
        '    /* (-32768)^2 twice on top of INT32_MAX: 2^31 - 1 + 2^31 wraps to -1, as SMLAD computes it */\n'
        '    const int32_t v = ce_smlad((int32_t)0x80008000u, (int32_t)0x80008000u, 2147483647);\n'
        '    printf("%ld\\n", (long)v);\n    return v != -1;\n}\n')
    exe = tmp_path / "t"
    subprocess.run(["gcc", "-std=c99", "-O2", "-DCE_NO_DSP", *build.SANITIZE_CFLAGS, "t.c", "-o", str(exe)],
                   cwd=tmp_path, check=True, capture_output=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "-1", out.stdout + out.stderr
