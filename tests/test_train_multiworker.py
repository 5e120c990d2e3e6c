"""Multi-worker training (``--strategy multi-worker``): two worker processes on loopback produce the model of a
one-worker run (same global batch, seed and data order) within the tolerance measured here; only the chief writes
the run folder and the other worker leaves nothing behind; TF_CONFIG, transfer learning and early stopping work
across workers; cluster options are validated (exit 2, one line, nothing written). Every subprocess runs in its own
process group with a timeout and is killed with its group on any failure, so a stuck collective cannot hang CI."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import run_cli
from toolchain.errors import UsageError
from toolchain.procutil import child_process_kwargs
from toolchain.train_cluster import TF_CONFIG_ENV, parse_tf_config, parse_workers

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 240  # seconds for all workers of one training run (a 2-worker run takes ~20 s on the 2-core CI machine)
# seed001 (no BatchNorm, no Dropout: per-worker batch statistics / masks would differ by design), 2 epochs on a
# 256-sample subset; the 144 validation samples end in a short batch (16, split 8 + 8).
TRAIN = ["seed001_basic_cnn", "--dataset", "digits", "--epochs", "2", "--max-train-samples", "256",
         "--batch-size", "32", "--seed", "0", "--strategy", "multi-worker"]
# Measured: two workers vs one worker differ by at most 5.8e-7 in any weight (weights up to 0.22) after 2 epochs:
# float sums in another order, which Adam amplifies in near-zero gradients (see the README). Asserted with margin.
WEIGHT_ATOL = 1e-4


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env.pop(TF_CONFIG_ENV, None)
    env.update({"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                "TMPDIR": str(tmp), "TF_CPP_MIN_LOG_LEVEL": "2", "NO_PROXY": "127.0.0.1,localhost"})
    return env


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _run_workers(output: Path, n: int, tmp: Path, train_args: list[str] = TRAIN,
                 tf_config: bool = False) -> list[subprocess.CompletedProcess]:
    """Start ``n`` workers of one cluster on loopback and wait for all (killing every group on any failure).

    The cluster is given as ``--workers``/``--worker-index``, or with ``tf_config`` in each worker's TF_CONFIG.
    """
    addresses = [f"127.0.0.1:{p}" for p in _free_ports(n)]
    procs = []
    try:
        for i in range(n):
            env = _env(tmp)
            cmd = [sys.executable, "-m", "toolchain", "train", *train_args, "--output", str(output)]
            if tf_config:
                env[TF_CONFIG_ENV] = json.dumps({"cluster": {"worker": addresses},
                                                 "task": {"type": "worker", "index": i}})
            else:
                cmd += ["--workers", ",".join(addresses), "--worker-index", str(i)]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                          env=env, start_new_session=True, **child_process_kwargs()))
        results, deadline = [], time.monotonic() + TIMEOUT
        for proc in procs:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
            assert proc.returncode == 0, f"worker exited {proc.returncode}: {err[-3000:]}"
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                _kill_group(proc)


def _weights(run: Path) -> list[np.ndarray]:
    import keras

    return keras.models.load_model(run / "model.keras", compile=False).get_weights()


@pytest.fixture(scope="module")
def one_worker_run(tmp_path_factory) -> Path:
    """The reference: the same training as a one-worker ``--strategy multi-worker`` run."""
    base = tmp_path_factory.mktemp("mw_one")
    (base / "tmp").mkdir()
    _run_workers(base / "one", 1, base / "tmp")
    return base / "one"


def test_two_workers_train_the_one_worker_model(tmp_path, one_worker_run):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    one, two = one_worker_run, tmp_path / "two"
    res2 = _run_workers(two, 2, scratch)

    # the chief wrote the run folder; the other worker printed one line and left no temp folder behind
    assert sorted(p.name for p in two.iterdir()) == ["history.json", "metadata.json", "model.keras", "training.png"]
    assert "output: " + str(two) in res2[0].stdout
    lines = res2[1].stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("worker 1 of 2 (multi-worker strategy, replicas: 2)"), lines
    assert list(scratch.iterdir()) == []

    meta2 = json.loads((two / "metadata.json").read_text())
    meta1 = json.loads((one / "metadata.json").read_text())
    t2 = meta2["training"]
    assert (t2["strategy"], t2["workers"], t2["replicas"], t2["global_batch_size"]) == ("multi-worker", 2, 2, 32)
    assert (t2["worker_index"], t2["cluster_from"], t2["auto_shard_policy"]) == (0, "--workers", "DATA")
    assert (meta1["training"]["workers"], meta1["training"]["replicas"]) == (1, 1)
    assert meta2["samples"] == meta1["samples"] == {"train": 256, "val": 144, "test": 359}

    # the same model: weights, history and test accuracy
    w1, w2 = _weights(one), _weights(two)
    assert [a.shape for a in w1] == [b.shape for b in w2]
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(w1, w2))
    assert diff <= WEIGHT_ATOL, diff
    h1 = json.loads((one / "history.json").read_text())["history"]
    h2 = json.loads((two / "history.json").read_text())["history"]
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(h2[key], h1[key], rtol=1e-5)
    assert h2["loss"][1] < h2["loss"][0]  # it trained
    assert meta2["float_test_accuracy"] == meta1["float_test_accuracy"] > 0.5


def test_tf_config_transfer_learning_and_early_stopping(tmp_path, one_worker_run):
    """TF_CONFIG instead of --workers, --init-from + --freeze-conv, and early stopping that fires: both workers stop
    at the same epoch (a worker stopping alone would hang the other) and the best epoch's weights are saved."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = tmp_path / "xfer"
    args = ["--dataset", "digits", "--init-from", str(one_worker_run), "--freeze-conv", "--epochs", "5",
            "--patience", "1", "--learning-rate", "0.05", "--max-train-samples", "128", "--strategy", "multi-worker"]
    res = _run_workers(out, 2, scratch, args, tf_config=True)
    meta = json.loads((out / "metadata.json").read_text())
    hist = json.loads((out / "history.json").read_text())
    t = meta["training"]
    assert (t["cluster_from"], t["workers"], t["frozen_layers"]) == ("TF_CONFIG", 2, ["conv1", "conv2"])
    # measured: val loss 51.6, 1.98, 1.94, 2.08 -> stops after epoch 4 with the weights of epoch 3
    assert meta["epochs_run"] < 5 and meta["best_epoch"] == meta["epochs_run"] - 1
    assert f"trained {meta['epochs_run']} epochs" in res[1].stdout  # the other worker stopped at the same epoch
    val_acc = hist["history"]["val_accuracy"][meta["best_epoch"] - 1]
    assert meta["float_val_accuracy"] == pytest.approx(val_acc, abs=1e-9)  # best weights restored and saved
    import keras

    src = keras.models.load_model(one_worker_run / "model.keras", compile=False)
    new = keras.models.load_model(out / "model.keras", compile=False)
    for name in ("conv1", "conv2"):  # frozen on every worker
        for a, b in zip(src.get_layer(name).get_weights(), new.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(src.get_layer("dense").get_weights()[0], new.get_layer("dense").get_weights()[0])
    assert list(scratch.iterdir()) == []


def test_a_worker_that_dies_stops_the_chief_with_one_line(tmp_path):
    """Kill worker 1 during training: the chief notices (broken connection or TensorFlow's heartbeats), exits 2
    with one line, and writes nothing (measured: within 7 s of the kill)."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = tmp_path / "never"
    addresses = ",".join(f"127.0.0.1:{p}" for p in _free_ports(2))
    args = [*TRAIN, "--epochs", "50", "--patience", "0", "--workers", addresses, "--output", str(out)]
    procs, logs = [], [tmp_path / f"w{i}.err" for i in range(2)]
    try:
        for i in range(2):
            with open(logs[i], "w") as err:
                procs.append(subprocess.Popen([sys.executable, "-m", "toolchain", "train", *args, "--worker-index",
                                               str(i)], stdout=subprocess.DEVNULL, stderr=err, env=_env(scratch),
                                              start_new_session=True, **child_process_kwargs()))
        deadline = time.monotonic() + TIMEOUT
        while "epoch 1/50" not in logs[1].read_text() and time.monotonic() < deadline:
            assert procs[1].poll() is None, logs[1].read_text()[-3000:]
            time.sleep(0.2)
        _kill_group(procs[1])
        code = procs[0].wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for proc in procs:
            if proc.poll() is None:
                _kill_group(proc)
    err = logs[0].read_text()
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2, err[-3000:]
    assert len(lines) == 1 and "a worker stopped or cannot be reached" in lines[0], err[-3000:]
    # TensorFlow reports either the unhealthy task (heartbeats) or the broken connection, whichever comes first
    assert ("/job:worker/replica:0/task:1" in lines[0] or "UnavailableError: " in lines[0]) and "Traceback" not in err
    assert not out.exists()


def test_a_cluster_that_never_completes_ends_after_the_startup_timeout(tmp_path):
    """Only worker 0 of a two-worker cluster starts: TensorFlow would wait forever; --cluster-timeout ends it with
    exit 2 and one line, and nothing is written."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = tmp_path / "never"
    addresses = ",".join(f"127.0.0.1:{p}" for p in _free_ports(2))
    cmd = [sys.executable, "-m", "toolchain", "train", *TRAIN, "--workers", addresses, "--worker-index", "0",
           "--cluster-timeout", "3", "--output", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(scratch),
                            start_new_session=True, **child_process_kwargs())
    try:
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            _kill_group(proc)
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2, err[-3000:]
    assert len(lines) == 1 and "the cluster did not start within 3 s" in lines[0], err[-3000:]
    assert addresses.split(",")[1] in lines[0] and "Traceback" not in err
    assert not out.exists()


def _run(args, capsys):
    return run_cli(args, capsys)


GOOD_WORKERS = ["--workers", "127.0.0.1:2222,127.0.0.1:2223"]


@pytest.mark.parametrize("args,env,needle", [
    (GOOD_WORKERS + ["--worker-index", "0"], None, "needs --strategy multi-worker"),
    (["--strategy", "mirrored", "--worker-index", "1"], None, "--worker-index needs --strategy multi-worker"),
    (["--strategy", "multi-worker"], None, "needs the cluster"),
    (["--strategy", "multi-worker", "--worker-index", "1"], None, "--worker-index needs --workers"),
    (["--strategy", "multi-worker"] + GOOD_WORKERS, None, "needs --worker-index"),
    (["--strategy", "multi-worker"] + GOOD_WORKERS + ["--worker-index", "2"], None, "must be in 0..1"),
    (["--strategy", "multi-worker", "--workers", "127.0.0.1", "--worker-index", "0"], None, "host:port"),
    (["--strategy", "multi-worker", "--workers", "127.0.0.1:99999", "--worker-index", "0"], None, "1..65535"),
    (["--strategy", "multi-worker", "--workers", "a:1,,b:2", "--worker-index", "0"], None, "comma-separated"),
    (["--strategy", "multi-worker", "--workers", "a:1,a:1", "--worker-index", "0"], None, "appears twice"),
    (["--strategy", "multi-worker"] + GOOD_WORKERS + ["--worker-index", "0"],
     '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}', "not both"),
    (["--strategy", "multi-worker"], "{not json", "not valid JSON"),
    (["--strategy", "multi-worker"], '{"cluster": {"worker": ["a:1"]}}', "'task' object"),
    (["--strategy", "multi-worker"], '{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "worker"}}',
     "'worker' (and optional 'chief') jobs"),
    (["--strategy", "multi-worker"], '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}',
     "task.index must be in 0..0"),
    (["--strategy", "multi-worker"], '{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief"}}', "task.type"),
    (["--strategy", "multi-worker", "--eager"] + GOOD_WORKERS + ["--worker-index", "0"], None, "--eager"),
    (["--strategy", "mirrored", "--cluster-timeout", "5"], None, "--cluster-timeout applies to --strategy multi"),
    (["--strategy", "multi-worker", "--cluster-timeout", "0"] + GOOD_WORKERS + ["--worker-index", "0"], None,
     "cluster timeout must be a positive number"),
    (["--strategy", "multi-worker", "--batch-size", "1"] + GOOD_WORKERS + ["--worker-index", "0"], None,
     "one sample per worker"),
])
def test_cluster_options_refused_exit_2_one_line(tmp_path, capsys, monkeypatch, args, env, needle):
    if env is None:
        monkeypatch.delenv(TF_CONFIG_ENV, raising=False)
    else:
        monkeypatch.setenv(TF_CONFIG_ENV, env)
    out = tmp_path / "never"
    code, _, err = _run(["train", "seed001_basic_cnn", *args, "--output", str(out)], capsys)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert not out.exists()


def test_tf_config_and_workers_describe_the_same_cluster():
    flags = parse_workers("10.0.0.1:2222, 10.0.0.2:2222,[::1]:7", 1)
    assert flags.addresses == ("10.0.0.1:2222", "10.0.0.2:2222", "[::1]:7") and flags.num_workers == 3
    assert not flags.is_chief and flags.task() == ("worker", 1)
    env = parse_tf_config(json.dumps(flags.tf_config()))
    assert (env.addresses, env.index, env.source) == (flags.addresses, 1, "TF_CONFIG")
    # a chief job is worker 0, the worker job follows it
    chief = parse_tf_config('{"cluster": {"chief": ["c:1"], "worker": ["w:1", "w:2"]}, '
                            '"task": {"type": "worker", "index": 1}}')
    assert chief.addresses == ("c:1", "w:1", "w:2") and chief.index == 2 and chief.task() == ("worker", 1)
    assert chief.tf_config()["cluster"] == {"chief": ["c:1"], "worker": ["w:1", "w:2"]}
    with pytest.raises(UsageError, match="at most one chief"):
        parse_tf_config('{"cluster": {"chief": ["c:1", "c:2"]}, "task": {"type": "chief"}}')
