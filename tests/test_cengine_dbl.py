"""Convolutions with int16 weights run on doubled accumulators (weights and bias doubled, one SMMLAR per output)
only when every accumulator provably stays below 2^30 (|bias| + 255 * sum |w| per output channel) and the
activation range is all of int8; otherwise the same layer takes the single-SMLAL output stage. Both are bit-exact
with TFLM's reference kernels on the host and on the emulated Cortex-M4."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from firmware_export.cgen.bench import run_c_bench
from firmware_export.m4.tools import tools_available

REF = Path(__file__).resolve().parents[2] / "shared/models/reference/mlperftiny__kws_ref_model.tflite"

pytestmark = pytest.mark.skipif(not REF.is_file(), reason=f"reference model {REF} not present")


def _dbl_flags(folder: Path) -> list[int]:
    text = "".join(p.read_text() for p in folder.glob("*.c") if p.name != "ce_kernels.c")
    return [int(v) for v in re.findall(r"\.dbl = (\d)", text)]


def _big_bias_model(tmp_path: Path) -> Path:
    pytest.importorskip("tensorflow")
    from tests.model_edit import set_bias

    # DS-CNN's second CONV_2D (a 1x1, 64 -> 64, int16 weights): channel 5's bias at 2^30 puts its accumulator
    # bound past 2^30, so the whole layer keeps the single-SMLAL output stage; the other channels still vary
    path = tmp_path / "big_bias.tflite"
    path.write_bytes(set_bias(REF.read_bytes(), "CONV_2D", 1, 5, 1 << 30))
    return path


def test_doubled_accumulators_chosen_by_the_bound_and_bit_exact_on_host(tmp_path):
    from tests.test_cengine import assert_bit_exact_on_host

    assert_bit_exact_on_host(REF, tmp_path / "ref", n=30)
    flags = _dbl_flags(tmp_path / "ref")
    assert flags.count(1) == 5, flags  # the first conv and the four 1x1 convs; the depthwise layers are not wide
    path = _big_bias_model(tmp_path)
    assert_bit_exact_on_host(path, tmp_path / "big", n=30)
    assert _dbl_flags(tmp_path / "big").count(1) == 4


@pytest.mark.skipif(not tools_available(), reason="arm-none-eabi-gcc / qemu-system-arm not installed")
def test_doubled_and_single_output_stages_bit_exact_on_cortex_m4(tmp_path):
    path = _big_bias_model(tmp_path)
    res = run_c_bench(path, runtime="qemu-m4", runs=30, seed=7, keep_dir=tmp_path / "m4")
    assert res["runs"] == 30 and res["outputs_match"], res.get("first_mismatch")


def _layers(model_path: Path, out: Path) -> list[tuple[int, int, int]]:
    """(output pixels, weights, wide) of every CONV_2D lowered as a convolution, from the generated parameters."""
    from firmware_export.cgen import load_engine, write_engine

    out.mkdir(parents=True, exist_ok=True)
    write_engine(load_engine(model_path), out)
    text = "".join(p.read_text() for p in out.glob("*.c") if p.name != "ce_kernels.c")
    convs = set(re.findall(r"ce_conv2d(?:_fc)?_s8\(&(\w+)", text))
    rows = []
    for name, blk in re.findall(r"ce_conv_params (\w+) = \{(.*?)\};", text, re.S):
        if name in convs:
            f = dict(re.findall(r"\.(\w+) = (-?\d+)", blk))
            weights = int(f["out_c"]) * int(f["k_h"]) * int(f["k_w"]) * int(f["in_c"])
            rows.append((int(f["out_h"]) * int(f["out_w"]), weights, int(f["wide"])))
    return rows


def test_int16_weights_where_they_serve_enough_pixels(tmp_path):
    """int16 weights for >= 64 output pixels; for 36-63 pixels only layers of <= 32 K weights (MobileNetV1-0.25's
    6 x 6 pointwise layers, not seed002's 200 K-weight layer on 7 x 7), which bounds the flash a model grows by."""
    pytest.importorskip("tensorflow")
    from firmware_export.cgen.zoo import quantise_random

    seen = set()
    for name in ("mobilenet_v1_025", "seed002_keras_cnn"):
        path = quantise_random(name, tmp_path / f"{name}.tflite")
        for pixels, weights, wide in _layers(path, tmp_path / name):
            expect = pixels >= 64 or (pixels >= 36 and weights <= 32768)
            assert wide == int(expect), (name, pixels, weights, wide)
            seen.add((pixels >= 64, 36 <= pixels < 64, weights <= 32768, wide))
    assert (False, True, True, 1) in seen and (False, True, False, 0) in seen, seen  # both sides of the rule met


def test_depthwise_channel_whose_doubled_bias_would_overflow_runs_clean(tmp_path):
    """MobileNetV1-0.25's first 3x3 depthwise layer (the row-ring kernel, 48 x 48) with one channel's bias at 2^30:
    that channel takes the C rows (2 x bias would overflow), the others the assembly; under ASan/UBSan on the host
    and on the emulated Cortex-M4, bit-exact with the reference kernels."""
    pytest.importorskip("tensorflow")
    from firmware_export.cgen.zoo import quantise_random
    from tests.model_edit import set_bias
    from tests.test_cengine_ops import _sanitized_run

    src = quantise_random("mobilenet_v1_025", tmp_path / "mobilenet_v1_025.tflite")
    path = tmp_path / "dw_big_bias.tflite"
    path.write_bytes(set_bias(src.read_bytes(), "DEPTHWISE_CONV_2D", 0, 3, 1 << 30))
    _sanitized_run(path, tmp_path / "host", n=3)
    if tools_available():
        res = run_c_bench(path, runtime="qemu-m4", runs=5, seed=2, keep_dir=tmp_path / "m4")
        assert res["runs"] == 5 and res["outputs_match"], res.get("first_mismatch")


def test_sparse_weights_are_refused_with_exit_2(tmp_path, capsys):
    """A convolution whose weights are stored sparse is listed as unsupported (exit 2, one line), not a crash."""
    pytest.importorskip("tensorflow")
    from tests.model_edit import mark_weights_sparse
    from toolchain.cli import main

    path = tmp_path / "sparse.tflite"
    path.write_bytes(mark_weights_sparse(REF.read_bytes(), "CONV_2D", 1))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["export", str(path), "--output", str(out), "--format", "c"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2, err
    assert "sparse int8 weights" in err and len(err.splitlines()) == 1, err
    assert not out.exists()
