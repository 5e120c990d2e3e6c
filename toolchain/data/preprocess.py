"""Preprocessing in two recorded parts, pure NumPy (no TensorFlow / PIL) so a device applies exactly what training did.

1. *Source normalisation* (``toolchain.specs.SourceNormalisation``) belongs to the data source: ``x = raw * scale``
   maps raw values to [0, 1] (``digits`` ÷16, 8-bit images ÷255, float data in [0, 1] as is, an npz's
   ``max_value``, or a declared ``--input-scale``). ``infer_normalisation`` is the rule for sources that do not
   declare one.
2. The *model input transform* (``toolchain.specs.ModelInputTransform``) belongs to the model: input shape and the
   resize method; the channel conversion (gray <-> RGB) follows from the source's channel count.

``compose`` joins both into a ``Preprocessing``, the one object that is applied (and stored for devices):
``x = clip(raw * scale, 0, 1)``, gray<->RGB, then resize (bilinear, same maths as ``tf.image.resize``), centred
pad/crop, or flatten + pad/truncate for 1-D model inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from toolchain.errors import DatasetError, UsageError
from toolchain.specs import (RESIZE_MODES, InputStats, ModelInputTransform, SourceNormalisation,
                             check_input_shape)

CHANNEL_MODES = ("keep", "gray_to_rgb", "rgb_to_gray")
_CHUNK = 4096  # samples per preprocessing chunk

# ITU-R BT.601 luma weights (the same as tf.image.rgb_to_grayscale).
_LUMA = np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)


@dataclass
class Preprocessing:
    """One recorded, reusable preprocessing step (pure NumPy).

    ``input_shape``: the model's input shape without batch, e.g. ``(28, 28, 1)``, ``(49, 10, 1)`` or ``(640,)``.
    ``scale``: multiplier mapping raw values to [0, 1] (``1/255`` for uint8 images, ``1/16`` for ``digits``).
    ``resize``: ``none`` | ``bilinear`` | ``pad`` (centred zero pad / crop) | ``flatten`` (1-D: flatten, zero pad or
    truncate to ``input_shape[0]``).
    ``channels``: ``keep`` | ``gray_to_rgb`` | ``rgb_to_gray``.
    """

    input_shape: tuple[int, ...]
    scale: float
    resize: str = "bilinear"
    channels: str = "keep"

    def __post_init__(self) -> None:
        shape = self.input_shape = check_input_shape(self.input_shape)
        try:
            self.scale = float(self.scale)
        except (TypeError, ValueError):
            raise UsageError("preprocessing scale must be a number", received=f"scale={self.scale!r}") from None
        if not np.isfinite(self.scale) or self.scale <= 0:
            raise UsageError("preprocessing scale must be a positive finite number", received=f"scale={self.scale}")
        if self.resize not in RESIZE_MODES:
            raise UsageError(f"preprocessing resize must be one of {', '.join(RESIZE_MODES)}",
                             received=f"resize={self.resize!r}")
        if self.channels not in CHANNEL_MODES:
            raise UsageError(f"preprocessing channels must be one of {', '.join(CHANNEL_MODES)}",
                             received=f"channels={self.channels!r}")
        if len(shape) == 1 and self.resize != "flatten":
            raise UsageError("a 1-D input shape needs resize='flatten'", received=f"input_shape={shape}")
        if len(shape) > 1 and self.resize == "flatten":
            raise UsageError("resize='flatten' needs a 1-D input shape", received=f"input_shape={shape}")

    # -- serialisation --------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"input_shape": list(self.input_shape), "scale": self.scale, "resize": self.resize,
                "channels": self.channels}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocessing":
        if not isinstance(d, dict):
            raise UsageError("preprocessing record must be a mapping", received=type(d).__name__)
        missing = [k for k in ("input_shape", "scale") if k not in d]
        if missing:
            raise UsageError("preprocessing record is missing keys " + ", ".join(missing), received=d)
        return cls(input_shape=tuple(d["input_shape"]), scale=d["scale"], resize=d.get("resize", "bilinear"),
                   channels=d.get("channels", "keep"))

    # -- application ----------------------------------------------------------------------------------------------
    def apply(self, x_raw: np.ndarray) -> np.ndarray:
        """Map a raw batch ``(N, ...)`` to float32 ``(N, *input_shape)`` in [0, 1]."""
        x = np.asarray(x_raw)
        if x.dtype.kind not in "uifb":
            raise DatasetError("preprocessing input must be numeric", received=f"dtype={x.dtype}")
        if x.ndim < 2:
            raise DatasetError("preprocessing input must be a batch (N, ...)", received=f"shape={x.shape}")
        if x.shape[0] > _CHUNK:  # bound the float32 intermediates for large data sets
            return np.concatenate([self._apply(x[i:i + _CHUNK]) for i in range(0, x.shape[0], _CHUNK)])
        return self._apply(x)

    def _apply(self, x: np.ndarray) -> np.ndarray:
        x_raw = x
        x = np.clip(x.astype(np.float32) * np.float32(self.scale), 0.0, 1.0)
        n = x.shape[0]
        if len(self.input_shape) == 1:
            flat = x.reshape(n, -1)
            if flat.shape[1] >= self.input_shape[0]:
                return np.ascontiguousarray(flat[:, : self.input_shape[0]], dtype=np.float32)
            out = np.zeros((n, self.input_shape[0]), np.float32)
            out[:, : flat.shape[1]] = flat
            return out
        # image: to (N, H, W, C)
        if x.ndim == 3:
            x = x[..., None]
        elif x.ndim != 4:
            raise DatasetError("image preprocessing needs (N, H, W) or (N, H, W, C) input", received=f"shape={x.shape}")
        target_c = self.input_shape[2] if len(self.input_shape) == 3 else 1
        src_c = x.shape[3]
        if self.channels == "gray_to_rgb":
            if src_c != 1:
                raise DatasetError("gray_to_rgb expects 1-channel input", received=f"shape={x_raw.shape}")
            x = np.repeat(x, 3, axis=3)
        elif self.channels == "rgb_to_gray":
            if src_c != 3:
                raise DatasetError("rgb_to_gray expects 3-channel input", received=f"shape={x_raw.shape}")
            x = np.tensordot(x, _LUMA, axes=([3], [0]))[..., None].astype(np.float32)
        if x.shape[3] != target_c:
            raise DatasetError(f"input has {x.shape[3]} channels, the model expects {target_c}",
                               received=f"shape={x_raw.shape}")
        h, w = self.input_shape[0], self.input_shape[1]
        if x.shape[1:3] != (h, w):
            if self.resize == "bilinear":
                x = resize_bilinear(x, (h, w))
            elif self.resize == "pad":
                x = pad_or_crop(x, (h, w))
            else:
                raise DatasetError(f"input is {x.shape[1]}x{x.shape[2]} but the model expects {h}x{w} "
                                   "and the preprocessing does not resize", received=f"shape={x_raw.shape}")
        x = np.clip(x, 0.0, 1.0).astype(np.float32)
        return np.ascontiguousarray(x.reshape((n,) + self.input_shape))


def resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``(N, H, W, C)`` to ``size`` with half-pixel centres (== ``tf.image.resize`` bilinear,
    antialias off)."""
    x = np.asarray(x, dtype=np.float32)
    out_h, out_w = int(size[0]), int(size[1])
    x = _lerp_axis(x, out_h, axis=1)
    x = _lerp_axis(x, out_w, axis=2)
    return x


