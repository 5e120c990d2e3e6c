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
                                      "QUANTIZE", "DEQUANTIZE"}
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
    quant = type(fc[0])(index=99, opcode="QUANTIZE", inputs=[fc[0].outputs[0]], outputs=[fc[1].inputs[0]])
    ok, detail = boundary.at_float_boundary(Builder(m, "m"), quant)
    assert not ok and detail == "int8 -> int8"
