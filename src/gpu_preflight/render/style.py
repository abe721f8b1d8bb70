"""Terminal styling that respects NO_COLOR, non-TTY output and narrow terminals."""

from __future__ import annotations

import os
import re
import shutil
import sys
import textwrap
from typing import Any

GLYPHS = {"ok": "✓", "warn": "!", "fail": "✗", "error": "✗", "skip": "-"}
ASCII_GLYPHS = {"ok": "+", "warn": "!", "fail": "x", "error": "x", "skip": "-"}
COLORS = {"ok": "32", "warn": "33", "fail": "31", "error": "31", "skip": "2", "bold": "1", "dim": "2"}


class Style:
    def __init__(self, stream=None, color: bool | None = None, width: int | None = None):
        stream = stream or sys.stdout
        if color is None:
            color = (not os.environ.get("NO_COLOR")) and hasattr(stream, "isatty") and stream.isatty() \
                and os.environ.get("TERM") != "dumb"
        self.color = color
        self.width = max(40, min(width or shutil.get_terminal_size((100, 24)).columns, 120))
        enc = (getattr(stream, "encoding", None) or "ascii").lower()
        self.glyphs = GLYPHS if "utf" in enc else ASCII_GLYPHS

    def paint(self, text: str, what: str) -> str:
        return f"\033[{COLORS[what]}m{text}\033[0m" if self.color and what in COLORS else text

    def glyph(self, status: str) -> str:
        return self.paint(self.glyphs[status], status)

    def wrap(self, text: str, indent: int) -> str:
        pad = " " * indent
        return "\n".join(textwrap.fill(part, self.width, initial_indent=pad, subsequent_indent=pad + "  ",
                                       break_on_hyphens=False, break_long_words=False)
                         for part in text.splitlines() or [""])


# C0 controls (ESC, BEL, CR, backspace...), DEL, C1 controls (CSI 0x9b...), the line and paragraph
# separators, and the bidirectional overrides and isolates that reorder what a terminal shows.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_UNSAFE_KEEP_NL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match[str]) -> str:
    code = ord(m.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def sanitize(text: Any, keep_newlines: bool = False) -> str:
    """`text` safe to print on a terminal: control characters (ESC sequences that retitle or clear
    the terminal, carriage returns that overwrite a line, bidi overrides) become visible escapes
    like \\x1b. Use it on every string that came from a file, a model or a snapshot."""
    text = text if isinstance(text, str) else str(text)
    return (_UNSAFE_KEEP_NL if keep_newlines else _UNSAFE).sub(_escape, text)


def sanitize_tree(obj: Any) -> Any:
    """A copy of a JSON-like report with every string (keys too) passed through sanitize(); text
    renderers call it first, so whatever a file put in the report cannot drive the terminal."""
    if isinstance(obj, str):
        return sanitize(obj, keep_newlines=True)
    if isinstance(obj, dict):
        return {sanitize_tree(k) if isinstance(k, str) else k: sanitize_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [sanitize_tree(v) for v in obj]
    return obj
