"""Atomic output helpers: nothing partial or clobbered is ever left behind.

* ``atomic_write_bytes/atomic_write_text/atomic_write_json``: write to a temp file ``.NAME.<pid>.<random>.tmp`` in
  the same folder, then rename it over ``NAME`` (readers see the old or the new file, never half of one).
* ``output_dir(path, force)``: a context manager that yields a fresh temporary folder ``.NAME.<pid>.<random>.tmp``
  next to ``path``; on success it replaces ``path`` (only with ``force`` if ``path`` exists), on error it removes
  the temporary folder. An existing ``path`` is swapped with the new folder in one atomic step (Linux
  ``renameat2(RENAME_EXCHANGE)``), so the old or the new output is at ``path`` at every instant.
* Temp files and folders of killed runs are removed by the next writer of the same ``NAME``: siblings matching the
  patterns above (and ``.NAME.old.<pid>`` of the fallback) whose ``<pid>`` is no longer running. A temp of a live
  process is never touched (a reused pid only keeps a stale temp a little longer).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import json
import os
import platform
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from toolchain.errors import OutputExistsError, UsageError
from toolchain.procutil import pause_for_test, pid_alive

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_SYS_RENAMEAT2 = {"x86_64": 316, "amd64": 316, "aarch64": 276, "arm64": 276}
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP}


def check_output_file(path: str | os.PathLike, force: bool, option: str = "--output") -> Path:
    """Validate an output file path before any work is done (``option`` names it in error messages)."""
    p = Path(path)
    if p.exists() and p.is_dir():
        raise UsageError("output path is a directory, expected a file", received=f"{option}={p}")
    if p.exists() and not force:
        raise OutputExistsError("output file already exists; pass --force to overwrite it", received=f"{option}={p}")
    parent = p.parent if str(p.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise UsageError("output folder is not a directory", received=f"{option}={p}")
    if not _can_create_in(_nearest_existing(parent)):
        raise UsageError("output folder is not writable", received=f"{option}={p}")
    return p


def _nearest_existing(path: Path) -> Path:
    probe = path.resolve()
    while not probe.exists():
        probe = probe.parent
    return probe


def _can_create_in(folder: Path) -> bool:
    """True when a file can really be created in ``folder`` (os.access is wrong for root and for /proc, /sys)."""
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        return False
    try:
        fd, tmp = tempfile.mkstemp(prefix=".toolchain-probe.", suffix=".tmp", dir=folder)
    except OSError:
        return False
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)
    return True


def check_output_dir(path: str | os.PathLike, force: bool, option: str = "--output") -> Path:
    """Validate an output directory path before any work is done (``option`` names it in error messages)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError("output path exists and is not a directory", received=f"{option}={p}")
    if p.exists() and any(p.iterdir()) and not force:
        raise OutputExistsError("output directory already exists and is not empty; pass --force to replace it",
                                received=f"{option}={p}")
    if not _can_create_in(_nearest_existing(p.resolve().parent)):
        raise UsageError("output directory is not writable", received=f"{option}={p}")
    return p


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write via a temp file + rename; the file gets the usual permissions (0666 & ~umask), not mkstemp's 0600."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(p)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(p), suffix=".tmp", dir=p.parent)
    except OSError as exc:
        raise UsageError("cannot write the output file", received=f"{p}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return p


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _temp_prefix(final: Path) -> str:
    return f".{final.name}.{os.getpid()}."


def _stale_pid(entry_name: str, final_name: str) -> int | None:
    """The owning pid when ``entry_name`` is one of our temp names for ``final_name``, else None."""
    name = re.escape(final_name)
    m = (re.fullmatch(rf"\.{name}\.(\d+)\.[a-z0-9_]+\.tmp", entry_name)
         or re.fullmatch(rf"\.{name}\.old\.(\d+)", entry_name))
    return int(m.group(1)) if m else None


def _remove_path(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)


def remove_stale_temps(final: str | os.PathLike) -> list[Path]:
    """Remove temp files/folders for ``final`` left by killed runs (owner pid not alive); return what was removed."""
    final = Path(final)
    removed = []
    try:
        entries = list(os.scandir(final.parent if str(final.parent) else "."))
    except OSError:  # missing or unreadable folder: nothing of ours can be there
        return removed
    for entry in entries:
        pid = _stale_pid(entry.name, final.name)
        if pid is not None and not pid_alive(pid):
            _remove_path(Path(entry.path))
            removed.append(Path(entry.path))
    return removed


@functools.cache
def _renameat2() -> Callable[[bytes, bytes, int], int] | None:
    """``renameat2(AT_FDCWD, a, AT_FDCWD, b, flags)`` via glibc, or the raw syscall; None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        fn = libc.renameat2  # glibc >= 2.28
    except AttributeError:
        return _renameat2_syscall(libc)
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return lambda a, b, flags: fn(_AT_FDCWD, a, _AT_FDCWD, b, flags)


def _renameat2_syscall(libc: ctypes.CDLL) -> Callable[[bytes, bytes, int], int] | None:
    """The raw ``syscall(SYS_renameat2, ...)`` for libcs without the wrapper (x86-64 and aarch64 numbers)."""
    nr = _SYS_RENAMEAT2.get(platform.machine().lower())
    if nr is None:
        return None
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    return lambda a, b, flags: syscall(ctypes.c_long(nr), ctypes.c_int(_AT_FDCWD), ctypes.c_char_p(a),
                                       ctypes.c_int(_AT_FDCWD), ctypes.c_char_p(b), ctypes.c_uint(flags))


def exchange_paths(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Atomically swap two existing paths; False where the OS or filesystem cannot (then nothing changed)."""
    rename = _renameat2()
    if rename is None:
        return False
    if rename(os.fsencode(a), os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in _UNSUPPORTED:
        return False
    raise OSError(err, os.strerror(err), str(b))


def _install_dir(tmp: Path, final: Path) -> None:
    """Put the finished ``tmp`` at ``final``; the old ``final`` (if any) is deleted afterwards."""
    if not os.path.lexists(final):
        os.rename(tmp, final)
        return
    if exchange_paths(tmp, final):  # one step: ``final`` holds the old or the new output at every instant
        pause_for_test("output_dir.after_swap")
        _remove_path(tmp)  # the old output, now at the temp name
        return
    # Fallback (no renameat2/RENAME_EXCHANGE): two renames, with a short window in which ``final`` is missing.
    old = final.with_name(f".{final.name}.old.{os.getpid()}")
    _remove_path(old)
    os.replace(final, old)
    try:
        os.replace(tmp, final)
    except OSError:
        os.replace(old, final)
        raise
    _remove_path(old)


@contextlib.contextmanager
def output_dir(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Build a directory atomically: yields a temp dir; on success it becomes ``path``.

    An existing ``path`` (``force``) is replaced by swapping it with the temp dir in one ``renameat2`` call with
    ``RENAME_EXCHANGE`` and then deleting the old copy, so a kill at any point leaves the complete old or the complete
    new output at ``path`` (a kill after the swap leaves the old copy in a temp folder, which the next run for the
    same path removes). Where the OS or filesystem has no ``RENAME_EXCHANGE`` (not Linux, or EINVAL/ENOSYS), it
    falls back to two renames (old -> ``.NAME.old.<pid>``, temp -> ``path``): then a kill in the short window between
    them leaves no output at ``path`` (the old one is in ``.NAME.old.<pid>``).
    """
    final = check_output_dir(path, force)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(final)
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(final), suffix=".tmp", dir=final.parent))
    except OSError as exc:
        raise UsageError("cannot create the output directory", received=f"{final}: {exc.strerror or exc}") from None
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the result is an ordinary folder
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    pause_for_test("output_dir.before_swap")
    try:
        _install_dir(tmp, final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UsageError("cannot move the finished output into place",
                         received=f"{final}: {exc.strerror or exc}") from None


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
