"""``--strategy multi-worker``: synchronous data-parallel training over several processes/machines with
``tf.distribute.MultiWorkerMirroredStrategy`` (collective all-reduce over gRPC).

Why a training loop of our own: Keras 3's ``Model.fit`` does not run under this strategy (keras 3.15 / TF 2.21:
its symbolic build reduces the nested first batch and its step reduces scalar logs with ``axis=0``, both errors;
keras-team/keras#20585). The loop here is the same mini-batch Adam step as ``fit``'s, written with
``strategy.run``:

* **data**: every worker holds the same in-memory NumPy split and builds the same seeded tf.data pipeline
  (shuffle with the run's seed, batch = the global batch). The distributed dataset uses auto-shard policy
  ``DATA``: each global batch is split into per-worker slices and worker i keeps slice i, so the global batches and
  their order are exactly those of a single-process run. ``OFF`` would make every worker train on the same
  slices (duplicated samples per step) and ``FILE`` needs file-based sources; ``AUTO`` would fall back to ``DATA``
  with a warning, so it is set explicitly.
* **loss**: each replica's summed per-sample loss divided by the global sample count of the step (all-reduced, so a
  short last batch is averaged correctly); the optimizer all-reduces (sums) the gradients, so the update is the
  single-process mean gradient over the global batch.
* **metrics and early stopping**: loss/accuracy sums and counts are all-reduced, so every worker sees identical
  validation losses and takes the same early-stopping decision (a worker that stopped alone would hang the others).
  The best epoch's weights are restored at the end, as ``keras.callbacks.EarlyStopping(restore_best_weights=True)``.

Differences from one process that remain (documented, measured by the tests): BatchNormalization normalises with
per-worker batch statistics, Dropout draws per-worker masks, and floating-point sums run in another order.
TensorFlow is imported inside functions only.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import numpy as np

from toolchain.errors import ClusterError
from toolchain.train_cluster import ClusterConfig

log = logging.getLogger("toolchain.train")

AUTO_SHARD_POLICY = "DATA"


DEFAULT_STARTUP_TIMEOUT = 600.0  # seconds to wait for every worker of the cluster to start


def make_strategy(cluster: ClusterConfig, startup_timeout: float = DEFAULT_STARTUP_TIMEOUT):
    """The strategy for ``cluster`` (its TF_CONFIG passed as a cluster resolver: ``os.environ`` is not changed).

    Blocks until every worker of the cluster has started, at most ``startup_timeout`` seconds (then ClusterError:
    nothing has been written at that point).
    """
    import tensorflow as tf

    job, index = cluster.task()
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster.cluster_spec()), task_type=job, task_id=index, rpc_layer="grpc")
    log.info("multi-worker: worker %d of %d (%s %d in %s), waiting for the cluster", cluster.index,
             cluster.num_workers, job, index, ", ".join(cluster.addresses))
    log.debug("TF_CONFIG equivalent: %s", cluster.tf_config())
    # TensorFlow configures its coordination service like this itself (collective_all_reduce_strategy.py) with no
    # registration deadline (it waits for missing workers forever, in native code that holds the GIL); configured
    # first, the same service gets one, and a missing worker becomes an error after ``startup_timeout`` seconds.
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context

    spec = resolver.cluster_spec()
    jobs = [coordination_config_pb2.CoordinatedJob(name=j, num_tasks=spec.num_tasks(j))
            for j in ("chief", "worker") if j in spec.jobs]
    context.context().configure_coordination_service(
        service_type="standalone", service_leader=multi_worker_util.coordination_leader(spec),
        coordinated_jobs=jobs, cluster_register_timeout_in_ms=int(startup_timeout * 1000))
    # the leader too: registration as a barrier of every task, bounded by the same deadline
    context.context().coordination_service.cluster_register_with_barrier = True
    t0 = time.monotonic()
    try:
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    except (tf.errors.DeadlineExceededError, tf.errors.UnavailableError, tf.errors.AbortedError,
            tf.errors.InternalError) as exc:
        raise ClusterError(f"the cluster did not start within {startup_timeout:g} s (every worker must run the same "
                           f"command with its own index)",
                           received=f"worker {cluster.index} of {cluster.num_workers}, cluster "
                                    f"{', '.join(cluster.addresses)} after {time.monotonic() - t0:.0f} s: "
                                    f"{_first_line(type(exc).__name__, str(exc))}") from exc


def _sharded(dataset):
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = getattr(tf.data.experimental.AutoShardPolicy,
                                                                AUTO_SHARD_POLICY)
    return dataset.with_options(options)


def fit(net, strategy, train_ds, val_ds, epochs: int, patience: int) -> dict[str, list[float]]:
    """Train ``net`` (built and compiled under ``strategy.scope()``); returns the per-epoch history.

    ``patience`` 0 = never stop early. The best weights (lowest validation loss) are restored at the end.
    """
    import keras
    import tensorflow as tf

    optimizer = net.optimizer
    variables = net.trainable_variables
    with strategy.scope():
        optimizer.build(variables)
    train_dist = strategy.experimental_distribute_dataset(_sharded(train_ds))
    val_dist = strategy.experimental_distribute_dataset(_sharded(val_ds))
    SUM = tf.distribute.ReduceOp.SUM

    def _sums(y, probs):
        y = tf.cast(y, tf.int64)
        per_sample = keras.losses.sparse_categorical_crossentropy(y, probs)
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probs, axis=-1), y), tf.float32))
        return tf.reduce_sum(per_sample), correct, tf.cast(tf.shape(y)[0], tf.float32)

    def replica_train(x, y):
        ctx = tf.distribute.get_replica_context()
        with tf.GradientTape() as tape:
            probs = net(x, training=True)
            loss_sum, correct, n = _sums(y, probs)
            n_global = ctx.all_reduce(SUM, n)
            loss = loss_sum / tf.maximum(n_global, 1.0)
            if net.losses:  # regularisers: counted once per step in total
                loss += tf.add_n(net.losses) / float(ctx.num_replicas_in_sync)
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables))
        return loss_sum, correct, n

    def replica_eval(x, y):
        return _sums(y, net(x, training=False))

    @tf.function(reduce_retracing=True)
    def train_step(batch):
        out = strategy.run(replica_train, args=batch)
        return [strategy.reduce(SUM, v, axis=None) for v in out]

    @tf.function(reduce_retracing=True)
    def eval_step(batch):
        out = strategy.run(replica_eval, args=batch)
        return [strategy.reduce(SUM, v, axis=None) for v in out]

    def run_epoch(step, dist) -> tuple[float, float]:
        totals = np.zeros(3, np.float64)
        for batch in dist:
            totals += [float(v) for v in step(batch)]
        return totals[0] / max(totals[2], 1.0), totals[1] / max(totals[2], 1.0)

    history: dict[str, list[float]] = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}
    best_loss, best_weights, waited = np.inf, None, 0
    for epoch in range(epochs):
        t0 = time.perf_counter()
        try:
            loss, acc = run_epoch(train_step, train_dist)
            val_loss, val_acc = run_epoch(eval_step, val_dist)
        except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.DeadlineExceededError) as exc:
            raise _cluster_failed(exc, epoch + 1) from exc
        for key, value in (("loss", loss), ("accuracy", acc), ("val_loss", val_loss), ("val_accuracy", val_acc)):
            history[key].append(float(value))
        log.info("epoch %d/%d: loss %.4f, accuracy %.4f, val_loss %.4f, val_accuracy %.4f (%.1f s)", epoch + 1,
                 epochs, loss, acc, val_loss, val_acc, time.perf_counter() - t0)
        if val_loss < best_loss:
            best_loss, best_weights, waited = val_loss, net.get_weights(), 0
        else:
            waited += 1
            if patience and waited >= patience:
                break
    if best_weights is not None:
        net.set_weights(best_weights)
    return history


def _cluster_failed(exc, epoch: int) -> ClusterError:
    """TensorFlow's multi-line collective error -> one line naming the unhealthy task(s) when it says which."""
    text = str(exc.message)
    tasks = sorted(set(re.findall(r"/job:\w+/replica:\d+/task:\d+", text.split("unhealthy", 1)[1]))) \
        if "unhealthy" in text else []
    return ClusterError(f"multi-worker training stopped in epoch {epoch}: a worker stopped or cannot be reached "
                        "(every worker must run until the end)",
                        received=", ".join(tasks) if tasks else _first_line(type(exc).__name__, text))


def _first_line(kind: str, text: str) -> str:
    detail = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text).strip().splitlines()
    return f"{kind}: {detail[0][:160]}" if detail else kind


def local_copy(net) -> Any:
    """A plain (non-distributed) copy of ``net`` with the same layers, names, trainable flags and weights.

    Made outside the strategy scope: evaluation, BatchNorm re-estimation and saving then run on one process's own
    variables (Keras' ``predict`` would return only this worker's shard of the test set).
    """
    import keras

    copy = keras.models.clone_model(net)
    copy.set_weights(net.get_weights())
    for src, dst in zip(net.layers, copy.layers):
        dst.trainable = src.trainable
    return copy
