"""The TFLM export on the emulated Cortex-M4F: test firmware built against a TFLM library and run under QEMU.

``run_tflm(export_dir, name, library, inputs, ...)`` links the exported model data (``NAME_model_data.c``, or
``NAME_data.c`` when NAME has the word ``model``: ``firmware_export.naming.tflm_file_names``) and
``NAME_op_resolver.h`` with a generated harness (``templates/m4/tflm_harness.cc.tmpl``), the bare-metal startup
and linker script the C engine uses, and ``libtflm.a`` (:mod:`firmware_export.m4.tflm_lib`); the inputs are raw
bytes in the image (``.incbin`` into section ``.golden``, kept out of the flash figures), the outputs come back over
semihosting into a host file. Inputs that do not fit one 4 MB image are run in as few QEMU runs as it allows.

Measured per run: instructions per ``Invoke()`` (SysTick ticks x 40 under ``-icount shift=0``), TFLM's
``arena_used_bytes()`` on the 32-bit target, flash split into model data, TFLM runtime (library code the model
pulls in, C/C++ library included) and harness (``arm-none-eabi-size`` of the linked ELF and of the objects), static
RAM and the stack high-water mark. ``build_example`` compiles the export's own ``NAME_main.cc`` the same way.
"""

from __future__ import annotations

import os
import string
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from firmware_export.m4.tflm_lib import CXX_FLAGS, TflmLibrary
from firmware_export.m4.tools import (FLASH_LIMIT, INSTRUCTIONS_PER_TICK, QEMU_MACHINE, RAM_LIMIT, STACK_RESERVE,
                                      arm_tool, firmware_flash,
                                      footprint, read_layer_dump, run_qemu, run_tool,
                                      section_sizes)
from firmware_export.naming import tflm_file_names
from toolchain.errors import ExportError

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
OUTPUTS_FILE, RESULT_FILE, LAYERS_FILE = "th_outputs.bin", "th_result.txt", "th_layers.bin"
_CODE_HEADROOM = 1024 * 1024  # flash kept for code when sizing a batch of inputs (the TFLM library is < 1 MB)
LINK_FLAGS = ["-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs", "-Wl,--gc-sections"]
STARTUP_CFLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-ffunction-sections", "-fdata-sections"]


@dataclass
class TflmRun:
    """What one or more QEMU runs of the TFLM test firmware measured."""

    flavour: str
    outputs: list[np.ndarray]
    instructions_per_inference: int
    arena_used_bytes: int
    flash: dict[str, int]              # model, runtime, harness, firmware (= model + runtime + harness)
    static_ram_bytes: int              # .data + .bss without the arena array
    stack_bytes: int
    smallest_arena_bytes: int          # find_smallest: bisected on the target (allocates and runs); else 0
    qemu_runs: int
    build_seconds: float
    emulation_seconds: float
    layers: list[tuple[int, int, bytes]] | None = None   # (op index, tensor index, bytes) with dump_layers
    sections: dict[str, int] = field(default_factory=dict)

    @property
    def ram_bytes(self) -> int:
        """RAM the model needs on the target: arena used + other static data + stack high-water mark."""
        return self.arena_used_bytes + self.static_ram_bytes + self.stack_bytes


def _render(template: str, **values: Any) -> str:
    text = (TEMPLATES / template).read_text(encoding="utf-8")
    return string.Template(text).substitute(**{k: str(v) for k, v in values.items()})


def _startup(work: Path) -> list[Path]:
    out = []
    for f in ("ce_m4_startup.c", "mps2_an386.ld"):
        dst = work / f
        dst.write_text((TEMPLATES / "cengine" / f).read_text(encoding="utf-8"), encoding="utf-8")
        out.append(dst)
    return out


def _compile(cmd: list[str], work: Path, what: str) -> None:
    proc = run_tool(cmd, work, 600, what)
    if proc.returncode != 0:
        raise ExportError(f"{what} failed", received=proc.stderr.strip()[-1500:])


def _inputs_header(name: str, n: int, in_bytes: int, out_bytes: int, arena: int, dump: bool, smallest: bool) -> str:
    return (f"// {name}_m4_inputs.h -- generated: {n} raw input(s) of {in_bytes} bytes in section .golden.\n"
            f"#ifndef TH_INPUTS_H_\n#define TH_INPUTS_H_\n#include <stdint.h>\n"
            f"#define TH_N {n}u\n#define TH_IN_BYTES {in_bytes}u\n#define TH_OUT_BYTES {out_bytes}u\n"
            f"#define TH_ARENA_BYTES {arena}u\n#define TH_DUMP_LAYERS {int(dump)}\n"
            f"#define TH_FIND_SMALLEST {int(smallest)}\n"
            f'extern "C" const uint8_t th_inputs[TH_N][TH_IN_BYTES];\n#endif\n')


def _inputs_asm(bin_name: str) -> str:
    return (f'    .section .golden,"a"\n    .balign 16\n    .global th_inputs\nth_inputs:\n'
            f'    .incbin "{bin_name}"\n')


