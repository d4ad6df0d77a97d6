"""Make patient text safe to print on a terminal.

A client's statement is pasted by a counselor and may carry anything: ANSI escape sequences
that recolour or clear the screen, OSC sequences that set the window title, write the
clipboard or plant hyperlinks, carriage returns that overwrite what was printed, bidi
overrides that reorder what is shown. None of that may reach the terminal raw. Visible text
(Chinese included) is kept; only the controls go. Newlines and tabs stay.
"""

from __future__ import annotations

import re

__all__ = ["is_terminal_safe", "safe_terminal_text"]

# Complete escape sequences are removed whole (their parameters would otherwise show as junk).
# 7-bit and 8-bit (C1) introducers are both recognised.
_ESCAPE_SEQUENCE = re.compile(
    r"""
    (?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]       # CSI ... final byte
  | (?:\x1b[\]PX^_]|[\x9d\x90\x98\x9e\x9f])                  # OSC, DCS, SOS, PM, APC
    [^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)                      # ... up to BEL or ST
  | \x1b[\x20-\x2f]*[\x30-\x7e]                               # two-byte / nF escapes
    """,
    re.VERBOSE,
)

# What is left after the sequences: every C0 control but \t and \n, DEL, every C1 control,
# and the Unicode bidi embedding/override/isolate controls (text-reordering spoofs).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_LINE_BREAKS = re.compile("\r\n|[\r\u2028\u2029\x85]")


def safe_terminal_text(s: str) -> str:
    """``s`` without escape sequences or control characters; ``\\n`` and ``\\t`` are kept.

    Carriage returns and Unicode line separators become ``\\n`` so that no line can overwrite
    another. Unterminated OSC/DCS strings lose only their introducer, never the text after it.
    """
    if not s:
        return ""
    s = _LINE_BREAKS.sub("\n", s)
    s = _ESCAPE_SEQUENCE.sub("", s)
    return _CONTROL.sub("", s)


def is_terminal_safe(s: str) -> bool:
    """True when ``s`` holds no control character other than ``\\n`` and ``\\t``."""
    return _CONTROL.search(s) is None and _LINE_BREAKS.search(s) is None
