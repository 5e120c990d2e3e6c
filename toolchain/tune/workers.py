"""Local worker processes of ``toolchain tune`` and the progress loop of the parent.

Each worker (a ``spawn`` child that dies with the parent) loads the shared study and runs one trial at a time until
the study has ``n_trials`` counted trials. A lock shared by the local workers is held from the count check until
the trial exists in the storage (released by the sampler), so local workers never start surplus trials. TensorFlow
in each worker gets ``cores / workers`` intra-op threads. The parent only polls the storage and reports each
trial that finished (``on_trial``); it imports no TensorFlow.
"""

from __future__ import annotations

import logging
import os
import queue as queue_mod
import time
from typing import Any, Callable

from toolchain.errors import ToolchainError

POLL_S = 0.5


def default_workers() -> int:
    """One worker per core this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _worker(url: str, n_trials: int, ctx: dict[str, Any], settings: dict[str, Any], lock, parent_pid: int,
            errors, threads: int) -> None:
    from toolchain.procutil import die_with_parent

    die_with_parent(parent_pid)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    try:
        _loop(url, n_trials, ctx, settings, lock)
    except ToolchainError as exc:
        errors.put(str(exc))
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def _loop(url: str, n_trials: int, ctx: dict[str, Any], settings: dict[str, Any], lock) -> None:
    from toolchain.tune import study as tstudy
    from toolchain.tune.objective import objective
    from toolchain.tune.objective import context_from
    from toolchain.tune.space import InvalidArchitecture, static_costs, suggest

    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing warnings of many small models

    tctx = context_from(ctx)
    study = tstudy.open_study(url, settings, create=False)
    def valid(arch) -> bool:
        try:
            static_costs(arch, tctx.channels, tctx.num_classes)
        except InvalidArchitecture:
            return False
        return True

    sampler = tstudy.LaggedSampler(settings, n_trials, lambda t: suggest(t, tctx.space), valid)
    study.sampler = sampler.sampler
    while True:
        held = [lock.acquire()]

        def release() -> None:
            if held[0]:
                lock.release()
                held[0] = False

        try:
            if tstudy.counted(study) >= n_trials:
                return
            sampler.on_created = release
            study.optimize(lambda t: objective(t, tctx, sampler), n_trials=1, catch=(tstudy.SurplusTrial,))
        finally:
            release()


def run_workers(url: str, n_trials: int, ctx: dict[str, Any], settings: dict[str, Any], n_workers: int, study,
                before: set[int], record: Callable, on_trial: Callable[[dict[str, Any]], None] | None) -> None:
    import multiprocessing

    mp = multiprocessing.get_context("spawn")  # no fork of a process that may hold TensorFlow's threads
    lock, errors = mp.Lock(), mp.Queue()
    threads = max(1, default_workers() // n_workers)
    procs = [mp.Process(target=_worker, args=(url, n_trials, ctx, settings, lock, os.getpid(), errors, threads),
                        name=f"tune-worker-{i}", daemon=True) for i in range(n_workers)]
    for p in procs:
        p.start()
    reported = set(before)
    try:
        while True:
            alive = any(p.is_alive() for p in procs)
            for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
                if t.number in reported or t.state.name not in ("COMPLETE", "PRUNED"):
                    continue
                reported.add(t.number)
                if on_trial:
                    on_trial(record(t))
            if not alive:
                break
            time.sleep(POLL_S)
    finally:
        for p in procs:
            p.join(timeout=None if all(not q.is_alive() for q in procs) else 30)
            if p.is_alive():
                p.kill()
                p.join()
    messages = []
    while True:
        try:
            messages.append(errors.get_nowait())
        except queue_mod.Empty:
            break
    if messages:
        raise ToolchainError(messages[0])
    bad = [(p.pid, p.exitcode) for p in procs if p.exitcode]
    if bad:
        raise RuntimeError("tune worker(s) failed: " + ", ".join(f"pid {pid} exit code {c}" for pid, c in bad)
                           + " (the traceback is above)")
