"""One small interface over the inference runtimes a host or an edge device may have.

Runtimes (``available_runtimes()`` lists the installed ones, in ``auto`` preference order):

* ``litert``          -- ``ai_edge_litert.interpreter`` (LiteRT, the successor of the TFLite interpreter).
* ``tflite-runtime``  -- ``tflite_runtime.interpreter`` (legacy edge package; needs numpy<2).
* ``tensorflow``      -- ``tf.lite.Interpreter`` (deprecated; only used when nothing else is installed).
* ``tflm``            -- the TensorFlow Lite Micro Python runtime (``tflite_micro``), reference kernels.
* ``keras``           -- a ``.keras`` float model (host reference; imports Keras/TensorFlow); inference with
                         ``model.predict_on_batch`` (compiled predict step), also for single samples.

Nothing heavy is imported at module import: a device with only numpy and a TFLite runtime can use this module.

``open_runtime(path, runtime="auto", threads=None) -> Runner``; a ``Runner`` has ``name``, ``version``,
``input_details`` / ``output_details`` (LiteRT-style dicts: ``name``, ``index``, ``shape``, ``dtype``,
``quantization`` = (scale, zero_point)), ``run(x)`` for one batch-1 sample already in the input dtype,
``run_many(inputs)`` for a whole array of samples (batched via ``resize_tensor_input`` when the model allows it
and the batched results match the single-sample results, else a tight loop).

``reference_outputs(model, inputs)`` runs LiteRT with ``BUILTIN_WITHOUT_DEFAULT_DELEGATES`` (the bit-exact
reference kernels) over a list of inputs and returns one output array per input.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from toolchain.keras_io import check_keras_file, load_keras_model  # noqa: F401  (re-exported)
from toolchain.errors import ModelError, RuntimeUnavailableError, UsageError

TFLITE_RUNTIMES = ("litert", "tflite-runtime", "tensorflow", "tflm")
RUNTIMES = TFLITE_RUNTIMES + ("keras",)

_MODULES = {
    "litert": "ai_edge_litert",
    "tflite-runtime": "tflite_runtime",
    "tensorflow": "tensorflow",
    "tflm": "tflite_micro",
    "keras": "keras",
}
_DISTRIBUTIONS = {
    "litert": "ai-edge-litert",
    "tflite-runtime": "tflite-runtime",
    "tensorflow": "tensorflow",
    "tflm": "tflite-micro",
    "keras": "keras",
}
INSTALL_HINTS = {
    "litert": "pip install ai-edge-litert",
    "tflite-runtime": "pip install 'numpy<2' tflite-runtime",
    "tensorflow": "pip install tensorflow",
    "tflm": "pip install tflite-micro",
    "keras": "pip install tensorflow keras",
}


def _installed(runtime: str) -> bool:
    try:
        return importlib.util.find_spec(_MODULES[runtime]) is not None
    except (ImportError, ValueError):
        return False


def available_runtimes() -> list[str]:
    """Installed runtimes, in ``auto`` preference order (found without importing them)."""
    return [r for r in RUNTIMES if _installed(r)]


def runtime_version(runtime: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(_DISTRIBUTIONS[runtime])
    except metadata.PackageNotFoundError:
        mod = importlib.import_module(_MODULES[runtime])
        return str(getattr(mod, "__version__", "unknown"))


def _require(runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise UsageError(f"unknown runtime; choose one of auto, {', '.join(RUNTIMES)}", received=runtime)
    if not _installed(runtime):
        raise RuntimeUnavailableError(f"runtime '{runtime}' is not installed", received=runtime,
                                      hint=f"install it with: {INSTALL_HINTS[runtime]}")


# ---------------------------------------------------------------------------------------------- quantisation


def _qparams(detail: dict[str, Any]) -> tuple[float, int]:
    q = detail.get("quantization")
    if q is None:
        qp = detail.get("quantization_parameters") or {}
        scales = np.asarray(qp.get("scales", []), dtype=np.float64)
        zps = np.asarray(qp.get("zero_points", []), dtype=np.int64)
        return (float(scales[0]) if scales.size else 0.0, int(zps[0]) if zps.size else 0)
    return float(q[0]), int(q[1])


def is_quantized(detail: dict[str, Any]) -> bool:
    """True when the tensor is an integer tensor with a non-zero scale."""
    dtype = np.dtype(detail["dtype"])
    return dtype.kind in "iu" and _qparams(detail)[0] != 0.0


def quantize_input(x_float: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Float array -> the tensor's dtype: ``round(x / scale) + zero_point`` clipped to the dtype range for quantised
    integer tensors (float32 arithmetic, ties away from zero, as TFLite's QUANTIZE kernel), a plain cast otherwise."""
    dtype = np.dtype(detail["dtype"])
    x = np.asarray(x_float)
    if dtype.kind == "f":
        return x.astype(dtype, copy=False)
    scale, zp = _qparams(detail)
    if scale == 0.0:
        return x.astype(dtype)
    info = np.iinfo(dtype)
    # the same arithmetic as TFLite's QUANTIZE kernel: float32 division, round half away from zero
    v = x.astype(np.float32) / np.float32(scale)
    q = np.sign(v) * np.floor(np.abs(v) + np.float32(0.5)) + zp
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize_output(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Tensor values -> float32: ``(y - zero_point) * scale`` for quantised tensors, a cast otherwise."""
    y = np.asarray(y)
    if np.dtype(detail["dtype"]).kind == "f":
        return y.astype(np.float32, copy=False)
    scale, zp = _qparams(detail)
    if scale == 0.0:
        return y.astype(np.float32)
    return ((y.astype(np.float64) - zp) * scale).astype(np.float32)


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


def resolve_runtime(model_path: str | os.PathLike, runtime: str = "auto") -> str:
    """The concrete runtime ``open_runtime`` would use for this model."""
    suffix = Path(model_path).suffix.lower() if not isinstance(model_path, (bytes, bytearray)) else ".tflite"
    if suffix in (".keras", ".h5"):
        if runtime not in ("auto", "keras"):
            raise UsageError("a .keras model runs only with the keras runtime", received=f"--runtime {runtime}")
        _require("keras")
        return "keras"
    if suffix != ".tflite":
        raise ModelError("unsupported model file type (expected .tflite or .keras)", received=str(model_path))
    if runtime == "keras":
        raise UsageError("the keras runtime runs .keras models only", received=str(model_path))
    if runtime != "auto":
        _require(runtime)
        return runtime
    for r in ("litert", "tflite-runtime", "tensorflow"):
        if _installed(r):
            return r
    raise RuntimeUnavailableError("no TFLite runtime is installed", received="runtime=auto",
                                  hint=f"install one: {INSTALL_HINTS['litert']}  or  {INSTALL_HINTS['tflite-runtime']}")


def open_runtime(model_path: str | os.PathLike | bytes, runtime: str = "auto", threads: int | None = None,
                 reference_kernels: bool = False) -> Runner:
    """Open ``model_path`` (.tflite path or bytes, or .keras path) on ``runtime``.

    ``reference_kernels=True`` selects ``BUILTIN_WITHOUT_DEFAULT_DELEGATES`` (no XNNPACK) on interpreter runtimes.
    """
    if threads is not None and int(threads) < 1:
        raise UsageError("threads must be >= 1", received=threads)
    name = resolve_runtime(model_path, runtime)
    if threads is not None and name in ("keras", "tflm"):
        raise UsageError(f"--threads applies to interpreter runtimes (litert, tflite-runtime, tensorflow), not to "
                         f"{name}", received=f"--threads {threads} with runtime {name}")
    if name == "keras":
        return _open_keras(model_path)  # type: ignore[arg-type]
    data, source = _model_bytes(model_path)
    if name == "tflm":
        return _open_tflm(data, source)
    return _open_interpreter(name, data, source, threads, reference_kernels)


def reference_outputs(model: str | os.PathLike | bytes, inputs: Sequence[Any]) -> list[Any]:
    """Run the bit-exact LiteRT reference kernels (BUILTIN_WITHOUT_DEFAULT_DELEGATES) once per element of
    ``inputs``.

    Each element is one invocation: an array in the model's input dtype (batch 1, or without the batch
    dimension), or a list/tuple of arrays for multi-input models. Returns, per invocation, the output array
    (batch 1) for single-output models, or a list of arrays for multi-output models.
    """
    runner = open_runtime(model, runtime="litert", reference_kernels=True)
    results: list[Any] = []
    for item in inputs:
        arrays = list(item) if isinstance(item, (list, tuple)) else [item]
        outs = runner.run_all(arrays)
        results.append(outs[0] if len(outs) == 1 else outs)
    return results


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (resource.getrusage; Linux reports KiB)."""
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss) if sys.platform == "darwin" else int(rss) * 1024
