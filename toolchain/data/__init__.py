"""Datasets: sources (one module per source, registered), seeded stratified splits, and the two-part recorded
preprocessing (source normalisation + model input transform) shared by training, quantisation, verification and
devices. Only NumPy is imported at module import; scikit-learn and Pillow are imported lazily.

Spec forms: ``digits`` (scikit-learn's bundled 8x8 digits, pixels 0..16), ``npz:PATH``, ``idx:DIR``,
``folder:DIR``, ``keras:NAME`` (``mnist``, ``fashion_mnist``, ``cifar10`` from the Keras cache only).
"""

from toolchain.data.loading import (PreparedData, PreparedSplit, load_dataset, load_split,  # noqa: F401
                                    prepare_data, prepare_loaded, resolve_normalisation)
from toolchain.data.preprocess import (Preprocessing, compose, infer_normalisation, input_statistics,  # noqa: F401
                                       model_transform, pad_or_crop, resize_bilinear)
from toolchain.data.sources import list_sources as list_datasets  # noqa: F401
from toolchain.data.sources.idx import read_idx  # noqa: F401
from toolchain.data.sources.keras_cache import KERAS_DATASETS, keras_cache_dir, keras_cached_path  # noqa: F401
from toolchain.data.splits import SPLIT_NAMES, DatasetSplits, calibration_indices  # noqa: F401


def make_preprocessing(ds: DatasetSplits, input_shape, resize: str = "auto") -> Preprocessing:
    """The preprocessing mapping ``ds``'s raw samples to a model input of ``input_shape`` (a new model's)."""
    return compose(ds.normalisation, model_transform(input_shape, ds.sample_shape, resize), ds.sample_shape,
                   ds.spec.text)
