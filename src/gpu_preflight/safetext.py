"""Text from files made safe to print on a terminal (no imports from the rest of the package).

A model's name in a GGUF, a GPU name in a snapshot, a line of a watched command's output: any of
them can hold escape sequences that retitle or clear the user's terminal, a carriage return that
overwrites a line, or a bidirectional override that reorders it. Every text renderer passes such
strings through `sanitize()` (or the whole report through `sanitize_tree()`) first.
"""

from __future__ import annotations

import re
from typing import Any


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
