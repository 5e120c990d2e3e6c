"""``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes, pixels 0..16)."""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

from toolchain.data.splits import DatasetSplits, split_all
from toolchain.errors import DatasetError
from toolchain.specs import DatasetSpec, SourceNormalisation, SplitParams

FORM = "digits"
DESCRIPTION = "scikit-learn 8x8 handwritten digits (1,797 images, 10 classes, embedded)"


def rows() -> list[dict[str, Any]]:
    ok = importlib.util.find_spec("sklearn") is not None
    return [{"spec": FORM, "description": DESCRIPTION, "offline": ok,
             "detail": "bundled with scikit-learn" if ok else "needs scikit-learn"}]


def load(spec: DatasetSpec, split: SplitParams) -> DatasetSplits:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DatasetError("the 'digits' data set needs scikit-learn", received="digits",
                           hint="pip install scikit-learn") from None
    d = load_digits()
    x = np.asarray(d.images).astype(np.uint8)  # values 0..16, exact integers
    y = np.asarray(d.target).astype(np.int64)
    labels = [str(int(t)) for t in d.target_names]
    return split_all(spec, x, y, labels, split=split, source="digits (scikit-learn)",
                     normalisation=SourceNormalisation(1.0 / 16.0, "declared", "digits: pixels 0..16"))
