"""Golden outputs for the C engine: the reference kernels, run in a worker process.

The C engine reproduces TensorFlow Lite's *reference* integer kernels, the arithmetic TFLM runs on the device, so
the golden outputs come from the reference kernels, in this order:

1. TFLM's Python runtime (``tflite_micro``): the device's kernels themselves (a model with packed int4 weights
   runs as its int8 twin, :func:`int4_as_int8`, which is what TFLM's int4 kernels compute);
2. LiteRT with ``OpResolverType.BUILTIN_REF`` where TFLM cannot run the model (LiteRT's reference kernels: the
   same arithmetic except FULLY_CONNECTED, which rounds one tie in ~15 inputs differently on hello_world);
3. none (the caller reports why).

LiteRT's default kernels are not a reference: its optimised DEPTHWISE_CONV_2D and CONV_2D round ties of the
output stage towards +inf on some shapes and away from zero on others.

The reference runs in a worker (``python -m firmware_export.cgen.golden``) so that a kernel crashing on a
malformed model (LiteRT's integer SVDF corrupts its heap on TFLM's keyword_scrambled model) cannot take the
exporter down, with a time limit, and with inputs bounded by the caller (``GOLDEN_MAX_BYTES``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolchain.errors import ExportError
from toolchain.procutil import child_process_kwargs

WORKER_TIMEOUT_S = 300
TFLM_ARENA_SLACK = 1 << 20  # persistent buffers and per-operator data on top of the activation bytes
REFERENCES = ("tflm", "litert-ref")


@dataclass
class GoldenOutputs:
    outputs: list[np.ndarray]
    reference: str  # one of REFERENCES
    note: str = ""  # why an earlier reference was not used


def reference_outputs(model_path: str | os.PathLike, inputs: list[np.ndarray],
                      activation_bytes: int | None = None) -> GoldenOutputs:
    """Outputs of the reference kernels for ``inputs`` (one array per input). ``activation_bytes``: bytes of the
    model's non-constant tensors, which size TFLM's arena (default: read from the model); raises ExportError when
    no reference can run the model."""
    path = Path(model_path).resolve()
    if activation_bytes is None:
        from toolchain.tflite_model import load_tflite

        activation_bytes = sum(t.nbytes for t in load_tflite(path).tensors if t.data is None)
    arena = int(activation_bytes) * 2 + TFLM_ARENA_SLACK
    with tempfile.TemporaryDirectory(prefix="ce_golden_") as tmp:
        tin, tout = Path(tmp) / "inputs.npz", Path(tmp) / "outputs.npz"
        np.savez(tin, *[np.asarray(x) for x in inputs])
        cmd = [sys.executable, "-m", "firmware_export.cgen.golden", str(path), str(tin), str(tout), str(arena)]
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, env=env,
                                  **child_process_kwargs())
        except subprocess.TimeoutExpired as exc:
            raise ExportError("the reference kernels timed out on the model",
                              received=f"{path.name} ({WORKER_TIMEOUT_S} s)") from exc
        if proc.returncode != 0 or not tout.is_file():
            tail = " | ".join((proc.stderr or "").strip().splitlines()[-2:])
            raise ExportError("no reference kernels could run the model",
                              received=f"{path.name}: exit {proc.returncode}{': ' + tail if tail else ''}")
        with np.load(tout, allow_pickle=False) as data:
            n = int(data["n"])
            return GoldenOutputs([np.array(data[f"y{i}"]) for i in range(n)], str(data["reference"]),
                                 str(data["note"]))


# ----------------------------------------------------------------------------------------------------------------
# worker


def int4_as_int8(path: str) -> bytes | None:
    """The model with its packed int4 weight tensors stored as int8 (same values, scales and zero points), or None
    when it has none. TFLM's int4 kernels unpack the weights to int8 and run the int8 arithmetic, so the twin's
    outputs are the int4 model's; TFLM's Python runtime cannot allocate int4 tensors itself."""
    from toolchain.tflite_model import load_tflite

    parsed = load_tflite(path)
    int4 = {t.index: t for t in parsed.tensors if t.dtype == "int4" and t.data is not None}
    if not int4:
        return None
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(Path(path).read_bytes()))
    graph = model.subgraphs[0]
    for i, t in int4.items():
        graph.tensors[i].type = schema.TensorType.INT8
        model.buffers[graph.tensors[i].buffer].data = np.asarray(t.data, dtype=np.int8).reshape(-1).view(np.uint8)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _run_tflm(model: str, xs: list[np.ndarray], arena: int) -> list[np.ndarray]:
    from tflite_micro.python.tflite_micro import runtime

    twin = int4_as_int8(model)
    it = (runtime.Interpreter.from_file(model, arena_size=arena) if twin is None
          else runtime.Interpreter.from_bytes(twin, arena_size=arena))
    d = it.get_input_details(0)
    outs = []
    for x in xs:
        it.set_input(np.asarray(x, dtype=d["dtype"]).reshape(d["shape"]), 0)
        it.invoke()
        outs.append(np.array(it.get_output(0)))
    return outs


def _run_litert_ref(model: str, xs: list[np.ndarray]) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=model, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    din, dout = it.get_input_details()[0], it.get_output_details()[0]
    outs = []
    for x in xs:
        it.set_tensor(din["index"], np.asarray(x, dtype=din["dtype"]).reshape(din["shape"]))
        it.invoke()
        outs.append(np.array(it.get_tensor(dout["index"])))
    return outs


def _main(argv: list[str]) -> int:
    if len(argv) != 4:
        sys.stderr.write("usage: python -m firmware_export.cgen.golden MODEL INPUTS.npz OUTPUTS.npz ARENA_BYTES\n")
        return 2
    model, tin, tout, arena = argv[0], argv[1], argv[2], int(argv[3])
    with np.load(tin, allow_pickle=False) as data:
        xs = [np.array(data[f"arr_{i}"]) for i in range(len(data.files))]
    note = ""
    try:
        outs, ref = _run_tflm(model, xs, arena), "tflm"
    except (ImportError, RuntimeError, ValueError) as exc:  # not installed, or TFLM refuses the model
        note = f"TFLM: {' '.join(str(exc).split())[:200]}"
        outs, ref = _run_litert_ref(model, xs), "litert-ref"
    tmp = tout + ".tmp.npz"
    np.savez(tmp, n=len(outs), reference=ref, note=note, **{f"y{i}": y for i, y in enumerate(outs)})
    os.replace(tmp, tout)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
