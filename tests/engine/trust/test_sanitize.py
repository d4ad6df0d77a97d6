"""safe_terminal_text: nothing a terminal would interpret survives; visible text does."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.trust.sanitize import is_terminal_safe, safe_terminal_text

FORBIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]")

# Text biased towards the characters that matter: controls, escape introducers, CJK.
_dangerous = st.sampled_from(
    ["\x1b", "\x9b", "\x9d", "\x07", "\x9c", "\r", "\n", "\t", "\x00", "\x7f", "[", "]", "\\"]
)
_text = st.lists(
    st.one_of(st.characters(codec="utf-8"), _dangerous, st.sampled_from("我想自杀0123;m")),
    max_size=200,
).map("".join)


@given(_text)
@settings(max_examples=400, deadline=None)
def test_output_never_holds_controls(s: str) -> None:
    out = safe_terminal_text(s)
    assert FORBIDDEN.search(out) is None, repr(out)
    assert is_terminal_safe(out)


@given(_text)
@settings(max_examples=200, deadline=None)
def test_idempotent(s: str) -> None:
    once = safe_terminal_text(s)
    assert safe_terminal_text(once) == once


@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cc", "Cf", "Zl", "Zp"))))
@settings(max_examples=200, deadline=None)
def test_plain_text_unchanged(s: str) -> None:
    """Printable text (any script) passes through untouched: nothing the counselor wrote is lost."""
    assert safe_terminal_text(s) == s


def test_known_sequences() -> None:
    assert safe_terminal_text("\x1b[31mred\x1b[0m text") == "red text"
    assert safe_terminal_text("a\x1b[2J\x1b[Hb") == "ab"
    # OSC 8 hyperlink and OSC 0 window title, BEL- and ST-terminated
    link = "\x1b]8;;http://evil.example\x1b\\click\x1b]8;;\x1b\\"
    assert safe_terminal_text(link) == "click"
    assert safe_terminal_text("\x1b]0;pwned\x07title") == "title"
    # OSC 52 clipboard write
    assert safe_terminal_text("x\x1b]52;c;ZXZpbA==\x07y") == "xy"
    # 8-bit CSI
    assert safe_terminal_text("\x9b31mred") == "red"
    # carriage return cannot overwrite a line
    assert safe_terminal_text("safe\rEVIL") == "safe\nEVIL"
    assert safe_terminal_text("a\r\nb") == "a\nb"
    # tabs, newlines and Chinese survive
    assert safe_terminal_text("我\t想\n死") == "我\t想\n死"
    # bidi override (Trojan Source) removed
    assert safe_terminal_text("abc\u202edef") == "abcdef"


def test_unterminated_osc_keeps_text() -> None:
    """An OSC with no terminator loses only its introducer; the client's words stay."""
    out = safe_terminal_text("\x1b]0;我很难过，不想活了")
    assert "我很难过，不想活了" in out
    assert "\x1b" not in out


def test_empty() -> None:
    assert safe_terminal_text("") == ""


def test_the_tui_shows_text_through_the_same_sanitizer() -> None:
    """One sanitizer: what the TUI renders loses bidi overrides and Unicode line separators
    too (its own copy used to keep them), and the engine's tests above cover it."""
    from phyassist_tui.widgets.text import clean, md_escape, plain

    assert clean is safe_terminal_text
    spoof = "abc\u202edef\u2066x\u2069\u2028y"
    assert clean(spoof) == "abcdefx\ny"
    assert "\u202e" not in plain(spoof).plain and "\u202e" not in md_escape(spoof)
