"""Golden vectors, host and Cortex-M4 (QEMU) builds of the generated C engine."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from firmware_export.cgen.builder import _c_float
from firmware_export.cgen.generator import TEMPLATE_DIR
from firmware_export.m4.tools import (INSTRUCTIONS_PER_TICK, QEMU_MACHINE, arm_tool, footprint,  # noqa: F401
                                      run_tool, section_sizes)
from firmware_export.m4.tools import run_qemu as qemu_run
from toolchain.errors import ExportError, RuntimeUnavailableError

# the generated C must compile warning-free with these (tests build every model with them)
WARNINGS = ["-Wall", "-Wextra", "-Wconversion", "-Wcast-align=strict", "-Werror"]
HOST_CFLAGS = ["-std=c99", "-O2", *WARNINGS]
SANITIZE_CFLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"]
M4_CFLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-O2", "-std=c99", *WARNINGS,
             "-ffunction-sections", "-fdata-sections", "-ffp-contract=off",
             "-fno-tree-loop-distribute-patterns"]
M4_LDFLAGS = ["-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs", "-Wl,--gc-sections"]
RESULT_RE = re.compile(r"CE_RESULT runs=(\d+) mismatches=(\d+) first=(-?\d+) elapsed=(\d+) unit=(\w+) stack=(\d+)")


def random_inputs(engine, n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = engine.input_shape
    if engine.float_io:
        s, z = engine.core_input["scale"], engine.core_input["zero_point"]
        lo, hi = (-128 - z) * s, (127 - z) * s
        return [rng.uniform(lo, hi, size=shape).astype(np.float32) for _ in range(n)]
    lo, hi = (0, 256) if engine.input_dtype == "uint8" else (-128, 128)
    return [rng.integers(lo, hi, size=shape, dtype=io_dtypes(engine)[0]) for _ in range(n)]


def io_dtypes(engine) -> tuple[type, type]:
    """NumPy types of the model's input and output as the harness reads and writes them."""
    from firmware_export.cgen.generator import IO_NUMPY

    return IO_NUMPY[engine.input_dtype], IO_NUMPY[engine.output_dtype]


def _c_values(arr: np.ndarray) -> str:
    flat = np.asarray(arr).reshape(-1)
    if flat.dtype == np.float32:
        items = [_c_float(v) for v in flat]
    else:
        items = [str(int(v)) for v in flat]
    return ", ".join(items)


def golden_header(engine, inputs: list[np.ndarray], outputs: list[np.ndarray] | None) -> str:
    """Golden inputs and, unless ``outputs`` is None, the expected outputs (the harness then compares)."""
    ctype_in = "float" if engine.input_dtype == "float32" else engine.byte_io[0]
    ctype_out = "float" if engine.output_dtype == "float32" else engine.byte_io[1]
    invoke = f"{engine.name}_invoke_float" if engine.float_io else f"{engine.name}_invoke"
    n_in = int(np.prod(engine.input_shape))
    n_out = int(np.prod(engine.output_shape))
    rows_in = ",\n".join("    {" + _c_values(x) + "}" for x in inputs)
    if outputs is None:
        what, expected = "inputs (the outputs go back to the host)", "#define CE_GOLDEN_NO_OUTPUTS 1\n"
    else:
        rows_out = ",\n".join("    {" + _c_values(y) + "}" for y in outputs)
        what = "vectors from LiteRT's reference interpreter"
        expected = (f"static const ce_out_t ce_golden_out[CE_GOLDEN_N][CE_GOLDEN_OUT] CE_GOLDEN_SECTION = "
                    f"{{\n{rows_out}\n}};\n")
    return (f"/* {engine.name}_golden.h - {len(inputs)} golden {what}. */\n"
            f"#ifndef CE_GOLDEN_H\n#define CE_GOLDEN_H\n"
            f"#define CE_GOLDEN_N {len(inputs)}\n#define CE_GOLDEN_IN {n_in}\n#define CE_GOLDEN_OUT {n_out}\n"
            f"#define CE_INVOKE {invoke}\n"
            f"typedef {ctype_in} ce_in_t;\ntypedef {ctype_out} ce_out_t;\n"
            f"static const ce_in_t ce_golden_in[CE_GOLDEN_N][CE_GOLDEN_IN] CE_GOLDEN_SECTION = {{\n{rows_in}\n}};\n"
            f"{expected}#endif\n")


def write_golden(out_dir: Path, engine, inputs: list[np.ndarray], outputs: list[np.ndarray] | None) -> None:
    (Path(out_dir) / f"{engine.name}_golden.h").write_text(golden_header(engine, inputs, outputs), encoding="utf-8")


_run = run_tool  # one owner of external tools: firmware_export.m4.tools
_tool = arm_tool


def _sources(src_dir: Path, name: str) -> list[str]:
    return [f"{name}.c", "ce_kernels.c", f"{name}_test.c"]


