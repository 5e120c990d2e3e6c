"""Typed records (toolchain.specs), the normalisation inference rule and the input-distribution distance."""

from __future__ import annotations

import numpy as np
import pytest

from toolchain.data import infer_normalisation, input_statistics
from toolchain.errors import UsageError
from toolchain.specs import (DatasetSpec, InputStats, ModelInputTransform, RunRecord, SourceNormalisation,
                             SplitParams)
from toolchain.verify.gates import input_distance


def test_dataset_spec_parses_once_and_refuses_bad_forms():
    assert DatasetSpec.parse(" digits ") == DatasetSpec("digits")
    s = DatasetSpec.parse("npz:/a/b.npz", input_scale=2)
    assert (s.kind, s.arg, s.input_scale, s.text) == ("npz", "/a/b.npz", 2.0, "npz:/a/b.npz")
    for bad in ("", "mnist", "npz:", "csv:x"):
        with pytest.raises(UsageError):
            DatasetSpec.parse(bad)
    for scale in (0, -1, float("nan"), float("inf")):
        with pytest.raises(UsageError, match="--input-scale"):
            DatasetSpec.parse("digits", input_scale=scale)


@pytest.mark.parametrize("x, scale, provenance", [
    (np.array([[0, 255]], np.uint8), 1 / 255, "inferred"),
    (np.array([[0.0, 0.5, 1.0]], np.float32), 1.0, "inferred"),
    (np.array([[0.0, 16.0]], np.float32), 1 / 255, "inferred"),     # values in (1, 255]: the 0..255 convention
    (np.array([[0, 1000]], np.int32), 1 / 1000, "inferred"),         # above 255: divided by the maximum
    (np.array([[True, False]]), 1.0, "inferred"),
])
def test_inference_rule(x, scale, provenance):
    n = infer_normalisation(x)
    assert n.scale == pytest.approx(scale) and n.provenance == provenance and n.detail


def test_run_record_round_trip_and_reading_older_metadata():
    rec = RunRecord(DatasetSpec.parse("digits"), SplitParams(seed=3),
                    SourceNormalisation(1 / 16, "declared", "digits: pixels 0..16"),
                    ModelInputTransform((28, 28, 1), "bilinear"), labels=tuple("0123456789"), test_accuracy=0.9,
                    calibration=InputStats(10, 0.0, 1.0, 0.3, 0.2, (0.0, 1.0), 0.0))
    meta = {**rec.to_dict(), "float_test_accuracy": 0.9}
    assert RunRecord.from_metadata(meta) == rec
    old = {"dataset": "digits", "seed": 0, "split": {"val_fraction": 0.1, "test_fraction": 0.2},
           "preprocessing": {"input_shape": [28, 28, 1], "scale": 0.0625, "resize": "bilinear", "channels": "keep"}}
    back = RunRecord.from_metadata(old)
    assert back.normalisation.scale == 0.0625 and back.normalisation.provenance == "recorded"
    assert back.transform == ModelInputTransform((28, 28, 1), "bilinear") and back.split == SplitParams()
    assert RunRecord.from_metadata(None) is None and RunRecord.from_metadata({"model": "x"}) is None


def test_input_distance_against_numpy():
    rng = np.random.default_rng(0)
    cal = rng.random((200, 8, 8, 1)).astype(np.float32)
    c = input_statistics(cal, (0.0, 1.0))
    assert c.mean == pytest.approx(float(np.mean(cal.astype(np.float64))))
    assert c.std == pytest.approx(float(np.std(cal.astype(np.float64))))
    same = input_statistics(rng.random((300, 8, 8, 1)).astype(np.float32), (0.0, 1.0))
    assert input_distance(same, c) < 0.05
    small = input_statistics(cal / 16, (0.0, 1.0))
    assert input_distance(small, c) == pytest.approx(4.0, rel=1e-3)  # |log2(1/16)| = 4 dominates
    shifted = input_statistics(cal + 1.0, (0.0, 1.0))  # every value now above the range
    e = shifted
    expected = max(abs(e.mean - c.mean) / c.std, abs(np.log2(e.std / c.std)), (e.outside_input_range - 0.0) / 0.05)
    assert input_distance(e, c) == pytest.approx(expected) and e.outside_input_range > 0.99
