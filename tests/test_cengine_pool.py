"""AVERAGE_POOL_2D's two summation paths (four channels per word in int16 lanes when the channel count is a multiple
of 4 and a window holds at most 255 values; one channel at a time otherwise), a convolution with an odd number
of output pixels (its last pixel goes through the two-pixel path as both pixels) and one with an odd number of
output channels on doubled accumulators (the last channel by the one-channel dot product), bit-exact with TFLM's reference
kernels on the host (portable C) and on the emulated Cortex-M4 (DSP intrinsics and assembly)."""

from __future__ import annotations

import pytest

from firmware_export.cgen.bench import run_c_bench


def _model(name: str):
    import keras

    shape, ch, conv_k, pool, strides, padding = {
        # 5 x 5 = 25 conv pixels (odd); 3 x 3 windows, clipped at the 'same' border: lanes path
        "lanes_same_odd_pixels": ((7, 7, 8), 8, 3, 3, 1, "same"),
        # 17 x 17 = 289 conv pixels (odd); 16 x 16 = 256 values per window: the one-channel path
        "window_256": ((17, 17, 4), 4, 1, 16, 1, "valid"),
        # 6 channels (not a multiple of 4): the one-channel path
        "channels_6": ((7, 7, 6), 6, 3, 2, 2, "valid"),
        # 7 output channels over >= 36 pixels: int16 weights, doubled accumulators, the odd channel on its own
        "channels_7_wide": ((9, 9, 4), 7, 3, 2, 1, "valid"),
    }[name]
    i = keras.Input(shape)
    x = keras.layers.Conv2D(ch, conv_k, activation="relu")(i)
    x = keras.layers.AveragePooling2D(pool, strides=strides, padding=padding)(x)
    return keras.Model(i, keras.layers.Conv2D(ch, 1)(x)), shape


NAMES = ["lanes_same_odd_pixels", "window_256", "channels_6", "channels_7_wide"]


@pytest.mark.parametrize("name", NAMES)
def test_average_pool_paths_bit_exact_on_host(name, tmp_path):
    pytest.importorskip("keras")
    from tests.test_cengine import _convert, assert_bit_exact_on_host
    from toolchain.tflite_model import load_tflite

    model, shape = _model(name)
    path = _convert(model, shape, tmp_path / f"{name}.tflite")
    assert "AVERAGE_POOL_2D" in set(load_tflite(path).opcode_names())
    assert_bit_exact_on_host(path, tmp_path / name, n=40)


@pytest.mark.parametrize("name", NAMES)
def test_average_pool_paths_bit_exact_on_cortex_m4(name, tmp_path):
    pytest.importorskip("keras")
    from firmware_export.m4.tools import tools_available
    from tests.test_cengine import _convert

    if not tools_available():
        pytest.skip("arm-none-eabi-gcc / qemu-system-arm not installed")
    model, shape = _model(name)
    path = _convert(model, shape, tmp_path / f"{name}.tflite")
    res = run_c_bench(path, runtime="qemu-m4", runs=30, seed=3, keep_dir=tmp_path / name)
    assert res["runs"] == 30 and res["outputs_match"], res.get("first_mismatch")
