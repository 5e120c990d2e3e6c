"""C-level stderr (file descriptor 2): capture it or keep it quiet.

TFLite's converter and tflite-micro write straight to fd 2, past Python's ``sys.stderr``: the converter's chatter
(``fully_quantize: 0, inference_type: 6 ...``) would clutter the CLI, and tflite-micro reports its arena allocations
only there (``print_allocations()``). ``filtered_native_stderr`` drops third-party log lines (absl/TensorFlow,
LiteRT's delegate notice) from fd 2 for a whole CLI run, so a user sees only the toolchain's own lines.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
from typing import Iterator


class Captured:
    """What was written to fd 2 inside ``capture_native_stderr``; ``text`` is set when the block ends."""

    text: str = ""


@contextlib.contextmanager
def capture_native_stderr() -> Iterator[Captured]:
    """Redirect fd 2 into a temporary file for the block (nothing is redirected where there is no fd 2)."""
    captured = Captured()
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield captured
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured.text = tmp.read().decode("utf-8", "replace")


@contextlib.contextmanager
def quiet_native_stderr(logger: logging.Logger) -> Iterator[None]:
    """Drop fd-2 output of the block unless ``logger`` shows debug messages (``--verbose``)."""
    if logger.isEnabledFor(logging.DEBUG):
        yield
        return
    with capture_native_stderr():
        yield


# Third-party lines that reach fd 2 without the user asking: absl/glog-style lines from TensorFlow and LiteRT
# ("I0000 00:00:1796161560.041896 8891 port.cc:153] ..."), the absl pre-initialisation notice and LiteRT's delegate
# notice. Everything else passes through unchanged.
NOISE = re.compile(r"^(?:[IWEF]\d{4} \d\d:\d\d:[\d.]+\s+\d+\s+\S+:\d+\] "
                   r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
                   r"|INFO: Created TensorFlow Lite (?:XNNPACK )?delegate for CPU"
                   r"|INFO: Initialized TensorFlow Lite runtime)")


@contextlib.contextmanager
def filtered_native_stderr(pattern: re.Pattern[str] = NOISE) -> Iterator[None]:
    """Route fd 2 through a pipe for the block; a thread drops whole lines matching ``pattern`` and writes the rest
    to the original fd 2 in order (Python's own stderr goes the same way, so ordering is kept)."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
        r, w = os.pipe()
    except OSError:
        yield
        return
    os.dup2(w, 2)
    os.close(w)

    def pump() -> None:
        pending = b""
        with os.fdopen(r, "rb", buffering=0) as src:
            while True:
                chunk = src.read(65536)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if not pattern.match(line.decode("utf-8", "replace")):
                        os.write(saved, line + b"\n")
        if pending and not pattern.match(pending.decode("utf-8", "replace")):
            os.write(saved, pending)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes this process's write end of the pipe: the pump sees EOF
        thread.join(timeout=5)  # an orphaned child still holding the pipe must not hang the exit
        os.close(saved)
