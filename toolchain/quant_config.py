"""Options of int8 / int4-weight / 16x8 quantisation (``QuantConfig``), validated before any work."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from toolchain.errors import UsageError

PRECISIONS = ("float32", "float16", "dynamic")
IO_DTYPES = ("int8", "uint8", "int16", "float32")
ACTIVATION_BITS = ("int8", "int16")
WEIGHT_BITS = ("int8", "int4")
RANDOM_DATASET = "random"  # calibration with uniform [0, 1) samples: for architecture checks, no accuracy figures


@dataclass(frozen=True)
class QuantConfig:
    """Options of full-integer quantisation (see ``toolchain quantise --help``)."""

    per_channel: bool = True
    io_dtype: str = "int8"
    calibration_samples: int = 300
    qat: bool = False
    qat_epochs: int = 2
    allow_float_fallback: bool = False
    seed: int = 0
    qat_learning_rate: float = 1e-4
    qat_batch_size: int = 32
    weights: str = "int8"                 # int4: packed int4 weights (toolchain.quant_int4), int8 activations
    int4_layers: str | None = None        # regex over Keras layer names (default: every eligible layer)
    keep_int8_layers: str | None = None   # regex: layers that keep int8 weights
    activations: str = "int8"             # int16: 16x8 quantisation (int16 activations, int8 weights)

    @property
    def io(self) -> str:
        """The I/O type: int8 I/O becomes int16 with int16 activations."""
        return "int16" if self.activations == "int16" and self.io_dtype == "int8" else self.io_dtype

    def validate(self) -> None:
        if self.activations not in ACTIVATION_BITS:
            raise UsageError(f"--activations must be one of {', '.join(ACTIVATION_BITS)}",
                             received=f"--activations={self.activations}")
        if self.activations == "int16" and self.io_dtype == "uint8":
            raise UsageError("--io uint8 needs int8 activations (16x8 models take int16 or float32 I/O)",
                             received="--activations int16 --io uint8")
        if self.activations == "int8" and self.io_dtype == "int16":
            raise UsageError("--io int16 needs --activations int16", received="--io int16")
        if self.activations == "int16" and self.weights == "int4":
            raise UsageError("--weights int4 needs int8 activations (no int4 x int16 kernels in LiteRT or TFLM)",
                             received="--weights int4 --activations int16")
        if self.weights not in WEIGHT_BITS:
            raise UsageError(f"--weights must be one of {', '.join(WEIGHT_BITS)}", received=f"--weights={self.weights}")
        if self.weights != "int4":
            for name, v in (("--int4-layers", self.int4_layers), ("--keep-int8-layers", self.keep_int8_layers)):
                if v is not None:
                    raise UsageError(f"{name} needs --weights int4", received=f"{name} {v}")
        from toolchain.quant_int4 import compile_regex

        compile_regex(self.int4_layers, "--int4-layers")
        compile_regex(self.keep_int8_layers, "--keep-int8-layers")
        if self.io_dtype not in IO_DTYPES:
            raise UsageError(f"--io must be one of {', '.join(IO_DTYPES)}", received=f"--io={self.io_dtype}")
        if isinstance(self.calibration_samples, bool) or not isinstance(self.calibration_samples, int) \
                or self.calibration_samples <= 0:
            raise UsageError("calibration samples must be a positive integer",
                             received=f"--calibration-samples={self.calibration_samples}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise UsageError("seed must be an integer >= 0", received=f"--seed={self.seed}")
        if self.qat:
            if isinstance(self.qat_epochs, bool) or not isinstance(self.qat_epochs, int) or self.qat_epochs <= 0:
                raise UsageError("QAT epochs must be a positive integer", received=f"--qat-epochs={self.qat_epochs}")
            if not (isinstance(self.qat_learning_rate, (int, float)) and np.isfinite(self.qat_learning_rate)
                    and self.qat_learning_rate > 0):
                raise UsageError("QAT learning rate must be a positive number",
                                 received=f"--qat-learning-rate={self.qat_learning_rate}")
            if not isinstance(self.qat_batch_size, int) or self.qat_batch_size <= 0:
                raise UsageError("QAT batch size must be a positive integer",
                                 received=f"qat_batch_size={self.qat_batch_size}")
