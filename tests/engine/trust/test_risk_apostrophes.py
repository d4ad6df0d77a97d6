"""Risk checks read "don’t" and the mojibake "don‚Äôt" as "don't" (engine.trust.normalise).

About a fifth of the IMHI Irf posts carry "‚Äô" (UTF-8 read as Mac Roman); before this the
rules, written with ASCII "'", did not match "I don‚Äôt want to live anymore" at all. Flags
still quote the original text, at the original offsets.
"""

from __future__ import annotations

import pytest

from engine.trust.normalise import matching_view, plain
from engine.trust.risk import assess_rules
from engine.trust.risk_classifier import ngram_ids

S = "suicide_self_harm"


@pytest.mark.parametrize("apostrophe", ["'", "’", "‚Äô"])
def test_rules_match_every_spelling_and_quote_the_original(apostrophe):
    text = f"Work was long. I‚Äôm tired and I don{apostrophe}t want to live anymore. Bye."
    flags = [f for f in assess_rules(text) if f.category == S]
    assert len(flags) == 1
    flag = flags[0]
    assert flag.evidence == f"I‚Äôm tired and I don{apostrophe}t want to live anymore."
    assert text[flag.start : flag.end] == flag.evidence
    assert text[flag.phrase_start : flag.phrase_end] == f"don{apostrophe}t want to live"


def test_negation_reads_the_plain_spelling_too():
    assert not [f for f in assess_rules("I won‚Äôt ever kill myself.") if f.category == S]


def test_classifier_features_are_the_same_for_every_spelling():
    ids = ngram_ids("I don't want to be here")
    assert (ngram_ids("I don’t want to be here") == ids).all()
    assert (ngram_ids("I don‚Äôt want to be here") == ids).all()


def test_matching_view_maps_back():
    text = "a‚Äôb “c” d"
    view, back = matching_view(text)
    assert view == plain(text) == 'a\'b "c" d'
    assert back is not None and len(back) == len(view) + 1 and back[-1] == len(text)
    assert [text[back[i]] for i in range(len(view))][:3] == ["a", "‚", "b"]
    assert matching_view("plain") == ("plain", None)
