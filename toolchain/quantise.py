"""Keras -> TFLite conversion (float32 / float16 / dynamic range) and full-integer int8 quantisation.

* ``convert(model_path, output, precision)``: reference conversions, no data needed.
* ``quantise(model_path, output, dataset, config)``: int8 for microcontrollers. Calibration samples come from the
  **training** split of the run's data split (never the test split), stratified by class, with the preprocessing
  recorded at training time. Optional quantisation-aware training (``config.qat``, see ``toolchain.quant_qat``).

Every conversion uses a fixed batch of 1 (a concrete function with input signature ``[1, *input_shape]``, variables
frozen to constants), so ``Flatten`` becomes a single RESHAPE and the graph is what a microcontroller runs.

Outputs: ``OUT.tflite`` with the metadata JSON embedded in its metadata table under ``"toolchain"`` (everything but
its own digest), and the sidecar ``OUT.json`` (the same plus ``tflite_sha256``). Both are written atomically and the
same model + data + seed give byte-identical files. Readers accept the sidecar only when its ``tflite_sha256`` is the
.tflite's, so a run killed between the two writes cannot leave a pair that disagrees.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

import toolchain
from toolchain.keras_io import check_keras_file
from toolchain.convert import (input_shape, is_autoencoder, keras_converter, layer_from_name, layer_names,
                               load_keras_model, output_shape, run_converter, frozen_concrete_function)
from toolchain.errors import ConversionError, DatasetError, UsageError
from toolchain.specs import DatasetSpec, RunRecord, SplitParams
from toolchain.fsutil import atomic_write_bytes, atomic_write_json, check_output_file, sha256_bytes, sha256_file
from toolchain.metadata import (SIDECAR_FORMAT, TFLITE_METADATA_NAME, load_run_metadata,
                                sidecar_path)
from toolchain.procutil import pause_for_test

log = logging.getLogger("toolchain.quantise")

from toolchain.quant_config import (ACTIVATION_BITS, IO_DTYPES, PRECISIONS, RANDOM_DATASET,  # noqa: F401
                                     WEIGHT_BITS, QuantConfig)


# ----------------------------------------------------------------------------------------------------------------
# inputs


def _check_tflite_output(output: str | os.PathLike, force: bool, source: Path) -> Path:
    out = Path(output)
    if out.suffix != ".tflite":
        raise UsageError("output must be a .tflite file", received=f"--output={out}")
    check_output_file(out, force)
    check_output_file(sidecar_path(out), force)
    if out.resolve() == source.resolve():
        raise UsageError("output would overwrite the input model", received=f"--output={out}")
    return out


# ----------------------------------------------------------------------------------------------------------------
# conversion core


# ----------------------------------------------------------------------------------------------------------------
# metadata


def _metadata(*, model_path: Path, model, run_meta: dict[str, Any] | None, record: RunRecord | None,
              preprocessing: dict[str, Any] | None, quantization: dict[str, Any]) -> dict[str, Any]:
    rm = run_meta or {}
    rec = record.to_dict() if record is not None else {
        "dataset": None, "split": None, "seed": None, "normalisation": None, "transform": None, "labels": None,
        "num_classes": None, "calibration_stats": None}
    return {
        "format": SIDECAR_FORMAT,
        "source_model": _short_source(model_path),
        "source_sha256": sha256_file(model_path),
        "model": rm.get("model") or model.name,
        "task": "autoencoder" if is_autoencoder(model, run_meta) else "classification",
        **rec,
        "float_test_accuracy": record.test_accuracy if record is not None else None,
        "preprocessing": preprocessing,
        "input_shape": list(input_shape(model)),
        "output_shape": list(output_shape(model)),
        "quantization": quantization,
        "toolchain_version": toolchain.__version__,
    }


def _short_source(model_path: Path) -> str:
    """``run_folder/model.keras``: machine-independent, so the embedded record (and the bytes) are reproducible."""
    resolved = model_path.resolve()
    return f"{resolved.parent.name}/{resolved.name}" if resolved.parent.name else resolved.name


def _finish(data: bytes, meta: dict[str, Any], output: Path, model_path: Path,
            sidecar_only: dict[str, Any] | None = None) -> dict[str, Any]:
    """Embed ``meta`` in the flatbuffer, write ``output`` and its sidecar atomically; return the sidecar dict.

    The two files are written one after the other (each atomically), the .tflite first. A run killed between the
    two writes leaves the new .tflite beside the previous sidecar; readers refuse that pair because the sidecar's
    ``tflite_sha256`` is not the new model's (``toolchain.metadata.check_sidecar``), so they can never disagree.
    """
    from toolchain.quant_tflite import embed_metadata

    payload = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode("utf-8")
    final = embed_metadata(data, TFLITE_METADATA_NAME, payload)
    sidecar = dict(meta)
    sidecar["source_model"] = str(model_path.resolve())
    sidecar["tflite_sha256"] = sha256_bytes(final)
    sidecar["size_bytes"] = len(final)
    sidecar.update(sidecar_only or {})
    atomic_write_bytes(output, final)
    pause_for_test("quantise.between_writes")
    atomic_write_json(sidecar_path(output), sidecar)
    return sidecar


def _io_summary(info: dict[str, Any]) -> dict[str, Any]:
    return {"inputs": info["inputs"], "outputs": info["outputs"], "tensor_dtypes": info["tensor_dtypes"],
            "weight_dtypes": info["weight_dtypes"], "bias_dtypes": info["bias_dtypes"], "op_counts": info["op_counts"]}


# ----------------------------------------------------------------------------------------------------------------
# convert


def convert(model_path: str | os.PathLike, output: str | os.PathLike, precision: str = "float32",
            force: bool = False) -> dict[str, Any]:
    """Convert a .keras model to a float32, float16-weight or dynamic-range (int8 weights) .tflite."""
    if precision not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}", received=f"--precision={precision}")
    src = check_keras_file(model_path)
    out = _check_tflite_output(output, force, src)
    run_meta = load_run_metadata(src)
    model = load_keras_model(src)

    import tensorflow as tf

    conv = keras_converter(model)
    if precision == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif precision == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    data = run_converter(conv, f"{precision} conversion", layer_names(model))

    from toolchain.quant_tflite import describe

    info = describe(data)
    scheme = {"float32": "float32", "float16": "float16-weights", "dynamic": "dynamic-range-int8-weights"}[precision]
    meta = _metadata(
        model_path=src, model=model, run_meta=run_meta, record=RunRecord.from_metadata(run_meta),
        preprocessing=(run_meta or {}).get("preprocessing"),
        quantization={"scheme": scheme, "precision": precision, "io_dtype": info["inputs"][0]["dtype"],
                      "per_channel": precision == "dynamic", "calibration_samples": 0, "qat": False,
                      "float_ops": [], "float_op_count": len(info["float_ops"])},
    )
    meta["tensors"] = _io_summary(info)
    sidecar = _finish(data, meta, out, src)
    log.debug("converted %s -> %s (%s, %s bytes)", src, out, precision, f"{sidecar['size_bytes']:,}")
    return sidecar


# ----------------------------------------------------------------------------------------------------------------
# data for calibration / QAT / evaluation


@dataclass
class _Data:
    record: RunRecord | None            # what the quantised model's sidecar records about its data
    x_calib: np.ndarray
    calibration_split: str              # "train" | "random"
    preprocessing: dict[str, Any] | None = None
    x_train: np.ndarray | None = None
    y_train: np.ndarray | None = None
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None


def _prepare_data(spec: DatasetSpec | None, model, run_record: RunRecord | None, config: QuantConfig,
                  autoencoder: bool) -> _Data:
    """Calibration (stratified draw from the training split), test and, for QAT, train/val samples; ``spec`` None
    means random calibration data. Preprocessing follows ``toolchain.data.load_split``'s rule."""
    shape = input_shape(model)
    if spec is None:
        if config.qat:
            raise UsageError("--qat needs a real dataset to train on, not random calibration data",
                             received=f"--dataset={RANDOM_DATASET}")
        rng = np.random.default_rng(config.seed)
        x = rng.random((config.calibration_samples, *shape), dtype=np.float32)
        return _Data(record=run_record, x_calib=x, calibration_split="random")

    from toolchain import data as tdata

    if run_record is not None and run_record.dataset.text != spec.text:
        run_record = replace(run_record, dataset=spec, split=SplitParams(seed=config.seed), normalisation=None)
    prepared = tdata.prepare_data(run_record, dataset=spec, input_shape=shape)
    ds = prepared.dataset
    out_shape = output_shape(model)
    if not autoencoder and (len(out_shape) != 1 or out_shape[0] != ds.num_classes):
        raise DatasetError("the dataset's number of classes does not match the model output",
                           received=f"{spec.text}: {ds.num_classes} classes, model output {out_shape}")
    idx = tdata.calibration_indices(ds.y_train, config.calibration_samples, seed=config.seed)
    if len(idx) < config.calibration_samples:
        log.warning("only %d training samples available for calibration (asked for %d)",
                    len(idx), config.calibration_samples)
    log.debug("calibration data: %s, %s", spec.text, prepared.normalisation.describe())
    test = prepared.split("test")
    record = RunRecord(dataset=ds.spec, split=ds.split, normalisation=prepared.normalisation,
                       transform=prepared.transform, labels=tuple(str(v) for v in ds.labels),
                       test_accuracy=run_record.test_accuracy if run_record is not None else None)
    d = _Data(record=record, x_calib=prepared.split("train", indices=idx).x, calibration_split="train",
              preprocessing=prepared.preprocessing.to_dict(), x_test=test.x, y_test=test.y)
    if config.qat:
        train, val = prepared.split("train"), prepared.split("val")
        d.x_train, d.y_train, d.x_val, d.y_val = train.x, train.y, val.x, val.y
    return d


