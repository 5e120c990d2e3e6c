"""``ModelArtifact``: a model file opened once per stage (path, kind, sha256, parsed model, metadata, run record).

A ``.keras`` model is a run folder's ``model.keras`` (or any ``.keras`` file; the folder itself is accepted) with
its ``metadata.json``; a ``.tflite`` is parsed with the project's flatbuffer reader and carries its sidecar (or
embedded) metadata. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolchain.errors import ModelError, UsageError
from toolchain.specs import RunRecord
from toolchain.tflite_model import TFLiteModel

KERAS_SUFFIXES = (".keras", ".h5")


@dataclass(frozen=True)
class ModelArtifact:
    path: Path
    kind: str                         # "keras" | "tflite"
    sha256: str
    size_bytes: int
    metadata: dict[str, Any] | None   # run metadata.json, or the .tflite's sidecar / embedded record
    record: RunRecord | None
    tflite: TFLiteModel | None = None  # the parsed flatbuffer of a .tflite

    @property
    def precision(self) -> str:
        """int8 (integer I/O, or int8 weights with a QUANTIZE), int16x8, float16, dynamic or float32."""
        if self.tflite is None:
            return "float32"
        m = self.tflite
        io_dtypes = {m.tensor(i).dtype for i in list(m.inputs) + list(m.outputs)}
        const_dtypes = {t.dtype for t in m.tensors if t.data is not None}
        if io_dtypes & {"int8", "uint8"}:
            return "int8"
        if "int16" in io_dtypes:
            return "int16x8"
        if "QUANTIZE" in set(m.opcode_names()) and "int8" in const_dtypes:
            return "int8"
        if "float16" in const_dtypes:
            return "float16"
        return "dynamic" if "int8" in const_dtypes else "float32"


def open_artifact(path: str | os.PathLike, role: str = "model") -> ModelArtifact:
    """Open a ``.tflite`` or ``.keras`` model (or a run folder holding ``model.keras``) and its record.
    ``role`` names it in error messages (``candidate``, ``reference``)."""
    from toolchain.fsutil import sha256_file
    from toolchain.metadata import load_run_metadata, load_tflite_metadata

    p = Path(path)
    if p.is_dir() and (p / "model.keras").is_file():
        p = p / "model.keras"
    if not p.is_file():
        raise ModelError(f"{role} model not found", received=str(p))
    suffix = p.suffix.lower()
    if suffix == ".tflite":
        from toolchain.tflite_model import load_tflite

        model = load_tflite(p)
        meta = load_tflite_metadata(p)
        return ModelArtifact(p, "tflite", sha256_file(p), p.stat().st_size, meta, RunRecord.from_metadata(meta),
                             model)
    if suffix in KERAS_SUFFIXES:
        from toolchain.keras_io import check_keras_file

        check_keras_file(p)
        meta = load_run_metadata(p)
        return ModelArtifact(p, "keras", sha256_file(p), p.stat().st_size, meta, RunRecord.from_metadata(meta))
    raise UsageError(f"unsupported {role} model file type (expected .tflite or .keras)", received=str(p))
