"""The typer application object and shared CLI helpers.

Command modules (``toolchain/cli/cmd_*.py``) register their commands on ``app``. Library code never prints;
commands render results with ``console`` (stdout) and log with ``err_console`` (stderr).
"""

from __future__ import annotations

import logging

import typer
from rich.console import Console

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


class _RichStderrHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        msg = self.format(record)
        if record.levelno >= logging.WARNING:
            err_console.print(f"[yellow]warning:[/yellow] {msg}", markup=True)
        elif record.name.startswith("toolchain") or record.name.startswith("firmware_export") or state.verbose:
            err_console.print(msg, markup=False)
