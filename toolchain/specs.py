"""Typed records that flow between the stages: parsed once, written with every artifact, read back by every stage.

* ``DatasetSpec``: a data set source (``digits``, ``npz:PATH``, ``idx:DIR``, ``folder:DIR``, ``keras:NAME``), parsed
  once from the command line, with an optional declared ``--input-scale``.
* ``SplitParams``: seed and fractions of the deterministic, stratified split (the defaults live here only).
* ``SourceNormalisation``: how the data source maps raw values to [0, 1], and where that came from.
* ``ModelInputTransform``: what the *model* needs: input shape and the resize method (channel conversion follows
  from the source's channel count).
* ``InputStats``: statistics of preprocessed model inputs (recorded at calibration, recomputed at verification).
* ``RunRecord``: what a run was made from; stored in ``metadata.json`` and in every ``.tflite`` sidecar.

Only the standard library and NumPy-free code here: every layer imports this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from toolchain.errors import UsageError

SPEC_KINDS = ("digits", "npz", "idx", "folder", "keras")
SPEC_FORMS = "digits, npz:PATH, idx:DIR, folder:DIR, keras:mnist, keras:fashion_mnist, keras:cifar10"
RESIZE_MODES = ("none", "bilinear", "pad", "flatten")
PROVENANCES = ("declared", "inferred", "recorded")


@dataclass(frozen=True)
class DatasetSpec:
    """A data set source. ``input_scale``: a declared raw → [0, 1] multiplier that overrides the source's own."""

    kind: str
    arg: str = ""
    input_scale: float | None = None

    @classmethod
    def parse(cls, text: str, input_scale: float | None = None) -> "DatasetSpec":
        if not isinstance(text, str) or not text.strip():
            raise UsageError(f"empty dataset spec; valid forms: {SPEC_FORMS}", received=repr(text))
        text = text.strip()
        if input_scale is not None:
            if not isinstance(input_scale, (int, float)) or not math.isfinite(input_scale) or input_scale <= 0:
                raise UsageError("--input-scale must be a positive finite number (raw value x scale = [0, 1] value)",
                                 received=f"--input-scale={input_scale}")
            input_scale = float(input_scale)
        if text == "digits":
            return cls("digits", "", input_scale)
        kind, sep, arg = text.partition(":")
        if sep and kind in SPEC_KINDS[1:]:
            if not arg:
                raise UsageError(f"dataset spec '{kind}:' needs a value; valid forms: {SPEC_FORMS}", received=text)
            return cls(kind, arg, input_scale)
        raise UsageError(f"unknown dataset spec; valid forms: {SPEC_FORMS}", received=text)

    @property
    def text(self) -> str:
        return self.kind if self.kind == "digits" else f"{self.kind}:{self.arg}"

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class SplitParams:
    """The split of a data set: ``val_fraction`` of the training part for validation, ``test_fraction`` of the whole
    set for test when the source has no test split of its own."""

    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        for name in ("val_fraction", "test_fraction"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < float(v) < 1.0:
                raise UsageError(f"{name} must be a number strictly between 0 and 1", received=f"{name}={v}")

    def to_dict(self) -> dict[str, Any]:
        return {"seed": int(self.seed), "val_fraction": float(self.val_fraction),
                "test_fraction": float(self.test_fraction)}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, seed: int | None = None) -> "SplitParams":
        d = d or {}
        default = cls()
        test_fraction = d.get("test_fraction")
        return cls(seed=int(d.get("seed", seed if seed is not None else default.seed) or 0),
                   val_fraction=float(d.get("val_fraction") or default.val_fraction),
                   test_fraction=float(test_fraction if test_fraction is not None else default.test_fraction))


@dataclass(frozen=True)
class SourceNormalisation:
    """``x01 = clip(raw * scale, 0, 1)``. ``provenance``: declared (by the source or an option), inferred (from the
    dtype or the value range) or recorded (read back from the run that made the model); ``detail`` says which."""

    scale: float
    provenance: str
    detail: str

    def __post_init__(self) -> None:
        if not isinstance(self.scale, (int, float)) or not math.isfinite(self.scale) or self.scale <= 0:
            raise UsageError("normalisation scale must be a positive finite number", received=f"scale={self.scale}")
        if self.provenance not in PROVENANCES:
            raise UsageError(f"normalisation provenance must be one of {', '.join(PROVENANCES)}",
                             received=self.provenance)

    @property
    def max_value(self) -> float:
        """The raw value that maps to 1.0."""
        return 1.0 / self.scale

    def describe(self) -> str:
        return f"raw x {self.scale:.6g} (1/{self.max_value:g}), {self.provenance}: {self.detail}"

    def recorded(self) -> "SourceNormalisation":
        return SourceNormalisation(self.scale, "recorded", f"{self.provenance} at training: {self.detail}")

    def to_dict(self) -> dict[str, Any]:
        return {"scale": float(self.scale), "max_value": float(self.max_value), "provenance": self.provenance,
                "detail": self.detail}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SourceNormalisation":
        if not isinstance(d, dict) or "scale" not in d:
            raise UsageError("normalisation record must be a mapping with a scale", received=d)
        return cls(float(d["scale"]), str(d.get("provenance", "recorded")), str(d.get("detail", "")))


