"""Fused steps of the C engine: residual blocks streamed by rows (ce_resblock_s8), a convolution feeding one
fully-connected layer (ce_conv2d_fc_s8), int16 weights and staged input rows; bit-exact against the reference
kernels on the host and on the emulated Cortex-M4, and the memory they are there to save."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from firmware_export.cgen import load_engine
from tests.test_cengine import _convert, _ref, assert_bit_exact_on_host


def _labels(engine) -> list[str]:
    """The step labels of the generated C ("/* layer N: LABEL, M MACs */")."""
    return [line.split(":")[1].split(",")[0].strip() for line in engine.source.splitlines()
            if line.startswith("/* layer ")]


def _largest_activation(path) -> int:
    from toolchain.tflite_model import load_tflite

    return max(t.nbytes for t in load_tflite(path).tensors if t.data is None)


def _resnet_like(k, shortcut: str, first_kernel: int = 3, second_kernel: int = 3, channels: int = 8):
    """Conv stem, then one residual block: identity shortcut (stride 1) or a 1x1 stride-2 projection."""
    i = k.Input((12, 12, 3))
    x = k.layers.Conv2D(channels, 3, padding="same", activation="relu")(i)
    stride = 2 if shortcut == "projection" else 1
    y = k.layers.Conv2D(channels, first_kernel, strides=stride, padding="same", activation="relu")(x)
    z = k.layers.Conv2D(channels, second_kernel, padding="same")(y)
    s = k.layers.Conv2D(channels, 1, strides=stride)(x) if shortcut == "projection" else x
    o = k.layers.Activation("relu")(k.layers.Add()([s, z]))
    o = k.layers.GlobalAveragePooling2D()(o)
    return k.Model(i, k.layers.Dense(5)(o))


def _projection_with_another_reader(k):
    """A projection block whose input is also read by a depthwise convolution placed between the block's
    operators: that layer must not overwrite the input the fused step reads at the ADD's position."""
    i = k.Input((12, 12, 3))
    x = k.layers.Conv2D(8, 3, padding="same", activation="relu")(i)
    y = k.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    s = k.layers.Conv2D(8, 1)(x)
    z = k.layers.Conv2D(8, 3, padding="same")(y)
    d = k.layers.DepthwiseConv2D(3, padding="same")(x)
    o = k.layers.Add()([k.layers.Add()([z, s]), d])
    return k.Model(i, k.layers.Dense(5)(k.layers.GlobalAveragePooling2D()(o)))


BLOCKS = {  # name: (graph, fused as a RESBLOCK step)
    "identity_3x3": (lambda k: _resnet_like(k, "identity"), True),
    "identity_5x5_then_3x3": (lambda k: _resnet_like(k, "identity", 5, 3), True),
    "identity_3x3_then_1x1": (lambda k: _resnet_like(k, "identity", 3, 1), True),  # not in place (row r is read later)
    "projection_stride2": (lambda k: _resnet_like(k, "projection"), True),
    "six_channels": (lambda k: _resnet_like(k, "identity", channels=6), False),  # second conv's input % 4 != 0
    "projection_with_another_reader": (_projection_with_another_reader, True),
}


def _block_model(name, tmp_path):
    keras = pytest.importorskip("keras")
    path = _convert(BLOCKS[name][0](keras), (12, 12, 3), tmp_path / f"{name}.tflite")
    if name == "projection_with_another_reader":
        # the converter runs the depthwise after the block's ADD; run it before, where (last reader of the block
        # input in model order) it could overwrite the input the fused step reads at the ADD's position
        from tests.model_edit import move_operator
        from toolchain.tflite_model import load_tflite

        ops = [o.opcode for o in load_tflite(path).operators]
        dw, first_add = ops.index("DEPTHWISE_CONV_2D"), ops.index("ADD")
        assert dw > first_add
        path.write_bytes(move_operator(path.read_bytes(), dw, first_add))
    return path


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_residual_blocks_fused_when_possible_and_bit_exact_on_host(name, tmp_path):
    path = _block_model(name, tmp_path)
    engine = load_engine(path)
    assert ("RESBLOCK" in _labels(engine)) == BLOCKS[name][1], _labels(engine)
    assert_bit_exact_on_host(path, tmp_path / name, n=40)


def test_resnet8_stages_never_hold_two_full_activations_besides_the_block_input():
    """MLPerf Tiny ResNet-8: its three residual blocks run as RESBLOCK steps; the arena stays below two of its
    largest activations (unfused: the block input, the first and the second convolution's outputs, 3 x 16 KB)."""
    path = _ref("mlperftiny__pretrainedResnet_quant")
    engine = load_engine(path)
    assert _labels(engine).count("RESBLOCK") == 3
    assert engine.plan.arena_bytes < 2 * _largest_activation(path)


def test_micro_speech_convolution_output_is_never_stored_whole():
    """micro_speech: DEPTHWISE_CONV_2D (one input channel, lowered as a convolution) -> FULLY_CONNECTED as one step;
    the arena is below input + convolution output (1,960 + 4,000 B)."""
    path = _ref("tflm__micro_speech_quantized")
    engine = load_engine(path)
    assert "DEPTHWISE_CONV_2D_FULLY_CONNECTED" in _labels(engine)
    assert engine.plan.arena_bytes < 1960 + 4000


def _conv_dense(k, width: int, channels: int):
    i = k.Input((10, width, 1))
    x = k.layers.Conv2D(channels, (5, 3), strides=(2, 1), padding="same", activation="relu")(i)
    return k.Model(i, k.layers.Dense(3)(k.layers.Flatten()(x)))


# an output row of out_w * out_c bytes must start a weight group of 4: 6 x 4 fuses, 5 x 3 does not
@pytest.mark.parametrize("width,channels,fused", [(6, 4, True), (5, 3, False)])
def test_convolution_feeding_a_dense_layer_is_fused_and_bit_exact(width, channels, fused, tmp_path):
    keras = pytest.importorskip("keras")
    path = _convert(_conv_dense(keras, width, channels), (10, width, 1), tmp_path / f"cd{width}.tflite")
    engine = load_engine(path)
    assert ("CONV_2D_FULLY_CONNECTED" in _labels(engine)) == fused, _labels(engine)
    assert_bit_exact_on_host(path, tmp_path / f"cd{width}", n=40)


def test_wide_weights_are_the_sign_extended_pairs_of_the_int8_layout():
    """int16 layout: each group of 4 int8 weights (w0..w3) becomes (w0, w2, w1, w3), as SXTB16 / SXTB16 ROR 8."""
    from firmware_export.cgen import packing

    rows = np.array([[1, -2, 3, -4, 5, 6, -7, 8], [-1, 2, -3, 4, -128, 127, 0, 1]], dtype=np.int8)
    wide = packing.widen_groups(packing.interleave_rows(rows))
    assert wide.dtype == np.int16
    assert wide.tolist() == [1, 3, -2, -4, -1, -3, 2, 4, 5, -7, 6, 8, -128, 0, 127, 1]


@pytest.mark.qemu
@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                    reason="needs arm-none-eabi-gcc and qemu-system-arm")
@pytest.mark.parametrize("name", ["identity_3x3", "identity_3x3_then_1x1", "projection_stride2"])
def test_residual_blocks_bit_exact_on_cortex_m4(name, tmp_path):
    from firmware_export.cgen.bench import run_c_bench

    path = _block_model(name, tmp_path)
    res = run_c_bench(path, runtime="qemu-m4", runs=30, seed=4, keep_dir=tmp_path / name)
    assert res["runs"] == 30 and res["outputs_match"], res.get("first_mismatch")
