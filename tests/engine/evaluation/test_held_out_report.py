"""The IMHI report gives held-out tasks their own mean: a gain on trained tasks must not hide
a loss on tasks the adapter never saw."""

from __future__ import annotations

import json

from engine.evaluation.imhi import EvalRun, TaskResult
from engine.evaluation.report import markdown_table, write_report


def run(name: str, f1: dict[str, float]) -> EvalRun:
    results = {t: TaskResult(t, 50, v, v, 0.0, 0.2, {"yes": 50}) for t, v in f1.items()}
    return EvalRun(name, results, {}, {"limit": 50})


BASE = run("base", {"DR": 0.30, "SAD": 0.40, "MultiWD": 0.50})
ADAPTER = run("adapter", {"DR": 0.70, "SAD": 0.80, "MultiWD": 0.45})


def test_held_out_and_trained_means_side_by_side():
    md = markdown_table([BASE, ADAPTER], held_out=("MultiWD", "loneliness"))
    held = next(line for line in md.splitlines() if "held-out tasks (MultiWD)" in line)
    trained = next(line for line in md.splitlines() if "trained tasks (DR, SAD)" in line)
    assert "| 50.00 | 45.00 | -5.00 |" in held  # the loss the overall mean would hide
    assert "| 35.00 | 75.00 | +40.00 |" in trained
    assert "held-out" not in markdown_table([BASE, ADAPTER])


def test_results_json_carries_both_means(tmp_path):
    write_report(tmp_path, [BASE, ADAPTER], meta={"held_out": ["MultiWD"]})
    data = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    adapter = data["runs"]["adapter"]
    assert round(adapter["mean_held_out"]["weighted_f1"], 4) == 0.45
    assert round(adapter["mean_trained"]["weighted_f1"], 4) == 0.75
    assert "held-out tasks (MultiWD)" in (tmp_path / "results.md").read_text(encoding="utf-8")