def check_input_shape(input_shape: Any) -> tuple[int, ...]:
    """A model input shape without batch: ``(features,)``, ``(H, W)`` or ``(H, W, C)`` with C 1 or 3."""
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise UsageError("input shape must be a sequence of positive integers",
                         received=f"input_shape={input_shape!r}") from None
    if not 1 <= len(shape) <= 3 or any(d <= 0 for d in shape):
        raise UsageError("input shape must be (features,), (H, W) or (H, W, C) with positive sizes",
                         received=f"input_shape={input_shape!r}")
    if len(shape) == 3 and shape[2] not in (1, 3):
        raise UsageError("image input shape must have 1 or 3 channels", received=f"input_shape={shape}")
    return shape


@dataclass(frozen=True)
class ModelInputTransform:
    """The model's side of preprocessing: its input shape (no batch) and how other sizes are brought to it."""

    input_shape: tuple[int, ...]
    resize: str = "bilinear"

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", check_input_shape(self.input_shape))
        if self.resize not in RESIZE_MODES + ("auto",):
            raise UsageError(f"resize must be auto or one of {', '.join(RESIZE_MODES)}", received=self.resize)

    def to_dict(self) -> dict[str, Any]:
        return {"input_shape": list(self.input_shape), "resize": self.resize}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelInputTransform":
        if not isinstance(d, dict) or "input_shape" not in d:
            raise UsageError("model input transform record must be a mapping with an input_shape", received=d)
        return cls(tuple(d["input_shape"]), str(d.get("resize", "bilinear")))


@dataclass(frozen=True)
class InputStats:
    """Statistics of preprocessed float inputs; ``outside_input_range`` is the share of values outside the int8
    input quantisation range ``input_range`` (None when the model input is not quantised)."""

    samples: int
    min: float
    max: float
    mean: float
    std: float
    input_range: tuple[float, float] | None = None
    outside_input_range: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "min": self.min, "max": self.max, "mean": self.mean, "std": self.std,
                "input_range": list(self.input_range) if self.input_range else None,
                "outside_input_range": self.outside_input_range}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InputStats":
        try:
            rng = d.get("input_range")
            return cls(int(d["samples"]), float(d["min"]), float(d["max"]), float(d["mean"]), float(d["std"]),
                       (float(rng[0]), float(rng[1])) if rng else None,
                       None if d.get("outside_input_range") is None else float(d["outside_input_range"]))
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            raise UsageError("input statistics record is malformed", received=d) from None


@dataclass(frozen=True)
class RunRecord:
    """What a model was made from. ``test_accuracy``: float accuracy on the test split at training time."""

    dataset: DatasetSpec
    split: SplitParams = field(default_factory=SplitParams)
    normalisation: SourceNormalisation | None = None
    transform: ModelInputTransform | None = None
    labels: tuple[str, ...] | None = None
    test_accuracy: float | None = None
    calibration: InputStats | None = None

    @property
    def num_classes(self) -> int | None:
        return len(self.labels) if self.labels else None

    def to_dict(self) -> dict[str, Any]:
        """The record's keys as stored in ``metadata.json`` / sidecars."""
        return {"dataset": self.dataset.text, "split": self.split.to_dict(), "seed": self.split.seed,
                "normalisation": self.normalisation.to_dict() if self.normalisation else None,
                "transform": self.transform.to_dict() if self.transform else None,
                "labels": list(self.labels) if self.labels else None, "num_classes": self.num_classes,
                "calibration_stats": self.calibration.to_dict() if self.calibration else None}

    @classmethod
    def from_metadata(cls, meta: dict[str, Any] | None) -> "RunRecord | None":
        """Read a record from run metadata or a sidecar (older files carry one combined ``preprocessing``)."""
        if not meta or not meta.get("dataset"):
            return None
        pre = meta.get("preprocessing") or {}
        norm = meta.get("normalisation")
        normalisation = SourceNormalisation.from_dict(norm) if norm else (
            SourceNormalisation(float(pre["scale"]), "recorded", "preprocessing scale of the run")
            if pre.get("scale") else None)
        tr = meta.get("transform")
        transform = ModelInputTransform.from_dict(tr) if tr else (
            ModelInputTransform(tuple(pre["input_shape"]), str(pre.get("resize", "bilinear")))
            if pre.get("input_shape") else None)
        labels = meta.get("labels")
        acc = meta.get("float_test_accuracy")
        cal = meta.get("calibration_stats")
        return cls(dataset=DatasetSpec.parse(str(meta["dataset"])),
                   split=SplitParams.from_dict(meta.get("split"), meta.get("seed")),
                   normalisation=normalisation, transform=transform,
                   labels=tuple(str(v) for v in labels) if labels else None,
                   test_accuracy=float(acc) if isinstance(acc, (int, float)) else None,
                   calibration=InputStats.from_dict(cal) if cal else None)
