"""Per-layer int8 quantisation error with TensorFlow's ``QuantizationDebugger`` (host only, needs TensorFlow)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from toolchain.native_stderr import quiet_native_stderr

if TYPE_CHECKING:
    from toolchain.data import PreparedSplit

log = logging.getLogger("toolchain.verify")


def _layer_debug_mismatch(cand_meta: dict[str, Any] | None, reference: Path) -> str | None:
    """Why the debugger's re-conversion of ``reference`` (post-training quantisation with the candidate's
    calibration config) would not describe the candidate, or None when it does."""
    from toolchain.fsutil import sha256_file

    meta = cand_meta or {}
    if (meta.get("quantization") or {}).get("qat"):
        return "candidate is quantisation-aware trained; a post-training re-conversion of the reference would not " \
               "describe its weights"
    src = meta.get("source_sha256")
    if src and src != sha256_file(reference):
        return "candidate was not converted from this reference: its source_sha256 differs"
    return None


def _calibration_config(cand_meta: dict[str, Any] | None) -> dict[str, Any]:
    q = (cand_meta or {}).get("quantization") or {}
    seed = q.get("calibration_seed", (cand_meta or {}).get("seed", 0))
    return {"samples": int(q.get("calibration_samples", 300) or 300), "per_channel": bool(q.get("per_channel", True)),
            "seed": int(seed or 0)}


def layer_quantisation_errors(reference: Path, data: "PreparedSplit", cand_meta: dict[str, Any] | None,
                              samples: int = 50) -> dict[str, Any]:
    """Per-layer error of the int8 quantisation with ``tf.lite.experimental.QuantizationDebugger``.

    The converter is rebuilt from the ``.keras`` reference (fixed batch 1) with the candidate's calibration
    config (calibration sample count and seed from its sidecar metadata; stratified training samples) and float
    I/O, so the debugger can compare every quantised tensor with its float counterpart on ``samples`` split samples.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import warnings

    import tensorflow as tf

    from toolchain import data as tdata
    from toolchain.convert import keras_converter
    from toolchain.runtime import load_keras_model

    cfg = _calibration_config(cand_meta)
    model = load_keras_model(reference)
    ds, prep = data.dataset, data.preprocessing
    idx = tdata.calibration_indices(ds.y_train, cfg["samples"], seed=cfg["seed"])
    x_cal = prep.apply(ds.x_train[idx])
    x_dbg = data.x[:samples]

    def representative():
        for i in range(len(x_cal)):
            yield [x_cal[i:i + 1]]

    def debug_data():
        for i in range(len(x_dbg)):
            yield [x_dbg[i:i + 1]]

    converter = keras_converter(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    if not cfg["per_channel"]:
        converter._experimental_disable_per_channel = True
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), quiet_native_stderr(log):
        warnings.simplefilter("ignore")
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=debug_data)
        debugger.run()
    layers = []
    for name, st in debugger.layer_statistics.items():
        scale = float(st.get("scale", 0.0) or 0.0)
        rmse = float(np.sqrt(max(float(st.get("mean_squared_error", 0.0)), 0.0)))
        layers.append({"name": name, "tensor": int(st.get("tensor_idx", -1)) if "tensor_idx" in st else None,
                       "op": st.get("op_name"), "scale": scale, "zero_point": int(st.get("zero_point", 0) or 0),
                       "rmse": rmse, "rmse_over_scale": rmse / scale if scale > 0 else None,
                       "mean_error": float(st.get("mean_error", 0.0)),
                       "max_abs_error": float(st.get("max_abs_error", 0.0)),
                       "stddev": float(st.get("stddev", 0.0))})
    if not layers or layers[0]["op"] is None:
        buf = io.StringIO()
        debugger.layer_statistics_dump(buf)
        layers = _parse_layer_dump(buf.getvalue())
    worst = sorted(layers, key=lambda r: -(r["rmse_over_scale"] or 0.0))[:5]
    return {"status": "ok", "reason": None, "samples": len(x_dbg), "calibration": cfg, "layers": layers,
            "worst": worst}



def _parse_layer_dump(text: str) -> list[dict[str, Any]]:
    import csv

    rows = []
    for r in csv.DictReader(io.StringIO(text)):
        scale = float(r.get("scale") or 0.0)
        rmse = float(np.sqrt(max(float(r.get("mean_squared_error") or 0.0), 0.0)))
        rows.append({"name": r.get("tensor_name"), "tensor": int(float(r.get("tensor_idx") or -1)),
                     "op": r.get("op_name"), "scale": scale, "zero_point": int(float(r.get("zero_point") or 0)),
                     "rmse": rmse, "rmse_over_scale": rmse / scale if scale > 0 else None,
                     "mean_error": float(r.get("mean_error") or 0.0),
                     "max_abs_error": float(r.get("max_abs_error") or 0.0), "stddev": float(r.get("stddev") or 0.0)})
    return rows



def _empty(status: str, reason: str) -> dict[str, Any]:
    return {"status": status, "reason": reason, "layers": [], "worst": []}


def layer_errors_section(*, enabled: bool, reference: Path | None, reference_kind: str | None,
                         candidate_precision: str | None, cand_meta: dict[str, Any] | None, data: "PreparedSplit",
                         samples: int) -> dict[str, Any]:
    """The report's ``layer_errors`` section: the debugger's per-layer figures, or why there are none."""
    import time

    if not enabled:
        return _empty("skipped", "--no-layer-debug")
    if reference is None or reference_kind != "keras":
        return _empty("skipped", "needs a .keras reference")
    if candidate_precision != "int8":
        return _empty("skipped", f"candidate is {candidate_precision}, not int8")
    mismatch = _layer_debug_mismatch(cand_meta, reference)
    if mismatch:
        return _empty("skipped", mismatch)
    try:
        t0 = time.perf_counter()
        section = layer_quantisation_errors(reference, data, cand_meta, samples)
        log.info("per-layer quantisation error: %d layers (%.1f s)", len(section["layers"]), time.perf_counter() - t0)
        return section
    except ImportError as exc:
        return _empty("unavailable", f"TensorFlow is needed ({exc.name} missing)")
    except Exception as exc:  # noqa: BLE001 - the TF converter/debugger raise many types; the report stays valid
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0]}" if str(exc) else type(exc).__name__
        log.warning("per-layer quantisation debugging failed: %s", reason)
        return _empty("unavailable", reason)
