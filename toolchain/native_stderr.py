"""C-level stderr (file descriptor 2): capture it or keep it quiet.

TFLite's converter and tflite-micro write straight to fd 2, past Python's ``sys.stderr``: the converter's chatter
(``fully_quantize: 0, inference_type: 6 ...``) would clutter the CLI, and tflite-micro reports its arena allocations
only there (``print_allocations()``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
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
