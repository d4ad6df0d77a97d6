"""The risk check's "Found by" line names the checks that actually ran.

The sentence classifier runs behind the rules on every check, so a check without the model
must not say "rules only" (the counselor would think paraphrases go unchecked); it says so
only when the classifier could not load, and then why.
"""

from __future__ import annotations

from pathlib import Path

from engine.session import Session
from engine.trust import risk_classifier

# A paraphrase only the classifier flags (test_risk_classifier.py asserts the rules miss it).
PARAPHRASE = (
    "Every single day I wake up and the first thing I feel is disappointment that I'm still here."
)


def test_session_check_without_the_model_names_the_classifier(tmp_path: Path, settings_for):
    session = Session(settings_for(tmp_path))  # no model loaded
    check = session.check_risk(PARAPHRASE)
    assert [f.source for f in check.flags] == ["classifier"]
    assert check.found_by == (
        "rules and the sentence classifier; no model check: the model is still loading"
    )


def test_rules_only_when_the_classifier_cannot_load(tmp_path: Path, settings_for, monkeypatch):
    def broken():
        raise FileNotFoundError("risk_classifier.npz")

    monkeypatch.setattr(risk_classifier, "classifier", broken)
    check = Session(settings_for(tmp_path)).check_risk(PARAPHRASE)
    assert check.flags == []
    assert check.found_by.startswith("rules only (risk classifier unavailable: ")
    assert "risk_classifier.npz" in check.found_by
    assert check.found_by.endswith("; no model check: the model is still loading")


def test_with_the_model_all_three_are_named():
    # the label the model path gives (Assistant.risk_flags)
    from engine.trust.risk import assess, found_by

    assess(PARAPHRASE)
    assert found_by("Mixtral-8x7B") == "rules, the sentence classifier and Mixtral-8x7B"
