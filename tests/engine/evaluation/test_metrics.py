"""Weighted F1 equals scikit-learn's; accuracy, unlabeled share and ROUGE-L behave."""

from __future__ import annotations

import random

import pytest
from sklearn.metrics import accuracy_score, f1_score

from engine.evaluation.metrics import UNLABELED, RougeL, accuracy, unlabeled_share, weighted_f1

SAD = ["school", "work", "family issues", "health issues", "other causes"]


@pytest.mark.parametrize("seed", range(25))
def test_weighted_f1_matches_sklearn_on_random_labels(seed):
    rng = random.Random(seed)
    labels = ["yes", "no"] if seed % 2 else SAD
    n = rng.randint(1, 80)
    gold = [rng.choice(labels) for _ in range(n)]
    # predictions: some right, some wrong, some unlabeled, some outside the gold set
    pred = [
        rng.choice([*labels, None, None, "something else"]) if rng.random() < 0.7 else g
        for g in gold
    ]
    as_str = [UNLABELED if p is None else p for p in pred]
    expected = f1_score(gold, as_str, average="weighted", zero_division=0)
    assert weighted_f1(gold, pred) == pytest.approx(expected, abs=1e-12)
    assert accuracy(gold, pred) == pytest.approx(accuracy_score(gold, as_str))


def test_edge_cases():
    assert weighted_f1(["yes"], ["yes"]) == 1.0
    assert weighted_f1(["yes", "no"], [None, None]) == 0.0
    assert weighted_f1([], []) == 0.0
    with pytest.raises(ValueError):
        weighted_f1(["yes"], [])
    assert unlabeled_share([None, "yes", None, "no"]) == 0.5
    assert unlabeled_share([]) == 0.0


def test_rouge_l():
    rouge = RougeL()
    assert rouge.score("the poster feels hopeless", "the poster feels hopeless") == 1.0
    assert rouge.score("the poster feels hopeless", "cats enjoy sunny windows") == 0.0
    partial = rouge.score("the poster feels hopeless and tired", "the poster is tired")
    assert 0.0 < partial < 1.0
    assert rouge.mean(["a b", "c d"], ["a b", "x y"]) == pytest.approx(0.5)
