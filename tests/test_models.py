"""Model zoo: every model builds and runs, parameter counts match the published architectures, the MLPerf Tiny
models have the same layer structure as the reference int8 TFLite models, and the CLI lists them."""

from __future__ import annotations

import json

import numpy as np
import pytest

import models
from tests.helpers import run_cli
from toolchain.errors import ModelError

ZOO = ["seed000_face", "seed001_basic_cnn", "seed002_keras_cnn", "seed003_fashion_cnn", "seed004_cs231n",
       "resnet8", "ds_cnn", "mobilenet_v1_025", "fc_autoencoder"]

# Published MLPerf Tiny int8 figures (params after batch-norm folding, MACs). The Keras models carry BatchNorm
# layers with 4 parameters per channel (gamma, beta, moving mean, moving variance) that fold into the preceding
# conv/dense bias at int8 conversion. Every conv/dense keeps its bias in the reference, so folding adds no
# parameters and: Keras count = published + 4 * (BN channels).
#   resnet8:  BN after stem (16), stack1 2x16, stack2 2x32, stack3 2x64 -> 240 channels -> +960
#   ds_cnn:   BN after the stem and after each dw/pw conv of 4 blocks: 9 x 64 = 576 channels -> +2,304
#   mobilenet_v1_025: stem 8 + depthwise 8+16+32+32+64+64+128*6+256 = 1,240 + pointwise 16+32+32+64+64+128*6+256*2
#             = 1,488 -> 2,736 channels -> +10,944
#   fc_autoencoder: 8 x 128 + 8 = 1,032 channels -> +4,128
MLPERF = {
    "resnet8": {"published": 77_706, "bn": 960, "macs": 12_501_632},
    "ds_cnn": {"published": 22_604, "bn": 2_304, "macs": 2_656_768},
    "mobilenet_v1_025": {"published": 210_850, "bn": 10_944, "macs": 7_489_664},
    "fc_autoencoder": {"published": 265_864, "bn": 4_128, "macs": 264_192},
}


def _kernel_bias_params(model) -> int:
    """Conv/depthwise/dense kernels + biases only (what survives BN folding)."""
    total = 0
    for layer in model.layers:
        if type(layer).__name__ in ("Conv2D", "DepthwiseConv2D", "Dense"):
            total += sum(int(np.prod(w.shape)) for w in layer.weights)
    return total


@pytest.fixture(scope="module")
def built():
    return {name: models.build(name) for name in ZOO}


def test_zoo_names_and_specs():
    assert [s.name for s in models.list_specs()] == ZOO
    for spec in models.list_specs():
        assert spec.task in ("classification", "autoencoder")
        assert spec.source and spec.description
        assert models.get_spec(spec.name) is spec
    assert models.get_spec("seed001_basic_cnn").input_shape == (28, 28, 1)
    assert models.get_spec("resnet8").input_shape == (32, 32, 3)
    assert models.get_spec("ds_cnn").num_classes == 12
    assert models.get_spec("mobilenet_v1_025").input_shape == (96, 96, 3)
    assert models.get_spec("fc_autoencoder").input_shape == (640,)


@pytest.mark.parametrize("name", ZOO)
def test_forward_pass_on_default_shape(built, name):
    spec = models.get_spec(name)
    model = built[name]
    assert tuple(model.inputs[0].shape[1:]) == spec.input_shape
    x = np.random.default_rng(0).random((2, *spec.input_shape), dtype=np.float32)
    y = np.asarray(model(x, training=False))
    if spec.task == "classification":
        assert y.shape == (2, spec.num_classes)
        np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)  # softmax head
        assert (y >= 0).all()
    else:
        assert y.shape == (2, 640)


def test_seed001_parameter_count(built):
    # 320 + 18,496 + 1,179,776 + 1,290 (conv 3x3x1x32+32, conv 3x3x32x64+64, dense 12*12*64*128+128, 128*10+10)
    assert built["seed001_basic_cnn"].count_params() == 1_199_882
    assert [w.shape for w in built["seed001_basic_cnn"].get_layer("dense").weights] == [(9216, 128), (128,)]


