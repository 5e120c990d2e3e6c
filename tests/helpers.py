"""Helpers shared by the CLI tests: run ``toolchain`` in-process and collect its exit code and output."""

from __future__ import annotations

import pytest

from toolchain.cli import main


def run_cli(args, capsys) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr). ``args`` may hold Paths."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
        raise SystemExit(0)
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


def cli_exit_code(args) -> int:
    """Run the CLI in-process and return only its exit code (output left to pytest's capture)."""
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
