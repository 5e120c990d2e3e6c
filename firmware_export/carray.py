"""Bytes -> C array initialiser text."""

from __future__ import annotations

BYTES_PER_LINE = 12


def c_array_body(data: bytes, per_line: int = BYTES_PER_LINE, indent: str = "  ") -> str:
    """``0x1c, 0x00, ...`` lines (no braces), ``per_line`` bytes a line, each line ending with a comma."""
    lines = []
    for start in range(0, len(data), per_line):
        chunk = data[start:start + per_line]
        lines.append(indent + ", ".join(f"0x{b:02x}" for b in chunk) + ",")
    return "\n".join(lines)


def c_string(text: str) -> str:
    """A C string literal for ``text`` (UTF-8; non-printable and non-ASCII bytes as octal escapes)."""
    out = []
    for b in str(text).encode("utf-8"):
        ch = chr(b)
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif 0x20 <= b < 0x7F and ch != "?":  # '?' escaped to avoid trigraphs
            out.append(ch)
        else:
            out.append(f"\\{b:03o}")
    return '"' + "".join(out) + '"'


def c_comment(text: str) -> str:
    """Text safe inside a /* */ comment (no comment terminators, no line breaks)."""
    return " ".join(str(text).replace("*/", "* /").replace("/*", "/ *").split())
