"""Quantisation-aware training (QAT) with tensorflow-model-optimization.

tfmot works on tf-keras (Keras 2) models only, so the Keras 3 model is rebuilt layer by layer as a ``tf_keras``
model with the same weights (Sequential or functional graphs of standard layers: Conv2D, DepthwiseConv2D, Dense,
pooling, Flatten, Dropout, ReLU/Activation, BatchNormalization, Add, Concatenate, ZeroPadding, Reshape...).
Every layer the default 8-bit scheme supports (plus BatchNormalization, which tfmot folds into the preceding
convolution) is annotated; layers it cannot annotate stay float during QAT and are logged (the int8 converter
still quantises them from calibration ranges). The annotated model is fine-tuned on the training split.
"""

from __future__ import annotations

import inspect
import logging
import re
from typing import Any

import numpy as np

from toolchain.errors import ConversionError

log = logging.getLogger("toolchain.quantise")

# Keras 3 config keys that have no tf-keras equivalent worth translating (weights are copied afterwards).
_DROP_KEYS = {"dtype", "kernel_initializer", "bias_initializer", "depthwise_initializer", "pointwise_initializer",
              "gamma_initializer", "beta_initializer", "moving_mean_initializer", "moving_variance_initializer",
              "kernel_constraint", "bias_constraint", "depthwise_constraint", "pointwise_constraint",
              "gamma_constraint", "beta_constraint", "quantization_config", "lora_rank", "lora_alpha",
              "activity_regularizer", "seed"}
_REGULARIZER_KEYS = {"kernel_regularizer", "bias_regularizer", "depthwise_regularizer", "pointwise_regularizer",
                     "gamma_regularizer", "beta_regularizer"}
_MAX_APPLY_ATTEMPTS = 64


def _tf_keras():
    import tf_keras

    return tf_keras


def _regularizer(value: Any):
    """Translate a Keras 3 L1/L2/L1L2 regularizer config; anything else is dropped (logged)."""
    tfk = _tf_keras()
    if value is None:
        return None
    if isinstance(value, dict):
        name = value.get("class_name")
        cfg = value.get("config", {}) or {}
        if name in ("L2", "l2"):
            return tfk.regularizers.L2(float(cfg.get("l2", 0.01)))
        if name in ("L1", "l1"):
            return tfk.regularizers.L1(float(cfg.get("l1", 0.01)))
        if name in ("L1L2", "l1_l2"):
            return tfk.regularizers.L1L2(l1=float(cfg.get("l1", 0.0)), l2=float(cfg.get("l2", 0.0)))
    if isinstance(value, str) and value in ("l1", "l2", "l1_l2"):
        return tfk.regularizers.get(value)
    log.debug("QAT: dropping regularizer %r", value)
    return None


def _convert_layer(layer):
    """A fresh tf_keras layer equivalent to the Keras 3 ``layer`` (weights are set after building)."""
    tfk = _tf_keras()
    cls_name = type(layer).__name__
    cls = getattr(tfk.layers, cls_name, None)
    if cls is None or not isinstance(cls, type):
        raise ConversionError(f"QAT cannot rebuild layer '{layer.name}' of type {cls_name} as a tf-keras layer",
                              received=cls_name, hint="quantise without --qat (post-training quantisation)")
    cfg = dict(layer.get_config())
    accepted = set(inspect.signature(cls.__init__).parameters) | {"name", "trainable"}
    kwargs: dict[str, Any] = {}
    for key, value in cfg.items():
        if key in _DROP_KEYS:
            continue
        if key in _REGULARIZER_KEYS:
            value = _regularizer(value)
        elif key == "activation" and not isinstance(value, str):
            raise ConversionError(f"QAT cannot rebuild layer '{layer.name}': custom activation", received=value,
                                  hint="quantise without --qat")
        if key in accepted:
            kwargs[key] = value
        else:
            log.debug("QAT: %s ignores config key %s=%r", layer.name, key, value)
    try:
        return cls(**kwargs)
    except Exception as exc:  # tf_keras validates arguments with ValueError/TypeError
        raise ConversionError(f"QAT cannot rebuild layer '{layer.name}' ({cls_name})",
                              received=f"{type(exc).__name__}: {exc}", hint="quantise without --qat") from exc


def _is_keras_tensor(x: Any) -> bool:
    return hasattr(x, "_keras_history")


