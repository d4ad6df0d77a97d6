"""Each cleaning rule catches the dirty fixture rows meant for it, and only those."""

from __future__ import annotations

import pytest

from engine.dataprep import clean as c
from engine.dataprep.clean import Example
from engine.dataprep.counselchat import read_counselchat
from engine.dataprep.imhi import all_test_queries, read_train


def ex(prompt: str, completion: str = "An answer.", **kw) -> Example:
    return Example(
        kw.pop("source", "imhi"), kw.pop("task", "DR"), "train", prompt, completion, **kw
    )


@pytest.fixture
def imhi_rows(imhi_fixture):
    return read_train(imhi_fixture)


@pytest.fixture
def cc_rows(counselchat_fixture):
    return read_counselchat(counselchat_fixture)


def test_drop_empty_catches_missing_question_and_blank_answer(imhi_rows):
    kept, dropped = c.drop_empty(imhi_rows)
    assert dropped == 2
    assert all(r.prompt.strip() and r.completion.strip() for r in kept)


def test_drop_empty_on_counselchat_blank_answer(cc_rows):
    kept, dropped = c.drop_empty(cc_rows)
    assert dropped == 1
    assert not any("tired all the time" in r.prompt for r in kept)


def test_drop_over_long_uses_the_limit(imhi_rows):
    _, dropped = c.make_drop_over_long(c.DEFAULT_MAX_CHARS)(imhi_rows)
    assert dropped == 1
    longest = max(len(r.prompt) + len(r.completion) for r in imhi_rows)
    _, none = c.make_drop_over_long(longest)(imhi_rows)
    assert none == 0
    _, everything = c.make_drop_over_long(10)(imhi_rows)
    assert everything == len(imhi_rows)


def test_drop_urls_in_question_or_answer(imhi_rows, cc_rows):
    kept, dropped = c.drop_urls(imhi_rows)
    assert dropped == 1
    assert not any("example.org" in r.prompt for r in kept)
    kept, dropped = c.drop_urls(cc_rows)
    assert dropped == 1
    assert not any("www.example.com" in r.completion for r in kept)
    assert c.drop_urls([ex("see http://a.b/c"), ex("ok", "visit www.site.org now")])[1] == 2


def test_drop_broken_encoding_catches_each_kind(imhi_rows):
    kept, dropped = c.drop_broken_encoding(imhi_rows)
    assert dropped == 3
    texts = " ".join(r.prompt for r in kept)
    assert "??t" not in texts and "â€" not in texts and "\ufffd" not in texts


@pytest.mark.parametrize(
    "text",
    [
        "I don??t know",  # apostrophe lost through a non-Unicode code page
        "don?t do that",
        "my r??sum??s are ready",  # é as two bytes, each a "?"
        "so happy today ?? see you",  # an emoji written as two '?'
        "Itâ€™s fine",  # UTF-8 read as cp1252
        "naÃ¯ve",  # UTF-8 read as latin-1
        "gr\ufffdy",
    ],
)
def test_broken_encoding_detected(text):
    assert c.is_broken_encoding(text)


@pytest.mark.parametrize(
    "text",
    [
        "What do I do??? Please help",  # emphasis, not damage
        "How can I help my daughter?Usually she is fine",  # scraped text missing a space
        "Ça va, naïve café, déjà vu",  # real accents
        "我最近总是失眠，怎么办？？",  # Chinese with full-width question marks
        "Is this (???) normal",
    ],
)
def test_clean_text_not_flagged(text):
    assert not c.is_broken_encoding(text)


def test_drop_test_overlap(imhi_rows, imhi_fixture):
    rule = c.make_drop_test_overlap(all_test_queries(imhi_fixture))
    _, dropped = rule(imhi_rows)
    assert dropped == 1
    assert rule.__name__ == "drop_test_overlap"


def test_drop_exact_duplicates_keeps_first(imhi_rows, cc_rows):
    _, dropped = c.drop_exact_duplicates(imhi_rows)
    assert dropped == 1
    _, dropped = c.drop_exact_duplicates(cc_rows)
    assert dropped == 1
    a, b = ex("q", "a1"), ex("q", "a2")
    assert c.drop_exact_duplicates([a, b, a]) == ([a, b], 1)


def test_keep_best_voted_answer(cc_rows):
    kept, dropped = c.keep_best_voted_answer(cc_rows)
    # 10 rows, 5 questions: one answer each survives
    assert (len(kept), dropped) == (5, 5)
    q1 = [r for r in kept if r.prompt.startswith("How do I stop overthinking")]
    assert len(q1) == 1 and q1[0].votes == 3


def test_best_vote_chosen_among_clean_answers(cc_rows):
    rows, report = c.clean(cc_rows, c.default_rules())
    q2 = [r for r in rows if r.prompt.startswith("Is it normal to feel nothing")]
    # The 5-vote answer has a URL: the best clean answer (2 votes) is kept instead.
    assert len(q2) == 1 and q2[0].votes == 2 and "www." not in q2[0].completion
    assert report.dropped["keep_best_voted_answer"] == 2


def test_all_answers_keeps_every_clean_answer(cc_rows):
    rows, report = c.clean(cc_rows, c.default_rules(best_answer_only=False))
    assert "keep_best_voted_answer" not in report.dropped
    assert len([r for r in rows if r.prompt.startswith("How do I stop overthinking")]) == 3


def test_rows_are_charged_to_the_first_rule_and_counts_add_up(imhi_rows):
    rows, report = c.clean(imhi_rows, c.default_rules(test_prompts=["nothing matches"]))
    assert report.rows_in == len(imhi_rows)
    assert report.rows_out == len(rows) == report.rows_in - sum(report.dropped.values())
    assert list(report.dropped) == [
        "drop_empty",
        "drop_over_long",
        "drop_urls",
        "drop_broken_encoding",
        "drop_test_overlap",
        "drop_exact_duplicates",
        "keep_best_voted_answer",
    ]
