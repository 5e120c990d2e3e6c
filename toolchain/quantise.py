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
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

import toolchain
from toolchain.keras_io import check_keras_file
from toolchain.native_stderr import quiet_native_stderr
from toolchain.errors import ConversionError, DatasetError, ModelError, UsageError
from toolchain.fsutil import atomic_write_bytes, atomic_write_json, check_output_file, sha256_bytes, sha256_file
from toolchain.metadata import (SIDECAR_FORMAT, TFLITE_METADATA_NAME, load_run_metadata,
                                sidecar_path)
from toolchain.procutil import pause_for_test

log = logging.getLogger("toolchain.quantise")

PRECISIONS = ("float32", "float16", "dynamic")
IO_DTYPES = ("int8", "uint8", "float32")
RANDOM_DATASET = "random"  # calibration with uniform [0, 1) samples: for architecture checks, no accuracy figures
DEFAULT_TEST_FRACTION = 0.2
DEFAULT_VAL_FRACTION = 0.1


@dataclass(frozen=True)
class QuantConfig:
    """Options of full-integer quantisation (see ``toolchain quantise --help``)."""

    per_channel: bool = True
    io_dtype: str = "int8"
    calibration_samples: int = 300
    qat: bool = False
    qat_epochs: int = 2
    allow_float_fallback: bool = False
    seed: int = 0
    qat_learning_rate: float = 1e-4
    qat_batch_size: int = 32

    def validate(self) -> None:
        if self.io_dtype not in IO_DTYPES:
            raise UsageError(f"--io must be one of {', '.join(IO_DTYPES)}", received=f"--io={self.io_dtype}")
        if isinstance(self.calibration_samples, bool) or not isinstance(self.calibration_samples, int) \
                or self.calibration_samples <= 0:
            raise UsageError("calibration samples must be a positive integer",
                             received=f"--calibration-samples={self.calibration_samples}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise UsageError("seed must be an integer >= 0", received=f"--seed={self.seed}")
        if self.qat:
            if isinstance(self.qat_epochs, bool) or not isinstance(self.qat_epochs, int) or self.qat_epochs <= 0:
                raise UsageError("QAT epochs must be a positive integer", received=f"--qat-epochs={self.qat_epochs}")
            if not (isinstance(self.qat_learning_rate, (int, float)) and np.isfinite(self.qat_learning_rate)
                    and self.qat_learning_rate > 0):
                raise UsageError("QAT learning rate must be a positive number",
                                 received=f"--qat-learning-rate={self.qat_learning_rate}")
            if not isinstance(self.qat_batch_size, int) or self.qat_batch_size <= 0:
                raise UsageError("QAT batch size must be a positive integer",
                                 received=f"qat_batch_size={self.qat_batch_size}")


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


def load_keras_model(path: Path):
    """Load a .keras file for conversion: one fully defined input and one output."""
    from toolchain.keras_io import load_keras_model as load

    model = load(path)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError("only single-input, single-output models can be converted",
                         received=f"{path}: {len(model.inputs)} inputs, {len(model.outputs)} outputs")
    shape = model.inputs[0].shape[1:]
    if any(d is None for d in shape):
        raise ModelError("the model input shape must be fully defined (apart from the batch)",
                         received=f"{path}: input shape {tuple(model.inputs[0].shape)}")
    return model


def _input_shape(model) -> tuple[int, ...]:
    return tuple(int(d) for d in model.inputs[0].shape[1:])


def _output_shape(model) -> tuple[int, ...]:
    return tuple(int(d) for d in model.outputs[0].shape[1:])


def _is_autoencoder(model, run_meta: dict[str, Any] | None) -> bool:
    if run_meta and run_meta.get("task"):
        return run_meta["task"] == "autoencoder"
    return _output_shape(model) == _input_shape(model)


# ----------------------------------------------------------------------------------------------------------------
# conversion core


def frozen_concrete_function(model):
    """``model(x, training=False)`` traced with a fixed batch of 1 and its variables frozen to constants."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    shape = [1, *(int(d) for d in model.inputs[0].shape[1:])]
    spec = tf.TensorSpec(shape, tf.float32, name="input")
    fn = tf.function(lambda x: model(x, training=False), input_signature=[spec], autograph=False)
    return convert_variables_to_constants_v2(fn.get_concrete_function())


def _converter(model):
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_concrete_functions([frozen_concrete_function(model)], model)


def _run_converter(converter, what: str, layer_names: list[str]) -> bytes:
    try:
        with warnings.catch_warnings(), quiet_native_stderr(log):
            warnings.simplefilter("ignore")
            return bytes(converter.convert())
    except Exception as exc:  # ConverterError / RuntimeError from the MLIR converter or the calibrator
        raise ConversionError(f"{what} failed", received=_summarise_converter_error(exc, layer_names),
                              hint="run with --verbose for the converter log") from exc


def _summarise_converter_error(exc: Exception, layer_names: list[str]) -> str:
    text = str(exc)
    lines = [ln.strip() for ln in text.splitlines() if "error:" in ln.lower() or "op" in ln.lower()]
    first = lines[0] if lines else (text.splitlines()[0] if text else type(exc).__name__)
    layer = _layer_from_name(first, layer_names)
    return (f"layer '{layer}': " if layer else "") + first[:300]


def _layer_from_name(tensor_name: str, layer_names: list[str]) -> str | None:
    """Best-effort Keras layer for a TFLite tensor name like ``functional_1/conv_2/Relu``."""
    import re

    known = set(layer_names)
    for part in re.split(r"[/;:\"' ()]+", tensor_name):
        if part in known:
            return part
        base = re.sub(r"_\d+$", "", part)
        if base in known:
            return base
    return None


def _layer_names(model) -> list[str]:
    names: list[str] = []

    def walk(m) -> None:
        for layer in getattr(m, "layers", []):
            names.append(layer.name)
            if hasattr(layer, "layers"):
                walk(layer)

    walk(model)
    return names


# ----------------------------------------------------------------------------------------------------------------
# metadata


def _metadata(*, model_path: Path, model, run_meta: dict[str, Any] | None, dataset: str | None,
              preprocessing: dict[str, Any] | None, labels: list[str] | None, num_classes: int | None,
              seed: int | None, split: dict[str, Any] | None, quantization: dict[str, Any]) -> dict[str, Any]:
    rm = run_meta or {}
    return {
        "format": SIDECAR_FORMAT,
        "source_model": _short_source(model_path),
        "source_sha256": sha256_file(model_path),
        "model": rm.get("model") or model.name,
        "task": "autoencoder" if _is_autoencoder(model, run_meta) else "classification",
        "dataset": dataset,
        "preprocessing": preprocessing,
        "labels": labels,
        "num_classes": num_classes,
        "input_shape": list(_input_shape(model)),
        "output_shape": list(_output_shape(model)),
        "seed": seed,
        "split": split,
        "quantization": quantization,
        "toolchain_version": toolchain.__version__,
    }


def _short_source(model_path: Path) -> str:
    """``run_folder/model.keras``: machine-independent, so the embedded record (and the bytes) are reproducible."""
    resolved = model_path.resolve()
    return f"{resolved.parent.name}/{resolved.name}" if resolved.parent.name else resolved.name


def _finish(data: bytes, meta: dict[str, Any], output: Path, model_path: Path) -> dict[str, Any]:
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

    conv = _converter(model)
    if precision == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif precision == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    data = _run_converter(conv, f"{precision} conversion", _layer_names(model))

    from toolchain.quant_tflite import describe

    info = describe(data)
    scheme = {"float32": "float32", "float16": "float16-weights", "dynamic": "dynamic-range-int8-weights"}[precision]
    rm = run_meta or {}
    meta = _metadata(
        model_path=src, model=model, run_meta=run_meta, dataset=rm.get("dataset"),
        preprocessing=rm.get("preprocessing"), labels=rm.get("labels"), num_classes=rm.get("num_classes"),
        seed=rm.get("seed"), split=rm.get("split"),
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
    dataset: str
    preprocessing: dict[str, Any] | None
    labels: list[str] | None
    num_classes: int | None
    split_seed: int | None
    split: dict[str, Any] | None
    x_calib: np.ndarray
    x_train: np.ndarray | None = None
    y_train: np.ndarray | None = None
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None


def _prepare_data(dataset: str, model, run_meta: dict[str, Any] | None, config: QuantConfig,
                  autoencoder: bool) -> _Data:
    shape = _input_shape(model)
    rm = run_meta or {}
    if dataset == RANDOM_DATASET:
        if config.qat:
            raise UsageError("--qat needs a real dataset to train on, not random calibration data",
                             received=f"--dataset={dataset}")
        rng = np.random.default_rng(config.seed)
        x = rng.random((config.calibration_samples, *shape), dtype=np.float32)
        return _Data(dataset=dataset, preprocessing=rm.get("preprocessing"), labels=rm.get("labels"),
                     num_classes=rm.get("num_classes"), split_seed=None, split=None, x_calib=x)

    from toolchain import data as tdata

    same_dataset = rm.get("dataset") == dataset
    split = dict(rm.get("split") or {}) if same_dataset else {}
    split.setdefault("val_fraction", DEFAULT_VAL_FRACTION)
    split.setdefault("test_fraction", DEFAULT_TEST_FRACTION)
    split_seed = int(rm.get("seed", config.seed)) if same_dataset else config.seed
    ds = tdata.load_dataset(dataset, seed=split_seed, val_fraction=float(split["val_fraction"]),
                            test_fraction=float(split["test_fraction"]))
    if same_dataset and rm.get("preprocessing"):
        prep = tdata.Preprocessing.from_dict(rm["preprocessing"])
    else:
        prep = tdata.make_preprocessing(ds, shape)
    if tuple(prep.input_shape) != shape:
        raise DatasetError("the recorded preprocessing does not produce the model's input shape",
                           received=f"preprocessing {tuple(prep.input_shape)} vs model input {shape}")
    out_shape = _output_shape(model)
    if not autoencoder and (len(out_shape) != 1 or out_shape[0] != ds.num_classes):
        raise DatasetError("the dataset's number of classes does not match the model output",
                           received=f"{dataset}: {ds.num_classes} classes, model output {out_shape}")
    if len(ds.y_train) == 0:
        raise DatasetError("the dataset has no training samples to calibrate with", received=dataset)
    idx = tdata.calibration_indices(ds.y_train, config.calibration_samples, seed=config.seed)
    if len(idx) < config.calibration_samples:
        log.warning("only %d training samples available for calibration (asked for %d)",
                    len(idx), config.calibration_samples)
    x_calib = prep.apply(ds.x_train[idx])
    d = _Data(dataset=dataset, preprocessing=prep.to_dict(), labels=[str(v) for v in ds.labels],
              num_classes=int(ds.num_classes), split_seed=split_seed, split=split, x_calib=x_calib,
              x_test=prep.apply(ds.x_test), y_test=np.asarray(ds.y_test, dtype=np.int64))
    if config.qat:
        d.x_train = prep.apply(ds.x_train)
        d.y_train = np.asarray(ds.y_train, dtype=np.int64)
        d.x_val = prep.apply(ds.x_val)
        d.y_val = np.asarray(ds.y_val, dtype=np.int64)
    return d


def _representative(x: np.ndarray) -> Callable[[], Iterator[list[np.ndarray]]]:
    def gen() -> Iterator[list[np.ndarray]]:
        for i in range(x.shape[0]):
            yield [x[i:i + 1].astype(np.float32)]

    return gen


# ----------------------------------------------------------------------------------------------------------------
# evaluation


def tflite_predict(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    """Run a batch-1 .tflite on every sample of float ``x`` with the LiteRT reference kernels (bit-exact, no
    delegates); returns float (dequantised) outputs."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=model_bytes,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    outd = interp.get_output_details()[0]
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = outd["quantization"]
    dtype = np.dtype(inp["dtype"])
    results = []
    for i in range(x.shape[0]):
        sample = x[i:i + 1].astype(np.float32)
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            sample = np.clip(np.round(sample / in_scale) + in_zero, info.min, info.max).astype(dtype)
        interp.set_tensor(inp["index"], sample)
        interp.invoke()
        y = interp.get_tensor(outd["index"])
        if np.dtype(y.dtype).kind in "iu" and out_scale:
            y = (y.astype(np.float32) - out_zero) * out_scale
        results.append(np.asarray(y, dtype=np.float32).reshape(-1))
    return np.stack(results) if results else np.zeros((0,), np.float32)


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


def quantise(model_path: str | os.PathLike, output: str | os.PathLike, dataset: str | None = None,
             config: QuantConfig = QuantConfig(), force: bool = False, evaluate: bool = True) -> dict[str, Any]:
    """Full-integer int8 quantisation (optionally after QAT); writes OUT.tflite + OUT.json, returns the sidecar."""
    config.validate()
    src = check_keras_file(model_path)
    out = _check_tflite_output(output, force, src)
    run_meta = load_run_metadata(src)
    dataset = dataset if dataset is not None else (run_meta or {}).get("dataset")
    if not dataset:
        raise UsageError("no dataset given and the model has no run metadata naming one; pass --dataset "
                         f"(a dataset spec, or '{RANDOM_DATASET}' for random calibration data)",
                         received=str(src))
    if dataset != RANDOM_DATASET:
        from toolchain import data as tdata

        tdata.parse_spec(dataset)  # validates the spec's form before loading anything heavy
    model = load_keras_model(src)
    autoencoder = _is_autoencoder(model, run_meta)
    d = _prepare_data(dataset, model, run_meta, config, autoencoder)

    import tensorflow as tf

    qat_info: dict[str, Any] | None = None
    layer_names = _layer_names(model)
    if config.qat:
        from toolchain.quant_qat import run_qat

        qmodel, qat_info = run_qat(model, d.x_train, d.y_train, d.x_val, d.y_val, config, autoencoder,
                                   x_calib=d.x_calib)
        conv = tf.lite.TFLiteConverter.from_concrete_functions([frozen_concrete_function(qmodel)], qmodel)
    else:
        conv = _converter(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = _representative(d.x_calib)
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if config.allow_float_fallback:
        ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
    conv.target_spec.supported_ops = ops
    io_type = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[config.io_dtype]
    conv.inference_input_type = io_type
    conv.inference_output_type = io_type
    if not config.per_channel:
        conv._experimental_disable_per_channel = True
    data = _run_converter(conv, "int8 quantisation", layer_names)

    from toolchain.quant_tflite import describe

    info = describe(data)
    float_ops = [dict(f, layer=_layer_from_name(f["output"], layer_names)) for f in info["float_ops"]]
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

    evaluation = _evaluate(model, data, d, autoencoder) if evaluate else None
    quantization = {
        "scheme": "int8-mixed-float" if float_ops else "full-int8",
        "io_dtype": config.io_dtype,
        "per_channel": bool(config.per_channel),
        "calibration_samples": int(d.x_calib.shape[0]),
        "calibration_split": "random" if dataset == RANDOM_DATASET else "train",
        "calibration_seed": config.seed,
        "qat": bool(config.qat),
        "qat_epochs": int(config.qat_epochs) if config.qat else 0,
        "allow_float_fallback": bool(config.allow_float_fallback),
        "float_ops": float_ops,
    }
    if qat_info is not None:
        quantization["qat_details"] = qat_info
    meta = _metadata(model_path=src, model=model, run_meta=run_meta, dataset=d.dataset,
                     preprocessing=d.preprocessing, labels=d.labels, num_classes=d.num_classes,
                     seed=d.split_seed, split=d.split, quantization=quantization)
    meta["tensors"] = _io_summary(info)
    if evaluation is not None:
        meta["evaluation"] = evaluation
    meta["config"] = asdict(config)
    sidecar = _finish(data, meta, out, src)
    log.debug("quantised %s -> %s (%s bytes, %s)", src, out, f"{sidecar['size_bytes']:,}", quantization["scheme"])
    return sidecar


quantize = quantise  # US spelling alias
