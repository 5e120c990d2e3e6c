"""The Arm cross toolchain and QEMU: finding them, running them with a deadline, reading section sizes.

One owner for every external tool the on-target builds use (``arm-none-eabi-gcc/g++/ar/size``,
``qemu-system-arm``). The emulated board is Arm MPS2 AN386 (Cortex-M4F) under ``-icount shift=0``: SysTick then
counts exactly one tick per 40 guest instructions, so firmware that times with SysTick reports instructions (not
cycles: QEMU does not model pipeline timing).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

from toolchain.errors import ExportError, RuntimeUnavailableError
from toolchain.procutil import child_process_kwargs

QEMU_MACHINE = "mps2-an386"
INSTRUCTIONS_PER_TICK = 40  # SysTick at 25 MHz under -icount shift=0 (1 ns per instruction)
FLASH_LIMIT = 4 * 1024 * 1024  # the linker script's FLASH region (SSRAM1 of the AN386)
RAM_LIMIT = 4 * 1024 * 1024    # its RAM region (data, bss, stack)
STACK_RESERVE = 64 * 1024      # RAM kept for the stack when sizing arenas and output buffers

_INSTALL_HINT = {"qemu-system-arm": "apt install qemu-system-arm"}


def arm_tool(name: str) -> str:
    """Absolute path of an Arm toolchain program or of QEMU; RuntimeUnavailableError when it is not installed."""
    path = shutil.which(name)
    if not path:
        raise RuntimeUnavailableError(f"{name} is not installed", received="PATH",
                                      hint=_INSTALL_HINT.get(name, "apt install gcc-arm-none-eabi "
                                                                   "libnewlib-arm-none-eabi"))
    return path


def tools_available(*names: str) -> bool:
    return all(shutil.which(n) for n in names or ("arm-none-eabi-gcc", "arm-none-eabi-g++", "qemu-system-arm"))


def run_tool(cmd: list[str], cwd: Path, timeout: float, what: str) -> subprocess.CompletedProcess:
    """Run an external tool, killed with the toolchain (PR_SET_PDEATHSIG) and after ``timeout`` seconds."""
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              **child_process_kwargs())
    except FileNotFoundError as exc:
        raise RuntimeUnavailableError(f"{cmd[0]} is not installed", received=what) from exc
    except OSError as exc:  # not executable, out of processes, ...
        raise ExportError(f"{Path(cmd[0]).name} could not be started", received=f"{what}: {exc.strerror}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ExportError(f"{what} timed out after {timeout:.0f} s", received=" ".join(map(str, cmd[:3]))) from exc


def section_sizes(path: str | os.PathLike) -> dict[str, int]:
    """``arm-none-eabi-size -A``: section name -> bytes."""
    size = arm_tool("arm-none-eabi-size")
    proc = run_tool([size, "-A", str(path)], Path(path).parent, 60, "arm-none-eabi-size")
    if proc.returncode != 0:
        raise ExportError("arm-none-eabi-size could not read the firmware", received=proc.stderr.strip()[-300:])
    out: dict[str, int] = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit() and not line.startswith(("section", "Total")):
            out[parts[0]] = out.get(parts[0], 0) + int(parts[1])
    return out


def footprint(objs: list[Path]) -> dict[str, int]:
    """Flash (text + rodata + data init) and static RAM (data + bss) of object files or archives."""
    flash = ram = 0
    for o in objs:
        for sec, n in section_sizes(o).items():
            if sec.startswith((".text", ".rodata")):
                flash += n
            elif sec.startswith(".data"):
                flash += n
                ram += n
            elif sec.startswith(".bss") or sec == "COMMON":
                ram += n
    return {"flash_bytes": flash, "static_ram_bytes": ram}


def firmware_flash(sections: dict[str, int]) -> int:
    """Flash of a linked ELF: code, constants, exception tables, initialised data (test vectors excluded)."""
    return sum(n for s, n in sections.items() if s in (".text", ".rodata", ".data", ".ARM.exidx", ".init_array"))


def run_qemu(elf: str | os.PathLike, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``elf`` on the emulated MPS2 AN386 with semihosting (guest file I/O is relative to the ELF's folder)."""
    qemu = arm_tool("qemu-system-arm")
    cmd = [qemu, "-M", QEMU_MACHINE, "-icount", "shift=0", "-nographic", "-semihosting", "-monitor", "none",
           "-serial", "none", "-kernel", str(elf)]
    return run_tool(cmd, Path(elf).parent, timeout, "qemu-system-arm")


def read_layer_dump(path: Path) -> list[tuple[int, int, bytes]]:
    """A per-layer dump written by the test firmware: (layer/op index, tensor index, bytes) in execution order."""
    if not Path(path).is_file():
        raise ExportError("the target wrote no layer dump", received=str(path))
    data = Path(path).read_bytes()
    out: list[tuple[int, int, bytes]] = []
    pos = 0
    while pos + 12 <= len(data):
        op, tensor, nbytes = struct.unpack_from("<iii", data, pos)
        pos += 12
        if nbytes < 0 or pos + nbytes > len(data):
            raise ExportError("the layer dump from the target is truncated", received=f"{Path(path).name} at {pos}")
        out.append((op, tensor, data[pos:pos + nbytes]))
        pos += nbytes
    return out
