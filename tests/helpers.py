"""Helpers shared by the CLI tests: run ``toolchain`` in-process and collect its exit code and output."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolchain.cli import main


def run_cli(args, capsys) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr). ``args`` may hold Paths."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
        raise SystemExit(0)
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


def cli_exit_code(args) -> int:
    """Run the CLI in-process and return only its exit code (output left to pytest's capture)."""
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def flatbuffer_counts(path) -> dict:
    """Params / MACs / activation sizes read straight from the .tflite flatbuffer with the ``tflite`` package and
    NumPy (an independent reference for the toolchain's own counters), under the reference README's convention:
    params = weights + biases of CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED (main subgraph), MACs = their
    multiply-accumulates (output elements x kernel reduction size)."""
    from pathlib import Path

    import numpy as np
    import tflite

    buf = Path(path).read_bytes()
    model = tflite.Model.GetRootAsModel(buf, 0)
    g = model.Subgraphs(0)
    names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}

    def shape(i):
        return tuple(int(s) for s in g.Tensors(i).ShapeAsNumpy()) if g.Tensors(i).ShapeLength() else ()

    params = macs = 0
    ops = []
    for k in range(g.OperatorsLength()):
        op = g.Operators(k)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
        ins = [int(i) for i in op.InputsAsNumpy()]
        out = shape(int(op.OutputsAsNumpy()[0]))
        ops.append(name)
        if name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            continue
        w = shape(ins[1])
        b = shape(ins[2]) if len(ins) > 2 and ins[2] >= 0 else None
        params += int(np.prod(w)) + (int(np.prod(b)) if b is not None else 0)
        if name == "CONV_2D":  # weights [O, KH, KW, I]
            macs += int(np.prod(out)) * int(np.prod(w[1:]))
        elif name == "DEPTHWISE_CONV_2D":  # weights [1, KH, KW, O]: one KHxKW window per output element
            macs += int(np.prod(out)) * w[1] * w[2]
        else:  # FULLY_CONNECTED, weights [O, I]
            macs += int(np.prod(out)) * w[1]
    return {"params": params, "macs": macs, "ops": ops, "inputs": [shape(int(i)) for i in g.InputsAsNumpy()],
            "outputs": [shape(int(i)) for i in g.OutputsAsNumpy()]}


SHARED = Path(__file__).resolve().parents[2] / "shared"
TFLM_DIR = SHARED / "tflm"              # the offline TFLM source tree (tests and CI build TFLM from it)
REF_DIR = SHARED / "models" / "reference"


def litert_reference(path, xs):
    """Outputs (flattened, int64) of LiteRT's reference kernels (BUILTIN_WITHOUT_DEFAULT_DELEGATES), one per input:
    the bit-exact host reference the tests compare firmware outputs with."""
    import numpy as np

    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=str(path),
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    din, dout = it.get_input_details()[0], it.get_output_details()[0]
    outs = []
    for x in xs:
        it.set_tensor(din["index"], x.astype(din["dtype"]).reshape(din["shape"]))
        it.invoke()
        outs.append(it.get_tensor(dout["index"]).reshape(-1).astype(np.int64))
    return np.array(outs)
