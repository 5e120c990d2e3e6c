"""`toolchain tune`: static costs against Keras and the C engine, the Pareto front against a NumPy dominance oracle,
pruning before training on a tiny board, resuming an interrupted study, same seed -> same trials, two workers
sharing one sqlite study, and the winner's run folder exported like any run."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from firmware_export.targets import Target, get_target
from tests.helpers import run_cli
from toolchain.tune import pareto
from toolchain.tune.space import CHOICES, Architecture, InvalidArchitecture, build, static_costs

QUICK = ["--epochs", "1", "--max-train-samples", "150", "--host-only", "--workers", "1"]


def _int8_bytes(model) -> int:
    """Weights 1 B + biases 4 B, read from the built Keras layers (independent of static_costs)."""
    total = 0
    for layer in model.layers:
        for w in layer.weights:
            n = int(np.prod(w.shape))
            total += 4 * n if "bias" in w.path else n
    return total


def _archs(n: int, seed: int) -> list[Architecture]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        d = {k: v[int(rng.integers(len(v)))] for k, v in CHOICES.items()}
        out.append(Architecture(family=("cnn", "dscnn")[int(rng.integers(2))], **d))
    return out


def test_static_costs_are_the_keras_models_and_invalid_shapes_are_refused():
    checked = invalid = 0
    for arch in _archs(40, seed=1):
        try:
            costs = static_costs(arch, 1, 10)
        except InvalidArchitecture:
            invalid += 1
            with pytest.raises(ValueError):
                build(arch, (arch.resolution, arch.resolution, 1), 10)
            continue
        model = build(arch, (arch.resolution, arch.resolution, 1), 10)
        assert costs["params"] == model.count_params(), arch
        assert costs["int8_weight_bytes"] == _int8_bytes(model), arch
        checked += 1
    assert checked >= 10 and invalid >= 1


def _oracle(points: np.ndarray) -> list[int]:
    """NumPy dominance: column 0 maximised, the others minimised."""
    p = points.copy()
    p[:, 0] = -p[:, 0]
    le = (p[:, None, :] <= p[None, :, :]).all(-1)
    lt = (p[:, None, :] < p[None, :, :]).any(-1)
    dominated = (le & lt).any(0)
    return [i for i in range(len(p)) if not dominated[i]]


@pytest.mark.parametrize("seed", range(5))
def test_pareto_front_matches_numpy_oracle(seed):
    rng = np.random.default_rng(seed)
    pts = np.column_stack([rng.integers(0, 6, 60) / 5, rng.integers(0, 8, 60) * 1000, rng.integers(0, 8, 60)])
    pts = np.vstack([pts, pts[:5]])  # exact duplicates: neither dominates the other
    got = pareto.front([tuple(r) for r in pts])
    assert got == _oracle(pts)
    assert set(range(60, 65)) & set(got) == {i + 60 for i in range(5) if i in got}


def test_precheck_reasons_are_the_computed_figures(tmp_path):
    from toolchain.tune.objective import TrialContext, precheck

    arch = Architecture("cnn", 24, 1, 32, 1, 5, 1, "same", 128, 0.0)
    costs = static_costs(arch, 1, 10)
    board = Target(key="b", display="b", core="Arm Cortex-M4F", clock_mhz=64, flash_kb=64, ram_kb=16, runtime="tflm")
    ctx = TrialContext(board=board, dataset="digits", space="all", trials_dir=tmp_path, channels=1, num_classes=10,
                       epochs=1, batch_size=32, seed=0, max_train_samples=None, max_accuracy_drop=None,
                       max_latency_ms=0.5, on_target=True)
    # largest live pair: pool 24x24x32 -> 12x12x32 (conv: 24x24x1 -> 24x24x32); weights: conv 5x5x32, dense
    # 4,608 x 128 and 128 x 10, + 4 B per bias
    assert costs["arena_lower_bound_bytes"] == 24 * 24 * 32 + 12 * 12 * 32
    assert costs["int8_weight_bytes"] == 800 + 12 * 12 * 32 * 128 + 1280 + 4 * (32 + 128 + 10)
    _, reason, viol = precheck(arch, ctx)
    ms = costs["macs"] / 2 / 64e3
    assert f"int8 weights + biases {costs['int8_weight_bytes']:,} B > b flash 65,536 B" in reason
    assert f"arena lower bound {costs['arena_lower_bound_bytes']:,} B + I/O 586 B > b RAM 16,384 B" in reason
    assert f"latency lower bound {ms:.2f} ms (MACs / 2 / clock) > --max-latency-ms 0.5" in reason
    assert len(viol) == 3 and all(v > 0 for v in viol)
    small = Architecture("cnn", 8, 1, 8, 1, 3, 2, "same", 0, 0.0)
    assert precheck(small, ctx)[1] is None


def _summary(out: Path) -> dict:
    return json.loads((out / "pareto.json").read_text(encoding="utf-8"))


def test_pruned_before_training_on_a_tiny_board(tmp_path):
    from toolchain.tune.run import TuneOptions, run_tune

    tiny = Target(key="tiny", display="a tiny test board", core="Arm Cortex-M4F", clock_mhz=64, flash_kb=2,
                  ram_kb=2, runtime="tflm")
    s = run_tune(TuneOptions(output=str(tmp_path / "t"), board=tiny, trials=6, seed=3, workers=1, epochs=1,
                             max_train_samples=100, on_target=False))
    pruned = [t for t in s["trials"] if (t["pruned"] or {}).get("before_training")]
    flash = [t for t in pruned if "flash" in t["pruned"]["reason"]]
    assert flash, [t["pruned"] for t in pruned]
    for t in pruned:
        assert t["state"] == "PRUNED" and t["train_seconds"] == 0.0 and t["result"] is None
        assert not (tmp_path / "t" / "trials" / f"{t['number']:04d}").exists()
    for t in flash:  # the reason is true of the built model, counted independently
        arch = Architecture.from_dict(t["architecture"])
        assert _int8_bytes(build(arch, (arch.resolution, arch.resolution, 1), 10)) > tiny.flash_bytes
        assert f"{t['static']['int8_weight_bytes']:,} B > tiny flash {tiny.flash_bytes:,} B" in t["pruned"]["reason"]
    for t in s["trials"]:
        if t["state"] == "COMPLETE":  # trained ones passed the pre-check
            assert t["static"]["int8_weight_bytes"] <= tiny.flash_bytes


def test_resume_same_seed_and_winner_run_folder(tmp_path, capsys):
    out, fresh = tmp_path / "study", tmp_path / "fresh"
    base = ["tune", "--dataset", "digits", "--target", "nrf52840", "--seed", "5", *QUICK]
    code, first, _ = run_cli([*base, "--trials", "2", "--output", out], capsys)
    assert code == 0
    assert sum(line.startswith("trial ") for line in first.splitlines()) == 2
    code, second, _ = run_cli([*base, "--trials", "4", "--output", out], capsys)
    assert code == 0
    assert sum(line.startswith("trial ") for line in second.splitlines()) == 2  # only the 2 new trials ran
    s = _summary(out)
    assert s["counts"]["trials"] == 4 and s["counts"]["new_this_run"] == 2
    assert "Pareto front" in second and "winner: trial" in second

    assert run_cli([*base, "--trials", "4", "--output", fresh], capsys)[0] == 0
    a, b = s["trials"], _summary(fresh)["trials"]
    assert [t["params"] for t in a] == [t["params"] for t in b]  # same seed -> same trials
    assert [t["state"] for t in a] == [t["state"] for t in b]
    assert [t["value"] for t in a] == [t["value"] for t in b]  # seeded, deterministic training

    # the winner is a normal run folder: export takes its model, the sidecar points into the copy
    w = s["winner"]
    assert w is not None and (out / "winner" / "model.keras").is_file()
    meta = json.loads((out / "winner" / "model_int8.json").read_text(encoding="utf-8"))
    assert meta["source_model"] == str((out / "winner" / "model.keras").resolve())
    assert run_cli(["export", out / "winner" / "model_int8.tflite", "--format", "c", "--output", tmp_path / "c"],
                   capsys)[0] == 0
    eng = json.loads((tmp_path / "c" / "manifest.json").read_text(encoding="utf-8"))
    assert eng["arena_bytes"] == w["result"]["c_engine_arena_bytes"]
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count("<tr>") >= 2 and "http" not in page and (out / "plots" / "pareto.png").is_file()

    # the study refuses other settings, and a limit that cannot be measured here is refused, not ignored
    code, _, err = run_cli([*base[:5], "--seed", "6", *QUICK, "--trials", "4", "--output", out], capsys)
    assert code == 2 and "created with other settings" in err and "seed: study 5, now 6" in err
    code, _, err = run_cli([*base, "--max-latency-ms", "5", "--output", tmp_path / "lat"], capsys)
    assert code == 2 and "--max-latency-ms needs" in err


def test_two_workers_share_one_sqlite_study(tmp_path):
    from toolchain.tune.run import TuneOptions, run_tune

    # on target when the Arm toolchain and QEMU are there (as in CI): the measured C engine decides the fit
    s = run_tune(TuneOptions(output=str(tmp_path / "w"), board=get_target("nrf52840"), trials=4, seed=0,
                             workers=2, epochs=1, max_train_samples=100))
    for t in s["trials"]:
        if t["state"] == "COMPLETE":  # the static figures bound what the C engine's planner finds in the int8 model
            st, r = t["static"], t["result"]
            # int8 weights + biases: a lower bound (the C engine keeps some convolutions' weights as int16)
            assert st["macs"] == r["macs"] and st["int8_weight_bytes"] <= r["c_engine_weight_bytes"]
            assert st["arena_lower_bound_bytes"] <= r["c_engine_arena_bytes"]
            if s["on_target"]:
                assert r["instructions"] > 0 and r["target_identical_pct"] == 100.0
                assert r["fits"] == (r["flash_bytes"] <= 1024 * 1024 and r["ram_bytes"] <= 256 * 1024)
    pids = {t["worker"]["pid"] for t in s["trials"]}
    assert len(pids) == 2, pids
    assert len(s["trials"]) == 4 and s["counts"]["new_this_run"] == 4
    with sqlite3.connect(tmp_path / "w" / "study.db") as db:  # one study, every trial in it
        assert db.execute("select count(*) from trials").fetchone()[0] == 4


def _settings(**kw) -> dict:
    from toolchain.tune import study as tstudy

    s = {"format": tstudy.FORMAT, "dataset": "digits", "target": "nrf52840", "space": "all", "seed": 0, "epochs": 1,
         "batch_size": 32, "max_train_samples": None, "max_accuracy_drop": None, "max_latency_ms": None,
         "on_target": False, "lag": 1, "startup_trials": tstudy.STARTUP_TRIALS}
    s.update(kw)
    return s


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # ask/tell here, as the tests drive it
def test_a_killed_workers_trial_is_queued_again_with_its_architecture(tmp_path):
    import subprocess
    import sys

    import optuna
    from optuna.trial import TrialState

    from toolchain.tune import study as tstudy
    from toolchain.tune.space import suggest

    url = f"sqlite:///{tmp_path / 'study.db'}"
    st = tstudy.open_study(url, _settings(), create=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs, as after SIGKILL
    trial = st.ask()
    arch = suggest(trial, "all")
    trial.set_user_attr("worker", {"host": tstudy.worker_id()["host"], "pid": dead.pid})
    assert tstudy.recover(st) == [trial.number]
    trials = st.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[1].params == trials[0].params == {"family": arch.family, **{k: getattr(arch, k) for k in CHOICES}}
    assert tstudy.counted(st) == 1 and tstudy.recover(st) == []  # queued once, not again
    assert isinstance(optuna.load_study(study_name=tstudy.STUDY_NAME, storage=url), optuna.Study)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # ask/tell here, as the tests drive it
def test_a_trial_beyond_trials_is_surplus_and_not_counted(tmp_path):
    import optuna

    from toolchain.tune import study as tstudy
    from toolchain.tune.objective import objective
    from toolchain.tune.space import suggest

    st = tstudy.open_study(f"sqlite:///{tmp_path / 'study.db'}", _settings(), create=True)
    t = st.ask()
    suggest(t, "all")
    st.tell(t, 0.5)
    sampler = tstudy.LaggedSampler(_settings(), 1, lambda tr: suggest(tr, "all"))
    st.sampler = sampler.sampler
    st.optimize(lambda tr: objective(tr, None, sampler), n_trials=1, catch=(tstudy.SurplusTrial,))
    last = st.get_trials(deepcopy=False)[-1]
    assert last.state == optuna.trial.TrialState.FAIL and last.user_attrs["surplus"] is True
    assert tstudy.counted(st) == 1
