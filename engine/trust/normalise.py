"""One spelling of apostrophes and quotes for the risk checks.

Posts arrive with typographic apostrophes ("don’t") and, when UTF-8 was once decoded as
Mac Roman, with mojibake ("don‚Äôt": about a fifth of the IMHI Irf posts). The rule patterns
and the classifier's word n-grams spell "don't" with ASCII "'", so without this "I don‚Äôt
want to live anymore" matched nothing. :func:`matching_view` gives the text to match on and a
map back to the caller's offsets, so flags still quote the original words.
"""

from __future__ import annotations

import re

__all__ = ["matching_view", "plain"]

_SAME = {"’": "'", "‘": "'", "ʼ": "'", "＇": "'", "`": "'", "“": '"', "”": '"'}
_MOJIBAKE = {"‚Äô": "'", "‚Äò": "'", "‚Äú": '"', "‚Äù": '"'}
_ANY = re.compile("|".join(map(re.escape, [*_MOJIBAKE, *_SAME])))


def plain(text: str) -> str:
    """``text`` with every apostrophe and double quote in ASCII."""
    return _ANY.sub(lambda m: _MOJIBAKE.get(m.group(), _SAME.get(m.group(), "")), text)


def matching_view(text: str) -> tuple[str, list[int] | None]:
    """``(plain text, back)``: ``back[i]`` is the offset in ``text`` of the plain text's
    ``i``-th character (``back[len(plain)] == len(text)``); ``back`` is ``None`` when
    nothing changed, so offsets are the same."""
    if _ANY.search(text) is None:
        return text, None
    out: list[str] = []
    back: list[int] = []
    pos = 0
    for m in _ANY.finditer(text):
        out.append(text[pos : m.start()])
        back.extend(range(pos, m.start()))
        out.append(_MOJIBAKE.get(m.group(), _SAME.get(m.group(), "")))
        back.append(m.start())
        pos = m.end()
    out.append(text[pos:])
    back.extend(range(pos, len(text) + 1))
    return "".join(out), back
