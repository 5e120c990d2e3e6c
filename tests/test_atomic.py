"""Artifacts that cannot disagree: processes really killed between their steps.

The library's opt-in hook (``toolchain.procutil.pause_for_test``: ``TOOLCHAIN_TEST_PAUSE=<point>``) makes a child
process write a marker file and sleep at a named point; each test waits for the marker, SIGKILLs the process and
checks what is left on disk: an output folder always holds the complete old or new content, a .tflite rewritten by a
killed run is refused next to the old sidecar, the next run removes the temp folders of killed runs, and the
measuring worker of ``toolchain export`` dies with its parent.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.helpers import run_cli
from toolchain import fsutil
from toolchain.errors import ModelError
from toolchain.fsutil import atomic_write_bytes, output_dir, remove_stale_temps, sha256_file
from toolchain.metadata import load_any_metadata, load_tflite_metadata, sidecar_path
from toolchain.procutil import PR_SET_PDEATHSIG, child_process_kwargs, pid_alive

ROOT = Path(__file__).resolve().parents[1]
LINUX = sys.platform.startswith("linux")
needs_linux = pytest.mark.skipif(not LINUX, reason="PR_SET_PDEATHSIG / renameat2 are Linux features")


def _env(point: str | None = None, marker: Path | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TOOLCHAIN_TEST_PAUSE", None)
    if point:
        env["TOOLCHAIN_TEST_PAUSE"] = point
        env["TOOLCHAIN_TEST_PAUSE_FILE"] = str(marker)
    return env


def _start(code: str, point: str, marker: Path, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], cwd=ROOT,
                            env=_env(point, marker), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_marker(proc: subprocess.Popen, marker: Path, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"process ended (exit {proc.returncode}) before its pause point: {err[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("pause point not reached in time")
        time.sleep(0.02)
    return json.loads(marker.read_text())


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    proc.stderr.close()


def _gone(pid: int) -> bool:
    """Not running: no such process, or a zombie waiting to be reaped by init."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return False


def _tree(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.iterdir())}


def _temps(folder: Path, name: str) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith(f".{name}."))


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


OLD = {"a.txt": "old a", "b.txt": "old b"}
NEW = {"a.txt": "new a", "b.txt": "new b", "c.txt": "new c"}
WRITE_DIR = """
    import sys
    from pathlib import Path
    from toolchain.fsutil import output_dir
    with output_dir(sys.argv[1], force=True) as tmp:
        for name, text in {new!r}.items():
            (Path(tmp) / name).write_text(text)
""".format(new=NEW)


def _old_output(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    with output_dir(out) as tmp:
        for name, text in OLD.items():
            (tmp / name).write_text(text)
    return out


# ------------------------------------------------------------------------------------------------ output_dir


@pytest.mark.parametrize("point, expected", [("output_dir.before_swap", OLD), ("output_dir.after_swap", NEW)])
def test_killed_output_dir_leaves_old_or_new_and_next_run_cleans(tmp_path, point, expected):
    if point == "output_dir.after_swap" and not LINUX:
        pytest.skip("the swap point exists only with renameat2")
    out = _old_output(tmp_path)
    marker = tmp_path / "marker.json"
    proc = _start(WRITE_DIR, point, marker, out)
    info = _wait_marker(proc, marker)
    assert _tree(out) == expected  # complete at the pause point...
    _kill(proc)
    assert _tree(out) == expected  # ...and after the kill
    stale = _temps(tmp_path, "out")
    assert stale and all(f".out.{info['pid']}." in p.name for p in stale)

    with output_dir(out, force=True) as tmp:  # the next run for the same path removes the dead run's temp folder
        (tmp / "z.txt").write_text("next")
    assert _tree(out) == {"z.txt": "next"}
    assert _temps(tmp_path, "out") == []


REPLACE_MANY = """
    import sys
    from pathlib import Path
    from toolchain.fsutil import output_dir
    for i in range(150):
        with output_dir(sys.argv[1], force=True) as tmp:
            for name, text in ({old!r} if i % 2 else {new!r}).items():
                (Path(tmp) / name).write_text(text)
""".format(old=OLD, new=NEW)


@needs_linux
def test_output_dir_path_never_missing_while_replaced(tmp_path):
    out = _old_output(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(REPLACE_MANY), str(out)], cwd=ROOT, env=_env(),
                            stderr=subprocess.PIPE, text=True)
    seen = missing = 0
    while proc.poll() is None:
        try:
            text = (out / "a.txt").read_text()
        except FileNotFoundError:
            missing += 1
            continue
        seen += 1
        assert text in ("old a", "new a")
    assert proc.wait() == 0, proc.stderr.read()
    proc.stderr.close()
    assert missing == 0 and seen > 0
    assert _tree(out) == OLD and _temps(tmp_path, "out") == []  # the last (odd) run wrote OLD


