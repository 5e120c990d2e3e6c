"""CLI conventions shared by every command: help, version, lean imports, error handling, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import toolchain
from toolchain.cli.app import app
from toolchain.errors import ToolchainError, UsageError
from toolchain.fsutil import atomic_write_bytes, check_output_file, output_dir
from tests.helpers import run_cli

COMMANDS = sorted(c.name or c.callback.__name__ for c in app.registered_commands)




def test_version(capsys):
    code, out, _ = run_cli(["--version"], capsys)
    assert code in (0, None)
    assert out.strip() == f"toolchain {toolchain.__version__}"


def test_every_command_is_registered():
    for expected in ["datasets", "models", "train", "convert", "quantise", "quantize", "inspect", "export",
                     "targets", "verify", "bench", "pipeline"]:
        assert expected in COMMANDS, f"missing command {expected}: {COMMANDS}"


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_examples(command, capsys):
    code, out, _ = run_cli([command, "--help"], capsys)
    assert code in (0, None)
    assert "Example" in out, f"`toolchain {command} --help` shows no examples"


def test_import_does_not_pull_tensorflow():
    code = ("import sys, toolchain, toolchain.cli; "
            "heavy=[m for m in ('tensorflow','keras','tf_keras','sklearn','matplotlib') if m in sys.modules]; "
            "print(','.join(heavy))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "", f"heavy modules imported at CLI import time: {res.stdout}"


def test_help_does_not_import_tensorflow():
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "toolchain", "--help"],
                         capture_output=True, text=True)
    assert res.returncode == 0
    imported = {line.split("|")[-1].strip() for line in res.stderr.splitlines() if "|" in line}
    assert "tensorflow" not in imported and "keras" not in imported


def test_unknown_option_exit_2(capsys):
    code, _, err = run_cli(["models", "--no-such-option"], capsys)
    assert code == 2
    assert "no-such-option" in err


def test_toolchain_error_is_one_line_exit_2():
    res = subprocess.run([sys.executable, "-m", "toolchain", "inspect", "/nonexistent/model.tflite"],
                         capture_output=True, text=True)
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.stderr


def test_verbose_shows_traceback():
    res = subprocess.run([sys.executable, "-m", "toolchain", "--verbose", "inspect", "/nonexistent/model.tflite"],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert "Traceback" in res.stderr


def test_error_message_format():
    err = UsageError("epochs must be positive", received="--epochs=0")
    assert str(err) == "epochs must be positive. Received: --epochs=0"
    assert isinstance(err, ToolchainError)


def test_atomic_outputs(tmp_path):
    target = tmp_path / "a.bin"
    atomic_write_bytes(target, b"one")
    with pytest.raises(ToolchainError, match="--force"):
        check_output_file(target, force=False)
    assert check_output_file(target, force=True) == target
    # a failing build of a directory leaves nothing behind
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with output_dir(out) as tmp:
            (tmp / "half.txt").write_text("partial")
            raise RuntimeError("boom")
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]
    with output_dir(out) as tmp:
        (tmp / "ok.json").write_text(json.dumps({"a": 1}))
    assert (out / "ok.json").exists()
    with pytest.raises(ToolchainError, match="--force"):
        with output_dir(out):
            pass


def test_atomic_outputs_have_normal_permissions(tmp_path):
    import os
    import stat

    mask = os.umask(0o022)
    try:
        f = atomic_write_bytes(tmp_path / "f.bin", b"x")
        assert stat.S_IMODE(f.stat().st_mode) == 0o644
        with output_dir(tmp_path / "d") as tmp:
            (tmp / "x").write_text("y")
        assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
    finally:
        os.umask(mask)


@pytest.mark.parametrize("args, received", [
    (["inspect", "model.tflite", "--bogus"], "Received: --bogus"),
    (["export", "m.tflite", "--output", "fw", "--arena-margin", "-5"], "Received: --arena-margin -5"),
    (["bench", "m.tflite", "--runs=abc"], "Received: --runs=abc"),
    (["nosuchcommand"], "Received: nosuchcommand"),
    (["verify", "-c", "m.tflite"], "Received: verify -c m.tflite"),
])
def test_parser_errors_are_one_line_with_received(args, received, capsys):
    """Argument-parser errors follow the same one-line `error: ... Received: ...` convention (no usage box)."""
    code, out, err = run_cli(args, capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert received in lines[0] and "--help" in lines[0]


def test_unwritable_output_is_a_usage_error_before_any_work(tmp_path):
    """os.access() says yes for root (and for /proc): the check must really try to create a file."""
    from toolchain.fsutil import check_output_dir

    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(UsageError, match="not writable|not a directory"):
        check_output_file(blocker / "sub" / "o.tflite", force=False)
    with pytest.raises(UsageError, match="not writable"):
        check_output_dir(blocker / "a" / "b", force=False)
    proc = __import__("pathlib").Path("/proc")
    if proc.is_dir():
        with pytest.raises(UsageError, match="not writable"):
            check_output_file(proc / "o.tflite", force=False)
        with pytest.raises(UsageError, match="not writable"):
            check_output_dir(proc / "fw", force=False)
    # the offending option is named
    with pytest.raises(UsageError, match="--json="):
        check_output_file(blocker / "sub" / "x.json", force=False, option="--json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]  # the probe leaves nothing behind


def test_atomic_write_oserror_is_a_toolchain_error(tmp_path):
    if not __import__("pathlib").Path("/proc").is_dir():
        pytest.skip("needs /proc")
    with pytest.raises(ToolchainError, match="cannot write"):
        atomic_write_bytes("/proc/toolchain-test.bin", b"x")
    with pytest.raises(ToolchainError, match="not writable|cannot create"):
        with output_dir("/proc/toolchain-test-dir"):
            pass


def test_cli_unwritable_output_exit_2(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    code, _, err = run_cli(["pipeline", "--output", blocker / "run", "--epochs", "1"], capsys)
    assert code == 2 and err.startswith("error: output directory is not writable") and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_log_handler_hides_third_party_warnings_and_escapes_markup(capsys):
    """TensorFlow's deprecation warnings are not shown as `warning:` lines unless --verbose; our warnings are,
    verbatim (square brackets in a message are text, not rich markup)."""
    import logging

    from toolchain.cli.app import _RichStderrHandler, state

    handler = _RichStderrHandler()
    rec = lambda name, msg: logging.LogRecord(name, logging.WARNING, __file__, 1, msg, None, None)  # noqa: E731
    state.verbose = False
    handler.emit(rec("tensorflow", "Please consider providing the trackable_obj argument"))
    handler.emit(rec("toolchain.verify", "shape [1, 28, 28, 1] vs [/bold] [red]x"))
    err = capsys.readouterr().err
    assert "trackable_obj" not in err
    assert "warning: shape [1, 28, 28, 1] vs [/bold] [red]x" in err
    state.verbose = True
    try:
        handler.emit(rec("tensorflow", "Please consider providing the trackable_obj argument"))
    finally:
        state.verbose = False
    assert "trackable_obj" in capsys.readouterr().err


@pytest.mark.parametrize("command", COMMANDS)
def test_help_examples_are_indented_command_lines(command, capsys):
    """Examples render as indented `toolchain ...` lines (a docstring with no paragraph between the summary and
    Examples loses the indentation in typer's rich help)."""
    import re

    code, out, _ = run_cli([command, "--help"], capsys)
    assert code in (0, None)
    assert re.search(r"^ {2,}toolchain \S", out, re.M), out
