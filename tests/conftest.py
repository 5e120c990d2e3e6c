"""Shared pytest fixtures.

* ``trained_seed001``: a real run folder (seed001_basic_cnn trained 2 epochs on ``digits``), trained once per test
  session (per xdist worker) through ``toolchain.train.train``. Other stages (quantise, inspect, export, verify)
  use it as their input model.
* ``reference_models_dir``: ``../shared/models/reference`` (published int8 TFLite models); skips when absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# a developer's own TFLM tree must not switch every export test to the on-target arena measurement
os.environ.pop("TOOLCHAIN_TFLM_DIR", None)

REFERENCE_MODELS = Path(__file__).resolve().parents[2] / "shared" / "models" / "reference"


@pytest.fixture(scope="session")
def trained_seed001(tmp_path_factory) -> Path:
    """Run folder with model.keras / metadata.json / history.json / training.png (2 epochs, ~96 % on digits)."""
    from toolchain.train import TrainOptions, train

    out = tmp_path_factory.mktemp("trained") / "seed001"
    train("seed001_basic_cnn", "digits", out, TrainOptions(epochs=2, batch_size=32, seed=0))
    return out


@pytest.fixture(scope="session")
def reference_models_dir() -> Path:
    if not REFERENCE_MODELS.is_dir() or not any(REFERENCE_MODELS.glob("*.tflite")):
        pytest.skip(f"reference models not found in {REFERENCE_MODELS}")
    return REFERENCE_MODELS