class _Objects:
    """The objects that do not depend on the inputs: compiled once per firmware folder."""

    def __init__(self, export_dir: Path, name: str, lib: TflmLibrary, work: Path):
        export_dir, work = Path(export_dir).resolve(), Path(work).resolve()  # the compilers run in `work`
        self.export_dir, self.name, self.lib, self.work = export_dir, name, lib, work
        self.files = tflm_file_names(name)
        self.gcc, self.gxx = arm_tool("arm-none-eabi-gcc"), arm_tool("arm-none-eabi-g++")
        startup, self.ld = _startup(work)
        self.model_obj = work / Path(self.files.data_c).with_suffix(".o").name
        _compile([self.gcc, *lib.app_flags(), "-std=c17", "-c", str(export_dir / self.files.data_c),
                  "-o", str(self.model_obj)], work, "compiling the exported model data")
        self.startup_obj = work / "ce_m4_startup.o"
        _compile([self.gcc, *lib.app_flags(), *STARTUP_CFLAGS, "-c", str(startup), "-o", str(self.startup_obj)],
                 work, "compiling the Cortex-M4 startup")

    def cxx(self, src: Path, obj: Path, extra: list[str] = ()) -> Path:
        _compile([self.gxx, *self.lib.app_flags(), *CXX_FLAGS, "-Wall", "-Wextra", f"-I{self.export_dir}",
                  f"-I{self.work}", *extra, "-c", str(src), "-o", str(obj)], self.work, f"compiling {src.name}")
        return obj

    def link(self, objs: list[Path], elf: Path) -> Path:
        proc = run_tool([self.gxx, "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard",
                         "-mfpu=fpv4-sp-d16", *LINK_FLAGS, "-T", str(self.ld), *map(str, objs), str(self.lib.path),
                         "-o", str(elf)], self.work, 600, "linking the TFLM firmware")
        if proc.returncode != 0:
            raise ExportError("linking the TFLM firmware failed", received=proc.stderr.strip()[-1500:])
        return elf