def _lerp_axis(x: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    in_size = x.shape[axis]
    if in_size == out_size:
        return x
    scale = np.float32(in_size) / np.float32(out_size)
    centre = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    lo_f = np.floor(centre)
    frac = (centre - lo_f).astype(np.float32)
    lo = np.clip(lo_f.astype(np.int64), 0, in_size - 1)
    hi = np.clip(lo_f.astype(np.int64) + 1, 0, in_size - 1)
    a = np.take(x, lo, axis=axis)
    b = np.take(x, hi, axis=axis)
    shape = [1] * x.ndim
    shape[axis] = out_size
    frac = frac.reshape(shape)
    return (a + (b - a) * frac).astype(np.float32)


def pad_or_crop(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centred zero padding (or centred crop) of ``(N, H, W, C)`` to ``size``."""
    out = np.zeros((x.shape[0], size[0], size[1], x.shape[3]), np.float32)
    src_slices, dst_slices = [], []
    for src, dst in ((x.shape[1], size[0]), (x.shape[2], size[1])):
        if src >= dst:
            start = (src - dst) // 2
            src_slices.append(slice(start, start + dst))
            dst_slices.append(slice(0, dst))
        else:
            start = (dst - src) // 2
            src_slices.append(slice(0, src))
            dst_slices.append(slice(start, start + src))
    out[:, dst_slices[0], dst_slices[1], :] = x[:, src_slices[0], src_slices[1], :]
    return out



def infer_normalisation(x: np.ndarray) -> SourceNormalisation:
    """The rule for sources that declare no range: 8-bit integers ÷255, booleans as is, float data already in
    [0, 1] as is, other data ÷ its maximum (rounded up to 255 for values in (1, 255])."""
    if x.dtype == np.uint8:
        return SourceNormalisation(1.0 / 255.0, "inferred", "uint8 dtype: 0..255")
    if x.dtype.kind == "b":
        return SourceNormalisation(1.0, "inferred", "boolean values")
    hi = float(np.max(x)) if x.size else 1.0
    lo = float(np.min(x)) if x.size else 0.0
    kind = "integer" if x.dtype.kind in "iu" else "float"
    if kind == "float" and hi <= 1.0:
        return SourceNormalisation(1.0, "inferred", f"float values in [{lo:g}, {hi:g}] (already in [0, 1])")
    if hi <= 255.0:
        return SourceNormalisation(1.0 / 255.0, "inferred", f"{kind} values in [{lo:g}, {hi:g}]: 0..255 range")
    return SourceNormalisation(1.0 / hi, "inferred", f"{kind} values in [{lo:g}, {hi:g}]: divided by the maximum")


def channel_mode(sample_shape: tuple[int, ...], input_shape: tuple[int, ...], source: str) -> str:
    """keep | gray_to_rgb | rgb_to_gray for samples of ``sample_shape`` fed to a model input of ``input_shape``."""
    if len(input_shape) == 1:
        return "keep"
    if len(sample_shape) == 1:
        raise DatasetError("the data set holds 1-D feature vectors; an image model input needs image data",
                           received=f"{source}: sample shape {sample_shape}, model input {input_shape}")
    src_c = sample_shape[2] if len(sample_shape) == 3 else 1
    dst_c = input_shape[2] if len(input_shape) == 3 else 1
    if src_c == dst_c:
        return "keep"
    if src_c == 1 and dst_c == 3:
        return "gray_to_rgb"
    if src_c == 3 and dst_c == 1:
        return "rgb_to_gray"
    raise DatasetError(f"cannot map {src_c}-channel samples to a {dst_c}-channel model input",
                       received=f"{source}: sample shape {sample_shape}, model input {input_shape}")


def model_transform(input_shape: tuple[int, ...] | list[int], sample_shape: tuple[int, ...],
                    resize: str = "auto") -> ModelInputTransform:
    """The transform recorded for a model trained on samples of ``sample_shape``. ``auto``: flatten for 1-D inputs,
    ``none`` when the sizes already match, else ``bilinear``."""
    shape = tuple(int(d) for d in input_shape)
    if len(shape) == 1:
        return ModelInputTransform(shape, "flatten")
    if resize == "auto":
        return ModelInputTransform(shape, "none" if tuple(sample_shape[:2]) == shape[:2] else "bilinear")
    if resize not in ("none", "bilinear", "pad"):
        raise UsageError("resize must be auto, none, bilinear or pad", received=resize)
    return ModelInputTransform(shape, resize)


def compose(normalisation: SourceNormalisation, transform: ModelInputTransform, sample_shape: tuple[int, ...],
            source: str) -> Preprocessing:
    """The preprocessing that feeds samples of ``sample_shape`` from a source with ``normalisation`` to a model with
    ``transform``. A model recorded with ``resize='none'`` accepts only samples of its own size."""
    shape = transform.input_shape
    resize = transform.resize
    if resize == "auto":
        resize = model_transform(shape, sample_shape).resize
    if len(shape) > 1 and resize == "none" and len(sample_shape) > 1 and tuple(sample_shape[:2]) != shape[:2]:
        raise DatasetError("the samples are not the model's input size and the model's recorded input transform "
                           "does not resize", received=f"{source}: samples {tuple(sample_shape[:2])}, "
                                                       f"model input {shape[:2]}")
    return Preprocessing(input_shape=shape, scale=normalisation.scale, resize=resize,
                         channels=channel_mode(tuple(sample_shape), shape, source))


def input_statistics(x: np.ndarray, input_range: tuple[float, float] | None = None) -> InputStats:
    """Statistics of preprocessed float inputs; the share outside ``input_range`` (the int8 input quantisation range)
    when one is given."""
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise DatasetError("no input values to summarise", received=f"shape={np.shape(x)}")
    outside = None
    if input_range is not None:
        lo, hi = float(input_range[0]), float(input_range[1])
        outside = float(np.mean((a < lo) | (a > hi)))
    return InputStats(samples=int(np.shape(x)[0]), min=float(a.min()), max=float(a.max()), mean=float(a.mean()),
                      std=float(a.std()), input_range=(float(input_range[0]), float(input_range[1]))
                      if input_range is not None else None, outside_input_range=outside)
