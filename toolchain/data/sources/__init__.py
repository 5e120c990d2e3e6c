"""Data set sources, one module per source, in a registry keyed by the spec kind.

Each module has ``FORM`` (how the spec is written), ``rows()`` (what ``toolchain datasets`` lists, and whether it is
usable offline now) and ``load(spec: DatasetSpec, split: SplitParams) -> DatasetSplits`` (raw arrays, the split, and
the source's normalisation). Third-party readers (scikit-learn, Pillow) are imported lazily inside ``load``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from toolchain.data.sources import digits, folder, idx, keras_cache, npz
from toolchain.data.splits import DatasetSplits
from toolchain.specs import DatasetSpec, SplitParams

REGISTRY: dict[str, ModuleType] = {"digits": digits, "npz": npz, "idx": idx, "folder": folder, "keras": keras_cache}


def load_source(spec: DatasetSpec, split: SplitParams) -> DatasetSplits:
    return REGISTRY[spec.kind].load(spec, split)


def list_sources() -> list[dict[str, Any]]:
    """The data set sources and whether each is usable offline right now."""
    return [row for module in REGISTRY.values() for row in module.rows()]
