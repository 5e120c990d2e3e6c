"""A TensorFlow Lite Micro library for the Cortex-M4F, built from the user's TFLM source tree and cached.

The tree is the kind TFLM's ``create_tflm_tree.py`` produces (``tensorflow/``, ``signal/``, ``third_party/``) with
``lists/srcs_<FLAVOUR>.txt`` naming the library sources of each flavour (TFLM's ``make list_library_sources
list_third_party_sources``). Two flavours are built for the target:

* ``reference`` (``cortex_m_reference``): TFLM's reference kernels;
* ``cmsis-nn`` (``cortex_m_cmsis_nn``): ``kernels/cmsis_nn/X.cc`` in place of ``kernels/X.cc``, plus CMSIS-NN.

Flags are TFLM's ``BUILD_TYPE=release`` flags for ``TARGET=cortex_m_generic TARGET_ARCH=cortex-m4+fp`` with the
framework at ``-O2`` (see :data:`COMMON_FLAGS`). A build (~300 objects, ~10 min per flavour on 2 cores) is cached
per (tree digest, flavour, flags, compiler) under ``$TOOLCHAIN_CACHE_DIR`` (default ``~/.cache/edge-ml-toolchain``),
outside any project clone; concurrent builds of one key wait for each other (a lock file), and a build is moved
into place only when complete.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from firmware_export.m4.tools import arm_tool, run_tool
from toolchain.procutil import child_process_kwargs
from toolchain.errors import ExportError, UsageError

TFLM_DIR_ENV = "TOOLCHAIN_TFLM_DIR"
CACHE_DIR_ENV = "TOOLCHAIN_CACHE_DIR"

FLAVOURS = {"reference": "cortex_m_reference", "cmsis-nn": "cortex_m_cmsis_nn"}
FLAVOUR_OF = {"tflm": "reference", "cmsis-nn": "cmsis-nn"}  # --engine -> library flavour

CPU_FLAGS = ["-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16", "-mthumb", "-mfloat-abi=hard", "-mlittle-endian"]
COMMON_FLAGS = ["-O2", "-fno-unwind-tables", "-fno-asynchronous-unwind-tables", "-ffunction-sections",
                "-fdata-sections", "-DTF_LITE_STATIC_MEMORY", "-DTF_LITE_DISABLE_X86_NEON",
                "-DKERNELS_OPTIMIZED_FOR_SPEED", "-DNDEBUG", "-DTF_LITE_STRIP_ERROR_STRINGS",
                *CPU_FLAGS, "-fomit-frame-pointer", "-funsigned-char", "-DTF_LITE_MCU_DEBUG_LOG", "-DCPU_M4=1",
                '-DCMSIS_DEVICE_ARM_CORTEX_M_XX_HEADER_FILE="ARMCM4.h"', "-DARMCM4"]
CMSIS_NN_FLAGS = ["-DCMSIS_NN", "-DARM_NN_ENABLE_F16=0", "-DARM_NN_ENABLE_F32=0"]
CXX_FLAGS = ["-std=c++17", "-fno-rtti", "-fno-exceptions", "-fno-threadsafe-statics", "-Wnon-virtual-dtor"]
C_FLAGS = ["-std=c17"]
INCLUDES = [".", "third_party", "third_party/gemmlowp", "third_party/flatbuffers/include", "third_party/kissfft",
            "third_party/ruy", "third_party/cmsis/Cortex_DFP/Device/ARMCM4/Include",
            "third_party/cmsis/CMSIS/Core/Include"]
CMSIS_NN_INCLUDES = ["third_party/cmsis", "third_party/cmsis_nn", "third_party/cmsis_nn/Include"]
SOURCE_DIRS = ("tensorflow", "signal", "third_party", "lists")  # create_tflm_tree.py output + the source lists
_REQUIRED = ("tensorflow/lite/micro/micro_interpreter.h", "tensorflow/lite/schema/schema_generated.h")


@dataclass(frozen=True)
class TflmTree:
    """A TFLM source tree, checked once: its root, and a digest of every file under its source folders."""

    root: Path
    digest: str

    @classmethod
    def open(cls, tflm_dir: str | os.PathLike | None) -> "TflmTree":
        """The tree at ``tflm_dir`` (default: ``$TOOLCHAIN_TFLM_DIR``); UsageError when it is not one."""
        if tflm_dir is None:
            tflm_dir = os.environ.get(TFLM_DIR_ENV) or None
        if tflm_dir is None:
            raise UsageError("no TensorFlow Lite Micro source tree given",
                             received=f"--tflm-dir unset and ${TFLM_DIR_ENV} unset",
                             hint="point --tflm-dir at a tree made by TFLM's create_tflm_tree.py")
        root = Path(tflm_dir).expanduser().resolve()
        missing = [p for p in _REQUIRED if not (root / p).is_file()]
        if missing:
            raise UsageError("not a TensorFlow Lite Micro source tree (create_tflm_tree.py layout)",
                             received=f"--tflm-dir={tflm_dir}: no {missing[0]}")
        h = hashlib.sha256()
        try:
            for base in SOURCE_DIRS:
                for path in sorted((root / base).rglob("*")) if (root / base).is_dir() else []:
                    if path.is_file():
                        h.update(str(path.relative_to(root)).encode() + b"\0")
                        h.update(hashlib.sha256(path.read_bytes()).digest())
        except OSError as exc:
            raise UsageError("the TFLM source tree cannot be read",
                             received=f"--tflm-dir={tflm_dir}: {exc.filename}: {exc.strerror}") from exc
        return cls(root=root, digest=h.hexdigest())

    def sources(self, flavour: str) -> list[str]:
        """Library sources of ``flavour`` (relative paths), checked to exist."""
        lst = self.root / "lists" / f"srcs_{FLAVOURS[flavour]}.txt"
        if not lst.is_file():
            raise UsageError("the TFLM tree does not list the library sources of this flavour",
                             received=f"{lst} is missing (TFLM make list_library_sources output)")
        srcs = [s.strip() for s in lst.read_text(encoding="utf-8").splitlines() if s.strip()]
        bad = [s for s in srcs if not (self.root / s).is_file() or ".." in Path(s).parts
               or Path(s).parts[0] not in SOURCE_DIRS]  # the digest covers these folders only
        if bad or not srcs:
            raise UsageError("the TFLM source list names files that are not in the tree",
                             received=f"{lst.name}: {bad[0] if bad else 'empty'}")
        return srcs


def flavour_flags(flavour: str) -> list[str]:
    """Preprocessor, CPU and optimisation flags shared by the library and the application code."""
    if flavour not in FLAVOURS:
        raise UsageError(f"TFLM kernel flavour must be one of {', '.join(FLAVOURS)}", received=flavour)
    return [*COMMON_FLAGS, *(CMSIS_NN_FLAGS if flavour == "cmsis-nn" else [])]


def include_flags(tree: TflmTree, flavour: str, system: bool = False) -> list[str]:
    """The tree's include folders; ``system=True`` for application code (-isystem: -Werror applies to it only)."""
    dirs = INCLUDES + (CMSIS_NN_INCLUDES if flavour == "cmsis-nn" else [])
    return [f"-isystem{tree.root / d}" if system else f"-I{tree.root / d}" for d in dirs]


