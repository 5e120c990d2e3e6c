"""One exception family for the whole toolchain.

The library raises these; the CLI catches them once and prints a single line
``error: <what is wrong>. Received: <value>`` with exit code 2.
"""

from __future__ import annotations

from typing import Any


class ToolchainError(Exception):
    """Base class. ``message`` says what is wrong; ``received`` the offending value; ``hint`` what to do."""

    def __init__(self, message: str, *, received: Any = None, hint: str | None = None):
        self.message = message.rstrip(". ")
        self.received = received
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        text = self.message + "."
        if self.received is not None:
            text += f" Received: {self.received}"
        if self.hint:
            text += f" ({self.hint})"
        return " ".join(text.split())  # always one line


class UsageError(ToolchainError):
    """A bad option value or combination of options."""


class DatasetError(ToolchainError):
    """Missing, corrupt or invalid data."""


class ModelError(ToolchainError):
    """Unknown zoo model, unreadable or invalid model file."""


class ConversionError(ToolchainError):
    """Conversion or quantisation could not produce the requested model."""


class ExportError(ToolchainError):
    """Firmware export failed (bad name, unsupported operator, compiler failure...)."""


class OutputExistsError(ToolchainError):
    """An output exists and --force was not given."""


class RuntimeUnavailableError(ToolchainError):
    """A requested inference runtime or external tool is not installed."""


class ClusterError(ToolchainError):
    """A multi-worker training cluster failed (a worker stopped or cannot be reached)."""


class CheckFailed(Exception):
    """Not an error: the run finished but a gate/check failed (CLI exit code 1)."""

    def __init__(self, failed: list[str]):
        self.failed = list(failed)
        super().__init__("; ".join(self.failed))