def build_host(src_dir: str | os.PathLike, name: str, *, file_io: bool = False, cc: str | None = None,
               extra_cflags: list[str] | None = None) -> Path:
    """Compile the host test harness with ``HOST_CFLAGS`` (C99, -O2, ``WARNINGS`` as errors); returns the
    executable. Clang spells ``-Wcast-align=strict`` as ``-Wcast-align``.

    ``file_io=True`` builds the file-driven harness (``exe INPUTS.bin OUTPUTS.bin``) instead of the golden one.
    """
    src = Path(src_dir)
    cc = cc or os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise RuntimeUnavailableError("no host C compiler (gcc/cc) found", received="PATH")
    exe = src / (f"{name}_test_io" if file_io else f"{name}_test")
    flags = [("-Wcast-align" if f == "-Wcast-align=strict" and "clang" in Path(cc).name else f) for f in HOST_CFLAGS]
    cmd = [cc, *flags, *(["-DCE_FILE_IO"] if file_io else []), *(extra_cflags or []), *_sources(src, name),
           "-o", exe.name]
    proc = _run(cmd, src, 300, "host compile")
    if proc.returncode != 0:
        raise ExportError("host compilation of the generated C failed", received=proc.stderr.strip()[-2000:])
    return exe


def parse_result(text: str) -> dict[str, Any]:
    m = RESULT_RE.search(text)
    if not m:
        raise ExportError("the test harness did not report a result", received=text.strip()[-500:] or "<no output>")
    runs, mism, first, elapsed, unit, stack = m.groups()
    res = {"runs": int(runs), "mismatches": int(mism), "first_mismatch": int(first), "elapsed": int(elapsed),
           "unit": unit, "stack_bytes": int(stack)}
    fm = re.search(r"CE_FIRST_MISMATCH (.*)", text)
    if fm:
        res["first_mismatch_detail"] = fm.group(1).strip()
    return res


def run_host_file(exe: str | os.PathLike, engine, inputs: list[np.ndarray], timeout: float = 600
                  ) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Run the file-driven host harness on ``inputs``; returns (outputs, CE_RESULT fields)."""
    exe = Path(exe)
    in_dtype, out_dtype = io_dtypes(engine)
    fin, fout = exe.parent / "ce_inputs.bin", exe.parent / "ce_outputs.bin"
    fin.write_bytes(b"".join(np.ascontiguousarray(x, dtype=in_dtype).tobytes() for x in inputs))
    proc = _run([str(exe), str(fin), str(fout)], exe.parent, timeout, "host test run")
    if proc.returncode != 0:
        raise ExportError("the host harness failed", received=(proc.stderr or proc.stdout).strip()[-300:])
    res = parse_result(proc.stdout)
    raw = np.frombuffer(fout.read_bytes(), dtype=out_dtype)
    n_out = int(np.prod(engine.output_shape))
    outs = [raw[i * n_out:(i + 1) * n_out].reshape(engine.output_shape) for i in range(len(inputs))]
    return outs, res


def run_host(exe: str | os.PathLike, timeout: float = 300) -> dict[str, Any]:
    exe = Path(exe)
    proc = _run([str(exe)], exe.parent, timeout, "host test run")
    return parse_result(proc.stdout)


def build_m4(src_dir: str | os.PathLike, name: str, *, timer: str = "systick", extra_cflags: list[str] | None = None
             ) -> dict[str, Path]:
    """Cross-compile the harness for Cortex-M4F (MPS2 AN386); returns paths of the ELF and engine objects."""
    src = Path(src_dir)
    gcc = _tool("arm-none-eabi-gcc")
    for f in ("ce_m4_startup.c", "mps2_an386.ld"):
        if not (src / f).exists():
            shutil.copyfile(TEMPLATE_DIR / f, src / f)
    flags = [*M4_CFLAGS, "-DCE_TARGET_M4", *(extra_cflags or [])]
    if timer == "dwt":
        flags += ["-DCE_USE_DWT", '-DCE_TIMER_UNIT="cycles"']
    else:
        flags += ['-DCE_TIMER_UNIT="ticks"']
    build = src / "build_m4"
    build.mkdir(exist_ok=True)
    objs = []
    for c in [f"{name}.c", "ce_kernels.c", f"{name}_test.c", "ce_m4_startup.c"]:
        obj = build / (Path(c).stem + ".o")
        extra: list[str] = []
        proc = _run([gcc, *flags, *extra, "-c", str(src / c), "-o", str(obj)], src, 300, "arm-none-eabi-gcc")
        if proc.returncode != 0:
            raise ExportError("Cortex-M4 compilation of the generated C failed", received=proc.stderr.strip()[-2000:])
        objs.append(obj)
    elf = build / f"{name}.elf"
    proc = _run([gcc, *M4_CFLAGS, *M4_LDFLAGS, "-T", str(src / "mps2_an386.ld"), *map(str, objs), "-o", str(elf)],
                src, 300, "arm-none-eabi-gcc link")
    if proc.returncode != 0:
        raise ExportError("Cortex-M4 link failed", received=proc.stderr.strip()[-2000:])
    return {"elf": elf, "model_obj": objs[0], "kernels_obj": objs[1], "harness_objs": objs[2:]}


def run_qemu(elf: str | os.PathLike, timeout: float = 600) -> dict[str, Any]:
    proc = qemu_run(elf, timeout)
    text = proc.stdout + proc.stderr
    if "CE_FAULT" in text:
        raise ExportError("the firmware faulted under QEMU", received=text.strip()[-300:])
    return parse_result(text)
