"""toolchain.model_inspect and `toolchain inspect`: figures from the reference README, hand computations and
LiteRT's own view of the models; error handling of the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from toolchain.cli import main
from toolchain.errors import ModelError
from toolchain.model_inspect import inspect_keras, inspect_model, inspect_tflite, load_keras_model

REF = Path(__file__).resolve().parents[2] / "shared/models/reference"

# README: file -> (params, MACs)
README = {
    "tflm__hello_world_int8.tflite": (321, 288),
    "tflm__micro_speech_quantized.tflite": (16_652, 336_000),
    "tflm__keyword_scrambled_8bit.tflite": (4_226, 4_160),
    "mlperftiny__pretrainedResnet_quant.tflite": (77_706, 12_501_632),
    "mlperftiny__kws_ref_model.tflite": (22_604, 2_656_768),
}


def _ref(name: str) -> Path:
    p = REF / name
    if not p.is_file():
        pytest.skip(f"reference model {name} not present")
    return p


def _litert_counts(path: Path) -> tuple[int, int, int]:
    """Params, MACs and SVDF weights computed from LiteRT's tensor/op details (independent of our parser)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=str(path),
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    shapes = {d["index"]: [int(x) for x in d["shape"]] for d in it.get_tensor_details()}
    params = macs = svdf = 0
    for op in it._get_ops_details():
        ins = [int(i) for i in op["inputs"]]
        out = shapes[int(op["outputs"][0])]
        name = op["op_name"]
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            w = shapes[ins[1]]
            params += int(np.prod(w)) + (int(np.prod(shapes[ins[2]])) if len(ins) > 2 and ins[2] >= 0 else 0)
            if name == "CONV_2D":
                n, h, wd, c = out
                macs += n * h * wd * c * w[1] * w[2] * w[3]
            elif name == "DEPTHWISE_CONV_2D":
                n, h, wd, c = out
                macs += n * h * wd * c * w[1] * w[2]
            else:
                macs += int(np.prod(out[:-1])) * w[0] * w[1]
        elif name == "SVDF":
            svdf += sum(int(np.prod(shapes[i])) for i in ins[1:4])
    return params, macs, svdf


@pytest.mark.parametrize("name", sorted(README))
def test_reference_params_macs_match_readme_and_litert(name: str):
    path = _ref(name)
    r = inspect_tflite(path)
    assert (r.totals.params, r.totals.macs) == README[name]
    params, macs, svdf = _litert_counts(path)
    assert (params, macs) == README[name]
    assert r.totals.other_params == svdf
    assert r.totals.model_bytes == path.stat().st_size
    assert sum(row.params for row in r.layers) == r.totals.params
    assert sum(row.macs for row in r.layers) == r.totals.macs
    assert r.to_dict()["totals"]["params"] == README[name][0]


def test_keyword_scrambled_svdf_and_state():
    r = inspect_tflite(_ref("tflm__keyword_scrambled_8bit.tflite"))
    # SVDF weights: 4 x (64·in + 64·8 + 64) with in = 96,16,16,16 and 3 x (32·in + 32·32 + 32) with in = 16,32,32
    expected = sum(64 * i + 64 * 8 + 64 for i in (96, 16, 16, 16)) + sum(32 * i + 32 * 32 + 32 for i in (16, 32, 32))
    assert r.totals.other_params == expected == 17_248
    assert r.totals.state_bytes == 4 * 512 + 3 * 1024  # int8 activation state of the 7 SVDF ops
    assert r.inputs[0]["dtype"] == "int16" and r.outputs[0]["dtype"] == "int32"
    assert [row.type for row in r.layers].count("SVDF") == 7


def test_peak_activation_by_hand():
    # hello_world: [1,1] -> FC -> [1,16] -> FC -> [1,16] -> FC -> [1,1], int8: peak = 16 + 16 while op 1 runs
    r = inspect_tflite(_ref("tflm__hello_world_int8.tflite"))
    assert r.totals.peak_activation_bytes == 16 + 16
    # weights + biases: int8 16+256+16 weights, int32 (16+16+1) biases
    assert r.totals.weight_bytes == (16 + 256 + 16) + 4 * (16 + 16 + 1)
    # ResNet-8: first residual block: block input (kept for the skip), conv1 output and conv2 output, 32x32x16 int8
    r = inspect_tflite(_ref("mlperftiny__pretrainedResnet_quant.tflite"))
    assert r.totals.peak_activation_bytes == 3 * 32 * 32 * 16
    # DS-CNN: two 25x5x64 int8 maps alive at a time
    r = inspect_tflite(_ref("mlperftiny__kws_ref_model.tflite"))
    assert r.totals.peak_activation_bytes == 2 * 25 * 5 * 64
    # micro_speech: reshaped input 49x40 (1,960 B) + depthwise output 25x20x8 (4,000 B)
    r = inspect_tflite(_ref("tflm__micro_speech_quantized.tflite"))
    assert r.totals.peak_activation_bytes == 1960 + 25 * 20 * 8