def cache_root() -> Path:
    base = os.environ.get(CACHE_DIR_ENV)
    if base:
        return Path(base).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "edge-ml-toolchain"


def _compiler_id() -> str:
    proc = run_tool([arm_tool("arm-none-eabi-g++"), "--version"], Path.cwd(), 60, "arm-none-eabi-g++ --version")
    return proc.stdout.splitlines()[0] if proc.stdout else "unknown"


def _build_key(tree: TflmTree, flavour: str) -> str:
    text = json.dumps([tree.digest, flavour, flavour_flags(flavour), CXX_FLAGS, C_FLAGS, _compiler_id()])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class TflmLibrary:
    """A built ``libtflm.a`` and how to compile application code against it."""

    tree: TflmTree
    flavour: str
    path: Path
    cached: bool                 # True when an earlier build was reused
    build_seconds: float | None  # None when cached

    def app_flags(self) -> list[str]:
        return [*flavour_flags(self.flavour), *include_flags(self.tree, self.flavour, system=True)]


def build_library(tree: TflmTree, flavour: str, *, jobs: int | None = None,
                  progress: Callable[[str], None] | None = None, timeout: float = 3600) -> TflmLibrary:
    """The cached library of ``flavour`` for ``tree``, built first if this (tree, flags, compiler) has none."""
    flags = flavour_flags(flavour)
    key = _build_key(tree, flavour)
    root = cache_root() / "tflm"
    final = root / f"{FLAVOURS[flavour]}-{key}"
    lib = final / "libtflm.a"
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = open(root / f"{final.name}.lock", "w")
    except OSError as exc:
        raise UsageError("the TFLM library cache folder cannot be written",
                         received=f"{root} ({exc.strerror}); set ${CACHE_DIR_ENV}") from exc
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits here for the first one's build
        if lib.is_file():
            return TflmLibrary(tree, flavour, lib, cached=True, build_seconds=None)
        srcs = tree.sources(flavour)
        t0 = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
        try:
            objs = _compile_all(tree, flavour, flags, srcs, tmp, jobs or _cpus(), progress, t0 + timeout)
            ar = arm_tool("arm-none-eabi-ar")
            listing = tmp / "objects.txt"
            listing.write_text("\n".join(str(o) for o in objs) + "\n", encoding="utf-8")
            proc = run_tool([ar, "rcs", str(tmp / "libtflm.a"), f"@{listing}"], tmp, 600, "arm-none-eabi-ar")
            if proc.returncode != 0:
                raise ExportError("archiving the TFLM library failed", received=proc.stderr.strip()[-500:])
            for o in objs:
                o.unlink()
            for e in tmp.glob("*.err"):
                e.unlink()
            listing.unlink()
            seconds = round(time.monotonic() - t0, 1)
            (tmp / "build.json").write_text(json.dumps({
                "tree": str(tree.root), "tree_digest": tree.digest, "flavour": flavour, "flags": flags,
                "cxx_flags": CXX_FLAGS, "c_flags": C_FLAGS, "compiler": _compiler_id(), "sources": len(srcs),
                "build_seconds": seconds}, indent=2) + "\n", encoding="utf-8")
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is as readable as ~/.cache
            if final.exists():  # a folder without its library: an interrupted move, replaced whole
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return TflmLibrary(tree, flavour, lib, cached=False, build_seconds=seconds)


