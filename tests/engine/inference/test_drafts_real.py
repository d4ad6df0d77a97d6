"""Drafts on the real embedded model (SmolLM2-135M): structured, in the statement's language,
with the risk item when flagged, and following checkable comments on regenerate.

What a 135M model writes is often weak; these tests hold what the engine guarantees whatever
it writes: the layout, the language, complete items, the risk item, the comment rules.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from engine.inference.analysis import parse_analysis, parse_item_text
from engine.inference.prompts import detect_language
from engine.records import AnalysisDraft, Patient

pytestmark = pytest.mark.model

ENGLISH = (
    "I've been feeling really anxious at work lately. My boss criticizes everything I do "
    "and I can't sleep before meetings."
)
PASSIVE = (
    "Sometimes I think it would be easier if I just didn't wake up in the morning. "
    "I wouldn't do anything, but the thought is there."
)


def seed_statement(seed_case: dict) -> str:
    return seed_case["counseling_question"]["statement"]


def draft_of(assistant, statement: str, guidance: AnalysisDraft | None = None):
    stream = assistant.stream_analysis(
        Patient(name="Test"), statement, cancel=threading.Event(), guidance=guidance
    )
    chunks = list(stream)
    assert len(chunks) > 5, "the draft must stream, not arrive in one piece"
    text = "".join(chunks)
    draft = stream.draft_of(text)
    # The tolerant parser reads the streamed text into the same draft (risk items aside).
    parsed = parse_analysis(text)
    assert parsed.symptom_type.text == draft.symptom_type.text
    assert [i.text for i in parsed.reasons] == [i.text for i in draft.reasons]
    assert [i.text for i in parsed.advice if not i.deleted] == [
        i.text for i in draft.advice if not i.deleted
    ]
    assert stream.stats is not None and stream.stats.tokens > 10
    return text, draft


def assert_structured(d: AnalysisDraft, lang: str) -> None:
    label = d.symptom_type.text
    assert label and detect_language(label) == lang, label
    assert (len(label) <= 12) if lang == "zh" else (len(label.split()) <= 6), label
    ends = "。！？" if lang == "zh" else ".!?"
    for section in ("reasons", "advice"):
        items = [i for i in getattr(d, section) if not i.inserted_by]
        assert len(items) >= 2, (section, items)
        for item in items:
            assert detect_language(item.text) == lang, item.text
            assert item.text.rstrip('”"’」')[-1] in ends, item.text
    assert not d.unplaced


def test_the_seed_case_comes_back_structured_in_chinese(assistant, seed_case_zh) -> None:
    """The seed case comes from ../shared (the ``seed_case_zh`` fixture skips without it)."""
    text, d = draft_of(assistant, seed_statement(seed_case_zh))
    assert text.startswith("症状类型：") and "\n原因：\n1." in text and "\n建议：\n" in text
    assert_structured(d, "zh")


def test_an_english_statement_comes_back_structured_in_english(assistant) -> None:
    text, d = draft_of(assistant, ENGLISH)
    assert text.startswith("Symptom type:")
    assert_structured(d, "en")
    assert not any(i.inserted_by for i in d.advice)  # nothing flagged, no risk item


def test_passive_ideation_draft_carries_the_risk_item(assistant) -> None:
    text, d = draft_of(assistant, PASSIVE)
    first = d.advice[0]
    assert first.inserted_by == "risk:suicide_self_harm"
    assert "didn't wake up in the morning" in first.text and "Assess suicide" in first.text
    assert "Safety first" in text  # shown in the analysis pane too
    assert_structured(d, "en")


def regenerate(assistant, statement: str, d: AnalysisDraft, section: str, item_id: str) -> str:
    chunks = assistant.stream_regenerate_item(
        Patient(name="Test"), statement, d, section, item_id, cancel=threading.Event()
    )
    return parse_item_text("".join(chunks))


def test_a_comment_changes_a_regenerated_item_and_checkable_ones_hold(assistant) -> None:
    _, d = draft_of(assistant, ENGLISH)
    reason = d.reasons[0]
    plain = regenerate(assistant, ENGLISH, d, "reasons", reason.id)
    reason.comments = ["Write it in Chinese"]
    chinese = regenerate(assistant, ENGLISH, d, "reasons", reason.id)
    assert chinese != plain
    assert detect_language(chinese) == "zh" and detect_language(plain) == "en", (chinese, plain)
    d.symptom_type.comments = ["Use a short diagnostic label"]
    label = regenerate(assistant, ENGLISH, d, "symptom_type", d.symptom_type.id)
    assert label and len(label.split()) <= 3, label


def test_a_whole_regenerate_follows_a_language_comment(assistant) -> None:
    _, d = draft_of(assistant, ENGLISH)
    d.advice[0].comments = ["用中文"]
    text, again = draft_of(assistant, ENGLISH, guidance=d)
    assert text.startswith("症状类型：")
    assert_structured(again, "zh")


def test_a_session_analysis_returns_the_engine_draft_with_the_risk_item(
    assistant, real_settings, tmp_path: Path
) -> None:
    """Through engine.session (what the TUI uses): the outcome's draft is the engine's, with
    the safety item first in Advice, marked as the engine's."""
    from engine.session import Session

    settings = real_settings.model_copy(update={"data_dir": tmp_path / "data"})
    session = Session(settings, assistant=assistant)
    session.create_vault("lantern okapi quartz 4471")
    session.start_model_load()
    assert session.wait_ready(timeout=30)
    patient = session.create_patient("Ben")
    outcome = session.analysis(patient, PASSIVE).result()
    assert outcome.error is None and outcome.draft is not None
    assert outcome.draft.advice[0].inserted_by == "risk:suicide_self_harm"
    assert_structured(outcome.draft, "en")
    session.lock()
