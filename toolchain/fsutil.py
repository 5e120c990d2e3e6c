"""Atomic output helpers: nothing partial or clobbered is ever left behind.

* ``atomic_write_bytes/atomic_write_text/atomic_write_json``: write to a temp file in the same folder, then rename.
* ``output_dir(path, force)``: a context manager that yields a fresh temporary folder next to ``path``; on success
  it replaces ``path`` (only with ``force`` if ``path`` exists), on error it removes the temporary folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from toolchain.errors import OutputExistsError, UsageError


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
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
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


@contextlib.contextmanager
def output_dir(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Build a directory atomically: yields a temp dir; on success it becomes ``path``."""
    final = check_output_dir(path, force)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    except OSError as exc:
        raise UsageError("cannot create the output directory", received=f"{final}: {exc.strerror or exc}") from None
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the result is an ordinary folder
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old.{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
