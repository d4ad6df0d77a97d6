"""Every gold answer of the real IMHI test sets yields its label (skips without ../shared)."""

from __future__ import annotations

import csv

import pytest

from engine.dataprep.imhi import TASKS
from engine.evaluation.labels import SAD_CAUSES, extract_label


@pytest.mark.parametrize("task", TASKS)
def test_gold_labels_are_all_recognised(task, shared_data):
    with (shared_data / "imhi" / "test" / f"{task}.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    labels = [extract_label(task, r["gpt-3.5-turbo"], r["query"]) for r in rows]
    assert None not in labels
    for row, label in zip(rows, labels, strict=True):
        opening = row["gpt-3.5-turbo"].split("Reasoning:")[0].lower()
        if task == "SAD":
            assert label in SAD_CAUSES
            assert label.split()[0] in opening
        else:
            assert opening.startswith(label)  # "yes, ..." / "no, ..."
