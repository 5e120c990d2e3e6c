"""Raw data set splits: the ``DatasetSplits`` container and the deterministic, class-stratified splitting rules.

Splits are seeded and stratified by class (``SplitParams``: ``val_fraction`` of the training part for validation,
``test_fraction`` of the whole set for test when the source has no test split of its own).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from toolchain.data.preprocess import infer_normalisation
from toolchain.errors import DatasetError, UsageError
from toolchain.specs import DatasetSpec, SourceNormalisation, SplitParams

SPLIT_NAMES = ("train", "val", "test")


@dataclass
class DatasetSplits:
    """Raw arrays (x as stored by the source, y int64), class names and the source's normalisation."""

    spec: DatasetSpec
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    labels: list[str]
    normalisation: SourceNormalisation
    split: SplitParams
    test_source: str = "dataset"  # "dataset": the source's own test split; "split": carved out with test_fraction

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def max_value(self) -> float:
        """The raw value that maps to 1.0 (e.g. 16 for digits, 255 for 8-bit images)."""
        return self.normalisation.max_value

    def part(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of the ``train``, ``val`` or ``test`` split."""
        if name not in SPLIT_NAMES:
            raise UsageError(f"split must be one of {', '.join(SPLIT_NAMES)}", received=name)
        return getattr(self, "x_" + name), getattr(self, "y_" + name)

    def summary(self) -> dict[str, Any]:
        return {
            "spec": self.spec.text,
            "sample_shape": list(self.sample_shape),
            "dtype": str(self.x_train.dtype),
            "num_classes": self.num_classes,
            "labels": list(self.labels),
            "train": int(len(self.y_train)),
            "val": int(len(self.y_val)),
            "test": int(len(self.y_test)),
            "max_value": self.max_value,
            "normalisation": self.normalisation.to_dict(),
            "split": {**self.split.to_dict(), "test_source": self.test_source},
        }


def _allocate(counts: np.ndarray, total: int, cap: np.ndarray) -> np.ndarray:
    """Split ``total`` across classes proportionally to ``counts`` (largest remainder, never above ``cap``)."""
    counts = counts.astype(np.float64)
    exact = counts * (total / counts.sum()) if counts.sum() else counts
    take = np.minimum(np.floor(exact).astype(np.int64), cap)
    remainder = exact - np.floor(exact)
    order = np.lexsort((np.arange(len(counts)), -remainder))  # largest remainder first, then class order
    left = total - int(take.sum())
    while left > 0:
        progressed = False
        for k in order:
            if left == 0:
                break
            if take[k] < cap[k]:
                take[k] += 1
                left -= 1
                progressed = True
        if not progressed:
            break
    return take


def _stratified_take(y: np.ndarray, fraction: float, rng: np.random.Generator,
                     keep_one: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Return (rest_idx, taken_idx): a stratified, seeded ``fraction`` of ``y`` taken out."""
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    total = int(round(len(y) * fraction))
    if fraction > 0:
        total = max(total, 1)
    cap = counts - 1 if keep_one else counts
    take = _allocate(counts, total, np.maximum(cap, 0))
    rest, taken = [], []
    for k in range(len(classes)):
        idx = np.flatnonzero(inverse == k)
        idx = idx[rng.permutation(len(idx))]
        taken.append(idx[: take[k]])
        rest.append(idx[take[k]:])
    rest_idx = np.concatenate(rest) if rest else np.zeros(0, np.int64)
    taken_idx = np.concatenate(taken) if taken else np.zeros(0, np.int64)
    return rest_idx[rng.permutation(len(rest_idx))], taken_idx[rng.permutation(len(taken_idx))]


def calibration_indices(y: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` deterministic, class-stratified indices into ``y`` (sorted). All indices if ``n >= len(y)``."""
    y = np.asarray(y).reshape(-1)
    if n <= 0:
        raise UsageError("number of calibration samples must be positive", received=n)
    if n >= len(y):
        return np.arange(len(y), dtype=np.int64)
    rng = np.random.default_rng(seed)
    _, taken = _stratified_take(y, n / len(y), rng, keep_one=False)
    return np.sort(taken[:n]).astype(np.int64)


def finish(spec: DatasetSpec, x_train, y_train, x_test, y_test, labels, *, split: SplitParams,
           normalisation: SourceNormalisation | None, source: str, own_test: bool,
           rng: np.random.Generator | None = None) -> DatasetSplits:
    """Carve the validation split from train (stratified, seeded), validate every split, settle the normalisation
    (a declared ``--input-scale`` wins, then the source's own, else the inference rule)."""
    rng = rng if rng is not None else np.random.default_rng(split.seed)
    tr, va = _stratified_take(y_train, split.val_fraction, rng)
    parts = {"x_train": x_train[tr], "y_train": y_train[tr], "x_val": x_train[va], "y_val": y_train[va],
             "x_test": x_test, "y_test": y_test}
    for part in SPLIT_NAMES:
        if len(parts["y_" + part]) == 0:
            raise DatasetError(f"the {part} split is empty (too few samples for the requested fractions)",
                               received=f"{source}: {len(y_train) + (len(y_test) if own_test else 0)} samples")
    if spec.input_scale is not None:
        normalisation = SourceNormalisation(spec.input_scale, "declared", "--input-scale")
    elif normalisation is None:
        normalisation = infer_normalisation(x_train)
    return DatasetSplits(spec=spec, labels=list(labels), normalisation=normalisation, split=split,
                         test_source="dataset" if own_test else "split", **parts)


def split_all(spec: DatasetSpec, x, y, labels, *, split: SplitParams, normalisation: SourceNormalisation | None,
              source: str) -> DatasetSplits:
    """Hold out a stratified ``test_fraction`` for test, then carve validation from the rest."""
    rng = np.random.default_rng(split.seed)
    rest, te = _stratified_take(y, split.test_fraction, rng)
    if len(te) == 0 or len(rest) == 0:
        raise DatasetError("the test split is empty (too few samples for the requested fractions)",
                           received=f"{source}: {len(y)} samples")
    return finish(spec, x[rest], y[rest], x[te], y[te], labels, split=split, normalisation=normalisation,
                  source=source, own_test=False, rng=rng)
