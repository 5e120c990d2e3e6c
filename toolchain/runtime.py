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

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from toolchain.errors import ModelError, RuntimeUnavailableError, UsageError
from toolchain.keras_io import check_keras_file, load_keras_model  # noqa: F401  (re-exported)
from toolchain.runtime_io import (  # noqa: F401  (re-exported)
    _DISTRIBUTIONS,
    _MODULES,
    INSTALL_HINTS,
    RUNTIMES,
    TFLITE_RUNTIMES,
    _installed,
    _qparams,
    _require,
    available_runtimes,
    dequantize_output,
    is_quantized,
    quantize_input,
    runtime_version,
)
from toolchain.runtime_runners import (  # noqa: F401  (re-exported)
    Runner,
    _interpreter_class,
    _model_bytes,
    _open_interpreter,
    _open_keras,
    _open_tflm,
    batch_agnostic_reshapes,
)


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


def intermediate_tensors(model: str | os.PathLike | bytes, x: np.ndarray) -> dict[int, np.ndarray]:
    """Every tensor of one inference on LiteRT's reference kernels, by tensor index
    (``experimental_preserve_all_tensors=True``, ``BUILTIN_REF``: the arithmetic of TFLM's kernels, layer by layer)."""
    Interpreter, OpResolverType = _interpreter_class("litert")
    data, source = _model_bytes(model)
    try:
        it = Interpreter(model_content=data, experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
        it.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelError("litert cannot load the model", received=f"{source}: {str(exc).splitlines()[0]}") from exc
    d = it.get_input_details()[0]
    try:
        it.set_tensor(d["index"], np.asarray(x).reshape(d["shape"]).astype(d["dtype"], copy=False))
        it.invoke()
    except (ValueError, RuntimeError) as exc:
        raise ModelError("litert could not run the model on this input",
                         received=f"{source}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    out: dict[int, np.ndarray] = {}
    for det in it.get_tensor_details():
        try:
            out[int(det["index"])] = np.array(it.get_tensor(det["index"]))
        except ValueError:  # a tensor without data (e.g. an optional input)
            continue
    return out
