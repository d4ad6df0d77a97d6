"""Scores for IMHI: weighted F1 (the benchmark's own), accuracy, unlabeled share, ROUGE-L.

An answer with no recognisable label is scored as the class ``UNLABELED``: it is never right,
it lowers the recall of its true class, and as a class with no gold support it carries no
weight in the average, exactly like scikit-learn's ``f1_score(average="weighted")`` over the
union of gold and predicted labels.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

UNLABELED = "<unlabeled>"
ROUGE_L_NAME = "rougeL_f"  # rouge-score 0.1.2, RougeScorer(["rougeL"], use_stemmer=True).fmeasure


def _as_labels(pred: Sequence[str | None]) -> list[str]:
    return [UNLABELED if p is None else p for p in pred]


def weighted_f1(gold: Sequence[str], pred: Sequence[str | None]) -> float:
    """Per-class F1 averaged with weights = gold support (scikit-learn's ``weighted``).

    Classes present only in predictions get weight 0; zero-division cases count as 0.
    """
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    if not gold:
        return 0.0
    predicted = _as_labels(pred)
    support = Counter(gold)
    tp: Counter[str] = Counter(g for g, p in zip(gold, predicted, strict=True) if g == p)
    n_pred = Counter(predicted)
    total = 0.0
    for label, n_gold in support.items():
        precision = tp[label] / n_pred[label] if n_pred[label] else 0.0
        recall = tp[label] / n_gold
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        total += n_gold * f1
    return total / len(gold)


def accuracy(gold: Sequence[str], pred: Sequence[str | None]) -> float:
    if not gold:
        return 0.0
    return sum(g == p for g, p in zip(gold, pred, strict=True)) / len(gold)


def unlabeled_share(pred: Sequence[str | None]) -> float:
    if not pred:
        return 0.0
    return sum(p is None for p in pred) / len(pred)


class RougeL:
    """ROUGE-L F-measure between generated and gold reasoning, via the ``rouge-score`` package.

    Its tokenizer keeps only ASCII letters and digits, so Chinese text scores 0: IMHI is English.
    """

    name = ROUGE_L_NAME

    def __init__(self) -> None:
        from rouge_score import rouge_scorer

        self._scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)

    def score(self, reference: str, generated: str) -> float:
        return self._scorer.score(reference, generated)["rougeL"].fmeasure

    def mean(self, references: Sequence[str], generated: Sequence[str]) -> float:
        if not references:
            return 0.0
        scores = [self.score(r, g) for r, g in zip(references, generated, strict=True)]
        return sum(scores) / len(scores)
