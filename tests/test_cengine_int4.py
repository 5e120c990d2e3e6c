"""C engine with packed int4 weights: bit-exact against the reference kernels (TFLM) on the host (portable C path) and on
the emulated Cortex-M4 (DSP path: SXTB16/SMLAD, inline-assembly conv loop), flash halved, weights packed and aligned.

Models need no training: zoo models quantised to int8 with random weights and random calibration
(``firmware_export.cgen.zoo.quantise_random``) or small Keras models converted the same way, then rewritten to int4 by
``toolchain.quant_int4.to_int4`` (the code behind ``quantise --weights int4``). The reference is TFLM's reference
kernels on the model's int8 twin (``golden.int4_as_int8``: TFLM's int4 kernels unpack the weights to int8 and run the
int8 arithmetic; its Python runtime cannot allocate int4 tensors).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from firmware_export.cgen import build, golden, load_engine, write_engine

N_INPUTS = 100
needs_cc = pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None, reason="no C compiler")
needs_m4 = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                              reason="needs arm-none-eabi-gcc and qemu-system-arm")
W4_KERNELS = ("ce_conv2d_s8_w4", "ce_depthwise_s8_w4", "ce_depthwise3x3_s8_w4", "ce_fully_connected_s8_w4")


def _int4(int8_path: Path, out: Path, **kw) -> Path:
    from toolchain.quant_int4 import to_int4

    data, _ = to_int4(int8_path.read_bytes(), lambda name: None, **kw)
    out.write_bytes(data)
    return out


def _convert(model, path: Path, seed: int = 0) -> Path:
    """Full-integer int8 conversion of a small Keras model, calibrated on uniform random inputs."""
    import tensorflow as tf

    shape = (1, *[int(d) for d in model.input_shape[1:]])
    rng = np.random.default_rng(seed)
    samples = [rng.random(shape, dtype=np.float32) for _ in range(8)]
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([s] for s in samples)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    path.write_bytes(conv.convert())
    return path


def _edge_models(folder: Path) -> dict[str, Path]:
    """Shapes off the fast paths: in_c % 4 != 0 (generic im2col), odd out_c, depth multiplier 2 and out_c % 4 != 0
    (scalar depthwise), rows not a multiple of 8, and rows longer than one int32 chunk (4096 words). (Some depthwise
    shapes with out_c % 4 != 0, e.g. SAME padding on 5 channels, are left out: the int8 engine is not bit-exact
    there either, with int8 weights.)"""
    import keras

    keras.utils.set_random_seed(1)
    L = keras.layers
    x = inp = keras.Input((9, 11, 3), batch_size=1)
    x = L.Conv2D(5, 3, padding="same", activation="relu")(x)                 # ic 3, oc 5: generic im2col, odd rows
    x = L.Conv2D(4, 1)(x)
    x = L.DepthwiseConv2D(3, padding="valid", depth_multiplier=2)(x)         # dm 2: scalar depthwise
    x = L.Conv2D(10, 1)(x)
    x = L.DepthwiseConv2D(3, strides=2, padding="valid", activation="relu")(x)  # 10 channels: blocks + scalar tail
    x = L.Conv2D(7, 1)(x)
    x = L.Flatten()(x)
    x = L.Dense(13, activation="relu")(x)                                    # k = 84: not a multiple of 8
    out = L.Dense(3)(x)
    models = {"edge": keras.Model(inp, out)}
    inp = keras.Input((3, 3, 3648), batch_size=1)
    models["long_conv"] = keras.Model(inp, L.Flatten()(L.Conv2D(3, 3)(inp)))  # k = 32832: 4104 words, 2 chunks
    inp = keras.Input((32836,), batch_size=1)
    models["long_fc"] = keras.Model(inp, L.Dense(3)(inp))                    # 4104 words + 4 values
    return {name: _int4(_convert(m, folder / f"{name}_int8.tflite"), folder / f"{name}_int4.tflite")
            for name, m in models.items()}


@pytest.fixture(scope="module")
def int4_models(tmp_path_factory) -> dict[str, Path]:
    from firmware_export.cgen.zoo import quantise_random

    d = tmp_path_factory.mktemp("int4_models")
    p = {}
    for name in ("seed001_basic_cnn", "ds_cnn", "mobilenet_v1_025"):
        p[f"{name}_int8"] = quantise_random(name, d / f"{name}_int8.tflite")
        p[name] = _int4(p[f"{name}_int8"], d / f"{name}_int4.tflite")
    # mixed: conv2 and dense stay int8 (tensor names carry the Keras layer names), conv1 and predictions are int4
    p["seed001_mixed"] = _int4(p["seed001_basic_cnn_int8"], d / "seed001_mixed.tflite",
                               keep_int8_layers=r"conv2|dense_1/")
    p.update(_edge_models(d))
    return p


def _kernels(engine) -> list[str]:
    return [re.match(r"\s*(ce_\w+)\(", s.body).group(1) for s in engine.steps
            if s.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]


def _assert_same(path: Path, inputs, got) -> None:
    expected = golden.reference_outputs(path, inputs).outputs
    bad = [i for i, (g, e) in enumerate(zip(got, expected)) if not np.array_equal(g, e.reshape(g.shape))]
    assert not bad, f"{path.name}: {len(bad)}/{len(inputs)} outputs differ from the reference kernels, first at input {bad[0]}"


def test_int4_layers_use_packed_kernels(int4_models):
    from toolchain.tflite_model import load_tflite

    for key in ("seed001_basic_cnn", "seed001_mixed", "ds_cnn", "mobilenet_v1_025", "edge"):
        model = load_tflite(int4_models[key])
        engine = load_engine(int4_models[key])
        weights = [model.tensor(op.inputs[1]).dtype for op in model.operators
                   if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
        kernels = _kernels(engine)
        assert len(kernels) == len(weights)
        assert [k.endswith("_w4") for k in kernels] == [w == "int4" for w in weights], key
    mixed = _kernels(load_engine(int4_models["seed001_mixed"]))
    assert mixed == ["ce_conv2d_s8_w4", "ce_conv2d_s8", "ce_fully_connected_s8", "ce_fully_connected_s8_w4"]
    used = {k for key in int4_models for k in _kernels(load_engine(int4_models[key]))}
    assert set(W4_KERNELS) <= used  # every int4 kernel is exercised by the models below


def test_int4_weights_are_stored_packed(int4_models):
    """The generated weight arrays hold two values per byte and decode back to the model's int4 values."""
    from toolchain.tflite_model import load_tflite

    path = int4_models["seed001_basic_cnn"]
    src = load_engine(path).source
    arrays = re.findall(r"static const uint8_t (\w+_weights4)\[(\d+)\] CE_CONST_ATTR = \{([^}]*)\}", src)
    assert len(arrays) == 4 and "static const int8_t" not in "".join(re.findall(r".*_weights\b.*", src))
    model = load_tflite(path)
    ws = [model.tensor(op.inputs[1]) for op in model.operators if op.opcode in ("CONV_2D", "FULLY_CONNECTED")]
    # half a byte per weight; rows are padded (conv1's 3-value kernel rows to 4, rows to whole words of 8 values)
    assert sum(int(n) for _, n, _ in arrays) <= 0.5005 * sum(t.num_elements for t in ws)
    for (_, n, body), t in zip(arrays, ws):
        vals = np.array([int(v, 16) for v in re.findall(r"0x[0-9a-f]{2}", body)], dtype=np.uint8)
        nib = np.stack([vals & 15, vals >> 4], axis=-1).reshape(-1).astype(np.int16)
        decoded = np.where(nib > 7, nib - 16, nib)
        # the layout reorders values; the multiset of non-padding values is the tensor's
        hist = np.bincount(decoded + 8, minlength=16)
        ref = np.bincount(np.asarray(t.data, dtype=np.int16).reshape(-1) + 8, minlength=16)
        assert np.array_equal(hist[np.arange(16) != 8], ref[np.arange(16) != 8])


