"""Malformed models and `toolchain export --format c`: the validation pass (firmware_export/cgen/validate.py), the
reader's one-line errors, and a seeded fuzz run (tests/fuzz_models.py; the 10,000-case version is
benchmarks/fuzz_cengine.py).

Unmarked on purpose: it runs in CI (``pytest -n 2``) in about a minute.
"""

from __future__ import annotations

import collections
import dataclasses
import struct

import numpy as np
import pytest

from tests import fuzz_models as fz
from toolchain.errors import ExportError, ModelError

FUZZ_CASES = 200
FUZZ_SEED = 20_240_611  # fixed: a failure names its seed; benchmarks/fuzz_cengine.py starts at 0


@pytest.fixture(scope="module")
def models(reference_models_dir):
    return fz.reference_models()


def _parsed(models, name):
    from toolchain.tflite_model import parse_tflite

    return parse_tflite(models[name], f"{name}.tflite")


def _problems(m, **kw):
    from firmware_export.cgen.validate import model_problems

    return model_problems(m, **kw)


def test_reference_models_pass_validation(models):
    for name in models:
        assert _problems(_parsed(models, name)) == [], name


# -- parsed-object mutations: one rule each -----------------------------------------------------------------

def _first_op(m, opcode):
    return next(op for op in m.operators if op.opcode == opcode)


def test_nan_zero_and_tiny_scales_are_reported(models):
    m = _parsed(models, "mlperftiny__kws_ref_model")
    conv = _first_op(m, "CONV_2D")
    m.tensors[conv.inputs[1]].scale[3] = np.nan
    m.tensors[conv.outputs[0]].scale[0] = 0.0
    m.tensors[conv.inputs[0]].scale[0] = 1e-45
    probs = _problems(m)
    assert sum("quantisation scales must be finite and positive" in p for p in probs) == 3, probs


def test_zero_point_range_counts_and_quantized_dimension(models):
    m = _parsed(models, "mlperftiny__kws_ref_model")
    conv = _first_op(m, "CONV_2D")
    x, w = m.tensors[conv.inputs[0]], m.tensors[conv.inputs[1]]
    x.zero_point = np.array([300])
    w.scale = w.scale[:5]
    w.zero_point = w.zero_point[:5]
    w2 = m.tensors[[op for op in m.operators if op.opcode == "CONV_2D"][1].inputs[1]]
    w2.quantized_dimension = 7  # per-channel weights: the axis must exist
    m.tensors[conv.outputs[0]].quantized_dimension = 7  # one scale: the axis does not matter (TFLM ignores it)
    probs = " | ".join(_problems(m))
    assert f"tensor {x.index} (int8) zero point 300" in probs
    assert f"tensor {w.index}: 5 scales, 5 zero points" in probs
    assert f"the quantized dimension must be within the tensor's rank (any axis for one scale, a 1-D tensor's only " \
           f"axis for one scale per element) (tensor {w2.index}: dimension 7 of rank 4)" in probs
    assert f"tensor {conv.outputs[0]}:" not in probs


def test_huge_input_dimension_is_refused_before_allocating(models, tmp_path):
    from firmware_export.cgen.validate import check_model

    m = _parsed(models, "tflm__micro_speech_quantized")
    t = m.tensors[m.inputs[0]]
    t.shape = (1, 1 << 31)
    with pytest.raises(ExportError) as exc:
        check_model(m, source="ms.tflite")
    msg = str(exc.value)
    assert msg.startswith("the model is malformed: tensor dimensions must be at most 16,777,216")
    assert msg.endswith("Received: ms.tflite") and "\n" not in msg


def test_activation_and_constant_byte_limits_and_override(models):
    m = _parsed(models, "mlperftiny__kws_ref_model")
    assert _problems(m) == []
    probs = _problems(m, max_bytes=1000)
    assert any("activation tensor" in p and "limit 1,000" in p for p in probs), probs
    assert any("constant tensor" in p and "limit 1,000" in p for p in probs), probs
    assert _problems(m, max_bytes=1 << 20) == []


def test_truncated_constant_data_is_reported(models):
    m = _parsed(models, "tflm__hello_world_int8")
    fc = _first_op(m, "FULLY_CONNECTED")
    w = m.tensors[fc.inputs[1]]
    w.data = w.data.reshape(-1)[:-3]
    assert any(p.startswith("constant tensor data must be exactly the declared size") for p in _problems(m))