def test_seed_architectures(built):
    m = built["seed002_keras_cnn"]
    assert m.get_layer("conv1").output.shape[1:] == (28, 28, 32)  # same padding
    assert m.get_layer("conv4").output.shape[1:] == (2, 2, 64)  # 14 -> 10 -> 6 -> 2 (valid)
    assert m.get_layer("flatten").output.shape[1:] == (64,)
    assert m.get_layer("dense").units == 1024 and m.get_layer("dropout").rate == pytest.approx(0.1)
    m = built["seed004_cs231n"]
    assert m.get_layer("conv1").output.shape[1:] == (28, 28, 6)  # six 5x5 filters, stride 1, no padding
    assert m.get_layer("conv1").kernel.shape == (5, 5, 3, 6)
    m = built["seed000_face"]
    assert m.outputs[0].shape[-1] == 2
    assert any(type(layer).__name__ == "Dropout" for layer in m.layers)
    assert sum(type(layer).__name__ == "MaxPooling2D" for layer in m.layers) >= 3


def test_fashion_cnn_block_counts():
    m = models.build("seed003_fashion_cnn", conv_blocks=3, dense_blocks=2)
    kinds = [type(layer).__name__ for layer in m.layers]
    assert kinds.count("Conv2D") == 3 and kinds.count("MaxPooling2D") == 3
    assert kinds.count("Dense") == 3 and kinds.count("Dropout") == 2
    default = [type(layer).__name__ for layer in models.build("seed003_fashion_cnn").layers]
    assert default.count("Conv2D") == 2 and default.count("Dropout") == 1
    with pytest.raises(ModelError, match="unknown option"):
        models.build("seed003_fashion_cnn", blocks=3)


@pytest.mark.parametrize("name", ["resnet8", "ds_cnn", "mobilenet_v1_025", "fc_autoencoder"])
def test_mlperf_parameter_counts(built, name):
    ref = MLPERF[name]
    model = built[name]
    assert model.count_params() == ref["published"] + ref["bn"]
    assert _kernel_bias_params(model) == ref["published"]
    bn = sum(int(np.prod(w.shape)) for layer in model.layers if type(layer).__name__ == "BatchNormalization"
             for w in layer.weights)
    assert bn == ref["bn"]


@pytest.mark.parametrize("name", ["resnet8", "ds_cnn", "mobilenet_v1_025", "fc_autoencoder"])
def test_mlperf_macs(built, name):
    inspect = pytest.importorskip("toolchain.model_inspect")
    assert inspect.inspect_keras(built[name]).totals.macs == MLPERF[name]["macs"]


def _tflite_weight_ops(path):
    """(op, weight shape, strides) for every CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED / AVERAGE_POOL_2D."""
    import tflite

    buf = path.read_bytes()
    m = tflite.Model.GetRootAsModel(buf, 0)
    g = m.Subgraphs(0)
    names = {v: k for k, v in tflite.BuiltinOperator.__dict__.items() if not k.startswith("_")}
    rows = []
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        code = m.OperatorCodes(op.OpcodeIndex())
        name = names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            opts = (tflite.Conv2DOptions if name == "CONV_2D" else tflite.DepthwiseConv2DOptions)()
            table = op.BuiltinOptions()
            opts.Init(table.Bytes, table.Pos)
            w = tuple(int(d) for d in g.Tensors(op.Inputs(1)).ShapeAsNumpy())
            rows.append((name, w, (opts.StrideH(), opts.StrideW()), op.Inputs(2) >= 0))
        elif name == "FULLY_CONNECTED":
            w = tuple(int(d) for d in g.Tensors(op.Inputs(1)).ShapeAsNumpy())
            rows.append((name, w, None, op.InputsLength() > 2 and op.Inputs(2) >= 0))
        elif name == "AVERAGE_POOL_2D":
            opts = tflite.Pool2DOptions()
            table = op.BuiltinOptions()
            opts.Init(table.Bytes, table.Pos)
            rows.append((name, (opts.FilterHeight(), opts.FilterWidth()), (opts.StrideH(), opts.StrideW()), False))
    return rows


