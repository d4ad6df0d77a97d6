"""Whose words a risk match is, and when: the writer's own now, or someone else's or the past.

A suicide / self-harm match is someone else's when the nearest person before it in its
sentence is a relation with a possessor or a generic person ("my mother tried to commit
suicide", 我表哥前几年自杀了), when a pronoun in a first-person post refers back to such a
relation, when the writer is bereaved by suicide, or when the words are quoted from a song, a
book or another speaker; it is history when the sentence is set in the distant past and the
text says the writer has recovered. The tables are the ``third_party`` and ``quoted``
sections of ``risk_rules.json``. Used by :mod:`engine.trust.risk` for rules and classifier.
"""

from __future__ import annotations

import importlib.resources
import json
import re

_DOC = json.loads(
    importlib.resources.files("engine.trust").joinpath("risk_rules.json").read_text("utf-8")
)
_SENTENCE_BREAK = re.compile(_DOC["negation"]["sentence_break"])

# Someone else's suicide or self-harm ("my mother tried to commit suicide", "我表哥前几年自杀了"):
# the nearest person before the match in its sentence is a relation with a possessor or a
# generic "people", and the matched words have no first person. A pronoun nearer the match
# keeps the flag: counselors' notes say "she says she doesn't want to live" about the client.
_THIRD = _DOC["third_party"]
PERSON = {
    lang: re.compile(
        f"(?P<other>{_THIRD[lang + '_person']})|(?P<me>{_THIRD[lang + '_first']})"
        f"|(?P<pronoun>{_THIRD[lang + '_pronoun']})",
        re.I if lang == "en" else 0,
    )
    for lang in ("en", "zh")
}


def no_first_person(lang: str, text: str, start: int, end: int) -> bool:
    return not any(m.group("me") for m in PERSON[lang].finditer(text, start, end))


def about_someone_else(lang: str, text: str, start: int, end: int) -> bool:
    """Whether a match is someone else's risk, not the writer's (see the module)."""
    person = PERSON[lang]
    if not no_first_person(lang, text, start, end):
        return False
    s = max(0, start - 240)
    for m in _SENTENCE_BREAK.finditer(text, s, start):
        s = m.end()
    found = list(person.finditer(text, s, start))
    if _bereaved(lang, text, start, end, mine=bool(found and found[-1].group("me"))):
        return True
    if found:
        if found[-1].group("other") is not None:
            return True
        pronoun = found[-1] if found[-1].group("pronoun") else None
    else:  # "Threatened to kill herself again": the reflexive is the only person
        pronoun = _REFLEXIVE[lang].search(text, start, end) if lang == "en" else None
    return pronoun is not None and refers_to_someone_else(lang, text, pronoun)


def _bereaved(lang: str, text: str, start: int, end: int, *, mine: bool) -> bool:
    """A death by suicide the writer lost someone to ("I lost my brother to suicide", "the
    loss of someone I love to suicide", "died by suicide", "自杀去世"): grief, not the
    writer's own risk. ``mine``: the nearest person before is the writer ("我差点自杀身亡"),
    which only the words before the match can overrule ("the loss of someone I love to")."""
    before = text[max(0, start - 80) : start]
    if lang == "en" and _BEREAVED_BEFORE.search(before):
        return True
    return not mine and _BEREAVED_AFTER[lang].match(text, end, min(len(text), end + 20)) is not None


def refers_to_someone_else(lang: str, text: str, pronoun: re.Match[str]) -> bool:
    """Whether ``pronoun`` ("she", "他") means a relation named earlier in a first-person
    post rather than the client of a counselor's note: the text says I / 我 and reads as no
    note (no "client", 来访者), and the nearest earlier person of a matching gender is a
    relation or a generic person ("the mother of my daughter ... she has threatened to kill
    herself"). A note in the third person ("She says she doesn't want to live") keeps it."""
    word = pronoun.group(0)
    if _NOTE_VOICE.search(text) or not _FIRST[lang].search(text):
        return False
    if lang == "en" and word.lower() in ("client", "patient", "pt"):
        return False
    she, he = (_GENDER_WORD[lang][g].search(word) is not None for g in ("she", "he"))
    for m in reversed(
        list(PERSON[lang].finditer(text, max(0, pronoun.start() - 1500), pronoun.start()))
    ):
        other = m.group("other")
        if other is None or (lang == "en" and _GENERIC.match(other)):
            continue  # "treat someone so bad that they want to kill themselves": the writer
        female = _GENDER[lang]["female"].search(other) is not None
        male = _GENDER[lang]["male"].search(other) is not None
        if (she and male and not female) or (he and female and not male):
            continue  # "my dad ... she": not that one
        return True
    return False


_NOTE_VOICE = re.compile(_THIRD["note_voice"], re.I)
_GENERIC = re.compile(_THIRD["en_generic"], re.I)
_FIRST = {"en": re.compile(_THIRD["en_first"], re.I), "zh": re.compile(_THIRD["zh_first"])}
_REFLEXIVE = {"en": re.compile(_THIRD["en_reflexive"], re.I)}
_BEREAVED_BEFORE = re.compile(_THIRD["en_bereaved_before"], re.I)
_BEREAVED_AFTER = {
    "en": re.compile(_THIRD["en_bereaved_after"], re.I),
    "zh": re.compile(_THIRD["zh_bereaved_after"]),
}
_GENDER = {
    lang: {
        g: re.compile(_THIRD[f"{lang}_{g}"], re.I if lang == "en" else 0)
        for g in ("female", "male")
    }
    for lang in ("en", "zh")
}
_GENDER_WORD = {
    lang: {g: re.compile(_THIRD[f"{lang}_{g}"], re.I if lang == "en" else 0) for g in ("she", "he")}
    for lang in ("en", "zh")
}


