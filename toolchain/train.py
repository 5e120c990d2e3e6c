"""Training: zoo model + dataset -> a run folder (``model.keras``, ``metadata.json``, ``history.json``,
``training.png``).

* Mini-batch Adam training with a validation split, early stopping on validation loss with the best weights
  restored, per-epoch progress logged on the ``toolchain.train`` logger.
* ``augment``: random shift / rotation / zoom (Keras preprocessing layers) applied in the tf.data input pipeline
  only, so the saved model never contains augmentation layers.
* ``init_from`` + ``freeze_conv``: transfer learning from a trained model; the convolutional backbone is frozen
  and the classifier head is replaced for the new dataset's class count.
* ``strategy="mirrored"``: data-parallel training under ``tf.distribute.MirroredStrategy`` (all GPUs, or all
  logical CPU devices when there is no GPU).
* ``strategy="multi-worker"``: synchronous data-parallel training over several processes or machines
  (``tf.distribute.MultiWorkerMirroredStrategy``, :mod:`toolchain.train_multiworker`); the cluster comes from
  ``workers`` + ``worker_index`` or the ``TF_CONFIG`` environment variable (:mod:`toolchain.train_cluster`). Only
  the chief (worker 0) writes the run folder; the others write theirs to a temporary folder that is removed.

TensorFlow/Keras are imported inside functions only.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from toolchain.errors import ModelError, UsageError
from toolchain.fsutil import atomic_write_json, check_output_dir
from toolchain.fsutil import output_dir as _atomic_output_dir
from toolchain.keras_io import check_keras_file
from toolchain.specs import DatasetSpec, RunRecord, SplitParams
from toolchain.train_cluster import ClusterConfig, resolve_cluster
from toolchain.train_helpers import (  # noqa: F401  (_augmenter and others re-exported)
    _BACKBONE_TYPES,
    _accuracy,
    _augmenter,
    _datasets,
    _deterministic,
    _EpochLogger,
    _fmt_shape,
    _freeze_backbone,
    _load_for_transfer,
    _plot,
    _replace_head,
    _strategy,
    _subset,
    _versions,
)

log = logging.getLogger("toolchain.train")

STRATEGIES = ("mirrored", "multi-worker")
TEST_FRACTION = 0.2


@dataclass
class TrainOptions:
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    patience: int = 3  # epochs without val-loss improvement before stopping; 0 = never stop early
    seed: int = 0
    augment: bool = False
    init_from: str | None = None
    freeze_conv: bool = False
    strategy: str | None = None
    val_fraction: float = 0.1
    input_shape: Sequence[int] | str | None = None
    max_train_samples: int | None = None  # train on a subset (quick experiments / tests)
    run_eagerly: bool = False  # skip tf.function tracing: faster for a handful of steps, slower for real runs
    workers: str | None = None  # multi-worker: "host:port,host:port,..." (else TF_CONFIG)
    worker_index: int | None = None  # multi-worker: this process's position in ``workers`` (0 = chief)
    cluster_timeout: float | None = None  # multi-worker: seconds to wait for every worker to start (default 600)

    def validate(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise UsageError("epochs must be a positive integer", received=f"--epochs={self.epochs}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise UsageError("batch size must be a positive integer", received=f"--batch-size={self.batch_size}")
        if not (isinstance(self.learning_rate, (int, float)) and math.isfinite(self.learning_rate)
                and self.learning_rate > 0):
            raise UsageError("learning rate must be a positive number",
                             received=f"--learning-rate={self.learning_rate}")
        if not isinstance(self.patience, int) or self.patience < 0:
            raise UsageError("patience must be an integer >= 0", received=f"--patience={self.patience}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise UsageError("seed must be an integer >= 0", received=f"--seed={self.seed}")
        if not (0.0 < float(self.val_fraction) < 0.5):
            raise UsageError("validation fraction must be in (0, 0.5)", received=f"--val-fraction={self.val_fraction}")
        if self.cluster_timeout is not None:
            if not (isinstance(self.cluster_timeout, (int, float)) and math.isfinite(self.cluster_timeout)
                    and self.cluster_timeout > 0):
                raise UsageError("cluster timeout must be a positive number of seconds",
                                 received=f"--cluster-timeout={self.cluster_timeout}")
            if self.strategy != "multi-worker":
                raise UsageError("--cluster-timeout applies to --strategy multi-worker only",
                                 received=f"--strategy={self.strategy}")
        if self.strategy is not None and self.strategy not in STRATEGIES:
            raise UsageError(f"unknown distribution strategy (known: {', '.join(STRATEGIES)})",
                             received=f"--strategy={self.strategy}")
        if self.freeze_conv and not self.init_from:
            raise UsageError("--freeze-conv needs --init-from (a trained model to take the backbone from)",
                             received="--freeze-conv without --init-from")
        if self.max_train_samples is not None and (not isinstance(self.max_train_samples, int)
                                                   or self.max_train_samples < 1):
            raise UsageError("max train samples must be a positive integer",
                             received=f"--max-train-samples={self.max_train_samples}")
        if self.strategy == "multi-worker" and self.run_eagerly:
            raise UsageError("--eager is not available with --strategy multi-worker (its training loop runs the "
                             "collective all-reduce in a traced tf.function); drop --eager",
                             received="--strategy multi-worker --eager")

    def cluster(self, environ=None) -> ClusterConfig | None:
        """The multi-worker cluster (None for other strategies); refuses cluster options that would be ignored."""
        cluster = resolve_cluster(self.strategy, self.workers, self.worker_index,
                                  os.environ if environ is None else environ)
        if cluster is not None and self.batch_size < cluster.num_workers:
            raise UsageError(f"the global batch must hold at least one sample per worker ({cluster.num_workers})",
                             received=f"--batch-size={self.batch_size}")
        return cluster



def train(model: str | None, dataset: "str | DatasetSpec" = "digits", output_dir: str | os.PathLike = "runs/model",
          options: TrainOptions | None = None, force: bool = False, architecture=None) -> dict[str, Any]:
    """Train ``model`` (a zoo name) on ``dataset`` and write a run folder; returns the metadata dict.

    With ``options.init_from`` the architecture and weights come from a trained model (run folder or .keras);
    ``model`` may then be omitted (the source run's model name is recorded).

    ``architecture``: a model that is not in the zoo (``toolchain tune``): an object with ``name``, ``input_shape``,
    ``build(input_shape, num_classes)`` and ``to_dict()`` (recorded as ``metadata["architecture"]``); ``model`` is
    then ignored.
    """
    opts = options or TrainOptions()
    opts.validate()
    cluster = opts.cluster()
    import models

    init_path = check_keras_file(opts.init_from) if opts.init_from else None
    init_meta: dict[str, Any] | None = None
    if architecture is not None and init_path is not None:
        raise UsageError("an architecture to build and --init-from exclude each other", received=architecture.name)
    if architecture is not None:
        model_name = architecture.name
    elif init_path is not None:
        from toolchain.metadata import load_run_metadata

        init_meta = load_run_metadata(init_path)
        source_name = (init_meta or {}).get("model")
        if model is not None and source_name is not None and model != source_name:
            raise UsageError("MODEL does not match the --init-from model; omit MODEL with --init-from",
                             received=f"{model} vs {source_name} ({init_path})")
        model_name = model or source_name or init_path.parent.name
    else:
        if model is None:
            raise UsageError("give a zoo MODEL name (see `toolchain models`) or --init-from", received="no model")
        model_name = model
        spec = models.get_spec(model_name)
        if spec.task != "classification":
            raise ModelError(f"{model_name} is an {spec.task}; `train` trains classifiers on labelled datasets",
                             received=model_name)
    shape_override = models.parse_input_shape(opts.input_shape)
    if shape_override is not None and len(shape_override) != 3:
        raise ModelError("--input-shape for a classifier must be H,W,C", received=opts.input_shape)
    # A non-chief worker never writes to the output folder (the chief may be creating it right now).
    out = check_output_dir(output_dir, force) if cluster is None or cluster.is_chief else Path(output_dir)

    from toolchain import data as tdata

    t_start = time.perf_counter()
    spec = dataset if isinstance(dataset, DatasetSpec) else DatasetSpec.parse(dataset)
    dataset = spec.text
    ds = tdata.load_dataset(spec, split=SplitParams(seed=opts.seed, val_fraction=float(opts.val_fraction),
                                                    test_fraction=TEST_FRACTION))

    with _deterministic(opts.seed):
        return _fit_and_save(model_name, dataset, ds, out, opts, init_path, init_meta, shape_override, force,
                             t_start, cluster, architecture)


BN_REESTIMATE_SAMPLES = 512


def _reestimate_batchnorm(net, x_train: np.ndarray, y_train: np.ndarray, seed: int) -> tuple[int, int]:
    """Set every trainable BatchNormalization layer's moving mean/variance to the statistics of the final weights.

    Keras updates the moving statistics with momentum 0.99, so after the few hundred steps of a short run on a small
    data set they still lean towards their initial values (0 and 1) and lag the weights: such a model scores well
    in training mode and near chance at inference, and its int8 calibration inherits the error. One forward pass in
    training mode with momentum 0 over a class-stratified draw of the training split replaces them with the exact
    batch statistics. Frozen layers (transfer learning) run in inference mode and keep theirs.
    """
    import keras

    from toolchain.data import calibration_indices

    def walk(model):
        for layer in model.layers:
            yield layer
            if hasattr(layer, "layers"):
                yield from walk(layer)

    layers = [layer for layer in walk(net) if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
    if not layers or len(x_train) == 0:
        return 0, 0
    idx = np.sort(calibration_indices(y_train, min(BN_REESTIMATE_SAMPLES, len(y_train)), seed=seed))
    momenta = [layer.momentum for layer in layers]
    try:
        for layer in layers:
            layer.momentum = 0.0
        net(x_train[idx], training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    return len(layers), int(len(idx))


def _fit_and_save(model_name: str, dataset: str, ds, out: Path, opts: TrainOptions, init_path: Path | None,
                  init_meta: dict[str, Any] | None, shape_override, force: bool, t_start: float,
                  cluster: ClusterConfig | None = None, architecture=None) -> dict[str, Any]:
    import keras

    import models
    from toolchain import data as tdata
    from toolchain import train_multiworker

    if cluster is not None:
        strategy = train_multiworker.make_strategy(cluster, opts.cluster_timeout or
                                                   train_multiworker.DEFAULT_STARTUP_TIMEOUT)
    else:
        strategy = _strategy(opts.strategy)
    replicas = int(strategy.num_replicas_in_sync)
    with strategy.scope():
        if init_path is not None:
            # The data is prepared for the source model's input shape.
            net, build_info = _load_for_transfer(init_path, ds.num_classes, opts.freeze_conv)
            model_shape = tuple(int(d) for d in net.inputs[0].shape[1:])
            if shape_override is not None and tuple(shape_override) != model_shape:
                raise UsageError("--input-shape differs from the --init-from model's input shape",
                                 received=f"{_fmt_shape(shape_override)} vs {_fmt_shape(model_shape)}")
        elif architecture is not None:
            model_shape = tuple(shape_override or architecture.input_shape)
            net = architecture.build(model_shape, ds.num_classes)
            build_info = {}
        else:
            spec = models.get_spec(model_name)
            model_shape = tuple(shape_override or spec.input_shape)
            net = models.build(model_name, input_shape=model_shape, num_classes=ds.num_classes)
            build_info = {}
        net.compile(optimizer=keras.optimizers.Adam(learning_rate=float(opts.learning_rate)),
                    loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                    run_eagerly=bool(opts.run_eagerly))

    prepared = tdata.prepare_loaded(ds, None, input_shape=model_shape)
    transform, prep = prepared.transform, prepared.preprocessing
    log.info("preprocessing: %s; model input %s (resize %s, channels %s)", ds.normalisation.describe(),
             _fmt_shape(model_shape).replace(",", "x"), prep.resize, prep.channels)
    x_tr_raw, y_tr = _subset(ds.x_train, np.asarray(ds.y_train, dtype=np.int64), opts.max_train_samples, opts.seed)
    x_train = prep.apply(x_tr_raw)
    val, test = prepared.split("val"), prepared.split("test")
    x_val, y_val, x_test, y_test = val.x, val.y, test.x, test.y
    if len(y_val) == 0 or len(y_test) == 0 or len(y_tr) == 0:
        raise UsageError("dataset too small for train/validation/test splits", received=f"{dataset}: "
                         f"{len(y_tr)} train, {len(y_val)} val, {len(y_test)} test samples")
    trainable = int(sum(int(np.prod(w.shape)) for w in net.trainable_weights))
    log.info("training %s on %s: %d train / %d val / %d test samples, input %s, %d classes, %s params "
             "(%s trainable)%s", model_name, dataset, len(y_tr), len(y_val), len(y_test),
             _fmt_shape(model_shape).replace(",", "x"), ds.num_classes, f"{net.count_params():,}", f"{trainable:,}",
             f", replicas: {replicas}" if opts.strategy else "")

    train_ds, val_ds = _datasets(x_train, y_tr, x_val, y_val, opts.batch_size, opts.seed, opts.augment)
    patience = opts.patience if opts.patience > 0 else opts.epochs + 1
    stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
    weights_before = ({n: [w.numpy().copy() for w in net.get_layer(n).weights]
                       for n in build_info.get("frozen_layers", [])})
    if cluster is not None:  # Keras' fit does not run under MultiWorkerMirroredStrategy: see train_multiworker
        history = train_multiworker.fit(net, strategy, train_ds, val_ds, opts.epochs, opts.patience)
    else:
        hist = net.fit(train_ds, validation_data=val_ds, epochs=opts.epochs, verbose=0, shuffle=False,
                       callbacks=[stopper, _EpochLogger.make(opts.epochs)])
        history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    epochs_run = len(history.get("loss", []))
    best_epoch = int(np.argmin(history["val_loss"])) + 1 if history.get("val_loss") else epochs_run

    for name, before in weights_before.items():  # frozen means frozen: fail loudly if it ever is not
        after = [w.numpy() for w in net.get_layer(name).weights]
        if not all(np.array_equal(a, b) for a, b in zip(before, after)):
            raise ModelError("a frozen backbone layer changed during training", received=name)
    if cluster is not None:
        net = train_multiworker.local_copy(net)

    bn_layers, bn_samples = _reestimate_batchnorm(net, x_train, y_tr, opts.seed)
    if bn_layers:
        log.info("re-estimated the moving statistics of %d BatchNormalization layers on %d training samples",
                 bn_layers, bn_samples)
    test_acc = _accuracy(net, x_test, y_test)
    val_acc = _accuracy(net, x_val, y_val)
    seconds = time.perf_counter() - t_start

    # The saved model is a plain, uncompiled functional view of the trained layers: no optimizer state, no
    # augmentation, every layer trainable again (downstream QAT fine-tunes it).
    for layer in net.layers:
        layer.trainable = True
    export = keras.Model(net.inputs, net.outputs, name=net.name)

    record = RunRecord(dataset=ds.spec, split=ds.split, normalisation=ds.normalisation, transform=transform,
                       labels=tuple(str(label) for label in ds.labels), test_accuracy=test_acc)
    metadata: dict[str, Any] = {
        "model": model_name,
        "task": "classification",
        **record.to_dict(),
        "preprocessing": prep.to_dict(),
        "input_shape": [int(d) for d in model_shape],
        "params": int(export.count_params()),
        "float_test_accuracy": test_acc,
        "float_val_accuracy": val_acc,
        "epochs_run": epochs_run,
        "best_epoch": best_epoch,
        "samples": {"train": int(len(y_tr)), "val": int(len(y_val)), "test": int(len(y_test))},
        "training": {
            "epochs": opts.epochs, "batch_size": opts.batch_size, "learning_rate": float(opts.learning_rate),
            "patience": opts.patience, "augment": bool(opts.augment), "strategy": opts.strategy,
            "replicas": replicas, "workers": cluster.num_workers if cluster else 1,
            "global_batch_size": opts.batch_size, "trainable_params": trainable,
            "init_from": str(init_path) if init_path else None,
            "freeze_conv": bool(opts.freeze_conv), "max_train_samples": opts.max_train_samples,
            "run_eagerly": bool(opts.run_eagerly),
            "batchnorm_reestimated": {"layers": bn_layers, "samples": bn_samples},
            "seconds": round(seconds, 2), **build_info,
        },
        "versions": _versions(),
    }
    if architecture is not None:
        metadata["architecture"] = architecture.to_dict()
    if init_meta:
        metadata["training"]["init_from_model"] = init_meta.get("model")
    if cluster is not None:
        metadata["training"].update({"worker_index": cluster.index, "cluster_from": cluster.source,
                                     "auto_shard_policy": train_multiworker.AUTO_SHARD_POLICY})

    def write(folder: Path) -> None:
        export.save(folder / "model.keras")
        atomic_write_json(folder / "history.json", {"epochs_run": epochs_run, "best_epoch": best_epoch,
                                                    "history": history})
        _plot(history, folder / "training.png",
              f"{model_name} on {dataset}: test accuracy {test_acc * 100:.1f} %")
        atomic_write_json(folder / "metadata.json", metadata)

    if cluster is not None and not cluster.is_chief:  # Keras' multi-worker save: the others save to a temp dir
        with tempfile.TemporaryDirectory(prefix=f"toolchain-worker{cluster.index}-") as scratch:
            write(Path(scratch))
        log.debug("worker %d of %d: run folder written by the chief only", cluster.index, cluster.num_workers)
        return metadata
    with _atomic_output_dir(out, force) as tmp:
        write(tmp)
    log.debug("test accuracy %.2f %% after %d epochs; wrote %s", test_acc * 100, epochs_run, out)
    return metadata


def load_history(run_dir: str | os.PathLike) -> dict[str, Any]:
    p = Path(run_dir) / "history.json"
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError("cannot read history.json", received=str(p)) from exc