def test_output_dir_fallback_without_exchange(tmp_path, monkeypatch):
    """Where RENAME_EXCHANGE is unavailable the two-rename method still replaces the folder and cleans up."""
    out = _old_output(tmp_path)
    monkeypatch.setattr(fsutil, "exchange_paths", lambda a, b: False)
    with output_dir(out, force=True) as tmp:
        for name, text in NEW.items():
            (tmp / name).write_text(text)
    assert _tree(out) == NEW and _temps(tmp_path, "out") == []


@needs_linux
def test_exchange_paths_swaps_atomically(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "f").write_text("from a")
    assert fsutil.exchange_paths(a, b) is True
    assert (b / "f").read_text() == "from a" and not any(a.iterdir())
    if platform.machine().lower() in fsutil._SYS_RENAMEAT2:  # the raw-syscall path for libcs without the wrapper
        import ctypes

        rename = fsutil._renameat2_syscall(ctypes.CDLL(None, use_errno=True))
        assert rename(os.fsencode(a), os.fsencode(b), 2) == 0
        assert (a / "f").read_text() == "from a" and not any(b.iterdir())


def test_stale_temps_of_dead_processes_only_are_removed(tmp_path):
    dead, live = _dead_pid(), os.getpid()
    names = {
        f".model.tflite.{dead}.abc_12.tmp": True,      # dead file temp
        f".model.tflite.old.{dead}": True,              # dead fallback old folder
        f".model.tflite.{live}.xyz.tmp": False,         # our own (live) temp
        ".model.tflite.k2j3h4.tmp": False,              # old-style name without pid: owner unknown
        f".model.tflite.x.{dead}.abc.tmp": False,       # another output's temp
        f".other.{dead}.abc.tmp": False,
    }
    for name in names:
        p = tmp_path / name
        if "old" in name:
            p.mkdir()
            (p / "inner").write_text("x")
        else:
            p.write_text("x")
    atomic_write_bytes(tmp_path / "model.tflite", b"data")
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {"model.tflite"} | {n for n, stale in names.items() if not stale}
    assert remove_stale_temps(tmp_path / "model.tflite") == []
    assert pid_alive(live) and not pid_alive(dead)


# ------------------------------------------------------------------------------------ sidecars vs the model


@pytest.fixture()
def hello(reference_models_dir, tmp_path):
    return (reference_models_dir / "tflm__hello_world_int8.tflite").read_bytes(), \
        reference_models_dir / "tflm__hello_world_int8.tflite"


def _finish(data: bytes, meta: dict, out: Path, src: Path) -> dict:
    from toolchain.quantise import _finish as finish

    return finish(data, meta, out, src)


def test_sidecar_checked_against_model(hello, tmp_path):
    data, src = hello
    out = tmp_path / "m.tflite"
    side = _finish(data, {"format": "toolchain-tflite-metadata/1", "labels": ["x"]}, out, src)
    assert load_tflite_metadata(out)["tflite_sha256"] == side["tflite_sha256"] == sha256_file(out)

    record = json.loads(sidecar_path(out).read_text())
    sidecar_path(out).write_text(json.dumps({**record, "tflite_sha256": "1a2b" * 16}))
    with pytest.raises(ModelError) as exc:
        load_tflite_metadata(out)
    msg = str(exc.value)
    assert len(msg.splitlines()) == 1 and "sha256 mismatch" in msg and "delete the sidecar" in msg
    assert f"{sidecar_path(out)} records 1a2b1a2b1a2b" in msg and f"{out} is {sha256_file(out)[:12]}" in msg

    del record["tflite_sha256"]
    sidecar_path(out).write_text(json.dumps(record))
    with pytest.raises(ModelError, match="no tflite_sha256"):
        load_any_metadata(out)

    sidecar_path(out).unlink()  # the embedded record is part of the model itself: always accepted
    assert load_tflite_metadata(out)["labels"] == ["x"]