def to_tf_keras(model, annotate=None):
    """Rebuild a Keras 3 model as a tf_keras functional model with identical weights.

    ``annotate(tfk_layer) -> layer`` may wrap each new layer (e.g. ``quantize_annotate_layer``) before it is called.
    Returns ``(tfk_model, pairs)`` with ``pairs`` the list of (keras3_layer, tfk_layer_or_wrapper).
    """
    import keras

    tfk = _tf_keras()
    pairs: list[tuple[Any, Any]] = []
    built: dict[int, Any] = {}  # shared Keras layers stay shared

    def make(layer):
        if id(layer) not in built:
            new = _convert_layer(layer)
            wrapped = annotate(new) if annotate is not None else new
            pairs.append((layer, wrapped))
            built[id(layer)] = wrapped
        return built[id(layer)]

    def apply_model(sub, inputs):
        if isinstance(sub, keras.Sequential):
            x = inputs
            for layer in sub.layers:
                x = apply_layer(layer, x)
            return x
        memo: dict[int, Any] = {}
        sub_inputs = sub.inputs
        if len(sub_inputs) == 1:
            memo[id(sub_inputs[0])] = inputs
        else:
            for kt, t in zip(sub_inputs, inputs):
                memo[id(kt)] = t

        def resolve(kt):
            key = id(kt)
            if key in memo:
                return memo[key]
            op, node_index, tensor_index = kt._keras_history
            node = op._inbound_nodes[node_index]
            args = keras.tree.map_structure(lambda v: resolve(v) if _is_keras_tensor(v) else v,
                                            node.arguments.args)
            call_kwargs = {k: v for k, v in node.arguments.kwargs.items() if k not in ("training", "mask")}
            if any(_is_keras_tensor(v) for v in keras.tree.flatten(call_kwargs)):
                raise ConversionError(f"QAT cannot rebuild layer '{op.name}': tensor keyword arguments",
                                      received=op.name, hint="quantise without --qat")
            if not isinstance(op, keras.layers.Layer):
                raise ConversionError(f"QAT cannot rebuild operation '{op.name}' (not a Keras layer)",
                                      received=type(op).__name__, hint="quantise without --qat")
            single = args[0] if len(args) == 1 else list(args)
            result = apply_layer(op, single, call_kwargs)
            outs = keras.tree.flatten(node.outputs)
            results = keras.tree.flatten(result) if isinstance(result, (list, tuple)) else [result]
            for o, r in zip(outs, results):
                memo[id(o)] = r
            return memo[key]

        outs = [resolve(o) for o in sub.outputs]
        return outs[0] if len(outs) == 1 else outs

    def apply_layer(layer, x, call_kwargs=None):
        if isinstance(layer, keras.layers.InputLayer):
            return x
        if isinstance(layer, keras.Model):
            return apply_model(layer, x)
        return make(layer)(x, **(call_kwargs or {}))

    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    inp = tfk.Input(shape=shape, name=_input_name(model))
    out = apply_model(model, inp)
    tfk_model = tfk.Model(inp, out, name=re.sub(r"\W", "_", model.name))
    for src, dst in pairs:
        target = getattr(dst, "layer", dst)  # QuantizeAnnotate wraps the real layer
        weights = src.get_weights()
        try:
            target.set_weights(weights)
        except ValueError as exc:
            raise ConversionError(f"QAT: weights of layer '{src.name}' do not fit the rebuilt tf-keras layer",
                                  received=str(exc).splitlines()[0], hint="quantise without --qat") from exc
    return tfk_model, pairs


def _input_name(model) -> str:
    name = getattr(model.inputs[0], "name", None) or "input"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(name).split(":")[0]) or "input"


def check_equivalent(model3, tfk_model, x: np.ndarray, atol: float = 1e-4) -> float:
    """Max absolute difference between the Keras 3 and tf-keras models' outputs on ``x`` (raises if above atol)."""
    a = np.asarray(model3.predict(x, verbose=0, batch_size=128))
    b = np.asarray(tfk_model.predict(x, verbose=0, batch_size=128))
    diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    if diff > atol:
        raise ConversionError("QAT: the rebuilt tf-keras model does not reproduce the Keras model",
                              received=f"max |difference| = {diff:.3g}", hint="quantise without --qat")
    return diff


def _failing_layer(exc: Exception, names: set[str]) -> str | None:
    text = str(exc)
    for name in sorted(names, key=len, reverse=True):
        if re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", text):
            return name
    return None