def build_example(export_dir: str | os.PathLike, name: str, lib: TflmLibrary, work: str | os.PathLike) -> Path:
    """Compile and link the export's own ``NAME_main.cc`` for the Cortex-M4F; returns the ELF."""
    work, export_dir = Path(work).resolve(), Path(export_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    objs = _Objects(export_dir, name, lib, work)
    main_obj = objs.cxx(export_dir / objs.files.main_cc, work / f"{name}_main.o", ["-Werror"])
    return objs.link([main_obj, objs.model_obj, objs.startup_obj], work / f"{name}_main.elf")


def _parse_result(text: str) -> dict[str, int]:
    fields = dict(kv.split("=", 1) for kv in text.split()[1:] if "=" in kv)
    try:
        return {k: int(fields[k]) for k in ("runs", "elapsed", "arena_used", "smallest", "stack")}
    except (KeyError, ValueError) as exc:
        raise ExportError("the TFLM firmware reported no result", received=text.strip()[-300:] or "<empty>") from exc


def run_tflm(export_dir: str | os.PathLike, name: str, lib: TflmLibrary, inputs: list[np.ndarray], *,
             model_bytes: int, arena_bytes: int, out_dtype: np.dtype, out_shape: tuple[int, ...],
             work: str | os.PathLike, dump_layers: bool = False, timeout: float = 600,
             progress: Callable[[str], None] | None = None, find_smallest: bool = False) -> TflmRun:
    """Build the TFLM test firmware for ``inputs`` (raw, already in the model's input type) and run it on QEMU."""
    export_dir, work = Path(export_dir).resolve(), Path(work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if not inputs:
        raise ExportError("no inputs to run on the target", received="0 inputs")
    raw = [np.ascontiguousarray(x).tobytes() for x in inputs]
    in_bytes = len(raw[0])
    if any(len(r) != in_bytes for r in raw):
        raise ExportError("the inputs differ in size", received=sorted({len(r) for r in raw}))
    if arena_bytes + STACK_RESERVE > RAM_LIMIT:
        raise ExportError("the tensor arena does not fit the emulated board's RAM",
                          received=f"{arena_bytes:,} bytes > {RAM_LIMIT - STACK_RESERVE:,} ({QEMU_MACHINE})")
    per_run = (FLASH_LIMIT - model_bytes - _CODE_HEADROOM) // in_bytes
    if per_run < 1:
        raise ExportError("the model and one input do not fit the emulated board's 4 MB flash image",
                          received=f"model {model_bytes:,} bytes, input {in_bytes:,} bytes")
    out_bytes = int(np.prod(out_shape)) * np.dtype(out_dtype).itemsize
    t0 = time.monotonic()
    objs = _Objects(export_dir, name, lib, work)
    (work / "th_harness.cc").write_text(_render(
        "m4/tflm_harness.cc.tmpl", name=name, version=_version(), outputs_file=OUTPUTS_FILE, result_file=RESULT_FILE,
        layers_file=LAYERS_FILE, **objs.files.template_values()), encoding="utf-8")
    (work / "th_ops.cc").write_text(_render("m4/tflm_ops.cc.tmpl", name=name, version=_version(),
                                            **objs.files.template_values()), encoding="utf-8")
    ops_obj = objs.cxx(work / "th_ops.cc", work / "th_ops.o", ["-Werror"])
    build_s = time.monotonic() - t0
    emu_s = 0.0
    outputs: list[np.ndarray] = []
    elapsed = 0
    arena_used = stack = smallest = 0
    layers = None
    sections: dict[str, int] = {}
    flash: dict[str, int] = {}
    static_ram = 0
    chunks = [raw[i:i + per_run] for i in range(0, len(raw), per_run)]
    for ci, chunk in enumerate(chunks):
        t1 = time.monotonic()
        (work / "th_inputs.bin").write_bytes(b"".join(chunk))
        (work / f"{name}_m4_inputs.h").write_text(
            _inputs_header(name, len(chunk), in_bytes, out_bytes, arena_bytes, dump_layers, find_smallest and ci == 0),
            encoding="utf-8")
        (work / "th_inputs.S").write_text(_inputs_asm("th_inputs.bin"), encoding="utf-8")
        inputs_obj = work / "th_inputs.o"
        _compile([objs.gcc, "-mcpu=cortex-m4", "-mthumb", "-c", str(work / "th_inputs.S"), "-o", str(inputs_obj)],
                 work, "assembling the inputs")
        harness_obj = objs.cxx(work / "th_harness.cc", work / "th_harness.o", ["-Werror"])
        elf = objs.link([harness_obj, ops_obj, objs.model_obj, objs.startup_obj, inputs_obj], work / f"{name}_tflm.elf")
        build_s += time.monotonic() - t1
        if ci == 0:
            sections = {k: v for k, v in section_sizes(elf).items()
                        if not k.startswith((".debug", ".comment", ".ARM.attr"))}
            total = firmware_flash(sections)
            model = footprint([objs.model_obj])["flash_bytes"]
            harness = footprint([harness_obj, objs.startup_obj])["flash_bytes"]
            flash = {"model": model, "runtime": total - model - harness, "harness": harness, "firmware": total}
            static_ram = sections.get(".data", 0) + sections.get(".bss", 0) - arena_bytes
        if progress:
            progress(f"QEMU run {ci + 1}/{len(chunks)}: {len(chunk)} input(s) on TFLM {lib.flavour}")
        for f in (OUTPUTS_FILE, RESULT_FILE, LAYERS_FILE):
            (work / f).unlink(missing_ok=True)
        t1 = time.monotonic()
        proc = run_qemu(elf, timeout)
        emu_s += time.monotonic() - t1
        text = (work / RESULT_FILE).read_text(encoding="utf-8") if (work / RESULT_FILE).is_file() else ""
        if not text:
            raise ExportError("the TFLM firmware failed on the emulated core",
                              received=(proc.stdout + proc.stderr).strip()[-400:] or f"exit {proc.returncode}")
        res = _parse_result(text)
        elapsed += res["elapsed"]
        arena_used, stack = res["arena_used"], max(stack, res["stack"])
        smallest = smallest or res["smallest"]
        got = np.frombuffer((work / OUTPUTS_FILE).read_bytes(), dtype=out_dtype)
        if got.size != len(chunk) * int(np.prod(out_shape)):
            raise ExportError("the target wrote fewer outputs than it ran inputs", received=f"{got.size} values")
        outputs += [got[i * got.size // len(chunk):(i + 1) * got.size // len(chunk)].reshape(out_shape).copy()
                    for i in range(len(chunk))]
        if dump_layers and ci == 0:
            layers = read_layer_dump(work / LAYERS_FILE)
    return TflmRun(flavour=lib.flavour, outputs=outputs,
                   instructions_per_inference=int(round(elapsed * INSTRUCTIONS_PER_TICK / len(raw))),
                   arena_used_bytes=arena_used, flash=flash, static_ram_bytes=static_ram, stack_bytes=stack,
                   smallest_arena_bytes=smallest,
                   qemu_runs=len(chunks), build_seconds=round(build_s, 2), emulation_seconds=round(emu_s, 2),
                   layers=layers, sections=sections)


def _version() -> str:
    import toolchain

    return toolchain.__version__


def measure_target_arena(export_dir: str | os.PathLike, name: str, model, host_arena: int,
                         lib: TflmLibrary, work: str | os.PathLike) -> TflmRun:
    """Run the export on the emulated core (one all-zero input) in a generous arena: ``arena_used_bytes()`` and the
    smallest arena that allocates and runs, bisected on the target (TFLM needs more during AllocateTensors() than
    it keeps, and CMSIS-NN scratch can exceed the host's figure)."""
    tin, tout = model.tensor(model.inputs[0]), model.tensor(model.outputs[0])
    x = np.zeros(tuple(int(s) for s in tin.shape), dtype=np.dtype(tin.dtype))
    generous = min(RAM_LIMIT - STACK_RESERVE - 64 * 1024, max(2 * host_arena, 256 * 1024))
    return run_tflm(export_dir, name, lib, [x], model_bytes=len(model.data), arena_bytes=generous,
                    out_dtype=np.dtype(tout.dtype), out_shape=tuple(int(s) for s in tout.shape), work=work,
                    find_smallest=True)
