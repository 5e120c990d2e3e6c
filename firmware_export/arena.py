"""Measure the TFLM tensor arena a model needs, with the tflite-micro Python runtime.

Method (every figure measured, on the host that runs the toolchain):

1. *recorded*: allocate the model in a generous arena and parse ``RecordingMicroAllocator``'s
   ``Arena allocation total N bytes`` from ``print_allocations()`` (it writes to C-level stderr, so file
   descriptor 2 is redirected into a temporary file).
2. *smallest allocating*: binary search on ``arena_size`` for the smallest arena in which ``AllocateTensors``
   succeeds. It is larger than the recorded total for some models (hello_world: 1,504 recorded, 1,936 needed)
   because the allocator needs temporary room while planning. Some failed allocations crash the runtime
   (segfault), so each trial runs in a forked child of a worker subprocess. The worker and its trial children die
   with their parent (``toolchain.procutil``: PR_SET_PDEATHSIG on Linux), so a killed ``toolchain export`` leaves
   no measuring process behind.
3. *recommended* = ceil16(max(recorded, smallest) x (1 + margin/100)); default margin 10 %.
4. *proven*: a fresh interpreter allocates with exactly the recommended size and runs one inference.

The host is 64-bit: pointers and the runtime's structs (TfLiteEvalTensor, node/registration tables) are larger than
on a 32-bit MCU, so with the same (reference) kernels the host figure is an upper bound for a 32-bit Cortex-M.
Optimised kernel libraries (CMSIS-NN, ESP-NN) may request extra scratch buffers; the margin is there for them and
for TFLM version differences. Measure on the device (``RecordingMicroInterpreter``) before shipping near the limit.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import struct
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from toolchain.errors import ExportError, RuntimeUnavailableError, UsageError
from toolchain.procutil import child_process_kwargs, die_with_parent, pause_for_test

DEFAULT_MARGIN_PCT = 10.0
ALIGNMENT = 16
_RESULT_MARKER = "ARENA_RESULT "
_TOTAL_RE = re.compile(r"Arena allocation total (\d+) bytes")
_HEAD_RE = re.compile(r"Arena allocation head (\d+) bytes")
_TAIL_RE = re.compile(r"Arena allocation tail (\d+) bytes")
WORKER_TIMEOUT_S = 600

HOST_NOTE = ("measured on a {bits}-bit host ({machine}) with TFLM reference kernels: an upper bound for a 32-bit "
             "MCU with the same kernels (smaller pointers and structs); optimised kernels (CMSIS-NN, ESP-NN) may "
             "need extra scratch, which the margin covers")


@dataclass
class ArenaMeasurement:
    recorded_bytes: int
    smallest_allocating_bytes: int
    margin_pct: float
    recommended_bytes: int
    proven: bool
    head_bytes: int | None = None
    tail_bytes: int | None = None
    host: str = ""
    pointer_bits: int = 64
    runtime: str = "tflite-micro"
    runtime_version: str = ""
    note: str = ""
    allocations: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def round_up(n: float, multiple: int = ALIGNMENT) -> int:
    return int(math.ceil(n / multiple) * multiple)


def recommend(recorded: int, smallest: int, margin_pct: float) -> int:
    """ceil16(max(recorded, smallest) x (1 + margin/100)) -- never below the smallest arena that allocates."""
    base = max(int(recorded), int(smallest))
    return max(round_up(base * (1.0 + float(margin_pct) / 100.0)), round_up(base))


def check_margin(margin_pct: float) -> float:
    m = float(margin_pct)
    if not math.isfinite(m) or m < 0 or m > 400:
        raise UsageError("--arena-margin must be a percentage between 0 and 400", received=margin_pct)
    return m


def _tflm_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("tflite-micro")
    except metadata.PackageNotFoundError:
        return "unknown"


def measure_arena(model_path: str | os.PathLike, margin_pct: float = DEFAULT_MARGIN_PCT) -> ArenaMeasurement:
    """Measure recorded / smallest-allocating / recommended arena bytes (see module docstring)."""
    margin = check_margin(margin_pct)
    path = Path(model_path)
    if not path.is_file():
        raise ExportError("model file not found", received=str(path))
    import importlib.util

    if importlib.util.find_spec("tflite_micro") is None:
        raise RuntimeUnavailableError("the tflite-micro Python runtime is needed to measure the tensor arena",
                                      received="tflite_micro not installed", hint="pip install tflite-micro")
    cmd = [sys.executable, "-m", "firmware_export.arena", str(path.resolve()), repr(margin)]
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, env=env,
                              **child_process_kwargs())
    except subprocess.TimeoutExpired as exc:
        raise ExportError("measuring the tensor arena timed out", received=f"{path} ({WORKER_TIMEOUT_S} s)") from exc
    result = None
    for line in proc.stdout.splitlines():
        if line.startswith(_RESULT_MARKER):
            result = json.loads(line[len(_RESULT_MARKER):])
    if proc.returncode != 0 or result is None:
        tail = " | ".join((proc.stderr or "").strip().splitlines()[-3:])
        raise ExportError("tflite-micro could not allocate the model, so the tensor arena cannot be measured",
                          received=f"{path.name}: exit {proc.returncode}{': ' + tail if tail else ''}")
    if "error" in result:
        raise ExportError(result["error"], received=f"{path.name}: {result.get('detail', '')}")
    bits = struct.calcsize("P") * 8
    return ArenaMeasurement(
        recorded_bytes=result["recorded"],
        smallest_allocating_bytes=result["smallest"],
        margin_pct=margin,
        recommended_bytes=result["recommended"],
        proven=bool(result["proven"]),
        head_bytes=result.get("head"),
        tail_bytes=result.get("tail"),
        host=f"{platform.system()} {platform.machine()}",
        pointer_bits=bits,
        runtime_version=_tflm_version(),
        note=HOST_NOTE.format(bits=bits, machine=platform.machine()),
        allocations=result.get("allocations", []),
    )


# ----------------------------------------------------------------------------------------------------------------
# worker: runs in its own process (``python -m firmware_export.arena MODEL MARGIN``), prints one result line.


def _capture_stderr(fn):
    """Run ``fn`` with C-level stderr (fd 2) captured; return (result, captured text)."""
    from toolchain.native_stderr import capture_native_stderr

    with capture_native_stderr() as captured:
        value = fn()
    return value, captured.text

def _zero_inputs(interp, n_inputs: int) -> None:
    import numpy as np

    for i in range(n_inputs):
        d = interp.get_input_details(i)
        interp.set_input(np.zeros(tuple(int(s) for s in d["shape"]), dtype=d["dtype"]), i)


def _num_inputs(data: bytes) -> int:
    from toolchain.tflite_model import parse_tflite

    return len(parse_tflite(data, "model").inputs)


def _trial(runtime, data: bytes, size: int, invoke: bool, n_inputs: int = 1) -> bool:
    """True when the model allocates (and, with ``invoke``, runs once) in ``size`` bytes; crash-safe via fork."""

    def attempt() -> bool:
        try:
            interp = runtime.Interpreter.from_bytes(data, arena_size=int(size))
            if invoke:
                _zero_inputs(interp, n_inputs)
                interp.invoke()
            return True
        except (RuntimeError, ValueError):
            return False

    if not hasattr(os, "fork"):
        return attempt()
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # child: silence TFLM's own error messages, report through the exit status only
        try:
            die_with_parent(parent)
            pause_for_test("arena.trial", size=int(size))
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            code = 0 if attempt() else 1
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def _worker(model_path: str, margin_pct: float) -> dict[str, Any]:
    from tflite_micro.python.tflite_micro import runtime

    data = Path(model_path).read_bytes()
    generous = max(1 << 20, 16 * len(data))
    n_inputs = _num_inputs(data)
    if not _trial(runtime, data, generous, invoke=True, n_inputs=n_inputs):
        return {"error": "tflite-micro cannot allocate and run this model (unsupported operator or type?)",
                "detail": f"arena {generous} bytes"}

    def record():
        interp = runtime.Interpreter.from_bytes(data, arena_size=generous)
        interp.print_allocations()
        return interp

    _, report = _capture_stderr(record)
    m = _TOTAL_RE.search(report)
    if not m:
        return {"error": "tflite-micro did not report its arena allocation", "detail": report.strip()[:200]}
    recorded = int(m.group(1))
    head = _HEAD_RE.search(report)
    tail = _TAIL_RE.search(report)
    lo, hi = 0, max(recorded, ALIGNMENT)  # lo: known to fail (0 always does); hi: known to allocate
    while not _trial(runtime, data, hi, invoke=False):
        lo, hi = hi, hi * 2
        if hi > generous:
            hi = generous
            break
    while lo + 1 < hi:
        mid = (lo + hi) // 2
        if _trial(runtime, data, mid, invoke=False):
            hi = mid
        else:
            lo = mid
    smallest = hi
    recommended = recommend(recorded, smallest, margin_pct)
    proven = _trial(runtime, data, recommended, invoke=True, n_inputs=n_inputs)
    allocations = [line.replace("[RecordingMicroAllocator] ", "").strip()
                   for line in report.splitlines() if "RecordingMicroAllocator" in line]
    return {"recorded": recorded, "smallest": smallest, "recommended": recommended, "proven": proven,
            "head": int(head.group(1)) if head else None, "tail": int(tail.group(1)) if tail else None,
            "allocations": allocations}


def _main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: python -m firmware_export.arena MODEL.tflite MARGIN_PCT\n")
        return 2
    pause_for_test("arena.worker")
    result = _worker(argv[0], float(argv[1]))
    sys.stdout.write(_RESULT_MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
