"""Where a quoted reason's words come from: this statement, an earlier note, or nowhere.

A reason may quote the client as evidence (a counselor's habit that a patient adapter learns,
issue 17). A patient adapter trained on a few notes sometimes quotes a sentence of an earlier
note from the record instead of the statement being analysed, which reads as this session's
evidence. The engine checks every quoted reason against the statement and the earlier notes
and says where a quote does not come from the statement (the outcome's caveat); the items
themselves stay as the model wrote them (they are the model's side of the preference pair).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from difflib import SequenceMatcher
from itertools import pairwise

from engine.records import AnalysisDraft, Patient

# The quotation marks a reason may open with, and the mark that closes each (the drafting rule
# in ``structured`` and ``constraints`` and the check here read the same table).
CLOSING = {'"': '"', "“": "”", "「": "」", "『": "』"}
OPENING_QUOTES = tuple(CLOSING)
_EDGES = " \t\n.,;:!?。，；：！？…\"“”「」『』'‘’"
_MIN_CHARS = 6  # shorter quotes ("no", "我不行") are too common to place


def quoted_words(text: str) -> str | None:
    """The words of a reason that opens with a quotation mark (up to its closing mark).

    A straight mark opens and closes alike, so a quote with a quote inside (an odd number of
    marks: ``"And he said, "you're always sad."``) runs to the last mark, not the inner one:
    stopping at the inner mark left "And he said," which the statement has word for word, and
    a misquote passed unremarked (seen in tmux, issue 17)."""
    text = text.lstrip()
    if not text or text[0] not in CLOSING:
        return None
    close = CLOSING[text[0]]
    if close == text[0] and text.count(close) % 2 == 1 and text.count(close) > 1:
        end = text.rfind(close)
        return text[1:end]
    end = text.find(close, 1)
    return text[1:end] if end > 0 else text[1:]


def _canonical(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    text = text.replace("“", '"').replace("”", '"').replace("‘", "'").replace("’", "'")
    return re.sub(r"\s+", " ", text).strip(_EDGES)


def quote_caveats(
    draft: AnalysisDraft, statement: str, earlier: Iterable[tuple[str, str]]
) -> list[str]:
    """One line per quoted reason whose words are not in ``statement``.

    ``earlier``: (date, question) of the patient's earlier notes, oldest first.
    """
    here = _canonical(statement)
    notes = [(date, _canonical(question)) for date, question in earlier]
    lines = []
    for n, item in enumerate((i for i in draft.reasons if not i.deleted), 1):
        words = quoted_words(item.text)
        quote = _canonical(words or "")
        if len(quote) < _MIN_CHARS or quote in here:
            continue
        if _close_to(quote, here):
            lines.append(f"Reason {n} quotes this statement, but not word for word.")
            continue
        exact = next((date for date, question in reversed(notes) if quote in question), None)
        close = next(
            (date for date, question in reversed(notes) if _close_to(quote, question)), None
        )
        if exact is not None:
            lines.append(f"Reason {n} quotes the note of {exact}, not this statement.")
        elif close is not None:
            lines.append(
                f"Reason {n} quotes the note of {close} (not word for word), not this statement."
            )
        else:
            lines.append(f"Reason {n} quotes words that are not in this statement.")
    return lines


_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s*")
_CLOSE = 0.85  # difflib ratio: a changed tense or word, not another sentence


def _close_to(quote: str, text: str) -> bool:
    """Whether ``quote`` is nearly one of ``text``'s sentences (or runs of two of them)."""
    sentences = [s.strip(_EDGES) for s in _SENTENCE_END.split(text) if s.strip(_EDGES)]
    spans = sentences + [f"{a} {b}" for a, b in pairwise(sentences)]
    for span in spans:
        m = SequenceMatcher(None, quote, span, autojunk=False)
        # the cheap upper bounds first: a long record has hundreds of sentences
        if m.real_quick_ratio() >= _CLOSE and m.quick_ratio() >= _CLOSE and m.ratio() >= _CLOSE:
            return True
    return False


def quote_caveat(draft: AnalysisDraft, statement: str, patient: Patient) -> str:
    """``quote_caveats`` against ``patient``'s earlier notes, as one warning ("" when none)."""
    earlier = [(f"{n.created:%Y-%m-%d}", n.question) for n in patient.notes]
    return " ".join(quote_caveats(draft, statement, earlier))
