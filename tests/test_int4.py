"""`quantise --weights int4`: packed int4 weights, int8 activations, run by LiteRT's reference kernels.

References: the packed bytes decoded here by hand, the `tflite` flatbuffer package for tensor types and buffers,
the Keras float kernels for the weight error, LiteRT's reference kernels for accuracy (tests.test_quantise).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers import run_cli
from tests.test_quantise import int8_predict, test_split


def _tensors(path):
    """(name, type, shape, raw buffer bytes, scales) of every CONV_2D/DEPTHWISE/FC weight, read with `tflite`."""
    import tflite

    m = tflite.Model.GetRootAsModel(path.read_bytes(), 0)
    g = m.Subgraphs(0)
    out = []
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        code = m.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin not in (3, 4, 9):
            continue
        t = g.Tensors(op.Inputs(1))
        buf = m.Buffers(t.Buffer()).DataAsNumpy()
        q = t.Quantization()
        out.append((g.Tensors(op.Outputs(0)).Name().decode(), t.Type(), tuple(t.ShapeAsNumpy()),
                    bytes(buf), q.ScaleAsNumpy()))
    return out


def _decode(raw: bytes, n: int) -> np.ndarray:
    vals = []
    for b in raw:
        for nib in (b & 0xF, b >> 4):
            vals.append(nib - 16 if nib >= 8 else nib)
    return np.array(vals[:n], dtype=np.int64)


def test_pack_unpack_is_tflite_layout():
    from toolchain.quant_int4 import pack_int4, unpack_int4

    q = np.array([-7, 7, 0, -1, 3, -8, 5], dtype=np.int8)
    packed = pack_int4(q)
    assert list(packed) == [(-7 & 0xF) | (7 << 4), 0 | ((-1 & 0xF) << 4), 3 | ((-8 & 0xF) << 4), 5]
    assert np.array_equal(_decode(bytes(packed), 7), q) and np.array_equal(unpack_int4(packed, 7), q)


@pytest.mark.slow
def test_int4_weights_halve_the_model_and_keep_accuracy(trained_seed001, tmp_path, capsys):
    int8, int4 = tmp_path / "m8.tflite", tmp_path / "m4.tflite"
    assert run_cli(["quantise", trained_seed001, "-o", int8], capsys)[0] == 0
    code, out, err = run_cli(["quantise", trained_seed001, "-o", int4, "--weights", "int4"], capsys)
    assert code == 0, err
    assert "int4 weights (4 layers" in out
    n8, n4 = len(int8.read_bytes()), len(int4.read_bytes())
    assert n4 <= 0.55 * n8, (n4, n8)
    # every weight tensor is INT4 (TensorType 17), packed: ceil(n / 2) bytes, values in [-7, 7]
    import keras

    model = keras.models.load_model(trained_seed001 / "model.keras", compile=False)
    kernels = {l.name: l.get_weights()[0] for l in model.layers if l.get_weights()}
    for name, ttype, shape, raw, scales in _tensors(int4):
        n = int(np.prod(shape))
        assert ttype == 17 and len(raw) == (n + 1) // 2, name
        q = _decode(raw, n).reshape(shape)
        assert q.min() >= -7 and q.max() <= 7
        layer = next(k for k in kernels if f"/{k}_1/" in name or f"/{k}/" in name)
        w = kernels[layer]
        w = w.transpose(3, 0, 1, 2) if w.ndim == 4 else w.T  # Keras HWIO / IO -> TFLite OHWI / OI
        deq = q * scales.reshape(-1, *([1] * (q.ndim - 1)))
        # int4 with a searched clip: within a few % of the float kernel (measured ~10-15 % relative L2 error)
        assert np.linalg.norm(deq - w) / np.linalg.norm(w) < 0.2, layer
    # accuracy with LiteRT's reference kernels, computed here: int8 -> int4 drop <= 1 pp
    x, y = test_split(trained_seed001)
    acc8 = float(np.mean(np.argmax(int8_predict(int8, x), axis=1) == y))
    acc4 = float(np.mean(np.argmax(int8_predict(int4, x), axis=1) == y))
    assert (acc8 - acc4) * 100 <= 1.0, (acc8, acc4)
    side = json.loads(int4.with_suffix(".json").read_text())
    assert side["quantization"]["weights"] == "int4"
    assert side["evaluation"]["tflite_accuracy"] == pytest.approx(acc4, abs=1e-12)
    # deterministic: the same model and data give the same bytes
    again = tmp_path / "again.tflite"
    assert run_cli(["quantise", trained_seed001, "-o", again, "--weights", "int4"], capsys)[0] == 0
    assert again.read_bytes() == int4.read_bytes()
    # TFLM cannot run per-channel int4 FULLY_CONNECTED weights: the export refuses, naming the ops and what to do
    code, out, err = run_cli(["export", int4, "-o", tmp_path / "fw", "--host-only"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "FULLY_CONNECTED runs int4 weights only with per-tensor scales" in err and "--format c" in err
    assert not (tmp_path / "fw").exists()
    # per layer: the dense layers keep int8
    mixed = tmp_path / "mixed.tflite"
    assert run_cli(["quantise", trained_seed001, "-o", mixed, "--weights", "int4", "--keep-int8-layers",
                    "dense|predictions"], capsys)[0] == 0
    types = {name.split("/")[1].rsplit("_", 1)[0]: t for name, t, *_ in _tensors(mixed)}
    assert all(t == 9 for k, t in types.items() if k in ("dense", "predictions")), types
    assert all(t == 17 for k, t in types.items() if k.startswith("conv")), types
    # that one TFLM runs; its kernels unpack the int4 conv weights into the arena (measured: arena >= the weights)
    code, out, err = run_cli(["export", mixed, "-o", tmp_path / "fw2", "--host-only"], capsys)
    assert code == 0, err
    assert "unpacks int4 weights into an arena scratch buffer" in err
    arena = json.loads((tmp_path / "fw2" / "manifest.json").read_text())["arena"]["recorded_bytes"]
    biggest = max(int(np.prod(shape)) for _, t, shape, *_ in _tensors(mixed) if t == 17)
    assert arena >= biggest


def test_int4_option_errors(trained_seed001, tmp_path, capsys):
    for extra in (["--int4-layers", "conv"], ["--weights", "int3"], ["--weights", "int4", "--int4-layers", "("],
                  ["--weights", "int4", "--int4-layers", "no_such_layer"]):
        code, out, err = run_cli(["quantise", trained_seed001, "-o", tmp_path / "q.tflite", *extra], capsys)
        assert code == 2, (extra, out, err)
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
        assert not (tmp_path / "q.tflite").exists()


@pytest.mark.slow
def test_int16_activations_16x8(trained_seed001, tmp_path, capsys):
    """--activations int16: int16 activations and I/O, int8 weights, int64 biases; accuracy computed here with
    LiteRT's reference kernels equals the sidecar's; the TFLM export allocates and runs it."""
    out = tmp_path / "a16.tflite"
    code, text, err = run_cli(["quantise", trained_seed001, "-o", out, "--activations", "int16"], capsys)
    assert code == 0, err
    import tflite

    m = tflite.Model.GetRootAsModel(out.read_bytes(), 0)
    g = m.Subgraphs(0)
    assert g.Tensors(g.Inputs(0)).Type() == 7 and g.Tensors(g.Outputs(0)).Type() == 7  # INT16
    types = {t for _, t, *_ in _tensors(out)}
    assert types == {9}  # int8 weights
    x, y = test_split(trained_seed001)
    acc = float(np.mean(np.argmax(int8_predict(out, x), axis=1) == y))
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["quantization"]["scheme"] == "int16x8" and side["quantization"]["io_dtype"] == "int16"
    assert side["evaluation"]["tflite_accuracy"] == pytest.approx(acc, abs=1e-12)
    assert "int16x8" in text
    code, text, err = run_cli(["export", out, "-o", tmp_path / "fw", "--host-only"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "fw" / "manifest.json").read_text())["arena"]["proven"] is True
    # the C engine says which operators it cannot run and what to do
    code, _, err = run_cli(["export", out, "--format", "c", "-o", tmp_path / "ce"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "int16 activations (16x8)" in err and "--format tflm" in err and "Layers with int16 outputs: 0 CONV_2D" in err
    # the combinations no kernel runs are refused before any work
    for extra in (["--activations", "int16", "--weights", "int4"], ["--activations", "int16", "--io", "uint8"],
                  ["--io", "int16"]):
        code, _, err = run_cli(["quantise", trained_seed001, "-o", tmp_path / "x.tflite", *extra], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, (extra, err)


def _val_split(run_dir):
    from toolchain.data import Preprocessing, load_dataset

    meta = json.loads((run_dir / "metadata.json").read_text())
    ds = load_dataset(meta["dataset"], seed=meta["seed"], val_fraction=meta["split"]["val_fraction"],
                      test_fraction=meta["split"]["test_fraction"])
    return Preprocessing.from_dict(meta["preprocessing"]).apply(ds.x_val), np.asarray(ds.y_val)


@pytest.mark.slow
def test_auto_returns_the_smallest_model_within_budget_that_fits(trained_seed001, tmp_path, capsys, monkeypatch):
    """seed001's int8 model (1.2 MB) does not fit the nRF52840; --auto returns one that does, within 0.5 pp of the
    float model on the validation split (recomputed here), the same bytes twice, every candidate in the table."""
    out = tmp_path / "auto.tflite"
    args = ["quantise", trained_seed001, "-o", out, "--auto", "--max-accuracy-drop", "0.5", "--target", "nrf52840"]
    code, text, err = run_cli(args, capsys)
    assert code == 0, err
    side = json.loads(out.with_suffix(".json").read_text())
    auto = side["auto"]
    chosen = [c for c in auto["candidates"] if c.get("chosen")]
    assert len(chosen) == 1 and chosen[0]["name"] in text
    int8 = next(c for c in auto["candidates"] if c["name"] == "int8")
    assert int8["fit"]["fits"] is False  # 1.2 MB of int8 weights + the runtime > 1 MB
    # the board fit recomputed: file bytes + the profile's TFLM runtime estimate <= 1 MB
    import tomllib
    from pathlib import Path

    prof = tomllib.loads((Path(__file__).parents[1] / "toolchain" / "targets.toml").read_text())
    est = prof["runtime_estimate"]["tflm"]
    from toolchain.tflite_model import load_tflite

    n_ops = len({op.opcode for op in load_tflite(out).operators})
    assert len(out.read_bytes()) + (est["core_kb"] + est["per_op_kb"] * n_ops) * 1024 <= 1024 * 1024
    # accuracy on the validation split, computed here with LiteRT's reference kernels and Keras
    import keras

    x, y = _val_split(trained_seed001)
    acc = float(np.mean(np.argmax(int8_predict(out, x), axis=1) == y))
    model = keras.models.load_model(trained_seed001 / "model.keras", compile=False)
    float_acc = float(np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == y))
    assert auto["float_val_accuracy"] == pytest.approx(float_acc, abs=1e-12)
    assert (float_acc - acc) * 100 <= 0.5 + 1e-9
    assert chosen[0]["val_accuracy"] == pytest.approx(acc, abs=1e-12)
    # the smallest candidate within the budget that fits
    ok = [c for c in auto["candidates"] if c["within_budget"] and c["fits"]]
    assert chosen[0]["bytes"] == min(c["bytes"] for c in ok)
    # deterministic
    again = tmp_path / "again.tflite"
    assert run_cli(args[:3] + [again] + args[4:], capsys)[0] == 0
    assert again.read_bytes() == out.read_bytes()
    # a board nothing fits: the error names the closest candidate and why
    from firmware_export import targets

    tiny = targets.Target(key="tiny", display="tiny", core="M0", clock_mhz=16, flash_kb=64, ram_kb=16, runtime="tflm")
    monkeypatch.setattr(targets, "get_target", lambda name, path=None: tiny)
    code, _, err = run_cli(["quantise", trained_seed001, "-o", tmp_path / "none.tflite", "--auto", "--target", "x"],
                           capsys)
    assert code == 2 and err.count("error:") == 1  # the candidate progress lines, then one error line
    err = err.strip().splitlines()[-1]
    assert "--auto found no candidate" in err and "does not fit" in err and "of tiny" in err
    assert not (tmp_path / "none.tflite").exists()
    # --auto options without --auto, and a fixed scheme with --auto, are refused
    for extra in (["--target", "nrf52840"], ["--max-accuracy-drop", "1"], ["--auto", "--weights", "int4"]):
        code, _, err = run_cli(["quantise", trained_seed001, "-o", tmp_path / "u.tflite", *extra], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, (extra, err)