def test_quantization_summaries():
    r = inspect_tflite(_ref("mlperftiny__pretrainedResnet_quant.tflite"))
    conv_w = next(t for t in r.tensors if t["name"] == "model/conv2d_3/Conv2D")
    assert re.fullmatch(r"per-channel ×32 scale [0-9.e-]+–[0-9.e-]+ zp 0 \(axis 0\)", conv_w["quantization"]["summary"])
    assert len(conv_w["quantization"]["scale"]) == 32
    assert r.inputs[0]["quantization"]["summary"] == "scale 1 zp -128"
    first = r.layers[0]
    assert first.type == "CONV_2D" and first.dtypes == "int8 → int8"
    assert any(q.startswith("w: per-channel ×16") for q in first.quantization)
    assert first.weight_bytes == 16 * 3 * 3 * 3 + 4 * 16


@pytest.fixture(scope="module")
def seed001_path(tmp_path_factory) -> Path:
    models = pytest.importorskip("models")
    model = models.build("seed001_basic_cnn")
    path = tmp_path_factory.mktemp("run") / "model.keras"
    model.save(path)
    return path


def test_keras_seed001_numbers_and_formulas(seed001_path: Path):
    r = inspect_keras(seed001_path)
    assert r.totals.params == r.totals.keras_params == 1_199_882
    assert r.totals.bn_params == 0 and r.totals.conv_fc_params == 1_199_882
    conv1 = next(row for row in r.layers if row.type == "Conv2D")
    assert conv1.output_shape == [[None, 26, 26, 32]]
    assert any("(28 − 3 + 2·0)/1 + 1 = 26" in f for f in conv1.formulas)
    assert any("(3·3·1 + 1)·32 = 320" in f for f in conv1.formulas)
    # MACs by hand: 26·26·32·(3·3·1) + 24·24·64·(3·3·32) + 9216·128 + 128·10
    assert r.totals.macs == 26 * 26 * 32 * 9 + 24 * 24 * 64 * 288 + 9216 * 128 + 128 * 10
    # peak (float32, batch 1): conv1 output and conv2 output alive together
    assert r.totals.peak_activation_bytes == 4 * (26 * 26 * 32 + 24 * 24 * 64)
    assert r.totals.model_bytes == seed001_path.stat().st_size
    assert r.totals.weight_bytes == 4 * 1_199_882


def test_keras_bn_depthwise_separable_same_padding():
    keras = pytest.importorskip("keras")
    L = keras.layers
    inp = keras.Input((15, 15, 3))
    x = L.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(inp)  # 8x8x8
    x = L.BatchNormalization()(x)
    x = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(x)  # 8x8x16
    x = L.SeparableConv2D(4, 3, padding="valid")(x)  # 6x6x4
    y = L.GlobalAveragePooling2D()(x)
    out = L.Dense(5)(y)
    model = keras.Model(inp, out)
    r = inspect_keras(model)
    assert r.totals.keras_params == model.count_params()
    assert r.totals.bn_params == 4 * 8
    assert r.totals.conv_fc_params == (3 * 3 * 3 * 8) + (3 * 3 * 8 * 2 + 16) + (3 * 3 * 16 + 16 * 4 + 4) + (4 * 5 + 5)
    assert r.totals.macs == (8 * 8 * 8 * 27) + (8 * 8 * 16 * 9) + (6 * 6 * 16 * 9 + 6 * 6 * 16 * 4) + 4 * 5
    conv = r.layers[0]
    assert any("(15 − 3 + 2·1)/2 + 1 = 8" in f for f in conv.formulas)
    assert any("(3·3·3)·8 = 216" in f for f in conv.formulas)
    dw = next(row for row in r.layers if row.type == "DepthwiseConv2D")
    assert any("(3·3 + 1)·8·2 = 160" in f for f in dw.formulas)
    assert r.totals.model_bytes is None  # in-memory model: no file size


def test_keras_zoo_resnet8_matches_mlperf_reference():
    models = pytest.importorskip("models")
    r = inspect_keras(models.build("resnet8"))
    ref = inspect_tflite(_ref("mlperftiny__pretrainedResnet_quant.tflite"))
    assert r.totals.conv_fc_params == ref.totals.params == 77_706
    assert r.totals.macs == ref.totals.macs
    assert r.totals.keras_params == r.totals.conv_fc_params + r.totals.bn_params