def _keras_weight_ops(model):
    """The same rows from a Keras model, with weights in TFLite layout (OHWI, 1HW(C*M), (out, in))."""
    rows = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            kh, kw, cin, cout = layer.kernel.shape
            rows.append(("CONV_2D", (cout, kh, kw, cin), tuple(layer.strides), layer.use_bias))
        elif kind == "DepthwiseConv2D":
            kh, kw, cin, mult = layer.kernel.shape
            rows.append(("DEPTHWISE_CONV_2D", (1, kh, kw, cin * mult), tuple(layer.strides), layer.use_bias))
        elif kind == "Dense":
            cin, cout = layer.kernel.shape
            rows.append(("FULLY_CONNECTED", (cout, cin), None, layer.use_bias))
        elif kind == "AveragePooling2D":
            rows.append(("AVERAGE_POOL_2D", tuple(layer.pool_size), tuple(layer.strides), False))
    return rows


@pytest.mark.parametrize("name,ref_file", [("resnet8", "mlperftiny__pretrainedResnet_quant.tflite"),
                                           ("ds_cnn", "mlperftiny__kws_ref_model.tflite")])
def test_mlperf_structure_matches_reference_tflite(built, reference_models_dir, name, ref_file):
    ref = _tflite_weight_ops(reference_models_dir / ref_file)
    ours = _keras_weight_ops(built[name])
    # Same ops with the same weight shapes, strides and biases, in the same order.
    assert ours == ref


def test_unknown_model_did_you_mean():
    with pytest.raises(ModelError, match="did you mean 'resnet8'"):
        models.get_spec("resnet_8")
    with pytest.raises(ModelError, match="unknown model"):
        models.build("no_such_model_at_all")


def test_input_shape_and_class_override():
    m = models.build("seed000_face", input_shape=(64, 64, 3), num_classes=5)
    assert tuple(m.inputs[0].shape[1:]) == (64, 64, 3)
    assert np.asarray(m(np.zeros((1, 64, 64, 3), np.float32))).shape == (1, 5)
    m = models.build("resnet8", input_shape="28,28,1", num_classes=10)
    assert tuple(m.inputs[0].shape[1:]) == (28, 28, 1)
    assert np.asarray(m(np.zeros((1, 28, 28, 1), np.float32))).shape == (1, 10)


@pytest.mark.parametrize("bad", ["28,x,1", "0,28,1", "28,28", "", "-1,5,1"])
def test_bad_input_shape(bad):
    with pytest.raises(ModelError, match="input shape"):
        models.build("seed001_basic_cnn", input_shape=bad)


def test_input_too_small_is_a_model_error():
    with pytest.raises(ModelError, match="cannot build seed002_keras_cnn"):
        models.build("seed002_keras_cnn", input_shape=(8, 8, 1))
    with pytest.raises(ModelError, match="at least 2 classes"):
        models.build("seed001_basic_cnn", num_classes=1)


def _run(args, capsys):
    return run_cli(args, capsys)


def test_cli_models_json(capsys):
    code, out, _ = _run(["models", "--json"], capsys)
    assert code in (0, None)
    rows = {r["name"]: r for r in json.loads(out)}
    assert list(rows) == ZOO
    assert rows["seed001_basic_cnn"]["params"] == 1_199_882
    for name, ref in MLPERF.items():
        assert rows[name]["params"] == ref["published"] + ref["bn"]
        assert rows[name]["macs"] == ref["macs"]


def test_cli_models_table_and_unknown(capsys):
    code, out, _ = _run(["models", "ds_cnn"], capsys)
    assert code in (0, None)
    assert "ds_cnn" in out and "49x10x1" in out and "24,908" in out and "2,656,768" in out
    code, _, err = _run(["models", "resnt8"], capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "did you mean 'resnet8'" in lines[0]


@pytest.mark.parametrize("name", ZOO)
def test_recorded_params_and_macs_equal_the_built_model(built, name):
    """`toolchain models` prints the spec's recorded figures; they must be what the default build really has."""
    spec = models.get_spec(name)
    assert spec.params == built[name].count_params()
    from toolchain.model_inspect import inspect_keras

    assert spec.macs == inspect_keras(built[name]).totals.macs


def test_cli_models_imports_no_tensorflow():
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "toolchain", "models"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0 and "seed001_basic_cnn" in res.stdout
    imported = {line.split("|")[-1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")}
    assert not {m for m in imported if m.split(".")[0] in ("tensorflow", "keras", "tf_keras")}, "TF imported"