@needs_cc
@pytest.mark.parametrize("key", ["seed001_basic_cnn", "seed001_mixed", "ds_cnn", "mobilenet_v1_025", "edge",
                                 "long_conv", "long_fc"])
def test_int4_bit_exact_on_host_portable_path(int4_models, key, tmp_path):
    path = int4_models[key]
    engine = load_engine(path)
    write_engine(engine, tmp_path)
    exe = build.build_host(tmp_path, engine.name, file_io=True, extra_cflags=["-DCE_NO_DSP"])
    inputs = build.random_inputs(engine, N_INPUTS, seed=1)
    got, res = build.run_host_file(exe, engine, inputs)
    assert res["runs"] == N_INPUTS
    _assert_same(path, inputs, got)


@pytest.mark.qemu
@needs_m4
@pytest.mark.parametrize("key,n", [("seed001_basic_cnn", N_INPUTS), ("seed001_mixed", 20), ("ds_cnn", 20),
                                   ("mobilenet_v1_025", 10), ("edge", 20), ("long_conv", 5), ("long_fc", 5)])
def test_int4_bit_exact_on_cortex_m4_dsp_path(int4_models, key, n):
    from firmware_export.m4.target import run_on_target

    path = int4_models[key]
    inputs = build.random_inputs(load_engine(path), n, seed=2)
    run = run_on_target(path, "c", inputs)
    assert len(run.outputs) == n
    _assert_same(path, inputs, run.outputs)


