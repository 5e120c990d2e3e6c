"""Edge/embedded ML deployment toolchain: Keras -> TFLite (float / int8) -> microcontroller.

Importing this package must not import TensorFlow; heavy imports happen inside the functions that need them.
"""

__version__ = "0.1.0"

from toolchain.errors import (  # noqa: F401  (public names)
    ToolchainError,
    DatasetError,
    ModelError,
    ConversionError,
    ExportError,
    OutputExistsError,
    RuntimeUnavailableError,
    UsageError,
)
