"""The Optuna study of ``toolchain tune``: storage, the settings it was created with, a deterministic sampler, and
recovery of interrupted trials.

**Determinism.** Trials are ranked by number, ignoring FAIL trials (interrupted, or surplus: see below). The
architecture of the trial of rank ``r`` is drawn by a fresh ``TPESampler(seed=seed * 1_000_003 + r)`` that sees
exactly the trials of rank ``0 .. r - lag`` (``lag`` = the worker count the study was created with, stored in the
study), waiting until those are finished. So it does not depend on which worker runs it or when the others finish:
the same seed (and the same lag) gives the same trial sequence, and with deterministic training (seeded, TF op
determinism, same machine and library versions) the same accuracies. A trial interrupted and retried keeps its
architecture.

**Surplus.** ``--trials N`` counts the study's non-FAIL trials. Workers that do not share a lock (other machines)
can start more; a trial of rank >= N is told FAIL at once (user attr ``surplus``) and never counted.

**Invalid architectures** (a feature map below 1x1) and repeats of a finished trial the draw can see are redrawn
inside the sampler (recorded in its scratch study as infeasible, or with the earlier trial's outcome), so they use
no trial.

**Recovery.** Before the workers start: a RUNNING trial of this host whose worker process is gone, and a FAIL trial
that was interrupted (Ctrl-C, kill), are re-queued once with the same architecture (Optuna's retry callback). Other
hosts' dead workers are found by Optuna's heartbeat (RDB storage, ``HEARTBEAT_S`` / ``GRACE_S``).
"""

from __future__ import annotations

import socket
import time
import warnings
from typing import Any, Callable

from toolchain.errors import UsageError
from toolchain.procutil import pid_alive

HEARTBEAT_S = 30
GRACE_S = 120
POLL_S = 0.5
MAX_DRAWS = 200  # redraws of an architecture that cannot be built (then it is tried and pruned)
STARTUP_TRIALS = 5  # random architectures before TPE models the results
STUDY_NAME = "toolchain-tune"
FORMAT = "toolchain-tune-study/1"
# settings that define the study: a rerun with other values would mix two searches
KEYS = ("format", "dataset", "target", "space", "seed", "epochs", "batch_size", "max_train_samples",
        "max_accuracy_drop", "max_latency_ms", "on_target", "lag", "startup_trials")


def _key(params: dict[str, Any]) -> tuple:
    return tuple(sorted(params.items()))


class SurplusTrial(Exception):
    """A trial of rank >= --trials (started by a worker without the local lock); told FAIL at once."""


def _optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
    return optuna


def storage(url: str):
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    return RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                      failed_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))


