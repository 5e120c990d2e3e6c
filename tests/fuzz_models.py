"""Mutated reference models and a crash-isolating runner for `toolchain export --format c` (fuzz test + benchmark).

``mutate(data, kind, rng)`` edits a ``.tflite`` flatbuffer in place (same length, so every other offset stays
valid): byte flips and truncation, and structured edits located through the ``tflite`` schema package (operator
tensor indices out of range, an operator reading its own output or a later tensor, a RESHAPE alias cycle, huge /
negative / zero dimensions, a shrunk rank, NaN / zero / tiny scales, zero points out of range, wrong scale counts,
a quantized dimension beyond the rank, truncated or swapped constant buffers, swapped opcodes, option fields).

``run_cli_case(model_path, out_dir, timeout)`` runs ``toolchain export MODEL -o OUT --format c`` in a forked child
of the current (already importing) process: a segfault in a native library, a hang or an allocation beyond the
address-space limit cannot take the caller down; returns what happened (exit code or signal, stderr lines, time,
whether anything was written).
"""

from __future__ import annotations

import os
import random
import resource
import signal
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

REFERENCE_DIR = Path(__file__).resolve().parents[2] / "shared" / "models" / "reference"

KINDS = ("bitflip", "bytes_random", "truncate", "op_input_oob", "op_output_oob", "self_loop", "forward_ref",
         "reshape_cycle", "dim_huge", "dim_negative", "dim_zero", "rank_shrink", "scale_bad", "zp_bad",
         "scale_count", "qdim_bad", "buffer_truncate", "buffer_swap", "opcode_swap", "option_field", "tensor_type",
         "graph_io")


def reference_models() -> dict[str, bytes]:
    return {p.stem: p.read_bytes() for p in sorted(REFERENCE_DIR.glob("*.tflite"))}


# -- flatbuffer locations ------------------------------------------------------------------------------------

def _vec(tab, slot: int):
    """(first element position, length) of a vector field, or None when absent."""
    o = tab.Offset(slot)
    if not o:
        return None
    return tab.Vector(o), tab.VectorLen(o)


def _field(tab, slot: int):
    o = tab.Offset(slot)
    return tab.Pos + o if o else None


@dataclass
class Layout:
    ntensors: int
    nbuffers: int
    nopcodes: int
    tensors: list = field(default_factory=list)  # per tensor: dict of positions
    ops: list = field(default_factory=list)  # per operator: dict
    buffers: list = field(default_factory=list)  # (data pos, length) or None
    graph_io: list = field(default_factory=list)  # positions of subgraph input/output entries
    opcode_names: list = field(default_factory=list)


def layout(data: bytes) -> Layout:
    import tflite

    buf = bytearray(data)
    m = tflite.Model.GetRootAsModel(buf, 0)
    sg = m.Subgraphs(0)
    lay = Layout(sg.TensorsLength(), m.BuffersLength(), m.OperatorCodesLength())
    names = tflite.utils.BUILTIN_OPCODE2NAME
    for i in range(m.OperatorCodesLength()):
        oc = m.OperatorCodes(i)
        lay.opcode_names.append(names.get(max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode()), "?"))
    for i in range(m.BuffersLength()):
        lay.buffers.append(_vec(m.Buffers(i)._tab, 4))
    for i in range(sg.TensorsLength()):
        t = sg.Tensors(i)
        d = {"shape": _vec(t._tab, 4), "type": _field(t._tab, 6), "buffer": _field(t._tab, 8),
             "buffer_index": t.Buffer()}
        q = t.Quantization()
        if q is not None:
            d.update(scale=_vec(q._tab, 8), zp=_vec(q._tab, 10), qdim=_field(q._tab, 16))
        lay.tensors.append(d)
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        d = {"opcode": _field(op._tab, 4), "opcode_index": op.OpcodeIndex(), "inputs": _vec(op._tab, 6),
             "outputs": _vec(op._tab, 8), "in_vals": [op.Inputs(j) for j in range(op.InputsLength())],
             "out_vals": [op.Outputs(j) for j in range(op.OutputsLength())], "options": None}
        o = op._tab.Offset(12)
        if o:
            d["options"] = op._tab.Indirect(o + op._tab.Pos)
        lay.ops.append(d)
    for slot in (6, 8):
        v = _vec(sg._tab, slot)
        if v:
            lay.graph_io += [v[0] + 4 * j for j in range(v[1])]
    return lay