_QUOTED = _DOC["quoted"]
_SOURCE = {"en": re.compile(_QUOTED["en_source"], re.I), "zh": re.compile(_QUOTED["zh_source"])}
_SPEAKER_BEFORE = {
    "en": re.compile(_QUOTED["en_speaker_before"], re.I),
    "zh": re.compile("(?:" + _QUOTED["zh_speaker"] + ")[：:，,]?\\s*$"),
}
_SPEAKER_AFTER = {
    "en": re.compile(_QUOTED["en_speaker_after"], re.I),
    "zh": re.compile("^[，,。]?\\s*(?:" + _QUOTED["zh_speaker"] + ")"),
}
_OPEN_CLOSE = {"「": "」", "『": "』"}


def _quote_around(text: str, start: int, end: int) -> tuple[int, int] | None:
    """``(open, close)`` of the quotation holding ``[start, end)`` (ASCII double quotes, as
    the matching view spells every curly one, or 「」/『』), or ``None``."""
    lo = max(0, start - 300)
    if text.count('"', lo, start) % 2 == 1:
        o = text.rfind('"', lo, start)
        c = text.find('"', end, end + 300)
        if c != -1:
            return o, c
    for op, cl in _OPEN_CLOSE.items():
        o = text.rfind(op, lo, start)
        if o != -1 and text.find(cl, o, start) == -1:
            c = text.find(cl, end, end + 300)
            if c != -1:
                return o, c
    return None


def quoted_from_someone_else(lang: str, text: str, start: int, end: int) -> bool:
    """The match is inside a quotation the text gives to a song, film or book ('the lyrics "I
    don't want to be here anymore"', 歌里唱的) or to someone else who said it ('"I'm going to
    off myself" he yelled', 我妈说：「…」): words the writer quotes, not theirs."""
    span = _quote_around(text, start, end)
    if span is None:
        return False
    o, c = span
    lo = max(0, o - 80)
    before, after = text[lo:o], text[c + 1 : c + 80]
    if _SOURCE[lang].search(before[-50:]) or _SOURCE[lang].search(after[:40]):
        return True
    m = _SPEAKER_BEFORE[lang].search(before)
    at = lo + m.start() if m else -1
    if m is None:
        m = _SPEAKER_AFTER[lang].search(after)
        at = c + 1 + m.start() if m else -1
    if m is None:
        return False
    # a pronoun is someone else only where it would be for the rules: a first-person post
    # (outside the quote) naming that person before; a note quoting its client keeps the flag
    outside = text[:o] + " " * (c + 1 - o) + text[c + 1 :]
    who = PERSON[lang].search(outside, at, at + len(m.group(0)) + 1)
    if who is None or who.group("other") is not None:
        return True
    return who.group("pronoun") is not None and refers_to_someone_else(lang, outside, who)


_RECOVERED = _THIRD["past_recovered"]
_PAST = {
    "en": re.compile(_RECOVERED["en_past"], re.I),
    "zh": re.compile(_RECOVERED["zh_past"]),
}
_NOW_WELL = {
    "en": re.compile(_RECOVERED["en_recovered"], re.I),
    "zh": re.compile(_RECOVERED["zh_recovered"]),
}
_BACK = {"en": re.compile(_RECOVERED["en_back"], re.I), "zh": re.compile(_RECOVERED["zh_back"])}


def past_and_recovered(lang: str, text: str, start: int, end: int) -> bool:
    """History, not current risk: the match's sentence is set in the distant past ("I was
    suicidal in my early twenties", 前几年我也想过轻生), the text says the writer is well now
    ("I'm 45 now, happily married", 现在走出来了) and nothing says it came back ("again",
    "lately", 又, 最近)."""
    a, b = sentence_span(text, start, end)
    return (
        _PAST[lang].search(text, a, b) is not None
        and _NOW_WELL[lang].search(text) is not None
        and _BACK[lang].search(text) is None
    )


def sentence_span(text: str, start: int, end: int, limit: int = 240) -> tuple[int, int]:
    """The sentence around ``[start, end)``, trimmed of blanks and capped at ``limit``."""
    lo = max(0, start - limit)
    s = lo
    for m in _SENTENCE_BREAK.finditer(text, lo, start):
        s = m.end()
    m = _SENTENCE_BREAK.search(text, end, min(len(text), end + limit))
    e = m.end() if m else min(len(text), end + limit)
    while s < start and text[s].isspace():
        s += 1
    while e > end and text[e - 1].isspace():
        e -= 1
    if e - s > limit:  # keep the phrase, centred in a window
        half = max(0, (limit - (end - start)) // 2)
        s = max(s, start - half)
        e = min(e, max(end, s + limit))
    return s, e
