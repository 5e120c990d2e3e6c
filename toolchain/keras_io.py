"""Loading Keras models: one place that validates the file and turns Keras' many exception types into ModelError.

``check_keras_file`` looks at the container without importing Keras (whose message for a non-zip ``.keras`` is a
misleading "File not found"); ``load_keras_model`` then loads it with ``safe_mode`` (no arbitrary code) and without
its training configuration.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from toolchain.errors import ModelError

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def check_keras_file(path: str | os.PathLike) -> Path:
    """A ``.keras``/``.h5`` file, or a training run folder holding ``model.keras``; ModelError otherwise."""
    p = Path(path)
    if p.is_dir():
        candidate = p / "model.keras"
        if not candidate.is_file():
            raise ModelError("folder has no model.keras (expected a .keras file or a training run folder)",
                             received=str(p))
        p = candidate
    if not p.exists():
        raise ModelError("model file not found", received=str(p))
    if not p.is_file():
        raise ModelError("model path is not a regular file", received=str(p))
    suffix = p.suffix.lower()
    if suffix not in KERAS_SUFFIXES:
        raise ModelError("expected a Keras model file (.keras) or a training run folder", received=str(p))
    if p.stat().st_size == 0:
        raise ModelError("Keras model file is empty", received=str(p))
    if suffix == ".keras" and not zipfile.is_zipfile(p):
        raise ModelError("not a valid .keras file (expected a zip archive)", received=str(p))
    if suffix in (".h5", ".hdf5"):
        with open(p, "rb") as fh:
            if fh.read(8) != _HDF5_SIGNATURE:
                raise ModelError("not a valid HDF5 Keras file", received=str(p))
    return p


def load_keras_model(path: str | os.PathLike, *, what: str = "the Keras model"):
    """Load a checked Keras model (compile=False, safe_mode=True; the zoo's custom layers registered first)."""
    p = check_keras_file(path)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import models  # noqa: F401  (registers the zoo's custom layers, if any)
    except ImportError:
        pass
    import keras

    try:
        return keras.saving.load_model(str(p), compile=False, safe_mode=True)
    except Exception as exc:  # keras raises many types (ValueError, OSError, BadZipFile, TypeError...)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelError(f"cannot load {what}", received=f"{p}: {type(exc).__name__}: {first}") from exc