def _put_i32(b: bytearray, pos: int, v: int) -> None:
    struct.pack_into("<i", b, pos, max(-(1 << 31), min(v, (1 << 31) - 1)))


def _put_len(b: bytearray, vec, new_len: int) -> None:
    struct.pack_into("<I", b, vec[0] - 4, new_len)


# -- mutations -------------------------------------------------------------------------------------------------

def mutate(data: bytes, kind: str, rng: random.Random) -> bytes | None:
    """``data`` with one mutation of ``kind``; None when the model has nothing to apply it to."""
    b = bytearray(data)
    if kind == "bitflip":
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return bytes(b)
    if kind == "bytes_random":
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.choice([0, 0xFF, 0x7F, 0x80, rng.randrange(256)])
        return bytes(b)
    if kind == "truncate":
        return bytes(b[:rng.randrange(8, len(b))])
    lay = layout(data)
    ops = [o for o in lay.ops if o["inputs"] and o["in_vals"]]
    tens = lay.tensors
    if kind in ("op_input_oob", "op_output_oob", "self_loop", "forward_ref"):
        if not ops:
            return None
        op = rng.choice(ops)
        if kind == "op_input_oob":
            j = rng.randrange(len(op["in_vals"]))
            _put_i32(b, op["inputs"][0] + 4 * j, rng.choice([lay.ntensors, lay.ntensors + 7, (1 << 31) - 1, -2, -1]))
        elif kind == "op_output_oob":
            if not op["outputs"] or not op["out_vals"]:
                return None
            _put_i32(b, op["outputs"][0], rng.choice([lay.ntensors, lay.ntensors + 3, -1, -5]))
        elif kind == "self_loop":
            if not op["out_vals"]:
                return None
            _put_i32(b, op["inputs"][0], op["out_vals"][0])
        else:
            k = lay.ops.index(op)
            later = [t for o in lay.ops[k:] for t in o["out_vals"]]
            if not later:
                return None
            _put_i32(b, op["inputs"][0], rng.choice(later))
        return bytes(b)
    if kind == "reshape_cycle":
        # RESHAPE r: a -> b; its consumer c (turned into a RESHAPE too): b -> d; then r reads d: r <-> c alias cycle
        rcode = [i for i, n in enumerate(lay.opcode_names) if n == "RESHAPE"]
        rs = [o for o in ops if o["opcode_index"] in rcode and o["out_vals"]]
        if not rs:
            return None
        r = rng.choice(rs)
        cons = [o for o in ops if r["out_vals"][0] in o["in_vals"] and o["out_vals"] and o is not r]
        if not cons:
            return None
        c = rng.choice(cons)
        if c["opcode"] is not None and rng.random() < 0.8:
            _put_i32(b, c["opcode"], rcode[0])
            j = c["in_vals"].index(r["out_vals"][0])
            if j:  # the RESHAPE reads its input 0
                _put_i32(b, c["inputs"][0], r["out_vals"][0])
        _put_i32(b, r["inputs"][0], c["out_vals"][0])
        return bytes(b)
    if kind in ("dim_huge", "dim_negative", "dim_zero", "rank_shrink"):
        shaped = [(i, t) for i, t in enumerate(tens) if t["shape"] and t["shape"][1]]
        if not shaped:
            return None
        i, t = rng.choice(shaped)
        pos, n = t["shape"]
        if kind == "rank_shrink":
            _put_len(b, t["shape"], rng.randrange(n))
            return bytes(b)
        value = {"dim_huge": rng.choice([(1 << 31) - 1, (1 << 24) + 1, 1 << 30, 65536, 100000, 1 << 20]),
                 "dim_negative": rng.choice([-1, -7, -(1 << 31)]), "dim_zero": 0}[kind]
        _put_i32(b, pos + 4 * rng.randrange(n), value)
        return bytes(b)
    if kind in ("scale_bad", "zp_bad", "scale_count", "qdim_bad"):
        key = {"scale_bad": "scale", "zp_bad": "zp", "scale_count": "scale", "qdim_bad": "qdim"}[kind]
        cand = [t for t in tens if t.get(key) is not None and (key == "qdim" or t[key][1])]
        if not cand:
            return None
        t = rng.choice(cand)
        if kind == "scale_bad":
            v = rng.choice([float("nan"), 0.0, -0.5, float("inf"), 1e-45, 1e-38, 3e38, 1e30])
            struct.pack_into("<f", b, t["scale"][0] + 4 * rng.randrange(t["scale"][1]), v)
        elif kind == "zp_bad":
            struct.pack_into("<q", b, t["zp"][0] + 8 * rng.randrange(t["zp"][1]), rng.choice([300, -1000, 1 << 40, 128]))
        elif kind == "scale_count":
            vec = t["scale"] if rng.random() < 0.7 or not t.get("zp") else t["zp"]
            if vec[1] < 2 and vec is t["scale"]:
                return None
            _put_len(b, vec, rng.randrange(vec[1]))
        else:
            _put_i32(b, t["qdim"], rng.choice([-1, 4, 5, 1 << 20]))
        return bytes(b)
    if kind == "buffer_truncate":
        cand = [v for v in lay.buffers if v and v[1] > 0]
        if not cand:
            return None
        v = rng.choice(cand)
        _put_len(b, v, rng.randrange(v[1]))
        return bytes(b)
    if kind == "buffer_swap":
        cand = [t for t in tens if t["buffer"] is not None]
        if not cand:
            return None
        _put_i32(b, rng.choice(cand)["buffer"], rng.randrange(lay.nbuffers + 2))
        return bytes(b)
    if kind == "opcode_swap":
        cand = [o for o in lay.ops if o["opcode"] is not None]
        if not cand or lay.nopcodes < 2:
            return None
        _put_i32(b, rng.choice(cand)["opcode"], rng.randrange(lay.nopcodes))
        return bytes(b)
    if kind == "option_field":
        cand = [o for o in lay.ops if o["options"] is not None]
        if not cand:
            return None
        table = rng.choice(cand)["options"]
        vt = table - struct.unpack_from("<i", b, table)[0]
        vt_len = struct.unpack_from("<H", b, vt)[0]
        slots = [s for s in range(4, vt_len, 2) if struct.unpack_from("<H", b, vt + s)[0]]
        if not slots:
            return None
        pos = table + struct.unpack_from("<H", b, vt + rng.choice(slots))[0]
        if rng.random() < 0.5 and pos + 4 <= len(b):
            _put_i32(b, pos, rng.choice([0, -1, 1 << 20, 7, (1 << 31) - 1]))
        else:
            b[pos] = rng.choice([0, 0xFF, 3, 7, 200])
        return bytes(b)
    if kind == "tensor_type":
        cand = [t for t in tens if t["type"] is not None]
        if not cand:
            return None
        b[rng.choice(cand)["type"]] = rng.choice([0, 2, 3, 7, 9, 17, 4, 5])
        return bytes(b)
    if kind == "graph_io":
        if not lay.graph_io:
            return None
        _put_i32(b, rng.choice(lay.graph_io), rng.choice([rng.randrange(lay.ntensors), lay.ntensors, -1]))
        return bytes(b)
    raise ValueError(f"unknown mutation kind {kind!r}")