def test_self_loop_forward_reference_and_reshape_cycle(models):
    m = _parsed(models, "mlperftiny__kws_ref_model")
    rs = _first_op(m, "RESHAPE")
    consumer = next(op for op in m.operators if rs.outputs[0] in op.inputs)
    # turn the consumer into a RESHAPE of the reshape's output and make the reshape read the consumer's output
    m.operators[consumer.index] = dataclasses.replace(consumer, opcode="RESHAPE", inputs=(rs.outputs[0],))
    m.operators[rs.index] = dataclasses.replace(rs, inputs=(consumer.outputs[0],) + rs.inputs[1:])
    probs = _problems(m)
    assert any("produced by an earlier operator" in p and f"operator {rs.index} (RESHAPE)" in p for p in probs), probs
    m2 = _parsed(models, "tflm__hello_world_int8")
    fc = m2.operators[1]
    m2.operators[1] = dataclasses.replace(fc, inputs=(fc.outputs[0],) + fc.inputs[1:])
    assert any("must be a fresh tensor" in p and "operator 1" in p for p in _problems(m2))


def test_operator_arity_and_ranks(models):
    m = _parsed(models, "tflm__hello_world_int8")
    fc = m.operators[0]
    m.operators[0] = dataclasses.replace(fc, inputs=fc.inputs[:1])
    m.tensors[m.operators[1].inputs[1]].shape = ()
    m.tensors[m.operators[1].inputs[1]].data = m.tensors[m.operators[1].inputs[1]].data.reshape(-1)[:1].reshape(())
    probs = _problems(m)
    assert any("operator must have the number of operands" in p and "operator 0" in p for p in probs), probs
    assert any(p.startswith("FULLY_CONNECTED needs 2-D weights") and "operator 1" in p for p in probs), probs


def test_conv_output_size_and_pool_options(models):
    m = _parsed(models, "mlperftiny__kws_ref_model")
    conv = _first_op(m, "CONV_2D")
    conv.options["stride_h"] = 0
    pool = _first_op(m, "AVERAGE_POOL_2D")
    del pool.options["filter_height"]
    y = m.tensors[_first_op(m, "DEPTHWISE_CONV_2D").outputs[0]]
    probs = " | ".join(_problems(m))
    assert f"operator {conv.index} (CONV_2D): strides/dilations [0, {conv.options['stride_w']}, 1, 1]" in probs
    assert f"operator {pool.index} (AVERAGE_POOL_2D)" in probs and "filter/strides [None" in probs
    y.shape = (y.shape[0], y.shape[1] + 1) + tuple(y.shape[2:])
    assert "(expected output" in " | ".join(_problems(m))


def test_message_lists_first_problems_and_counts_the_rest(models):
    from firmware_export.cgen.validate import check_model

    m = _parsed(models, "mlperftiny__kws_ref_model")
    for t in m.tensors:
        if t.scale is not None:
            t.scale[:] = np.nan
    with pytest.raises(ExportError) as exc:
        check_model(m, source="kws.tflite")
    n = sum(t.scale is not None for t in m.tensors)
    assert f"; {n - 3} more." in str(exc.value) and str(exc.value).count("scales must be finite") == 3


# -- reader and inspect --------------------------------------------------------------------------------------

def _set_dim(data: bytes, tensor: int, j: int, value: int) -> bytes:
    lay = fz.layout(data)
    b = bytearray(data)
    struct.pack_into("<i", b, lay.tensors[tensor]["shape"][0] + 4 * j, value)
    return bytes(b)


def test_reader_rejects_negative_dimensions_in_one_line(models):
    from toolchain.tflite_model import parse_tflite

    data = _set_dim(models["tflm__hello_world_int8"], 0, 0, -3)
    with pytest.raises(ModelError) as exc:
        parse_tflite(data, "hw.tflite")
    assert "negative tensor dimension" in str(exc.value) and "\n" not in str(exc.value)


def test_inspect_survives_rank_zero_fc_weights_and_fuzzed_files(models):
    from toolchain.model_inspect import inspect_tflite
    from toolchain.tflite_model import parse_tflite

    m = _parsed(models, "tflm__hello_world_int8")
    w = m.tensors[m.operators[0].inputs[1]]
    w.shape = ()
    ins = inspect_tflite(m)
    assert ins.layers[0].type == "FULLY_CONNECTED" and ins.layers[0].macs >= 0
    outcomes = collections.Counter()
    for seed in range(FUZZ_SEED, FUZZ_SEED + 300):
        _, kind, data = fz.make_case(models, seed)
        try:
            ins = inspect_tflite(parse_tflite(data, "fuzz.tflite"))
        except ModelError as exc:
            assert "\n" not in str(exc)
            outcomes["refused"] += 1
            continue
        outcomes["inspected"] += 1
        assert all(t["bytes"] >= 0 for t in ins.tensors), (seed, kind)
        assert ins.totals.peak_activation_bytes >= 0 and ins.totals.weight_bytes >= 0
    assert outcomes["refused"] > 0 and outcomes["inspected"] > 0, outcomes


# -- CLI ------------------------------------------------------------------------------------------------------