def build_qat_model(model, per_channel: bool = True):
    """Rebuild, annotate and ``quantize_apply``; returns (quantised tf-keras model, annotated, not_annotated)."""
    import tensorflow_model_optimization as tfmot
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as registry_mod,
        default_8bit_quantize_scheme as scheme_mod,
    )

    tfk = _tf_keras()
    qk = tfmot.quantization.keras
    registry = registry_mod.Default8BitQuantizeRegistry(disable_per_axis=not per_channel)
    scheme = scheme_mod.Default8BitQuantizeScheme(disable_per_axis=not per_channel)
    excluded: set[str] = set()
    last_error: Exception | None = None
    for _ in range(_MAX_APPLY_ATTEMPTS):
        annotated: list[str] = []
        skipped: list[str] = []

        def annotate(layer):
            supported = registry.supports(layer) or isinstance(layer, tfk.layers.BatchNormalization)
            if supported and layer.name not in excluded:
                annotated.append(layer.name)
                return qk.quantize_annotate_layer(layer)
            skipped.append(f"{layer.name} ({type(layer).__name__})")
            return layer

        base, _pairs = to_tf_keras(model, annotate=annotate)
        if not annotated:
            raise ConversionError("QAT: no layer of the model can be annotated for quantisation",
                                  received=", ".join(skipped) or model.name, hint="quantise without --qat")
        try:
            with qk.quantize_scope():
                qmodel = qk.quantize_apply(base, scheme=scheme)
            return qmodel, annotated, skipped
        except Exception as exc:  # tfmot raises ValueError/RuntimeError naming the layer it cannot handle
            last_error = exc
            name = _failing_layer(exc, set(annotated))
            if name is None:
                break
            log.debug("QAT: cannot annotate %s (%s); retrying without it", name, str(exc).splitlines()[0])
            excluded.add(name)
    raise ConversionError("QAT: tensorflow-model-optimization cannot quantise this model",
                          received=f"{type(last_error).__name__}: {str(last_error).splitlines()[0]}"
                          if last_error else model.name, hint="quantise without --qat")


def warm_up_ranges(qmodel, x: np.ndarray, max_samples: int = 256) -> int:
    """Set every moving-average activation range of a fresh QAT model from one pass over ``x``.

    tfmot starts activation ranges at [-6, 6] and moves them with an EMA of decay 0.999, so a short fine-tune
    (a few hundred steps) would keep ranges that are far too wide and convert to a worse int8 model than
    post-training calibration. One training-mode pass with the EMA decay at 0 starts QAT from calibrated ranges.
    """
    from tensorflow_model_optimization.python.core.quantization.keras import quant_ops

    original = quant_ops.MovingAvgQuantize

    def without_ema(*args, **kwargs):
        kwargs["ema_decay"] = 0.0
        return original(*args, **kwargs)

    batch = np.asarray(x[:max_samples], dtype=np.float32)
    quant_ops.MovingAvgQuantize = without_ema
    try:
        qmodel(batch, training=True)
    finally:
        quant_ops.MovingAvgQuantize = original
    return int(len(batch))


def run_qat(model, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray | None, y_val: np.ndarray | None,
            config, autoencoder: bool = False, x_calib: np.ndarray | None = None):
    """Fine-tune a quantisation-aware copy of ``model``; returns (tf-keras QAT model, info dict)."""
    import tensorflow as tf

    tfk = _tf_keras()
    tfk.utils.set_random_seed(int(config.seed))
    try:
        tf.config.experimental.enable_op_determinism()
    except (AttributeError, RuntimeError):
        log.debug("op determinism not available; seeding only")

    plain, _ = to_tf_keras(model)
    probe = x_train[: min(len(x_train), 64)]
    diff = check_equivalent(model, plain, probe)
    qmodel, annotated, skipped = build_qat_model(model, per_channel=config.per_channel)
    if skipped:
        log.info("QAT: %d layer(s) not annotated (kept float during training): %s", len(skipped), ", ".join(skipped))
    log.info("QAT: %d layer(s) annotated; training %d epoch(s) on %d samples", len(annotated), config.qat_epochs,
             len(x_train))

    if autoencoder:
        loss, metrics = "mse", []
        y_fit = x_train
        val = (x_val, x_val) if x_val is not None and len(x_val) else None
    else:
        loss, metrics = "sparse_categorical_crossentropy", ["accuracy"]
        y_fit = y_train
        val = (x_val, y_val) if x_val is not None and len(x_val) else None
    warm = warm_up_ranges(qmodel, x_calib if x_calib is not None and len(x_calib) else x_train)
    qmodel.compile(optimizer=tfk.optimizers.Adam(learning_rate=float(config.qat_learning_rate)), loss=loss,
                   metrics=metrics)
    before = None
    if val is not None and not autoencoder:
        before = float(qmodel.evaluate(val[0], val[1], verbose=0, batch_size=256)[1])
    hist = qmodel.fit(x_train, y_fit, epochs=int(config.qat_epochs), batch_size=int(config.qat_batch_size),
                      validation_data=val, shuffle=True, verbose=0)
    history = {k: [round(float(v), 6) for v in vals] for k, vals in hist.history.items()}
    for epoch in range(len(history.get("loss", []))):
        parts = ", ".join(f"{k} {v[epoch]:.4f}" for k, v in history.items())
        log.info("QAT epoch %d/%d: %s", epoch + 1, config.qat_epochs, parts)
    info = {
        "annotated_layers": annotated,
        "not_annotated_layers": skipped,
        "epochs": int(config.qat_epochs),
        "learning_rate": float(config.qat_learning_rate),
        "batch_size": int(config.qat_batch_size),
        "train_samples": int(len(x_train)),
        "rebuild_max_abs_diff": diff,
        "range_warm_up_samples": warm,
        "history": history,
    }
    if before is not None:
        info["val_accuracy_before_training"] = before
    return qmodel, info
