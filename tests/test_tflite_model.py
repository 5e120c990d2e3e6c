"""toolchain.tflite_model against LiteRT's own view of the reference models, plus corrupt-input handling."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from toolchain.errors import ModelError
from toolchain.tflite_model import load_tflite, parse_tflite

REF = Path(__file__).resolve().parents[2] / "shared/models/reference"
REF_MODELS = sorted(REF.glob("*.tflite")) if REF.is_dir() else []

# ops lists from the reference README (op -> count)
README_OPS = {
    "tflm__hello_world_int8.tflite": {"FULLY_CONNECTED": 3},
    "tflm__micro_speech_quantized.tflite": {"RESHAPE": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1, "SOFTMAX": 1},
    "tflm__keyword_scrambled_8bit.tflite": {"QUANTIZE": 2, "SVDF": 7, "FULLY_CONNECTED": 5, "SOFTMAX": 1},
    "mlperftiny__pretrainedResnet_quant.tflite": {"CONV_2D": 9, "ADD": 3, "AVERAGE_POOL_2D": 1, "RESHAPE": 1,
                                                  "FULLY_CONNECTED": 1, "SOFTMAX": 1},
    "mlperftiny__kws_ref_model.tflite": {"CONV_2D": 5, "DEPTHWISE_CONV_2D": 4, "AVERAGE_POOL_2D": 1, "RESHAPE": 1,
                                         "FULLY_CONNECTED": 1, "SOFTMAX": 1},
}


def _ref(name: str) -> Path:
    p = REF / name
    if not p.is_file():
        pytest.skip(f"reference model {name} not present")
    return p


def _interpreter(path: Path):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=str(path),
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    return it


@pytest.mark.skipif(not REF_MODELS, reason="reference models not present")
@pytest.mark.parametrize("path", REF_MODELS, ids=lambda p: p.stem)
def test_matches_litert_tensor_and_op_details(path: Path):
    m = load_tflite(path)
    it = _interpreter(path)
    assert m.size_bytes == path.stat().st_size
    assert m.num_subgraphs == 1
    details = {d["index"]: d for d in it.get_tensor_details()}
    for t in m.tensors:
        d = details[t.index]
        assert t.name == d["name"]
        assert t.shape == tuple(int(x) for x in d["shape"])
        assert t.dtype == np.dtype(d["dtype"]).name
        qp = d["quantization_parameters"]
        if t.scale is None:
            assert qp["scales"].size == 0
        else:
            np.testing.assert_array_equal(t.scale, qp["scales"])
            np.testing.assert_array_equal(t.zero_point, qp["zero_points"])
            assert t.quantized_dimension == qp["quantized_dimension"]
        if t.data is not None and not t.is_variable:
            np.testing.assert_array_equal(t.data, it.get_tensor(t.index))
            assert t.data.dtype == np.dtype(d["dtype"])
    ops = it._get_ops_details()
    assert len(ops) == len(m.operators)
    for op, ref in zip(m.operators, ops):
        assert op.opcode == ref["op_name"]
        assert list(op.inputs) == [int(i) for i in ref["inputs"]]
        assert list(op.outputs) == [int(i) for i in ref["outputs"]]
    assert m.inputs == [d["index"] for d in it.get_input_details()]
    assert m.outputs == [d["index"] for d in it.get_output_details()]
    counts: dict[str, int] = {}
    for op in m.operators:
        counts[op.opcode] = counts.get(op.opcode, 0) + 1
    assert counts == README_OPS[path.name]
    assert m.opcode_names() == sorted(README_OPS[path.name])


def test_keyword_scrambled_io_types_and_svdf_options():
    m = load_tflite(_ref("tflm__keyword_scrambled_8bit.tflite"))
    assert [m.tensor(i).dtype for i in m.inputs] == ["int16"]
    assert [m.tensor(i).dtype for i in m.outputs] == ["int32"]
    svdf = [op for op in m.operators if op.opcode == "SVDF"]
    assert svdf[0].options == {"rank": 1, "fused_activation_function": "RELU", "asymmetric_quantize_inputs": False}
    # the activation state is a variable tensor without constant data
    state = m.tensor(svdf[0].inputs[4])
    assert state.is_variable and state.data is None and state.shape == (1, 512)


def test_builtin_options_converted_generically():
    m = load_tflite(_ref("mlperftiny__kws_ref_model.tflite"))
    conv, dw = m.operators[0], m.operators[1]
    assert conv.opcode == "CONV_2D"
    assert {k: conv.options[k] for k in ("padding", "stride_w", "stride_h", "dilation_w_factor",
                                         "dilation_h_factor", "fused_activation_function")} == {
        "padding": "SAME", "stride_w": 2, "stride_h": 2, "dilation_w_factor": 1, "dilation_h_factor": 1,
        "fused_activation_function": "RELU"}
    assert dw.opcode == "DEPTHWISE_CONV_2D" and dw.options["depth_multiplier"] == 1
    pool = next(op for op in m.operators if op.opcode == "AVERAGE_POOL_2D")
    assert pool.options == {"padding": "VALID", "stride_w": 5, "stride_h": 25, "filter_width": 5,
                            "filter_height": 25, "fused_activation_function": "NONE"}
    fc = next(op for op in m.operators if op.opcode == "FULLY_CONNECTED")
    assert fc.options["keep_num_dims"] is False and fc.options["fused_activation_function"] == "NONE"
    assert next(op for op in m.operators if op.opcode == "SOFTMAX").options == {"beta": 1.0}
    # per-channel weights: one scale per output channel along quantized_dimension 0 (conv) / 3 (depthwise)
    w = m.tensor(conv.inputs[1])
    assert w.per_channel and w.scale.size == w.shape[0] == 64 and w.quantized_dimension == 0
    assert m.tensor(dw.inputs[1]).quantized_dimension == 3


def test_metadata_entries():
    m = load_tflite(_ref("tflm__hello_world_int8.tflite"))
    assert set(m.metadata) == {"min_runtime_version", "CONVERSION_METADATA"}
    assert m.metadata["min_runtime_version"].rstrip(b"\0").decode().count(".") >= 1


def test_reshape_new_shape_vector_option():
    m = load_tflite(_ref("tflm__micro_speech_quantized.tflite"))
    reshape = next(op for op in m.operators if op.opcode == "RESHAPE")
    assert reshape.options == {"new_shape": [-1, 49, 40, 1]}
    dw = next(op for op in m.operators if op.opcode == "DEPTHWISE_CONV_2D")
    assert dw.options["depth_multiplier"] == 8 and dw.options["padding"] == "SAME"
    assert m.metadata == {"min_runtime_version": b"1.5.0"}


@pytest.mark.parametrize("data", [b"", b"TFL3", b"\0\0\0\0TFL3", b"hello world, this is text\n" * 10,
                                  bytes(range(256)) * 4])
def test_garbage_raises_model_error(data: bytes):
    with pytest.raises(ModelError, match="not a valid TFLite flatbuffer"):
        parse_tflite(data, "x.tflite")


def test_truncated_and_bitflipped_reference_never_crash():
    data = _ref("mlperftiny__kws_ref_model.tflite").read_bytes()
    rng = random.Random(1)
    cases = [data[:k] for k in range(0, len(data) - 1, 997)]
    for _ in range(150):
        b = bytearray(data)
        for _ in range(rng.randint(1, 16)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        cases.append(bytes(b))
    for c in cases:
        try:
            parse_tflite(c, "fuzz")
        except ModelError as exc:
            assert "\n" not in str(exc)
    # every strict prefix long enough to hold the header is rejected (buffers lie near the end)
    with pytest.raises(ModelError):
        parse_tflite(data[: len(data) // 2], "half")


def test_load_errors(tmp_path: Path):
    with pytest.raises(ModelError, match="not found"):
        load_tflite(tmp_path / "missing.tflite")
    with pytest.raises(ModelError, match="directory"):
        load_tflite(tmp_path)
