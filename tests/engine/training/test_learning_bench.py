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


def test_a_draft_already_in_the_policys_style_needs_no_edit():
    """The rule fixed before the issue-17 runs: an item counts as changed when the policy's
    final differs from the model's text in the policy's canonical form (case, spacing,
    quotation marks, a closing full stop). Exact-string matching counted ``low mood.`` against
    ``Low mood`` as an edit, so no adapter could bring the count down."""
    from bench.learning import CounselorPolicy, canonical, item_changes

    policy = CounselorPolicy("depression")
    homework = policy.homework.rstrip(".")
    draft = AnalysisDraft(
        symptom_type=Item(text="low mood."),
        reasons=[Item(text="I stopped seeing my friends."), Item(text="“I feel empty most days”")],
        advice=[Item(text="Plan one outing with a friend."), Item(text=homework)],
    )
    note = policy.edit(draft, STATEMENT)
    assert item_changes(note) == (0, 5)
    assert note.symptom_type.text == "low mood."  # kept as the model wrote it
    # Anything else is still the policy's edit: a different label, a third reason, no homework.
    other = AnalysisDraft(
        symptom_type=Item(text="Low mood and isolation"),
        reasons=[Item(text="I feel empty most days."), Item(text="Isolation."), Item(text="x.")],
        advice=[Item(text="Plan one outing with a friend.")],
    )
    note = policy.edit(other, STATEMENT)
    assert [i.text for i in note.reasons if not i.deleted] == [
        "I feel empty most days.",
        '"I stopped seeing my friends."',
    ]
    assert note.reasons[2].deleted and note.advice[-1].text == policy.homework
    assert item_changes(note) == (4, 6)  # label, reason rewritten, reason deleted, homework
    assert canonical('  "Low  Mood."  ') == canonical("low mood")