def open_study(url: str, settings: dict[str, Any], create: bool):
    """Load (or, with ``create``, create) the study; refuse one that was created with other settings."""
    optuna = _optuna()
    import sqlalchemy.exc

    try:
        st = storage(url)
        study = optuna.create_study(storage=st, study_name=STUDY_NAME, direction="maximize", load_if_exists=True) \
            if create else optuna.load_study(storage=st, study_name=STUDY_NAME)
    except (ImportError, ValueError, sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise UsageError(f"cannot open the study storage ({type(exc).__name__}: {first})", received=f"--storage {url}",
                         hint="an SQLAlchemy URL such as sqlite:///PATH or postgresql://USER@HOST/DB, with the "
                              "database's driver installed (e.g. psycopg2-binary for PostgreSQL)") from exc
    have = study.user_attrs
    if not have:
        for k in KEYS:
            study.set_user_attr(k, settings[k])
        return study
    diff = [f"{k}: study {have.get(k)!r}, now {settings[k]!r}" for k in KEYS
            if k not in ("lag",) and have.get(k) != settings[k]]
    if diff:
        raise UsageError("the study in this output was created with other settings; rerun with the same ones or "
                         "use another --output/--storage", received="; ".join(diff))
    return study


def settings_of(study) -> dict[str, Any]:
    return {k: study.user_attrs[k] for k in KEYS}


def worker_id() -> dict[str, Any]:
    import os

    return {"host": socket.gethostname(), "pid": os.getpid()}


def _ranked(trials) -> list:
    from optuna.trial import TrialState

    return sorted((t for t in trials if t.state != TrialState.FAIL), key=lambda t: t.number)


def rank_of(study, number: int) -> int:
    return sum(1 for t in _ranked(study.get_trials(deepcopy=False)) if t.number < number)


def counted(study) -> int:
    """Trials that count towards --trials: every state but FAIL."""
    return len(_ranked(study.get_trials(deepcopy=False)))


def recover(study) -> list[int]:
    """Fail this host's RUNNING trials whose worker is gone; re-queue interrupted trials once. Returns their numbers."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    host = socket.gethostname()
    trials = study.get_trials(deepcopy=False)
    for t in trials:
        w = t.user_attrs.get("worker") or {}
        if t.state == TrialState.RUNNING and w.get("host") == host and not pid_alive(int(w.get("pid", 0))):
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    requeued = []
    retry = RetryHeartbeatStaleTrialCallback(max_retry=1)
    for t in trials:
        if (t.state == TrialState.FAIL and t.number not in retried and not t.user_attrs.get("surplus")
                and t.params and not t.system_attrs.get("retry_history")):
            retry(study, t)
            requeued.append(t.number)
    return requeued


class LaggedSampler:
    """A sampler whose draw for a trial depends only on (seed, rank, the trials of rank <= rank - lag)."""

    def __init__(self, settings: dict[str, Any], n_trials: int, suggest: Callable[[Any], Any],
                 valid: Callable[[Any], bool] | None = None):
        optuna = _optuna()

        class _Sampler(optuna.samplers.BaseSampler):
            def infer_relative_search_space(s, study, trial):
                return {}

            def sample_relative(s, study, trial, search_space):
                return {}

            def before_trial(s, study, trial):
                self.before_trial(study, trial)

            def sample_independent(s, study, trial, name, distribution):
                if self.plan is None or name not in self.plan:
                    raise UsageError("the architecture draw has no value for a parameter", received=name)
                return self.plan[name]

        self.sampler = _Sampler()
        self.settings = settings
        self.n_trials = int(n_trials)
        self.suggest = suggest
        self.valid = valid  # an architecture that cannot be built is redrawn (it would waste a trial)
        self.plan: dict[str, Any] | None = None
        self.surplus = False
        self.on_created: Callable[[], None] | None = None  # called once the trial exists in the storage

    def before_trial(self, study, trial) -> None:
        optuna = _optuna()
        from optuna.trial import TrialState

        self.plan, self.surplus = None, False
        if self.on_created:
            self.on_created()
        rank = rank_of(study, trial.number)
        if rank >= self.n_trials:
            self.surplus = True
            self.plan = {}
            return
        if trial.system_attrs.get("fixed_params"):
            return
        lag, seed = int(self.settings["lag"]), int(self.settings["seed"])
        waited = 0
        while True:
            earlier = [t for t in _ranked(study.get_trials(deepcopy=False)) if t.number < trial.number]
            done = earlier[: max(0, rank - lag + 1)]
            if all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in done):
                break
            waited += 1
            if waited % int(10 / POLL_S) == 0:  # a worker died while running a trial this one waits for
                optuna.storages.fail_stale_trials(study)
                recover(study)
            time.sleep(POLL_S)
        tmp = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(
            seed=seed * 1_000_003 + rank, n_startup_trials=int(self.settings["startup_trials"]),
            constraints_func=lambda t: t.system_attrs.get("constraints", [0.0])))
        for t in done:
            tmp.add_trial(optuna.trial.create_trial(
                state=t.state, value=t.value if t.state == TrialState.COMPLETE else None, params=t.params,
                distributions=t.distributions,
                system_attrs={"constraints": list(t.user_attrs.get("constraints", [1.0]))}))
        seen = {_key(t.params): t for t in done}
        for _ in range(MAX_DRAWS):
            probe = tmp.ask()
            drawn = self.suggest(probe)
            twin = seen.get(_key(probe.params))
            if (self.valid is None or self.valid(drawn)) and twin is None:
                break
            # an invalid draw is infeasible; a repeat of a finished trial gets that trial's outcome (not retrained)
            cons = [1.0] if twin is None else list(twin.user_attrs.get("constraints", [1.0]))
            tmp._storage.set_trial_system_attr(probe._trial_id, "constraints", cons)
            if twin is not None and twin.state == TrialState.COMPLETE:
                tmp.tell(probe, twin.value)
            else:
                tmp.tell(probe, state=TrialState.PRUNED)
        self.plan = dict(probe.params)