def _representative(x: np.ndarray) -> Callable[[], Iterator[list[np.ndarray]]]:
    def gen() -> Iterator[list[np.ndarray]]:
        for i in range(x.shape[0]):
            yield [x[i:i + 1].astype(np.float32)]

    return gen


# ----------------------------------------------------------------------------------------------------------------
# evaluation


def _preprocessing_dict(record: RunRecord | None, d: _Data, run_meta: dict[str, Any] | None
                        ) -> dict[str, Any] | None:
    """The composed preprocessing a device applies to the calibration source's raw samples."""
    if d.calibration_split == "random" or record is None:
        return (run_meta or {}).get("preprocessing")
    return d.preprocessing


def tflite_predict(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    """Float (dequantised) outputs of a .tflite on float ``x`` with the LiteRT reference kernels (no delegates)."""
    from toolchain.runtime import dequantize_output, open_runtime, quantize_input

    runner = open_runtime(model_bytes, runtime="litert", reference_kernels=True)
    y = runner.run_many(quantize_input(x, runner.input_details[0]))
    return dequantize_output(y, runner.output_details[0]).reshape(len(x), -1)


def _evaluate(model, model_bytes: bytes, d: _Data, autoencoder: bool) -> dict[str, Any] | None:
    if d.x_test is None or d.y_test is None or len(d.y_test) == 0:
        return None
    x, y = d.x_test, d.y_test
    float_out = np.asarray(model.predict(x, batch_size=128, verbose=0))
    q_out = tflite_predict(model_bytes, x)
    if autoencoder:
        flat = x.reshape(len(x), -1)
        f_mse = float(np.mean((float_out.reshape(len(x), -1) - flat) ** 2))
        q_mse = float(np.mean((q_out.reshape(len(x), -1) - flat) ** 2))
        return {"split": "test", "samples": int(len(x)), "float_mse": f_mse, "tflite_mse": q_mse}
    f_acc = float(np.mean(np.argmax(float_out, axis=-1) == y))
    q_acc = float(np.mean(np.argmax(q_out, axis=-1) == y))
    return {"split": "test", "samples": int(len(y)), "float_accuracy": f_acc, "tflite_accuracy": q_acc,
            "accuracy_drop_pp": round((f_acc - q_acc) * 100.0, 4)}


# ----------------------------------------------------------------------------------------------------------------
# quantise


def quantise(model_path: str | os.PathLike, output: str | os.PathLike, dataset: str | DatasetSpec | None = None,
             config: QuantConfig = QuantConfig(), force: bool = False, evaluate: bool = True,
             auto: dict[str, Any] | None = None) -> dict[str, Any]:
    """Full-integer int8 quantisation (optionally after QAT); writes OUT.tflite + OUT.json, returns the sidecar.

    ``auto``: the candidate table of ``quantise --auto`` (``toolchain.quant_auto``), kept in the sidecar only.

    ``dataset``: a spec (default: the run's), or ``"random"`` for uniform [0, 1) calibration samples."""
    config.validate()
    src = check_keras_file(model_path)
    out = _check_tflite_output(output, force, src)
    run_meta = load_run_metadata(src)
    run_record = RunRecord.from_metadata(run_meta)
    if dataset is None and run_record is None:
        raise UsageError("no dataset given and the model has no run metadata naming one; pass --dataset "
                         f"(a dataset spec, or '{RANDOM_DATASET}' for random calibration data)",
                         received=str(src))
    if dataset == RANDOM_DATASET:
        spec = None
    elif isinstance(dataset, DatasetSpec):
        spec = dataset
    else:  # parsed before anything heavy is loaded
        spec = DatasetSpec.parse(dataset) if dataset is not None else run_record.dataset
    model = load_keras_model(src)
    autoencoder = is_autoencoder(model, run_meta)
    d = _prepare_data(spec, model, run_record, config, autoencoder)

    import tensorflow as tf

    qat_info: dict[str, Any] | None = None
    names = layer_names(model)
    if config.qat:
        from toolchain.quant_qat import run_qat

        qmodel, qat_info = run_qat(model, d.x_train, d.y_train, d.x_val, d.y_val, config, autoencoder,
                                   x_calib=d.x_calib)
        conv = tf.lite.TFLiteConverter.from_concrete_functions([frozen_concrete_function(qmodel)], qmodel)
    else:
        conv = keras_converter(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = _representative(d.x_calib)
    ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
           if config.activations == "int16" else tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if config.allow_float_fallback:
        ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
    conv.target_spec.supported_ops = ops
    io_type = {"int8": tf.int8, "uint8": tf.uint8, "int16": tf.int16, "float32": tf.float32}[config.io]
    conv.inference_input_type = io_type
    conv.inference_output_type = io_type
    if not config.per_channel:
        conv._experimental_disable_per_channel = True
    data = run_converter(conv, "int8 quantisation", names)

    from toolchain.quant_tflite import describe

    info = describe(data)
    float_ops = [dict(f, layer=layer_from_name(f["output"], names)) for f in info["float_ops"]]
    if float_ops and not config.allow_float_fallback:
        first = float_ops[0]
        where = f"layer '{first['layer']}'" if first["layer"] else f"tensor '{first['output']}'"
        names = ", ".join(sorted({f["op"] for f in float_ops}))
        raise ConversionError(
            f"{where}: operator {first['op']} cannot be quantised to int8 (float ops: {names})",
            received=str(src),
            hint="--allow-float-fallback produces a mixed int8/float model that keeps these ops in float32 "
                 "(most microcontroller int8 kernels will not run it)")
    for f in float_ops:
        log.warning("kept float op %s (op %d, output '%s'%s)", f["op"], f["index"], f["output"],
                    f", layer '{f['layer']}'" if f["layer"] else "")

    int4_info = None
    if config.weights == "int4":
        from toolchain.quant_int4 import to_int4

        data, int4_info = to_int4(data, lambda tensor: layer_from_name(tensor, names), config.int4_layers,
                                  config.keep_int8_layers)
        info = describe(data)
        log.info("int4 weights: %d of %d layers (%s weights)", sum(e["bits"] == 4 for e in int4_info["layers"]),
                 len(int4_info["layers"]), f"{int4_info['int4_weight_count']:,}")
    evaluation = _evaluate(model, data, d, autoencoder) if evaluate else None
    quantization = {
        "scheme": ("int16x8" if config.activations == "int16" else "int8-mixed-float" if float_ops else "full-int8")
                  + ("-int4-weights" if int4_info else ""),
        "weights": config.weights,
        "activations": config.activations,
        "io_dtype": config.io,
        "per_channel": bool(config.per_channel),
        "calibration_samples": int(d.x_calib.shape[0]),
        "calibration_split": d.calibration_split,
        "calibration_seed": config.seed,
        "qat": bool(config.qat),
        "qat_epochs": int(config.qat_epochs) if config.qat else 0,
        "allow_float_fallback": bool(config.allow_float_fallback),
        "float_ops": float_ops,
    }
    if qat_info is not None:
        quantization["qat_details"] = qat_info
    if int4_info is not None:
        quantization["int4"] = int4_info
    record = d.record
    if record is not None and d.calibration_split == "train":
        from toolchain.data import input_statistics
        from toolchain.tflite_model import parse_tflite

        record = replace(record, calibration=input_statistics(d.x_calib, parse_tflite(data).input_quant_range()))
    meta = _metadata(model_path=src, model=model, run_meta=run_meta, record=record,
                     preprocessing=_preprocessing_dict(record, d, run_meta), quantization=quantization)
    meta["tensors"] = _io_summary(info)
    if evaluation is not None:
        meta["evaluation"] = evaluation
    meta["config"] = asdict(config)
    sidecar = _finish(data, meta, out, src, {"auto": auto} if auto is not None else None)
    log.debug("quantised %s -> %s (%s bytes, %s)", src, out, f"{sidecar['size_bytes']:,}", quantization["scheme"])
    return sidecar


quantize = quantise  # US spelling alias
