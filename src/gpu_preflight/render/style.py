"""Terminal styling that respects NO_COLOR, non-TTY output and narrow terminals."""

from __future__ import annotations

import os
import shutil
import sys
import textwrap

from gpu_preflight.safetext import sanitize, sanitize_tree  # noqa: F401 - re-exported for the renderers

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
