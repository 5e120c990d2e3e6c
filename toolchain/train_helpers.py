"""Helpers of :mod:`toolchain.train`: version stamps, class-balanced subsets, the distribution strategy,
transfer learning (head replacement, backbone freezing), the epoch logger, augmentation and the tf.data
pipeline, accuracy, the training plot and per-run determinism. TensorFlow/Keras are imported inside functions only.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

import toolchain
from toolchain.errors import ModelError

log = logging.getLogger("toolchain.train")

# Layer types that make up a convolutional backbone (frozen by ``freeze_conv``).
_BACKBONE_TYPES = ("Conv1D", "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "BatchNormalization")


# --------------------------------------------------------------------------------------------------------------
# helpers usable without TensorFlow


def _versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {"toolchain": toolchain.__version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def _fmt_shape(shape) -> str:
    return ",".join(str(int(d)) for d in shape)


def _subset(x: np.ndarray, y: np.ndarray, n: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic class-balanced subset of at most ``n`` samples (round-robin over classes)."""
    if n is None or n >= len(y):
        return x, y
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)]
    order: list[int] = []
    depth = 0
    while len(order) < n:
        for idx in per_class:
            if depth < len(idx) and len(order) < n:
                order.append(int(idx[depth]))
        depth += 1
    sel = np.sort(np.asarray(order, dtype=np.int64))
    return x[sel], y[sel]


# --------------------------------------------------------------------------------------------------------------
# model construction


def _strategy(name: str | None):
    import tensorflow as tf

    if name is None:
        return tf.distribute.get_strategy()
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=devices)


def _replace_head(model, num_classes: int):
    """New softmax classifier on the features feeding the last Dense layer."""
    import keras

    last = model.layers[-1]
    if type(last).__name__ != "Dense":
        raise ModelError("cannot replace the classifier head: the model's last layer is not Dense",
                         received=f"{model.name}: {type(last).__name__}")
    features = last.input
    outputs = keras.layers.Dense(num_classes, activation="softmax", name=f"head_{num_classes}")(features)
    return keras.Model(model.inputs, outputs, name=model.name)


def _freeze_backbone(model) -> list[str]:
    frozen = []
    for layer in model.layers:
        if type(layer).__name__ in _BACKBONE_TYPES and layer.weights:
            layer.trainable = False
            frozen.append(layer.name)
    if not frozen:
        raise ModelError("--freeze-conv: the model has no convolutional layers to freeze", received=model.name)
    return frozen


def _load_for_transfer(init_path: Path, num_classes: int, freeze_conv: bool) -> tuple[Any, dict[str, Any]]:
    """Trained model -> model to train: new head when the class count changes or the backbone is frozen."""
    from toolchain.keras_io import load_keras_model

    info: dict[str, Any] = {}
    base = load_keras_model(init_path, what="the --init-from model")
    old_classes = int(base.outputs[0].shape[-1])
    if freeze_conv or old_classes != num_classes:
        base = _replace_head(base, num_classes)
        info["head_replaced"] = {"from_classes": old_classes, "to_classes": num_classes}
    if freeze_conv:
        info["frozen_layers"] = _freeze_backbone(base)
    return base, info


# --------------------------------------------------------------------------------------------------------------
# training


class _EpochLogger:
    """Builds a Keras callback that logs one line per epoch (Keras itself runs with verbose=0)."""

    @staticmethod
    def make(total_epochs: int):
        import keras

        class EpochLogger(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self._t0 = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                parts = [f"{k} {float(v):.4f}" for k, v in logs.items() if k in
                         ("loss", "accuracy", "val_loss", "val_accuracy")]
                log.info("epoch %d/%d: %s (%.1f s)", epoch + 1, total_epochs, ", ".join(parts),
                         time.perf_counter() - self._t0)

        return EpochLogger()


def _augmenter(seed: int):
    import keras

    return keras.Sequential([
        keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=seed),
        keras.layers.RandomRotation(0.05, fill_mode="constant", seed=seed + 1),
        keras.layers.RandomZoom(0.1, fill_mode="constant", seed=seed + 2),
    ], name="train_augmentation")


def _datasets(x_train, y_train, x_val, y_val, batch_size: int, seed: int, augment: bool):
    import tensorflow as tf

    train = tf.data.Dataset.from_tensor_slices((x_train, y_train))
    train = train.shuffle(len(y_train), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    if augment:
        aug = _augmenter(seed)
        train = train.map(lambda x, y: (aug(x, training=True), y), num_parallel_calls=1, deterministic=True)
    train = train.prefetch(2)
    val = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(batch_size).prefetch(2)
    return train, val


def _accuracy(net, x: np.ndarray, y: np.ndarray) -> float:
    import tensorflow as tf

    batches = tf.data.Dataset.from_tensor_slices(x).batch(256)
    probs = net.predict(batches, verbose=0)
    return float(np.mean(np.argmax(probs, axis=-1) == y))


def _plot(history: dict[str, list[float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, label in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        for key, style in ((metric, "-o"), (f"val_{metric}", "--s")):
            if key in history:
                ax.plot(epochs, history[key], style, label=key.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@contextlib.contextmanager
def _deterministic(seed: int) -> Iterator[None]:
    """Seed Python/NumPy/TF and enable TF op determinism for the duration of one training run only (the
    process-wide switch is restored afterwards so other TensorFlow users are unaffected)."""
    import keras

    keras.utils.set_random_seed(seed)
    try:
        from tensorflow.python.framework import config as tf_config

        was_enabled = bool(tf_config.is_op_determinism_enabled())
        tf_config.enable_op_determinism()
    except (ImportError, AttributeError):  # private API moved: seeding alone still applies
        tf_config, was_enabled = None, True
    try:
        yield
    finally:
        if tf_config is not None and not was_enabled:
            tf_config.disable_op_determinism()

