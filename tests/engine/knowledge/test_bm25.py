"""engine.knowledge.bm25 scores exactly what bm25s (the library it replaced on the query
path) scores, including repeated and unknown query terms."""

from __future__ import annotations

import random

import bm25s
import numpy as np
import pytest

from engine.knowledge.bm25 import Bm25
from engine.knowledge.text import tokenize

DOCS = [
    "I cannot sleep before exams and my parents expect top marks.",
    "My dog died last month and I keep crying at work.",
    "Panic attacks on the train; my heart races and I think I will faint.",
    "我最近总是焦虑，晚上睡不着觉，担心考试考不好。",
    "Since the divorce I drink every night to fall asleep.",
    "",  # an entry without terms still has a row
    "sleep sleep sleep: nothing but sleep problems, no sleep at all",
]


def _reference(docs: list[list[str]], query: list[str]) -> np.ndarray:
    model = bm25s.BM25()
    model.index(docs, show_progress=False)
    known = [t for t in query if t in model.vocab_dict]
    if not known:
        return np.zeros(len(docs), dtype=np.float32)
    return np.asarray(model.get_scores(known), dtype=np.float32)


@pytest.mark.parametrize(
    "query",
    [
        "I can't sleep, exams",
        "sleep sleep exams",  # a repeated term counts twice
        "焦虑 睡不着",
        "panic heart faint train dog",
    ],
)
def test_scores_match_bm25s(query):
    docs = [tokenize(d) or ["\x00"] for d in DOCS]
    terms = tokenize(query)
    ours = Bm25(docs).scores(terms)
    assert ours is not None
    np.testing.assert_allclose(ours, _reference(docs, terms), rtol=1e-5, atol=1e-6)


def test_scores_match_bm25s_on_a_random_corpus():
    rng = random.Random(3)
    words = [f"w{n}" for n in range(300)]
    docs = [[rng.choice(words[: rng.randint(5, 300)]) for _ in range(rng.randint(1, 60))]
            for _ in range(400)]  # fmt: skip
    for _ in range(20):
        terms = [rng.choice(words) for _ in range(rng.randint(1, 12))]
        ours = Bm25(docs).scores(terms)
        ref = _reference(docs, terms)
        if ours is None:
            assert not ref.any()
        else:
            np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_unknown_terms_score_nothing():
    assert Bm25([["exam"], ["dog"]]).scores(["cat", "horse"]) is None
