"""CLI commands (filled in by the owning module)."""
from toolchain.cli.app import app  # noqa: F401
