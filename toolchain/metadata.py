"""Run metadata (``metadata.json`` beside ``model.keras``) and TFLite sidecars (``OUT.json`` beside ``OUT.tflite``).

Later stages find everything from a model path alone:

* ``load_run_metadata(path)``: for ``DIR/model.keras`` (or ``DIR``) reads ``DIR/metadata.json``.
* ``load_tflite_metadata(path)``: for ``X.tflite`` reads the sidecar ``X.json`` if present, otherwise the
  ``toolchain`` entry embedded in the .tflite metadata (written by ``quantise``/``convert``), else ``None``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from toolchain.errors import ModelError

RUN_METADATA = "metadata.json"
TFLITE_METADATA_NAME = "toolchain"  # name of the entry in the .tflite's metadata table
SIDECAR_FORMAT = "toolchain-tflite-metadata/1"


def sidecar_path(tflite_path: str | os.PathLike) -> Path:
    return Path(tflite_path).with_suffix(".json")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelError("metadata file is not valid JSON", received=f"{path} ({exc.msg} at line {exc.lineno})") from exc
    except OSError as exc:
        raise ModelError("cannot read metadata file", received=f"{path} ({exc.strerror})") from exc


def load_run_metadata(model_path: str | os.PathLike) -> dict[str, Any] | None:
    p = Path(model_path)
    folder = p if p.is_dir() else p.parent
    meta = folder / RUN_METADATA
    return _read_json(meta) if meta.is_file() else None


def load_tflite_metadata(tflite_path: str | os.PathLike) -> dict[str, Any] | None:
    side = sidecar_path(tflite_path)
    if side.is_file():
        return _read_json(side)
    try:
        from toolchain.tflite_model import load_tflite

        model = load_tflite(tflite_path)
    except Exception:  # unreadable models are reported by the caller's own loader
        return None
    raw = model.metadata.get(TFLITE_METADATA_NAME)
    if raw:
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
    return None


def load_any_metadata(model_path: str | os.PathLike) -> dict[str, Any] | None:
    """Metadata for a .keras (run folder) or a .tflite (sidecar / embedded)."""
    p = Path(model_path)
    if p.suffix == ".tflite":
        return load_tflite_metadata(p)
    return load_run_metadata(p)
