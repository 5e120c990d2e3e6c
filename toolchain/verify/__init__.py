"""Verify a deployed model (candidate, e.g. int8 .tflite) against its float reference and the ground truth.

Modules: ``metrics`` (pure NumPy), ``gates`` (checks, baselines, sanity checks), ``layer_debug`` (TensorFlow's
QuantizationDebugger) and ``driver`` (``verify`` itself). The report schema is ``docs/report_schema.md``.
"""

from toolchain.verify.driver import REPORT_FORMAT, VerifyOptions, VerifyReport, verify  # noqa: F401
from toolchain.verify.gates import failed_check_messages, load_baseline, make_baseline  # noqa: F401
from toolchain.verify.metrics import classification_metrics, compare_outputs  # noqa: F401
