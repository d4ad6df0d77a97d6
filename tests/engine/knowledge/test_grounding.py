"""Grounded drafting: the knowledge index's matches in the prompt, citations on the items."""

from __future__ import annotations

import threading

import pytest

from engine.knowledge.entries import Entry, Match
from engine.knowledge.grounding import attach_citations, build_grounding
from engine.knowledge.index import KnowledgeIndex
from engine.records import AnalysisDraft, Item, Note

EXAM = (
    "I failed my entrance exam last year and now I cannot sleep; my parents expect so much "
    "that I get headaches whenever I open a textbook."
)


def _match(n: int, passage: str, advice: str = "") -> Match:
    entry = Entry(f"counselchat:{n}", "counselchat", "t", passage, passage, "anxiety", advice)
    return Match(entry, 1.0 / n, passage)


def _count(text: str) -> int:
    return len(text) // 4 + 1


def test_grounding_fits_the_budget_and_reports_what_was_left_out():
    matches = [_match(n, f"Passage number {n} " + "word " * 60) for n in range(1, 5)]
    grounding = build_grounding(matches, "en", budget=200, count=_count)
    assert 1 <= len(grounding.citations) < 4
    assert grounding.left_out == 4 - len(grounding.citations)
    assert "left out" in grounding.report()
    assert grounding.text.count("\n[") == len(grounding.citations)
    assert _count(grounding.text) <= 200
    assert build_grounding(matches, "en", budget=0, count=_count).text == ""


def test_items_that_use_a_match_carry_its_marker_and_the_draft_keeps_the_source():
    matches = [
        _match(1, "Keep a regular sleep schedule and limit screens before bed."),
        _match(2, "Talk with your parents about realistic expectations for exams."),
    ]
    grounding = build_grounding(matches, "en", budget=500, count=_count)
    text = "Agree with the parents on realistic expectations for the exams"
    draft = AnalysisDraft(
        reasons=[Item(text="Pressure from school", draft="Pressure from school")],
        advice=[
            Item(text=text, draft=text),
            Item(text="See a doctor [1]", draft="See a doctor [1]"),
        ],
    )
    attach_citations(draft, grounding)
    assert draft.advice[0].text.endswith("[2]") and not draft.advice[0].edited
    assert draft.advice[1].text == "See a doctor [1]"  # the model's own marker is kept
    assert "[" not in draft.reasons[0].text  # shares nothing with any match
    assert [c.marker for c in draft.citations] == ["1", "2"]
    assert draft.citations[1].passage.startswith("Talk with your parents")


@pytest.mark.model
def test_a_grounded_analysis_on_the_real_model_has_the_similar_case_in_its_prompt(
    assistant, real_store
):
    other = real_store.create_patient("Earlier client")
    real_store.add_note(
        other.id,
        Note(
            question=EXAM,
            analysis=AnalysisDraft(
                symptom_type=Item(text="exam anxiety"),
                advice=[Item(text="Keep a fixed bedtime and study in short blocks")],
            ),
        ),
    )
    patient = real_store.create_patient("New client")
    index = KnowledgeIndex(real_store).load()
    assistant.knowledge = index
    try:
        question = "Since I failed the exam I cannot sleep and my parents expect too much."
        stream = assistant.stream_analysis(patient, question, cancel=threading.Event())
        text = "".join(stream)
        prompt = assistant.model.tokenizer.decode(assistant.last_prompt_ids)
        assert f"own case · Case {other.id[:6]}" in prompt
        assert "Earlier client" not in prompt  # a pseudonym, never the other client's name
        assert "1 similar entries in the prompt (1 own cases)" in stream.context_report
        draft = stream.draft_of(text)
        assert all(c.key.startswith(f"note:{other.id}") for c in draft.citations)

        assistant.settings.knowledge.grounding = "off"
        "".join(assistant.stream_analysis(patient, question, cancel=threading.Event()))
        assert "own case" not in assistant.model.tokenizer.decode(assistant.last_prompt_ids)
    finally:
        assistant.knowledge = None
        assistant.settings.knowledge.grounding = "auto"


def test_an_own_case_citation_keeps_no_copy_of_the_other_clients_text():
    entry = Entry(
        "note:ab12cd34ef:n1", "note", "t", "Panic on the subway", "Panic on the subway",
        patient_id="ab12cd34ef", date="2026-10-12",
    )  # fmt: skip
    grounding = build_grounding([Match(entry, 1.0, "Panic on the subway")], "en", 500, _count)
    assert "Panic on the subway" in grounding.text  # the prompt sees it (in memory only)
    citation = grounding.citations[0]
    assert citation.passage == "" and citation.label == "own case · Case ab12cd · 2026-10-12"
