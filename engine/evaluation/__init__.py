"""IMHI evaluation: label extraction, metrics, the batched runner and the report."""

from __future__ import annotations

from engine.evaluation.imhi import EvalRun, TaskResult, evaluate_imhi
from engine.evaluation.labels import extract_label
from engine.evaluation.metrics import RougeL, accuracy, unlabeled_share, weighted_f1
from engine.evaluation.report import markdown_table, write_report

__all__ = [
    "EvalRun",
    "RougeL",
    "TaskResult",
    "accuracy",
    "evaluate_imhi",
    "extract_label",
    "markdown_table",
    "unlabeled_share",
    "weighted_f1",
    "write_report",
]
