"""Command-line interface. ``main()`` is the only place that catches ``ToolchainError`` (exit 2) and
``CheckFailed`` (exit 1)."""

from __future__ import annotations

import os
import sys
import traceback

import typer

from toolchain.cli.app import app, err_console, state
from toolchain.errors import CheckFailed, ToolchainError
from toolchain.native_stderr import filtered_native_stderr

# Registering commands: each module adds its commands to ``app`` on import (they import heavy libraries lazily).
from toolchain.cli import (  # noqa: E402,F401
    cmd_data,
    cmd_models,
    cmd_train,
    cmd_convert,
    cmd_inspect,
    cmd_export,
    cmd_verify,
    cmd_bench,
    cmd_pipeline,
    cmd_tflm,
    cmd_tune,
)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; without ``--verbose`` third-party log lines on fd 2 are filtered out."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = sys.argv[1:] if argv is None else list(argv)
    if "--verbose" in args or "-v" in args:
        _main(argv)
        return
    with filtered_native_stderr():
        _main(argv)


def _main(argv: list[str] | None) -> None:
    try:
        app(args=argv, prog_name="toolchain", standalone_mode=False)
    except ToolchainError as exc:
        if state.verbose:
            traceback.print_exc()
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except CheckFailed as exc:
        err_console.print("FAILED checks: " + "; ".join(exc.failed), markup=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("error: interrupted.", markup=False)
        sys.exit(130)
    except SystemExit:
        raise
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("error: aborted.", markup=False)
        sys.exit(130)
    except Exception as exc:
        # Usage errors of the argument parser (typer's vendored click): show them the parser's way, exit 2.
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            if type(exc).__name__ == "NoArgsIsHelpError":
                exc.show()
            else:
                err_console.print(parser_error_line(exc, argv), markup=False, highlight=False, soft_wrap=True)
            sys.exit(2 if exc.exit_code in (1, 2) else exc.exit_code)
        if state.verbose:
            traceback.print_exc()
        err_console.print(f"error: internal error: {type(exc).__name__}: {exc}", markup=False, soft_wrap=True)
        sys.exit(3)


def parser_error_line(exc: Exception, argv: list[str] | None) -> str:
    """One line ``error: <what>. Received: <value> (see `toolchain CMD --help`)`` for an argument-parser error."""
    fmt = getattr(exc, "format_message", None)
    msg = (fmt() if callable(fmt) else str(exc)).strip().rstrip(".")
    msg = " ".join(msg.split())
    if msg:
        msg = msg[0].lower() + msg[1:]
    args = [str(a) for a in (argv if argv is not None else sys.argv[1:])]
    received = getattr(exc, "option_name", None)
    param = getattr(exc, "param", None)
    if received is None and param is not None:
        opts = list(getattr(param, "opts", None) or []) + list(getattr(param, "secondary_opts", None) or [])
        for i, arg in enumerate(args):
            for opt in opts:
                if not opt.startswith("-"):
                    continue
                if arg == opt:
                    received = f"{opt} {args[i + 1]}" if i + 1 < len(args) else f"{opt} (no value)"
                elif arg.startswith(opt + "="):
                    received = arg
    if received is None:
        received = " ".join(args) if args else "(no arguments)"
    ctx = getattr(exc, "ctx", None)
    hint = f" (see `{ctx.command_path} --help`)" if getattr(ctx, "command_path", None) else ""
    return f"error: {msg}. Received: {received}{hint}"