def _cpus() -> int:
    """CPUs this process may use (affinity), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _compile_all(tree: TflmTree, flavour: str, flags: list[str], srcs: list[str], out: Path, jobs: int,
                 progress: Callable[[str], None] | None, deadline: float) -> list[Path]:
    """Compile every source, ``jobs`` compilers at a time (processes polled here: no threads, so the children's
    die-with-parent pre-exec hook is safe); the first failure stops the others."""
    gxx, gcc = arm_tool("arm-none-eabi-g++"), arm_tool("arm-none-eabi-gcc")
    inc = include_flags(tree, flavour)
    pending = list(enumerate(srcs))
    running: list[tuple[subprocess.Popen, str, Path, Any]] = []
    objs: list[Path] = []
    try:
        while pending or running:
            while pending and len(running) < jobs:
                i, src = pending.pop(0)
                obj = out / f"{i:04d}_{Path(src).stem}.o"
                cxx = src.endswith((".cc", ".cpp"))
                cmd = [gxx if cxx else gcc, *flags, *(CXX_FLAGS if cxx else C_FLAGS), *inc, "-c", src, "-o", str(obj)]
                err = open(obj.with_suffix(".err"), "w+")
                try:
                    proc = subprocess.Popen(cmd, cwd=tree.root, stdout=subprocess.DEVNULL, stderr=err,
                                            **child_process_kwargs())
                except OSError as exc:
                    err.close()
                    raise ExportError("the Arm compiler could not be started", received=f"{src}: {exc}") from exc
                running.append((proc, src, obj, err))
            time.sleep(0.05)
            for item in list(running):
                proc, src, obj, err = item
                if proc.poll() is None:
                    continue
                running.remove(item)
                err.seek(0)
                text = err.read()
                err.close()
                if proc.returncode != 0:
                    raise ExportError("compiling the TFLM library failed", received=f"{src}: {text.strip()[-800:]}")
                objs.append(obj)
                if progress and (len(objs) % 25 == 0 or len(objs) == len(srcs)):
                    progress(f"TFLM {flavour} library: compiled {len(objs)}/{len(srcs)} sources")
            if time.monotonic() > deadline:
                raise ExportError("building the TFLM library timed out", received=f"{len(objs)}/{len(srcs)} sources")
    finally:
        for proc, _, _, err in running:
            proc.kill()
            proc.wait()
            err.close()
    return sorted(objs)


def tflm_library(tflm_dir: str | os.PathLike | None, engine: str, progress: Callable[[str], None] | None = None):
    """The cached TFLM library for ``engine`` (built on first use)."""
    tree = TflmTree.open(tflm_dir)
    if progress:
        progress(f"TFLM {FLAVOUR_OF[engine]} library for Cortex-M4F (built once, then cached)")
    return build_library(tree, FLAVOUR_OF[engine], progress=progress)