@pytest.mark.qemu
@needs_m4
def test_int4_flash_and_speed_against_int8_on_cortex_m4(int4_models, tmp_path):
    """seed001: model constants + engine code <= 0.55x the int8 engine's; the DSP loop is linked; int4 weight arrays
    are word-aligned; int4 costs instructions (unpacking; the int8 twin holds int16 weights, doubled accumulators
    and the fused paths) but stays within 1.7x of int8 (measured 1.60x)."""
    from firmware_export.m4.target import run_on_target

    runs = {}
    for key in ("seed001_basic_cnn_int8", "seed001_basic_cnn"):
        path = int4_models[key]
        inputs = build.random_inputs(load_engine(path), 2, seed=3)
        runs[key] = run_on_target(path, "c", inputs, keep_dir=tmp_path / key)
        _assert_same(path, inputs, runs[key].outputs)
    f8, f4 = (runs[k].flash["model"] + runs[k].flash["runtime"]
              for k in ("seed001_basic_cnn_int8", "seed001_basic_cnn"))
    assert f4 <= 0.55 * f8, (f4, f8)
    i8, i4 = (runs[k].instructions_per_inference for k in ("seed001_basic_cnn_int8", "seed001_basic_cnn"))
    assert i8 < i4 <= 1.7 * i8, (i4, i8)
    assert runs["seed001_basic_cnn"].arena_bytes == runs["seed001_basic_cnn_int8"].arena_bytes  # no unpack buffer
    elf = next((tmp_path / "seed001_basic_cnn").glob("run0/build_m4/*.elf"))
    syms = build._run(["arm-none-eabi-nm", str(elf)], tmp_path, 60, "nm").stdout
    w4 = [(int(a, 16), s) for a, _, s in (ln.split() for ln in syms.splitlines() if ln.count(" ") == 2)
          if s.endswith("_weights4")]
    assert len(w4) == 4 and all(a % 4 == 0 for a, _ in w4), w4
    dis = build._run(["arm-none-eabi-objdump", "-d", str(elf)], tmp_path, 60, "objdump").stdout
    body = dis.split("<ce_dot4_2x2>:", 1)[1].split("\n\n", 1)[0]
    assert "smlad" in body and "sxtb16" in body and "0xf0f0f0f0" in body.lower()
