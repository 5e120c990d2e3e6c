"""Int8 TFLite versions of zoo models for C-engine tests and benchmarks (random weights, random calibration).

Bit-exactness and speed do not depend on trained weights, so no data set or training is needed: the Keras model is
built with a fixed seed, its BatchNormalization moving statistics are set from one training-mode pass over the
calibration inputs (with the initial mean 0 / variance 1, a deep network such as MobileNet collapses its
activations to ~1e-8 and TFLM's softmax preparation cannot handle the resulting scales), and it is converted with a
fixed batch of 1 and full-integer quantisation calibrated on uniform random inputs in [0, 1].
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from toolchain.errors import ConversionError
from toolchain.fsutil import atomic_write_bytes


def _walk(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _walk(layer)


def quantise_random(name: str, output: str | os.PathLike, *, seed: int = 0, calibration_samples: int = 16) -> Path:
    """Build zoo model ``name``, quantise it to int8 (int8 input/output) and write ``output``; returns the path."""
    import keras
    import tensorflow as tf

    import models

    keras.utils.set_random_seed(seed)
    model = models.build(name)
    shape = (1, *[int(d) for d in model.input_shape[1:]])

    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    rng = np.random.default_rng(seed)
    samples = [rng.random(shape, dtype=np.float32) for _ in range(calibration_samples)]
    bns = [layer for layer in _walk(model) if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in bns:
        layer.momentum = 0.0
    if bns:
        model(np.concatenate(samples), training=True)

    serve = tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec(shape, tf.float32)],
                        autograph=False)
    frozen = convert_variables_to_constants_v2(serve.get_concrete_function())
    conv = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([s] for s in samples)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    try:
        data = conv.convert()
    except Exception as exc:  # noqa: BLE001 - converter raises many types
        raise ConversionError(f"could not quantise zoo model {name}", received=str(exc)[:300]) from exc
    return atomic_write_bytes(output, data)
