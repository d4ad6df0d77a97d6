"""A quoted reason must be the statement's words, or the counselor is told where it is from."""

from __future__ import annotations

from datetime import UTC, datetime

from engine.inference.quotes import quote_caveats, quoted_words
from engine.records import AnalysisDraft, Item, Note, Patient
from engine.session.generating import _check_quotes
from engine.session.runs import AnalysisOutcome

STATEMENT = 'My husband ignores me. He said "you are always sad." I feel alone at home.'
EARLIER = [("2026-11-28", "I struggled with depression and mood swings all month.")]


def _draft(*reasons: str, deleted: int | None = None) -> AnalysisDraft:
    items = [Item(text=r, draft=r) for r in reasons]
    if deleted is not None:
        items[deleted].deleted = True
    return AnalysisDraft(symptom_type=Item(text="Low mood"), reasons=items, advice=[])


def test_quoted_words_are_read_between_the_marks():
    assert quoted_words('"I feel alone at home." She is isolated.') == "I feel alone at home."
    assert quoted_words("「我一直睡不着」") == "我一直睡不着"
    assert quoted_words("“Unclosed quote") == "Unclosed quote"
    assert quoted_words("Isolation at home.") is None
    # a quote inside the quote: to the last mark (an odd count), not the inner one
    nested = '"And he said, "You\'re always sad or depressed."'
    assert quoted_words(nested) == "And he said, \"You're always sad or depressed."
    two = '"I am tired" and "I cannot sleep" show fatigue.'
    assert quoted_words(two) == "I am tired"


def test_a_misquote_with_a_quote_inside_is_said_so():
    """Seen in tmux with a patient adapter: the inner mark hid the misquote."""
    statement = (
        "I tried telling my husband I was depressed, and he ignored me. He said \"you're "
        'always sad or depressed." And he picked up his phone and ignored me. I said, '
        '"Please don\'t exaggerate, that isn\'t true." And he said, "Whatever babe."'
    )
    draft = AnalysisDraft(
        reasons=[
            Item(text='"I tried telling my husband I was depressed, and he ignored me."'),
            Item(text='"And he said, "You\'re always sad or depressed."'),
        ]
    )
    assert quote_caveats(draft, statement, []) == [
        "Reason 2 quotes this statement, but not word for word."
    ]


def test_a_quote_from_the_statement_passes_and_others_are_placed():
    assert quote_caveats(_draft('"I feel alone at home."', "Isolation."), STATEMENT, EARLIER) == []
    lines = quote_caveats(
        _draft(
            '"I feel alone at home."',
            '"I struggled with depression and mood swings all month."',
            "“I never said this anywhere at all.”",
        ),
        STATEMENT,
        EARLIER,
    )
    assert lines == [
        "Reason 2 quotes the note of 2026-11-28, not this statement.",
        "Reason 3 quotes words that are not in this statement.",
    ]


def test_a_quote_that_is_not_word_for_word_is_said_so():
    """The model changes a tense inside the quote marks: that is not what the client said."""
    earlier = [("2026-11-28", "I struggle with depression and mood swings all month. Help.")]
    lines = quote_caveats(
        _draft(
            '"I struggled with depression and mood swings all month."',
            '"I felt alone at home."',
        ),
        STATEMENT,
        earlier,
    )
    assert lines == [
        "Reason 1 quotes the note of 2026-11-28 (not word for word), not this statement.",
        "Reason 2 quotes this statement, but not word for word.",
    ]


def test_chinese_quotes_and_deleted_reasons():
    statement = "我最近总是失眠，白天上课注意力不集中。"
    assert quote_caveats(_draft("「我最近总是失眠」"), statement, []) == []
    assert quote_caveats(_draft("「我想一个人待着不想说话」"), statement, []) == [
        "Reason 1 quotes words that are not in this statement."
    ]
    # a deleted reason is not shown, so it is not counted or checked
    lines = quote_caveats(_draft('"made up words here"', '"also made up words"', deleted=0), "", [])
    assert lines == ["Reason 1 quotes words that are not in this statement."]


def test_the_session_outcome_carries_the_caveat():
    patient = Patient(
        name="Dana",
        notes=[Note(question=EARLIER[0][1], created=datetime(2026, 11, 28, tzinfo=UTC))],
    )
    draft = _draft('"I struggled with depression and mood swings all month."')
    outcome = AnalysisOutcome(kind="analysis", text="x", caveat="Model caveat.", draft=draft)
    checked = _check_quotes(outcome, patient, STATEMENT)
    assert checked.caveat == (
        "Model caveat. Reason 1 quotes the note of 2026-11-28, not this statement."
    )
    assert checked.draft is draft and draft.reasons[0].text.startswith('"I struggled')
    clean = AnalysisOutcome(kind="analysis", text="x", draft=_draft('"I feel alone at home."'))
    assert _check_quotes(clean, patient, STATEMENT) is clean
