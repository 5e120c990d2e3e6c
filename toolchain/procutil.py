"""Process helpers: children that die with their parent, liveness checks, and the kill-test pause hook.

* ``child_process_kwargs()``: extra keyword arguments for ``subprocess.run``/``Popen`` so that the child gets
  SIGKILL when this process dies, even by SIGKILL (Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` in the child before
  it execs). Elsewhere it is ``{}`` (no-op). Every subprocess the toolchain starts (the arena worker, compilers,
  QEMU, host test runs) goes through it.
* ``die_with_parent(parent_pid)``: the same, called in a child made with ``os.fork()``.
* ``pid_alive(pid)``: ``os.kill(pid, 0)``; used to tell temp files of killed runs from those of live ones.
* ``pause_for_test(point)``: opt-in hook for tests that kill a process between two steps (see its docstring).

Linux delivers the death signal when the *thread* that started the child exits; the toolchain starts children from
the thread that waits for them, so that is the same as the process here.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

PR_SET_PDEATHSIG = 1
TEST_PAUSE_ENV = "TOOLCHAIN_TEST_PAUSE"
TEST_PAUSE_FILE_ENV = "TOOLCHAIN_TEST_PAUSE_FILE"


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` on Linux, else None (resolved in the parent: nothing is loaded after a fork)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    fn.restype = ctypes.c_int
    return fn


def _set_death_signal(prctl: Callable[..., int], parent_pid: int) -> None:
    prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect: nobody will signal us
        os.kill(os.getpid(), signal.SIGKILL)


def die_with_parent(parent_pid: int) -> None:
    """In a child process: receive SIGKILL when ``parent_pid`` (our parent) dies. No-op where unsupported."""
    prctl = _prctl()
    if prctl is not None:
        _set_death_signal(prctl, parent_pid)


def child_process_kwargs() -> dict[str, Any]:
    """``subprocess`` keyword arguments that make the child die with this process (``{}`` where unsupported)."""
    prctl = _prctl()
    if prctl is None:
        return {}
    return {"preexec_fn": functools.partial(_set_death_signal, prctl, os.getpid())}


def pid_alive(pid: int) -> bool:
    """True unless process ``pid`` certainly does not exist (unknown cases count as alive, so nothing is deleted)."""
    if os.name != "posix" or pid <= 0:  # on Windows os.kill would terminate the process
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: exists, owned by someone else
        return True
    return True


def pause_for_test(point: str, **info: Any) -> None:
    """Kill-test hook: a no-op unless the environment variable ``TOOLCHAIN_TEST_PAUSE`` equals ``point``.

    Then it writes ``{"point", "pid", "ppid", **info}`` as JSON to the file named by ``TOOLCHAIN_TEST_PAUSE_FILE``
    (atomically, so a reader never sees half of it) and sleeps, so that a test can SIGKILL the process exactly
    there. Points: ``output_dir.before_swap``, ``output_dir.after_swap`` (``toolchain.fsutil.output_dir``),
    ``quantise.between_writes`` (``toolchain.quantise._finish``), ``arena.worker`` and ``arena.trial``
    (``firmware_export.arena``: the measuring worker and one of its forked trial children).
    """
    if os.environ.get(TEST_PAUSE_ENV) != point:
        return
    marker = os.environ.get(TEST_PAUSE_FILE_ENV)
    if marker:
        part = Path(f"{marker}.{os.getpid()}.part")
        part.write_text(json.dumps({"point": point, "pid": os.getpid(), "ppid": os.getppid(), **info}),
                        encoding="utf-8")
        os.replace(part, marker)
    time.sleep(3600)
