"""The anti-loop rules leave a copy of the client's own words alone, and still stop loops.

A reason may quote the client (issue 17). The repetition penalty over the prompt and the
no-repeat n-gram rule were made against loops, but they also broke verbatim quotes ("attempted"
-> "tried", a sentence's second "be intimate" -> "be intime"). ``TokenConstraint.copy_source``
exempts the statement's next token while a run is copying it, and an n-gram as many times as
the statement holds it.
"""

from __future__ import annotations

import threading
import time

import pytest
import torch
from transformers import RepetitionPenaltyLogitsProcessor

from engine.inference.constraints import TokenConstraint
from engine.inference.prompts import analysis_request
from engine.inference.structured import (
    ITEM_MAX_TOKENS,
    StructuredDraft,
    _Tally,
    item_done,
    statement_tokens,
)
from engine.records import Patient

# ids: 1 "I" 2 " want" 3 " to" 4 " be" 5 " close" 6 " and" 7 "." 9 "x"
STATEMENT = (1, 2, 3, 4, 5, 6, 2, 3, 4, 5, 7)  # "I want to be close and want to be close."


def test_an_ngram_the_statement_holds_twice_may_be_copied_twice_but_not_a_third_time() -> None:
    copying = TokenConstraint(no_repeat=True, copy_source=(STATEMENT,))
    plain = TokenConstraint(no_repeat=True)
    written = [1, 2, 3, 4, 5, 6, 2, 3]  # the quote so far, its second " want to"
    # " be" after the second " want to": the statement has " want to be" twice
    assert 4 not in copying.banned_continuations(written)
    assert 4 in plain.banned_continuations(written)  # the rule that broke the quote
    # a third time is a loop, not a copy
    looping = [*STATEMENT[:-1], 2, 3]
    assert 4 in copying.banned_continuations(looping)


def test_earlier_items_count_against_the_statement() -> None:
    """A sentence quoted in reason 1 cannot be quoted again in reason 2."""
    c = TokenConstraint(avoid=(STATEMENT[:6],), no_repeat=True, copy_source=(STATEMENT,))
    # " want to be" stands twice in the statement, once in reason 1: once more is a copy
    assert 4 not in c.banned_continuations([1, 2, 3])
    c = TokenConstraint(avoid=(STATEMENT,), no_repeat=True, copy_source=(STATEMENT,))
    assert 4 in c.banned_continuations([1, 2, 3])


def _hf_penalised(ids: list[int], scores: torch.Tensor, penalty: float) -> torch.Tensor:
    return RepetitionPenaltyLogitsProcessor(penalty)(torch.tensor([ids]), scores.clone())


def test_the_penalty_is_hfs_except_on_the_statements_next_token_while_copying() -> None:
    torch.manual_seed(0)
    scores = torch.randn(1, 12) * 4
    prompt = [9, *STATEMENT, 9]
    ids = [*prompt, 1, 2, 3]  # the draft is copying "I want to"
    plain = TokenConstraint().processor(len(prompt), 1.3)
    assert torch.equal(plain(torch.tensor([ids]), scores.clone()), _hf_penalised(ids, scores, 1.3))
    copying = TokenConstraint(copy_source=(STATEMENT,)).processor(len(prompt), 1.3)
    got = copying(torch.tensor([ids]), scores.clone())
    want = _hf_penalised(ids, scores, 1.3)
    assert got[0, 4] == scores[0, 4]  # " be" continues the copy: not penalised
    others = [i for i in range(12) if i != 4]
    assert torch.equal(got[0, others], want[0, others])
    assert got[0, 4] != want[0, 4]


def test_no_statement_no_copy_source() -> None:
    assert statement_tokens(object(), "  ") == ()


# The real embedded model ------------------------------------------------------------------

STATEMENTS = [
    "My brother attempted to quit drinking twice this year. I listen to sad music, read old "
    "letters, and, in a strange way, like how bad it makes me feel.",
    "I tried telling my husband I was depressed, and he ignored me. He picked up his phone.",
    "I consistently tell myself I need to make some serious changes in my life, but I just "
    "can't seem to start.",
]


def _quote(assistant, statement: str, sentence: str, words: int = 3) -> str:
    """The item the engine's drafter writes after a reason opened with a quote of the first
    ``words`` words of ``sentence`` (as an adapter that quotes the client starts one)."""
    patient = Patient(name="Test")
    ids, _ = assistant._build(
        patient, [{"role": "user", "content": analysis_request(statement, "en")}], 96
    )
    segments = assistant._segments(patient, threading.Event(), time.perf_counter())
    drafter = StructuredDraft(assistant.model.tokenizer, segments, ids, "en", statement)
    head = " ".join(sentence.split()[:words])
    drafter.text = f'Symptom type: Low mood\nReasons:\n1. "{head}'
    body = "".join(
        drafter._segment(
            ITEM_MAX_TOKENS["en"], item_done("en"), _Tally(0.0), hold=False, quote_first=True
        )
    )
    return head + body


@pytest.mark.model
def test_a_quote_of_the_statement_comes_out_word_for_word_on_the_real_model(assistant) -> None:
    """Before the fix the penalty over the prompt broke off or changed these quotes ("I listen
    to sad music" - This is a common behavior ...; "telling my husband" -> "telling your
    husband")."""
    assistant.use_patient(None)
    sentences = [
        "I listen to sad music, read old letters, and, in a strange way, like how bad it makes "
        "me feel.",
        "I tried telling my husband I was depressed, and he ignored me.",
        "I consistently tell myself I need to make some serious changes in my life, but I just "
        "can't seem to start.",
    ]
    for statement, sentence in zip(STATEMENTS, sentences, strict=True):
        got = _quote(assistant, statement, sentence)
        assert got.startswith(sentence.rstrip(".")), (sentence, got)


@pytest.mark.model
def test_a_quotes_first_word_is_a_copy_too(assistant) -> None:
    """The penalty made a quote open as '" consistently tell myself' (its "I" dropped): the
    word after the opening mark must count as copying the sentence it starts."""
    tok = assistant.model.tokenizer
    statement = "Work is hard. I consistently tell myself I need to change."
    c = TokenConstraint(copy_source=statement_tokens(tok, statement))
    for opening in (' "', '"', " “"):
        generated = tok.encode(opening, add_special_tokens=False)  # the item so far
        first = tok.encode(f"{opening}I consistently", add_special_tokens=False)[len(generated)]
        assert first in c.copy_continuations(generated), opening
