"""The preprocessing record in generated headers: what the firmware must do to raw samples before quantising them.

``preprocessing_block(meta, upper)`` renders ``templates/preprocessing.tmpl`` (or ``preprocessing_none.tmpl`` when
the model carries no record) from the model's metadata (sidecar ``X.json`` or embedded entry): the source
normalisation (``raw * UPPER_PREPROC_RAW_SCALE``, clamped to [0, 1]), the channel conversion and the resize to the
model's input shape. The TFLM config header (``firmware_export.export_tflm``) and the C engine's ``NAME.h``
(``firmware_export.cgen``) both carry this one text.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

from toolchain.errors import ExportError

TEMPLATES = Path(__file__).resolve().parent / "templates"


def c_float(x: float) -> str:
    """A decimal C float literal with 9 significant digits (round-trips any float32)."""
    text = f"{float(x):.9g}"
    if not any(ch in text for ch in ".einn"):
        text += ".0"
    return text + "f"


def render(template: str, /, **values: Any) -> str:
    """``templates/TEMPLATE`` with ``${key}`` substituted (ExportError when it names a value not given)."""
    try:
        return string.Template((TEMPLATES / template).read_text(encoding="utf-8")).substitute(
            **{k: str(v) for k, v in values.items()})
    except KeyError as exc:  # a template names a value the exporter does not pass: a packaging bug
        raise ExportError("firmware template refers to an unknown value", received=f"{template}: {exc}") from exc


def preprocessing_block(meta: dict[str, Any] | None, upper: str) -> str:
    """The header text recording the preprocessing (source normalisation + model input transform)."""
    from firmware_export.carray import c_comment

    pre = (meta or {}).get("preprocessing") if isinstance(meta, dict) else None
    if not isinstance(pre, dict) or not isinstance(pre.get("scale"), (int, float)) or pre["scale"] <= 0:
        return render("preprocessing_none.tmpl", UPPER=upper)
    norm = meta.get("normalisation") if isinstance(meta.get("normalisation"), dict) else {}
    shape = "x".join(str(d) for d in pre.get("input_shape") or [])
    resize = str(pre.get("resize", "none"))
    resize_text = {"none": f"none (samples are already {shape})", "bilinear": f"bilinear (half-pixel centres, as "
                   f"tf.image.resize) to {shape}", "pad": f"centred zero pad / crop to {shape}",
                   "flatten": f"flatten, zero pad or truncate to {shape} features"}.get(resize, resize)
    channels = str(pre.get("channels", "keep"))
    channels_text = {"keep": "as they are", "gray_to_rgb": "gray copied to R, G and B",
                     "rgb_to_gray": "RGB to gray with ITU-R BT.601 weights 0.2989, 0.5870, 0.1140"}.get(channels,
                                                                                                     channels)
    detail = f"{norm.get('provenance')}: {norm.get('detail')}" if norm else "recorded"
    return render("preprocessing.tmpl", UPPER=upper, raw_scale=c_float(float(pre["scale"])),
                  raw_max=c_float(1.0 / float(pre["scale"])), resize=c_comment(resize), channels=c_comment(channels),
                  resize_text=c_comment(resize_text), channels_text=c_comment(channels_text),
                  normalisation_text=c_comment(f"1/{1.0 / float(pre['scale']):g}, {detail}"))