def make_case(models: dict[str, bytes], seed: int) -> tuple[str, str, bytes]:
    """(model name, kind, mutated bytes) for ``seed`` (deterministic); kinds that do not apply are redrawn."""
    rng = random.Random(seed)
    names = sorted(models)
    while True:
        name = rng.choice(names)
        kind = rng.choice(KINDS)
        data = mutate(models[name], kind, rng)
        if data is not None:
            return name, kind, data


# -- runner ----------------------------------------------------------------------------------------------------

@dataclass
class Outcome:
    status: str  # "exit0", "exit2", "exit<N>", "signal<N>", "timeout"
    seconds: float
    stderr: list[str]
    wrote: bool
    arena_bytes: int | None = None


def start_cli_case(model_path: Path, out_dir: Path, measure_tflm: bool = False, mem_limit: int = 6 << 30):
    """Fork the child that runs ``toolchain export MODEL -o OUT --format c``; returns its (pid, start time)."""
    err = out_dir.parent / f"{out_dir.name}.stderr"
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:  # child
        code = 70
        try:
            resource.setrlimit(resource.RLIMIT_AS, (mem_limit, mem_limit))
            fd = os.open(str(err), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(fd, 2)
            import sys

            sys.stdout = os.fdopen(1, "w", closefd=False)  # the caller's may be a capture object (pytest)
            sys.stderr = os.fdopen(2, "w", closefd=False)
            if not measure_tflm:
                import firmware_export.cgen as cgen

                cgen.tflm_arena = lambda path: None  # TFLM's arena measurement is not under test here
            from toolchain.cli import main

            try:
                main(["export", str(model_path), "-o", str(out_dir), "--format", "c"])
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
        finally:
            import sys

            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid, t0


def poll_cli_case(pid: int, t0: float, timeout: float) -> str | None:
    """The child's status ("exit<N>", "signal<N>", "timeout": then killed), or None while it runs."""
    done, st = os.waitpid(pid, os.WNOHANG)
    if done:
        return f"signal{os.WTERMSIG(st)}" if os.WIFSIGNALED(st) else f"exit{os.WEXITSTATUS(st)}"
    if time.monotonic() - t0 >= timeout:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return "timeout"
    return None


def collect_cli_case(out_dir: Path, status: str, t0: float) -> Outcome:
    import json

    seconds = time.monotonic() - t0
    err = out_dir.parent / f"{out_dir.name}.stderr"
    lines = err.read_text(errors="replace").splitlines() if err.exists() else []
    arena = None
    manifest = out_dir / "manifest.json"
    if manifest.is_file():
        arena = json.loads(manifest.read_text()).get("arena_bytes")
    return Outcome(status, seconds, lines, out_dir.exists(), arena)


def run_cli_case(model_path: Path, out_dir: Path, timeout: float = 60.0, measure_tflm: bool = False) -> Outcome:
    """``toolchain export MODEL -o OUT --format c`` in a forked child (see the module docstring)."""
    pid, t0 = start_cli_case(model_path, out_dir, measure_tflm)
    while (status := poll_cli_case(pid, t0, timeout)) is None:
        time.sleep(0.002)
    return collect_cli_case(out_dir, status, t0)


def check_outcome(o: Outcome) -> list[str]:
    """What is wrong with an outcome: exit 0 writes the engine, exit 2 one stderr line and nothing else."""
    if o.status == "exit0":
        return [] if o.arena_bytes is not None else ["exit 0 without a manifest"]
    if o.status == "exit2":
        bad = []
        if len(o.stderr) != 1 or not o.stderr[0].startswith("error: "):
            bad.append(f"stderr is not one error line: {o.stderr[:3]}")
        if o.wrote:
            bad.append("output written on failure")
        return bad
    return [f"{o.status}: {o.stderr[-3:]}"]