def test_cli_max_bytes_refuses_a_model_above_it_and_tflm(models, tmp_path, capsys):
    from toolchain.cli import main

    model = tmp_path / "kws.tflite"
    model.write_bytes(models["mlperftiny__kws_ref_model"])
    for argv, text in ((["--format", "c", "--max-bytes", "4096"], "the model is malformed: tensor size must be "
                                                                   "within the byte limit"),
                       (["--max-bytes", "4096"], "--max-bytes applies to --format c only")):
        with pytest.raises(SystemExit) as exc:
            main(["export", str(model), "-o", str(tmp_path / "out"), *argv])
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2 and len(err) == 1 and text in err[0], err
        assert not (tmp_path / "out").exists()


def test_cli_reshape_cycle_fails_fast_instead_of_hanging(models, tmp_path):
    rng = __import__("random").Random(5)
    data = None
    while data is None:
        data = fz.mutate(models["mlperftiny__kws_ref_model"], "reshape_cycle", rng)
    model = tmp_path / "fuzz.tflite"
    model.write_bytes(data)
    o = fz.run_cli_case(model, tmp_path / "out", timeout=60)
    assert o.status == "exit2" and fz.check_outcome(o) == [], o
    assert "the model is malformed" in o.stderr[0] and o.seconds < 30


def test_golden_inputs_are_bounded(models, tmp_path, monkeypatch):
    import firmware_export.cgen as cgen

    model = tmp_path / "kws.tflite"
    model.write_bytes(models["mlperftiny__kws_ref_model"])
    monkeypatch.setattr(cgen, "GOLDEN_MAX_BYTES", 3 * 490)  # kws: 490 int8 input bytes
    man = cgen.generate_c_engine(model, tmp_path / "a", golden_vectors=10, measure_tflm=False)
    assert man["golden_vectors"] == 3
    monkeypatch.setattr(cgen, "GOLDEN_MAX_BYTES", 100)
    man = cgen.generate_c_engine(model, tmp_path / "b", golden_vectors=10, measure_tflm=False)
    assert man["golden_vectors"] == 0 and "above 100 bytes" in man["golden_note"]


def test_outcome_check_flags_crashes_hangs_and_noisy_failures():
    ok2 = fz.Outcome("exit2", 0.1, ["error: the model is malformed: x. Received: f"], False)
    assert fz.check_outcome(ok2) == [] and fz.check_outcome(fz.Outcome("exit0", 0.1, [], True, 64)) == []
    for bad in (fz.Outcome("timeout", 60, [], False), fz.Outcome("exit3", 1, ["Traceback", "IndexError"], False),
                fz.Outcome("signal11", 1, [], False), fz.Outcome("exit2", 1, ["error: a", "error: b"], False),
                fz.Outcome("exit2", 1, ["error: a"], True), fz.Outcome("exit0", 1, [], True, None)):
        assert fz.check_outcome(bad), bad


def test_fuzzed_models_exit_0_or_2_with_one_line_and_never_hang(models, tmp_path):
    outcomes: collections.Counter = collections.Counter()
    failures = []
    for seed in range(FUZZ_SEED, FUZZ_SEED + FUZZ_CASES):
        name, kind, data = fz.make_case(models, seed)
        d = tmp_path / str(seed)
        d.mkdir()
        (d / "fuzz.tflite").write_bytes(data)
        o = fz.run_cli_case(d / "fuzz.tflite", d / "out", timeout=60)
        outcomes[o.status] += 1
        problems = fz.check_outcome(o)
        if o.arena_bytes is not None and o.arena_bytes > 1 << 31:  # e.g. the 8,589,934,590,440-byte arena
            problems.append(f"arena of {o.arena_bytes} bytes")
        if problems:
            failures.append((seed, name, kind, problems))
    assert not failures, failures[:5]
    assert outcomes["exit2"] > FUZZ_CASES // 2 and outcomes["exit0"] > 0, outcomes


def test_reshape_with_an_absent_shape_operand_is_refused(models, tmp_path):
    """LiteRT's RESHAPE dereferences a listed shape operand: -1 there segfaulted the golden-vector run (fuzz seed
    1097 of benchmarks/fuzz_cengine.py); the validation refuses it, so the CLI exits 2."""
    rs_model = _parsed(models, "tflm__micro_speech_quantized")
    rs = _first_op(rs_model, "RESHAPE")
    rs_model.operators[rs.index] = dataclasses.replace(rs, inputs=(rs.inputs[0], -1))
    assert any("operator must have the number of operands" in p for p in _problems(rs_model))
    _, kind, data = fz.make_case(models, 1097)
    (tmp_path / "fuzz.tflite").write_bytes(data)
    o = fz.run_cli_case(tmp_path / "fuzz.tflite", tmp_path / "out", timeout=60)
    assert o.status == "exit2" and fz.check_outcome(o) == [] and "the model is malformed" in o.stderr[0], o
