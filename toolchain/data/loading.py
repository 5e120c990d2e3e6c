"""``load_split``: the one way every stage (train, quantise, verify, bench, tests) gets model-ready samples.

Rule: the evaluated data's *source normalisation* comes from that source (a declared ``--input-scale`` first); it is
the run's recorded normalisation only when the data is the run's own data set. The *model input transform* comes
from the model's record (or, without one, from the model's input shape). Every choice and its provenance is returned
in ``PreparedSplit`` and reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from toolchain.data.preprocess import Preprocessing, compose, model_transform
from toolchain.data.sources import load_source
from toolchain.data.splits import SPLIT_NAMES, DatasetSplits
from toolchain.errors import DatasetError, UsageError
from toolchain.specs import DatasetSpec, ModelInputTransform, RunRecord, SourceNormalisation, SplitParams


def load_dataset(spec: str | DatasetSpec, *, split: SplitParams | None = None, seed: int | None = None,
                 val_fraction: float | None = None, test_fraction: float | None = None) -> DatasetSplits:
    """Load and split a data set (``toolchain.specs.DatasetSpec`` lists the forms)."""
    spec = spec if isinstance(spec, DatasetSpec) else DatasetSpec.parse(spec)
    if split is None:
        d = SplitParams()
        split = SplitParams(seed=d.seed if seed is None else int(seed),
                            val_fraction=d.val_fraction if val_fraction is None else val_fraction,
                            test_fraction=d.test_fraction if test_fraction is None else test_fraction)
    return load_source(spec, split)


@dataclass
class PreparedSplit:
    """Model-ready float32 samples of one split, with everything needed to report how they were made."""

    spec: DatasetSpec
    split: str
    x: np.ndarray
    y: np.ndarray
    labels: list[str]
    normalisation: SourceNormalisation
    preprocessing: Preprocessing
    transform_source: str  # "recorded" | "model input shape"
    dataset: DatasetSplits

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec.text, "split": self.split, "samples": int(len(self.y)),
                "num_classes": self.num_classes, "labels": list(self.labels), "seed": self.dataset.split.seed,
                "normalisation": self.normalisation.to_dict(), "preprocessing": self.preprocessing.to_dict(),
                "transform_source": self.transform_source}


def resolve_normalisation(ds: DatasetSplits, record: RunRecord | None) -> SourceNormalisation:
    """The data's own normalisation, or the run's recorded one when this is the run's own data set."""
    if ds.spec.input_scale is None and record is not None and record.normalisation is not None \
            and record.dataset.text == ds.spec.text:
        return record.normalisation.recorded() if record.normalisation.provenance != "recorded" \
            else record.normalisation
    return ds.normalisation


@dataclass
class PreparedData:
    """A loaded data set with the preprocessing settled for one model; ``split(name)`` gives model-ready samples."""

    dataset: DatasetSplits
    normalisation: SourceNormalisation
    transform: ModelInputTransform
    transform_source: str  # "recorded" | "model input shape"
    preprocessing: Preprocessing

    def split(self, name: str = "test", *, indices: np.ndarray | None = None,
              max_samples: int | None = None) -> PreparedSplit:
        """Preprocessed samples of split ``name``; ``indices`` selects samples (e.g. calibration draws)."""
        x_raw, y = self.dataset.part(name)
        if indices is not None:
            x_raw, y = x_raw[indices], y[indices]
        if max_samples is not None:
            x_raw, y = x_raw[:max_samples], y[:max_samples]
        if len(y) == 0:
            raise DatasetError(f"the {name} split is empty", received=self.dataset.spec.text)
        return PreparedSplit(spec=self.dataset.spec, split=name, x=self.preprocessing.apply(x_raw),
                             y=np.asarray(y, dtype=np.int64), labels=list(self.dataset.labels),
                             normalisation=self.normalisation, preprocessing=self.preprocessing,
                             transform_source=self.transform_source, dataset=self.dataset)


def prepare_data(record: RunRecord | None, *, dataset: DatasetSpec | None = None,
                 input_shape: tuple[int, ...] | None = None) -> PreparedData:
    """Load ``dataset`` (default: the record's) with the record's split and settle its preprocessing for a model
    with ``record``'s input transform (or, without one, for ``input_shape``)."""
    spec = dataset or (record.dataset if record is not None else None)
    if spec is None:
        raise UsageError("no dataset given and none recorded in the model metadata; pass --dataset SPEC",
                         received="--dataset (missing)")
    ds = load_dataset(spec, split=record.split if record is not None else SplitParams())
    return prepare_loaded(ds, record, input_shape=input_shape)


def prepare_loaded(ds: DatasetSplits, record: RunRecord | None, *,
                   input_shape: tuple[int, ...] | None = None) -> PreparedData:
    """``prepare_data`` for a data set already loaded (training loads it first to learn the class count)."""
    shape = tuple(int(d) for d in input_shape) if input_shape is not None else None
    if record is not None and record.transform is not None:
        transform = record.transform
        transform_source = "recorded"
        if shape is not None and transform.input_shape != shape:
            raise UsageError("the recorded model input transform is for another input shape than the model's",
                             received=f"{transform.input_shape} vs model input {shape}")
    elif shape is not None:
        transform = model_transform(shape, ds.sample_shape)
        transform_source = "model input shape"
    else:
        raise UsageError("the model's input shape is needed when no input transform is recorded", received=None)
    normalisation = resolve_normalisation(ds, record)
    prep = compose(normalisation, transform, ds.sample_shape, ds.spec.text)
    return PreparedData(dataset=ds, normalisation=normalisation, transform=transform,
                        transform_source=transform_source, preprocessing=prep)


def load_split(record: RunRecord | None, split: str = "test", *, dataset: DatasetSpec | None = None,
               input_shape: tuple[int, ...] | None = None, max_samples: int | None = None) -> PreparedSplit:
    """Preprocessed ``split`` of ``dataset`` (default: the record's) for a model with ``record``'s transform (or,
    without a record, for ``input_shape``)."""
    if split not in SPLIT_NAMES:
        raise UsageError(f"split must be one of {', '.join(SPLIT_NAMES)}", received=split)
    return prepare_data(record, dataset=dataset, input_shape=input_shape).split(split, max_samples=max_samples)