KILLED_QUANTISE = """
    import sys
    from pathlib import Path
    from toolchain.quantise import _finish
    src = Path(sys.argv[1])
    _finish(src.read_bytes(), {"format": "toolchain-tflite-metadata/1", "labels": ["new"]}, Path(sys.argv[2]), src)
"""


def test_tflite_rewritten_by_killed_run_is_refused(hello, tmp_path, capsys):
    data, src = hello
    out = tmp_path / "m.tflite"
    _finish(data, {"format": "toolchain-tflite-metadata/1", "labels": ["old"], "note": "first run"}, out, src)
    old_sidecar = sidecar_path(out).read_text()
    marker = tmp_path / "marker.json"
    proc = _start(KILLED_QUANTISE, "quantise.between_writes", marker, src, out)
    _wait_marker(proc, marker)
    _kill(proc)
    assert sidecar_path(out).read_text() == old_sidecar  # new .tflite, old sidecar
    assert json.loads(old_sidecar)["tflite_sha256"] != sha256_file(out)

    with pytest.raises(ModelError, match="does not belong to this model"):
        load_tflite_metadata(out)
    for args in (["export", out, "--output", tmp_path / "fw"],
                 ["verify", "--candidate", out, "--dataset", "digits", "--min-accuracy", "0.1",
                  "--output", tmp_path / "verify"],
                 ["bench", out, "--dataset", "digits", "--runs", "1"]):
        code, _, err = run_cli(args, capsys)
        assert code == 2, (args[0], err)
        line = err.strip()
        assert len(line.splitlines()) == 1 and line.startswith("error: sidecar metadata does not belong"), line
        assert str(sidecar_path(out)) in line and f"{out} is" in line
    assert not (tmp_path / "fw").exists() and not (tmp_path / "verify").exists()

    _finish(data, {"format": "toolchain-tflite-metadata/1", "labels": ["new"]}, out, src)  # a complete re-run
    assert load_tflite_metadata(out)["labels"] == ["new"]


# --------------------------------------------------------------------------- children die with their parent


MEASURE = """
    import sys
    from firmware_export.arena import measure_arena
    measure_arena(sys.argv[1])
"""


@needs_linux
@pytest.mark.parametrize("point", ["arena.worker", "arena.trial"])
def test_arena_worker_dies_with_killed_parent(hello, tmp_path, point):
    pytest.importorskip("tflite_micro")
    _, src = hello
    marker = tmp_path / "marker.json"
    proc = _start(MEASURE, point, marker, src)
    info = _wait_marker(proc, marker)
    pids = [info["pid"]]
    if point == "arena.worker":
        assert info["ppid"] == proc.pid
    else:  # a forked trial child of the worker: both must go
        pids.append(info["ppid"])
    assert not any(_gone(p) for p in pids)
    _kill(proc)
    assert all(_wait_gone(p) for p in pids), f"left behind: {[p for p in pids if not _gone(p)]}"


BUILD_CHILD = """
    import sys
    from pathlib import Path
    from firmware_export.cgen.build import _run
    _run(["sh", "-c", 'echo $$ > "$0.part" && mv "$0.part" "$0" && exec sleep 60', sys.argv[1]], Path("."), 120, "x")
"""


@needs_linux
def test_compiler_and_qemu_runs_die_with_killed_parent(tmp_path):
    marker = tmp_path / "child.pid"
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(BUILD_CHILD), str(marker)], cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    child = int(marker.read_text())
    assert not _gone(child)
    _kill(proc)
    assert _wait_gone(child)


def test_child_process_kwargs():
    kwargs = child_process_kwargs()
    if LINUX:
        assert callable(kwargs["preexec_fn"]) and PR_SET_PDEATHSIG == 1
        assert subprocess.run(["true"], **kwargs).returncode == 0
    else:
        assert kwargs == {}
