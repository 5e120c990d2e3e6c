"""Deployment target profiles (``toolchain/targets.toml``) and model fit reports.

A fit report compares, against a board's datasheet budgets:

* flash = model bytes + runtime code estimate (TFLM core + per-operator kernels; labelled an estimate),
* RAM   = tensor arena (measured; holds TFLM's own input/output tensors) + one application-side copy of the
  input and output (the buffer a sensor/feature pipeline fills before quantising into the arena).
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import toolchain
from toolchain.errors import ToolchainError, UsageError

TARGETS_FILE = Path(toolchain.__file__).resolve().parent / "targets.toml"
KB = 1024


@dataclass(frozen=True)
class Target:
    key: str
    display: str
    core: str
    clock_mhz: float
    flash_kb: int
    ram_kb: int
    runtime: str
    notes: str = ""
    aliases: tuple[str, ...] = ()

    @property
    def flash_bytes(self) -> int:
        return int(self.flash_kb * KB)

    @property
    def ram_bytes(self) -> int:
        return int(self.ram_kb * KB)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["aliases"] = list(self.aliases)
        return d


@dataclass(frozen=True)
class RuntimeEstimate:
    name: str
    core_kb: float
    per_op_kb: float
    source: str

    def bytes_for(self, n_ops: int) -> int:
        return int(round((self.core_kb + self.per_op_kb * max(0, int(n_ops))) * KB))


@dataclass
class FitReport:
    target: str
    display: str
    runtime: str
    model_bytes: int
    runtime_estimate_bytes: int
    runtime_estimate_source: str
    flash_bytes: int
    flash_budget_bytes: int
    flash_pct: float
    arena_bytes: int
    io_buffer_bytes: int
    ram_bytes: int
    ram_budget_bytes: int
    ram_pct: float
    fits_flash: bool
    fits_ram: bool
    fits: bool
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        verdict = "FITS" if self.fits else "DOES NOT FIT"
        return [
            f"target {self.target}: {self.display} [{self.runtime}] -> {verdict}",
            f"  flash {self.flash_bytes:,} B of {self.flash_budget_bytes:,} B ({self.flash_pct:.1f} %) = model "
            f"{self.model_bytes:,} B + runtime {self.runtime_estimate_bytes:,} B (estimate: "
            f"{self.runtime_estimate_source})",
            f"  RAM   {self.ram_bytes:,} B of {self.ram_budget_bytes:,} B ({self.ram_pct:.1f} %) = arena "
            f"{self.arena_bytes:,} B + I/O buffers {self.io_buffer_bytes:,} B",
        ] + [f"  note: {n}" for n in self.notes]


class _TargetsFileError(ToolchainError):
    pass


@lru_cache(maxsize=4)
def _load(path: str) -> tuple[dict[str, Target], dict[str, RuntimeEstimate]]:
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise _TargetsFileError("cannot read the board profiles", received=f"{path}: {exc}") from exc
    estimates = {
        name: RuntimeEstimate(name, float(v["core_kb"]), float(v["per_op_kb"]), str(v.get("source", "")))
        for name, v in raw.get("runtime_estimate", {}).items()
    }
    boards = {}
    for key, v in raw.get("boards", {}).items():
        boards[key] = Target(key=key, display=str(v["display"]), core=str(v["core"]), clock_mhz=float(v["clock_mhz"]),
                             flash_kb=int(v["flash_kb"]), ram_kb=int(v["ram_kb"]), runtime=str(v["runtime"]),
                             notes=str(v.get("notes", "")), aliases=tuple(str(a) for a in v.get("aliases", ())))
        if boards[key].runtime not in estimates:
            raise _TargetsFileError("board profile names an unknown runtime estimate",
                                    received=f"{key}: runtime={boards[key].runtime}")
    return boards, estimates


def load_targets(path: str | Path = TARGETS_FILE) -> dict[str, Target]:
    return dict(_load(str(path))[0])


def runtime_estimates(path: str | Path = TARGETS_FILE) -> dict[str, RuntimeEstimate]:
    return dict(_load(str(path))[1])


def _norm(name: str) -> str:
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


def get_target(name: str, path: str | Path = TARGETS_FILE) -> Target:
    """Board by key or alias (case, '-' and '_' insensitive); UsageError with a "did you mean" otherwise."""
    boards = load_targets(path)
    wanted = _norm(name)
    for t in boards.values():
        if wanted == _norm(t.key) or wanted in {_norm(a) for a in t.aliases}:
            return t
    names = {t.key: t.key for t in boards.values()}
    for t in boards.values():
        for a in t.aliases:
            names[a] = t.key
    close = difflib.get_close_matches(str(name).lower(), list(names), n=3, cutoff=0.5)
    suggestion: list[str] = []
    for c in close:
        if names[c] not in suggestion:
            suggestion.append(names[c])
    hint = f"did you mean {' or '.join(suggestion)}?" if suggestion else "run `toolchain targets` for the list"
    raise UsageError("unknown target board", received=f"--target={name}", hint=hint)


def fit_report(target: Target, model_bytes: int, arena_bytes: int, io_buffer_bytes: int, n_ops: int,
               path: str | Path = TARGETS_FILE) -> FitReport:
    est = runtime_estimates(path)[target.runtime]
    runtime_bytes = est.bytes_for(n_ops)
    flash = int(model_bytes) + runtime_bytes
    notes = []
    if target.runtime == "tflm":
        ram = int(arena_bytes) + int(io_buffer_bytes)
    else:
        # Linux: the interpreter loads the model into RAM too; the TFLM arena stands in for its tensor memory.
        ram = int(arena_bytes) + int(io_buffer_bytes) + int(model_bytes)
        notes.append("Linux target: RAM counts the model, the tensor memory (TFLM arena as a proxy) and I/O; "
                     "the OS and Python need their own share")
    if target.notes:
        notes.append(target.notes)
    fits_flash = flash <= target.flash_bytes
    fits_ram = ram <= target.ram_bytes
    return FitReport(
        target=target.key, display=target.display, runtime=target.runtime, model_bytes=int(model_bytes),
        runtime_estimate_bytes=runtime_bytes, runtime_estimate_source=est.source, flash_bytes=flash,
        flash_budget_bytes=target.flash_bytes, flash_pct=round(100.0 * flash / target.flash_bytes, 2),
        arena_bytes=int(arena_bytes), io_buffer_bytes=int(io_buffer_bytes), ram_bytes=ram,
        ram_budget_bytes=target.ram_bytes, ram_pct=round(100.0 * ram / target.ram_bytes, 2),
        fits_flash=fits_flash, fits_ram=fits_ram, fits=fits_flash and fits_ram, notes=notes,
    )