def test_cli_keras_table_and_json(seed001_path: Path, capsys):
    main(["inspect", str(seed001_path)])
    out = capsys.readouterr().out
    assert "1,199,882" in out
    assert "(28 − 3 + 2·0)/1 + 1 = 26" in out and "(3·3·1 + 1)·32 = 320" in out
    main(["inspect", str(seed001_path.parent)])  # a run folder holding model.keras
    assert "1,199,882" in capsys.readouterr().out
    main(["inspect", str(seed001_path), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["format"] == "keras" and doc["totals"]["params"] == 1_199_882


def test_cli_tflite_table_and_json(capsys):
    path = _ref("mlperftiny__kws_ref_model.tflite")
    main(["inspect", str(path)])
    out = capsys.readouterr().out
    assert "22,604" in out and "2,656,768" in out and "DEPTHWISE_CONV_2D" in out
    assert "per-channel ×64" in out
    main(["inspect", str(path), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["totals"]["params"] == 22_604 and doc["totals"]["macs"] == 2_656_768
    assert doc["totals"]["peak_activation_bytes"] == 16_000
    assert len(doc["layers"]) == 13 and len(doc["tensors"]) == 35


def _bad_inputs(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    cases = {}
    p = tmp_path / "random.tflite"
    p.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    cases["random"] = p
    p = tmp_path / "empty.tflite"
    p.write_bytes(b"")
    cases["empty"] = p
    p = tmp_path / "text.tflite"
    p.write_text("this is not a model\n" * 20)
    cases["text"] = p
    ref = REF / "mlperftiny__kws_ref_model.tflite"
    if ref.is_file():
        p = tmp_path / "truncated.tflite"
        p.write_bytes(ref.read_bytes()[: ref.stat().st_size // 2])
        cases["truncated"] = p
    cases["missing"] = tmp_path / "missing.tflite"
    d = tmp_path / "folder"
    d.mkdir()
    cases["directory"] = d
    p = tmp_path / "model.onnx"
    p.write_bytes(b"\x08\x07")
    cases["extension"] = p
    p = tmp_path / "bad.keras"
    p.write_text("not a zip")
    cases["bad_keras"] = p
    p = tmp_path / "bad.h5"
    p.write_text("not hdf5")
    cases["bad_h5"] = p
    return cases


def test_cli_errors_one_line_exit_2(tmp_path: Path, capsys):
    for label, path in _bad_inputs(tmp_path).items():
        for extra in ([], ["--json"]):
            with pytest.raises(SystemExit) as exc:
                main(["inspect", str(path), *extra])
            captured = capsys.readouterr()
            assert exc.value.code == 2, label
            lines = captured.err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error:"), (label, captured.err)
            assert "Traceback" not in captured.err and captured.out == "", label


def test_library_errors(tmp_path: Path):
    cases = _bad_inputs(tmp_path)
    for label, path in cases.items():
        with pytest.raises(ModelError):
            inspect_model(path)
    with pytest.raises(ModelError, match="zip"):
        load_keras_model(cases["bad_keras"])
    with pytest.raises(ModelError, match="not a Keras model"):
        inspect_keras(object())


def test_keras_shared_layer_and_nested_model():
    keras = pytest.importorskip("keras")
    L = keras.layers
    inner = keras.Sequential([keras.Input((6, 6, 4)), L.Conv2D(4, 3, padding="same"), L.ReLU()], name="inner")
    inp = keras.Input((6, 6, 2))
    x = L.Conv2D(4, 1)(inp)
    shared = L.Conv2D(4, 1)
    y = L.Concatenate()([shared(x), shared(inner(x))])
    out = L.Dense(3)(L.Flatten()(y))
    r = inspect_keras(keras.Model(inp, out))
    names = [row.name for row in r.layers]
    assert any(n.startswith("inner/") and "conv" in n for n in names)
    assert r.totals.conv_fc_params == (2 * 4 + 4) + (3 * 3 * 4 * 4 + 4) + (4 * 4 + 4) + (6 * 6 * 8 * 3 + 3)
    # the shared 1x1 conv runs twice
    assert r.totals.macs == 36 * 4 * 2 + 36 * 4 * 36 + 2 * (36 * 4 * 4) + 288 * 3
    # float32, batch 1: peak while concatenating = its two 6x6x4 inputs + its 6x6x8 output
    assert r.totals.peak_activation_bytes == 4 * (2 * 144 + 288)
