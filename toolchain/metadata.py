"""Run metadata (``metadata.json`` beside ``model.keras``) and TFLite sidecars (``OUT.json`` beside ``OUT.tflite``).

Later stages find everything from a model path alone:

* ``load_run_metadata(path)``: for ``DIR/model.keras`` (or ``DIR``) reads ``DIR/metadata.json``.
* ``load_tflite_metadata(path)``: for ``X.tflite`` reads the sidecar ``X.json`` if present, otherwise the
  ``toolchain`` entry embedded in the .tflite metadata (written by ``quantise``/``convert``), else ``None``.

A sidecar and its model cannot disagree: the sidecar records ``tflite_sha256`` and is accepted only when that is the
sha256 of the .tflite beside it. A mismatch (e.g. a run killed between writing the .tflite and its sidecar, or a
model replaced by hand) or a sidecar without ``tflite_sha256`` raises ``ModelError`` naming both files. The embedded
entry is part of the model's own bytes, so it always belongs to the model it is read from.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from toolchain.errors import ModelError
from toolchain.fsutil import sha256_file

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


_MISMATCH_HINT = "re-run quantise/convert or delete the sidecar"


def _short(digest: str) -> str:
    return digest[:12] + "\u2026"


def check_sidecar(tflite_path: str | os.PathLike, sidecar: Any, side: Path) -> dict[str, Any]:
    """Return ``sidecar`` if it records the sha256 of ``tflite_path``; else ``ModelError`` naming both files."""
    model = Path(tflite_path)
    try:
        actual = sha256_file(model)
    except OSError as exc:
        raise ModelError("cannot read model file", received=f"{model} ({exc.strerror})") from exc
    if not isinstance(sidecar, dict):
        raise ModelError(f"sidecar metadata is not a JSON object; {_MISMATCH_HINT}",
                         received=f"{side} holds a {type(sidecar).__name__}, {model} is {_short(actual)}")
    recorded = sidecar.get("tflite_sha256")
    if not isinstance(recorded, str) or not recorded:
        raise ModelError(f"sidecar metadata records no tflite_sha256, so it cannot be matched to this model; "
                         f"{_MISMATCH_HINT}", received=f"{side} has no tflite_sha256, {model} is {_short(actual)}")
    if recorded.lower() != actual:
        raise ModelError(f"sidecar metadata does not belong to this model (sha256 mismatch); {_MISMATCH_HINT}",
                         received=f"{side} records {_short(recorded)}, {model} is {_short(actual)}")
    return sidecar


def load_tflite_metadata(tflite_path: str | os.PathLike) -> dict[str, Any] | None:
    """The sidecar ``X.json`` (checked against the model's sha256), else the embedded entry, else ``None``."""
    side = sidecar_path(tflite_path)
    if side.is_file():
        return check_sidecar(tflite_path, _read_json(side), side)
    from toolchain.tflite_model import load_tflite

    try:
        model = load_tflite(tflite_path)
    except ModelError:  # unreadable models are reported by the caller's own loader
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
