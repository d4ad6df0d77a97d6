"""The report puts runs side by side and writes JSON, Markdown and predictions."""

from __future__ import annotations

import json

from engine.evaluation.imhi import EvalRun, Prediction, TaskResult, sample_rows
from engine.evaluation.report import markdown_table, write_report


def run(name: str, f1: float) -> EvalRun:
    results = {
        t: TaskResult(t, 50, f1, f1 + 0.05, 0.1, 0.2, {"yes": 45, "<unlabeled>": 5})
        for t in ("DR", "SAD")
    }
    preds = {"DR": [Prediction("q", "Yes. Reasoning: r", "yes", "是的", "yes")]}
    return EvalRun(name, results, preds, {"limit": 50})


def test_markdown_side_by_side_with_delta():
    md = markdown_table([run("base", 0.30), run("adapter", 0.55)])
    header = md.splitlines()[0]
    assert "weighted F1 (base)" in header and "weighted F1 (adapter)" in header
    assert "weighted F1 Δ" in header and "ROUGE-L F (base)" in header
    dr = next(line for line in md.splitlines() if line.startswith("| DR "))
    assert "| 30.00 | 55.00 | +25.00 |" in dr
    assert "mean of 2 tasks" in md and "rougeL_f" in md


def test_write_report(tmp_path):
    md = write_report(tmp_path, [run("base", 0.3), run("adapter", 0.5)], meta={"model": "m"})
    data = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert data["runs"]["adapter"]["tasks"]["SAD"]["weighted_f1"] == 0.5
    assert data["runs"]["base"]["mean"]["weighted_f1"] == 0.3
    assert md.read_text(encoding="utf-8").startswith("# IMHI evaluation")
    line = (tmp_path / "predictions-base.jsonl").read_text(encoding="utf-8").splitlines()[0]
    assert json.loads(line)["output"] == "是的"


def test_limit_sample_is_seeded_and_spread():
    rows = list(range(100))
    a, b = sample_rows(rows, 10, seed=0), sample_rows(rows, 10, seed=0)
    assert a == b and len(set(a)) == 10 and max(a) > 50
    assert sample_rows(rows, None, 0) == rows


def test_rescore_uses_current_rules(tmp_path):
    from phyassist_tui.cli import main

    preds = {
        "DR": [
            Prediction("q1", "Yes, the poster suffers from depression.", "yes", "No.", "yes"),
            Prediction("q2", "No, the poster does not suffer from depression.", "no", "?", "no"),
        ]
    }
    # saved labels are stale on purpose: rescoring must re-extract them from the outputs
    write_report(tmp_path / "old", [EvalRun("base", {}, preds)])
    assert main(["eval", "imhi", "--data", str(tmp_path), "--rescore", str(tmp_path / "old"),
                 "--out", str(tmp_path / "new")]) == 0  # fmt: skip
    data = json.loads((tmp_path / "new" / "results.json").read_text(encoding="utf-8"))
    dr = data["runs"]["base"]["tasks"]["DR"]
    assert dr["n"] == 2 and dr["accuracy"] == 0.0 and dr["unlabeled_share"] == 0.5
