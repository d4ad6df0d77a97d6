"""bench/learning.py drafts through the product's stream (issue 17: it called
``Assistant.parse_analysis``, which the Session merge removed, so the bench no longer ran)."""

from __future__ import annotations

from engine.inference.stream import TextStream
from engine.records import AnalysisDraft, Item

STATEMENT = "I feel empty most days. I stopped seeing my friends."


class StreamOnlyAssistant:
    """What bench.learning may use of the Assistant: ``stream_analysis`` and nothing else."""

    def stream_analysis(self, patient, question, *, cancel):
        text = "Symptom type: Sadness\nReasons:\n1. Isolation.\nAdvice:\n1. You are not alone."
        stream = TextStream(iter([text]))

        def draft_of(seen: str) -> AnalysisDraft:
            assert seen == text
            return AnalysisDraft(
                symptom_type=Item(text="Sadness"),
                reasons=[Item(text="Isolation.")],
                advice=[
                    Item(text="Safety first.", inserted_by="risk:test"),
                    Item(text="You are not alone."),
                ],
            )

        stream.draft_of = draft_of
        return stream


def test_the_bench_takes_the_streams_own_draft_and_the_policy_edits_it():
    from bench.learning import CounselorPolicy, generate, item_changes

    draft, seconds = generate(StreamOnlyAssistant(), None, STATEMENT)
    assert seconds >= 0
    assert [i.text for i in draft.advice] == ["Safety first.", "You are not alone."]
    assert draft.raw_output.startswith("Symptom type: Sadness")
    note = CounselorPolicy("depression").edit(draft, STATEMENT)
    assert note.symptom_type.text == "Low mood"
    assert [i.text for i in note.reasons] == [
        '"I feel empty most days."',
        '"I stopped seeing my friends."',
    ]
    assert note.advice[1].deleted  # generic reassurance goes
    assert note.advice[-1].text.startswith("Homework:")
    # label, reason edited, reason added, reassurance deleted, homework added; risk item kept
    assert item_changes(note) == (5, 6)
