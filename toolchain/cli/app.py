"""The typer application object and shared CLI helpers.

Command modules (``toolchain/cli/cmd_*.py``) register their commands on ``app``. Library code never prints;
commands render results with ``console`` (stdout) and log with ``err_console`` (stderr).
"""

from __future__ import annotations

import logging
from typing import Callable

import typer
from rich.console import Console
from rich.markup import escape

import toolchain

app = typer.Typer(
    name="toolchain",
    help=(
        "Edge/embedded ML deployment toolchain: train small CNNs, quantise to int8 TFLite, export for "
        "microcontrollers (TFLM C arrays or a standalone C engine), verify and benchmark. Every figure is measured.\n\n"
        "Main job:  toolchain pipeline --output runs/demo"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class _State:
    verbose: bool = False


state = _State()


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"toolchain {toolchain.__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show debug logs and full tracebacks on errors."),
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    state.verbose = verbose
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[_RichStderrHandler()],
        force=True,
    )


OUR_LOGGERS = ("toolchain", "firmware_export", "models")


class _RichStderrHandler(logging.Handler):
    """Our loggers: INFO and up (``warning:`` prefix from WARNING). Third-party loggers (TensorFlow, absl...) only
    with ``--verbose``: their deprecation chatter is not about the user's model."""

    def emit(self, record: logging.LogRecord) -> None:
        ours = record.name.split(".")[0] in OUR_LOGGERS
        if not (ours or state.verbose):
            return
        msg = self.format(record)
        if record.levelno >= logging.WARNING:
            err_console.print(f"[yellow]warning:[/yellow] {escape(msg)}", markup=True)
        else:
            err_console.print(msg, markup=False)


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]], right: set[int] = frozenset()) -> None:
    """Plain aligned columns (copy-pasteable, no box drawing); column indexes in ``right`` are right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(cells) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    for cells in (header, *rows):
        console.print(fmt(cells).rstrip(), markup=False)


def progress_printer(prefix: str = "") -> Callable[[str], None]:
    """A progress callback: one line per step on stderr, with the seconds since the command started."""
    import time

    t0 = time.monotonic()

    def show(message: str) -> None:
        err_console.print(f"[{time.monotonic() - t0:6.1f} s] {prefix}{message}", markup=False)

    return show
