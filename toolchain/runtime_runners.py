"""The ``Runner`` object and the per-runtime openers behind :func:`toolchain.runtime.open_runtime`: LiteRT /
tflite-runtime / tf.lite interpreters, the TFLM Python runtime and Keras. Runtimes are imported lazily.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from toolchain.errors import ModelError, UsageError
from toolchain.keras_io import load_keras_model
from toolchain.runtime_io import _qparams, runtime_version

# ---------------------------------------------------------------------------------------------- runners


def _norm_detail(d: dict[str, Any]) -> dict[str, Any]:
    out = dict(d)
    out["shape"] = tuple(int(s) for s in np.asarray(d["shape"]).reshape(-1))
    out["dtype"] = np.dtype(d["dtype"])
    if "quantization" not in out:
        out["quantization"] = _qparams(d)
    else:
        out["quantization"] = (float(out["quantization"][0]), int(out["quantization"][1]))
    return out


@dataclass
class Runner:
    """An opened model on one runtime. ``run`` takes one sample (batch 1) already in the input dtype."""

    name: str
    version: str
    model_path: str
    input_details: list[dict[str, Any]]
    output_details: list[dict[str, Any]]
    threads: int | None = None
    reference_kernels: bool = False
    _invoke: Callable[[list[np.ndarray]], list[np.ndarray]] = field(default=None, repr=False)  # type: ignore
    _batched: Callable[[int], Callable[[list[np.ndarray]], list[np.ndarray]] | None] | None = field(
        default=None, repr=False)
    batch_mode: str = "loop"
    # batch size -> the batch-resized invoke checked against single-sample runs (None: the model cannot batch), so
    # repeated run_many calls (and their timing) do not rebuild and re-check the resized interpreter
    _batched_fns: dict[int, Any] = field(default_factory=dict, repr=False)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.input_details[0]["shape"]

    @property
    def input_dtype(self) -> np.dtype:
        return self.input_details[0]["dtype"]

    def run(self, x: np.ndarray) -> np.ndarray:
        """One inference on the first input; returns the first output (with its batch dimension)."""
        return self.run_all([x])[0]

    def run_all(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One inference with every input tensor given; returns every output tensor."""
        if len(inputs) != len(self.input_details):
            raise UsageError("wrong number of model inputs",
                             received=f"{len(inputs)} given, model has {len(self.input_details)}")
        arrays = []
        for x, d in zip(inputs, self.input_details):
            x = np.asarray(x)
            if x.dtype != d["dtype"]:
                raise UsageError("input dtype does not match the model's input (quantise it first)",
                                 received=f"{x.dtype}, model expects {d['dtype']} for '{d['name']}'")
            if tuple(x.shape) != d["shape"]:
                if x.size != int(np.prod(d["shape"])):
                    raise UsageError("input shape does not match the model's input",
                                     received=f"{tuple(x.shape)}, model expects {d['shape']}")
                x = x.reshape(d["shape"])
            arrays.append(x)
        return self._invoke(arrays)

    def run_many(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Inference over ``x`` of shape (N, *sample shape) in the input dtype; returns (N, *output shape[1:]) of
        the first output. Uses a batch-resized interpreter when the model allows it (checked against the
        single-sample results on the first samples), else a loop."""
        x = np.asarray(x)
        n = int(x.shape[0])
        if n == 0:
            return np.zeros((0,) + tuple(self.output_details[0]["shape"][1:]), dtype=self.output_details[0]["dtype"])
        sample_shape = self.input_shape
        per = int(np.prod(sample_shape))
        if x.size != n * per:
            raise UsageError("inputs do not match the model's input shape",
                             received=f"{tuple(x.shape)}, model expects (N, {', '.join(map(str, sample_shape[1:]))})")
        x = x.reshape((n,) + tuple(sample_shape[1:]))
        if x.dtype != self.input_dtype:
            raise UsageError("input dtype does not match the model's input (quantise it first)",
                             received=f"{x.dtype}, model expects {self.input_dtype}")
        fn = None
        if self._batched is not None and len(self.input_details) == 1 and n > 1:
            bs = min(batch_size, n)
            if bs in self._batched_fns:
                fn = self._batched_fns[bs]
            else:
                fn = self._batched(bs)
                if fn is not None:
                    k = min(4, n)
                    single = [self._invoke([x[i:i + 1]])[0] for i in range(k)]
                    try:
                        probe = np.concatenate([x[:k], np.repeat(x[:1], bs - k, axis=0)]) if bs > k else x[:bs]
                        batched = fn([probe])[0][:k]
                        ok = _outputs_match(np.concatenate(single), batched)
                    except Exception:  # a model whose graph hard-codes batch 1 fails here: fall back to the loop
                        ok = False
                    if not ok:
                        fn = None
                self._batched_fns[bs] = fn
        if fn is None:
            self.batch_mode = "loop"
            return np.concatenate([self._invoke([x[i:i + 1]])[0] for i in range(n)])
        self.batch_mode = f"batched({bs})"
        outs = []
        for start in range(0, n, bs):
            chunk = x[start:start + bs]
            m = chunk.shape[0]
            if m < bs:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], bs - m, axis=0)])
            outs.append(fn([chunk])[0][:m])
        return np.concatenate(outs)


def _outputs_match(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "iub":
        return bool(np.array_equal(a, b))
    return bool(np.allclose(a, b, rtol=1e-4, atol=1e-5))


def _interpreter_class(runtime: str):
    if runtime == "litert":
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        return Interpreter, OpResolverType
    if runtime == "tflite-runtime":
        from tflite_runtime.interpreter import Interpreter, OpResolverType

        return Interpreter, OpResolverType
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import tensorflow as tf

        return tf.lite.Interpreter, tf.lite.experimental.OpResolverType


def _model_bytes(model: str | os.PathLike | bytes) -> tuple[bytes, str]:
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model), "<bytes>"
    p = Path(model)
    if not p.is_file():
        raise ModelError("model file not found", received=str(p))
    data = p.read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelError("not a TFLite flatbuffer (missing the TFL3 identifier)", received=str(p))
    return data, str(p)


def _open_interpreter(runtime: str, data: bytes, source: str, threads: int | None, reference_kernels: bool) -> Runner:
    Interpreter, OpResolverType = _interpreter_class(runtime)

    def make(content: bytes = data):
        kwargs: dict[str, Any] = {"model_content": content}
        if threads is not None:
            kwargs["num_threads"] = int(threads)
        if reference_kernels:
            kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        if runtime == "tensorflow":
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return Interpreter(**kwargs)
        return Interpreter(**kwargs)

    try:
        interp = make()
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"{runtime} cannot load the model", received=f"{source}: {str(exc).splitlines()[0]}") from exc
    in_det = [_norm_detail(d) for d in interp.get_input_details()]
    out_det = [_norm_detail(d) for d in interp.get_output_details()]

    def invoker(it):
        ins = it.get_input_details()
        outs = it.get_output_details()

        def invoke(arrays: list[np.ndarray]) -> list[np.ndarray]:
            for d, a in zip(ins, arrays):
                it.set_tensor(d["index"], a)
            it.invoke()
            return [it.get_tensor(d["index"]).copy() for d in outs]

        return invoke

    def resized(content: bytes, bs: int):
        try:
            it = make(content)
            it.resize_tensor_input(in_det[0]["index"], [bs] + list(in_det[0]["shape"][1:]), strict=False)
            it.allocate_tensors()
        except (ValueError, RuntimeError, TypeError):
            return None
        out_shapes = [tuple(d["shape"]) for d in it.get_output_details()]
        if any(not s or s[0] != bs for s in out_shapes):
            return None
        return invoker(it)

    def batched(bs: int):
        if len(in_det) != 1:
            return None
        fn = resized(data, bs)
        if fn is None:
            patched = batch_agnostic_reshapes(data)
            fn = resized(patched, bs) if patched is not None else None
        return fn

    return Runner(name=runtime, version=runtime_version(runtime), model_path=source, input_details=in_det,
                  output_details=out_det, threads=threads, reference_kernels=reference_kernels,
                  _invoke=invoker(interp), _batched=batched)


def _count_io(data: bytes, which: str) -> int:
    import tflite

    graph = tflite.Model.GetRootAsModel(data, 0).Subgraphs(0)
    return int(getattr(graph, f"{which}Length")())


def _tflm_details(getter, count: int) -> list[dict[str, Any]]:
    details = []
    for i in range(count):
        d = getter(i)
        details.append(_norm_detail(dict(d, name=str(d.get("name", f"tensor{i}")), index=i)))
    return details


def batch_agnostic_reshapes(data: bytes) -> bytes | None:
    """A copy of the model whose RESHAPE targets ``[1, ...]`` read ``[-1, ...]``, so the interpreter can be resized to
    a batch > 1 (models converted with a fixed batch of 1 flatten to ``[1, N]``). ``None`` when nothing changes.

    Only used for batched evaluation; ``Runner.run_many`` checks the batched results against single-sample runs."""
    import tflite

    buf = bytearray(data)
    try:
        model = tflite.Model.GetRootAsModel(buf, 0)
        codes = []
        for i in range(model.OperatorCodesLength()):
            oc = model.OperatorCodes(i)
            codes.append(max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode())))
        changed = False
        for g in range(model.SubgraphsLength()):
            graph = model.Subgraphs(g)
            for i in range(graph.OperatorsLength()):
                op = graph.Operators(i)
                if codes[op.OpcodeIndex()] != tflite.BuiltinOperator.RESHAPE:
                    continue
                if op.InputsLength() > 1 and op.Inputs(1) >= 0:
                    tensor = graph.Tensors(int(op.Inputs(1)))
                    raw = model.Buffers(tensor.Buffer()).DataAsNumpy()
                    if isinstance(raw, np.ndarray) and raw.size >= 4 and tensor.Type() == tflite.TensorType.INT32:
                        shape = raw.view(np.int32)
                        if shape[0] == 1:
                            shape[0] = -1
                            changed = True
                table = op.BuiltinOptions()
                if table is not None and op.BuiltinOptionsType() == tflite.BuiltinOptions.ReshapeOptions:
                    opts = tflite.ReshapeOptions()
                    opts.Init(table.Bytes, table.Pos)
                    new_shape = opts.NewShapeAsNumpy()
                    if isinstance(new_shape, np.ndarray) and new_shape.size and new_shape[0] == 1:
                        new_shape[0] = -1
                        changed = True
    except Exception:  # an unusual flatbuffer layout: evaluate sample by sample instead
        return None
    return bytes(buf) if changed else None


def _open_tflm(data: bytes, source: str) -> Runner:
    from tflite_micro.python.tflite_micro import runtime as tflm_runtime

    try:
        interp = tflm_runtime.Interpreter.from_bytes(data)
    except (ValueError, RuntimeError) as exc:
        raise ModelError("tflm cannot load the model", received=f"{source}: {str(exc).splitlines()[0]}") from exc
    in_det = _tflm_details(interp.get_input_details, _count_io(data, "Inputs"))
    out_det = _tflm_details(interp.get_output_details, _count_io(data, "Outputs"))
    keep_alive = data  # the TFLM interpreter points into this buffer without owning it

    def invoke(arrays: list[np.ndarray]) -> list[np.ndarray]:
        _ = keep_alive
        for i, a in enumerate(arrays):
            interp.set_input(a, i)
        interp.invoke()
        return [np.array(interp.get_output(i)).reshape(d["shape"]) for i, d in enumerate(out_det)]

    return Runner(name="tflm", version=runtime_version("tflm"), model_path=source, input_details=in_det,
                  output_details=out_det, reference_kernels=True, _invoke=invoke, _batched=None)


def _open_keras(path: str | os.PathLike) -> Runner:
    model = load_keras_model(path)
    in_shape = (1,) + tuple(int(s) for s in model.inputs[0].shape[1:])
    out_shape = (1,) + tuple(int(s) for s in model.outputs[0].shape[1:])
    in_det = [{"name": model.inputs[0].name, "index": 0, "shape": in_shape, "dtype": np.dtype(np.float32),
               "quantization": (0.0, 0)}]
    out_det = [{"name": model.outputs[0].name, "index": 0, "shape": out_shape, "dtype": np.dtype(np.float32),
                "quantization": (0.0, 0)}]

    import warnings

    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing notices for new batch sizes

    def invoke(arrays: list[np.ndarray]) -> list[np.ndarray]:
        # predict_on_batch runs the compiled (tf.function) predict step: on this toolchain's hosts it is 5-40x
        # faster per sample than an eager ``model(x, training=False)`` call (benchmarks/results/zoo.json)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "structure of inputs doesn't match" for a bare array
            return [np.asarray(model.predict_on_batch(arrays[0]), dtype=np.float32)]

    def batched(bs: int):
        return invoke

    runner = Runner(name="keras", version=runtime_version("keras"), model_path=str(path), input_details=in_det,
                    output_details=out_det, _invoke=invoke, _batched=batched)
    runner.keras_model = model  # type: ignore[attr-defined]
    return runner

