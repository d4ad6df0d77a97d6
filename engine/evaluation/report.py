"""Write IMHI results: ``results.json`` (everything) and ``results.md`` (runs side by side)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

from engine.evaluation.imhi import EvalRun
from engine.evaluation.metrics import ROUGE_L_NAME

METRICS = (
    ("weighted_f1", "weighted F1"),
    ("accuracy", "accuracy"),
    ("unlabeled_share", "unlabeled"),
    ("rougeL_f", "ROUGE-L F"),
)
METRIC_NOTE = (
    "weighted F1 and accuracy in %, answers with no recognisable label count as wrong; "
    "unlabeled = share of answers with no recognisable label (%); "
    f"ROUGE-L F = mean `{ROUGE_L_NAME}` (rouge-score 0.1.2, rougeL with Porter stemmer) of the "
    "generated reasoning against the gold reasoning, x100."
)


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a sibling temp file and rename: a killed run never leaves half a report."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


def markdown_table(runs: list[EvalRun], held_out: tuple[str, ...] = ()) -> str:
    """Per task, each metric for every run next to each other (+ the difference for two runs).

    With ``held_out`` (tasks left out of the adapter's training) the mean is also given over
    the held-out tasks and over the trained ones: the gain on trained tasks says nothing
    about tasks the adapter never saw."""
    tasks: list[str] = []
    for run in runs:
        tasks.extend(t for t in run.results if t not in tasks)
    header = ["task", "n"]
    for _key, label in METRICS:
        header.extend(f"{label} ({run.name})" for run in runs)
        if len(runs) == 2:
            header.append(f"{label} Δ")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def row(label: str, n: str, values: dict[str, list[float | None]]) -> str:
        cells = [label, n]
        for key, _ in METRICS:
            vals = values[key]
            cells.extend("–" if v is None else _pct(v) for v in vals)
            if len(runs) == 2:
                a, b = vals
                cells.append("–" if a is None or b is None else f"{100 * (b - a):+.2f}")
        return "| " + " | ".join(cells) + " |"

    for task in tasks:
        values = {
            key: [getattr(r.results[task], key) if task in r.results else None for r in runs]
            for key, _ in METRICS
        }
        ns = {r.results[task].n for r in runs if task in r.results}
        lines.append(row(task, "/".join(str(n) for n in sorted(ns)), values))
    common = [t for t in tasks if all(t in r.results for r in runs)]

    def mean_row(label: str, group: list[str]) -> None:
        values = {
            key: [sum(getattr(r.results[t], key) for t in group) / len(group) for r in runs]
            for key, _ in METRICS
        }
        lines.append(row(label, "", values))

    if len(common) > 1:
        mean_row(f"**mean of {len(common)} tasks**", common)
    unseen = [t for t in common if t in held_out]
    seen = [t for t in common if t not in held_out]
    if held_out and unseen and seen:
        mean_row(f"**mean of held-out tasks ({', '.join(unseen)})**", unseen)
        mean_row(f"**mean of trained tasks ({', '.join(seen)})**", seen)
    return "\n".join(lines) + "\n\n" + METRIC_NOTE + "\n"


def write_report(out_dir: Path, runs: list[EvalRun], *, meta: dict | None = None) -> Path:
    """Write results.json, results.md and one predictions JSONL per run; returns the .md path.

    IMHI posts are public benchmark data, not patient text, so plain files are fine here.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    held = tuple((meta or {}).get("held_out", ()))
    common = [t for t in runs[0].results if all(t in r.results for r in runs)] if runs else []
    groups = {
        "held_out": [t for t in common if t in held],
        "trained": [t for t in common if t not in held],
    }
    payload = {
        "meta": meta or {},
        "metrics": {"explanation": ROUGE_L_NAME, "note": METRIC_NOTE},
        "runs": {
            run.name: {
                "settings": run.settings,
                "tasks": {t: r.as_dict() for t, r in run.results.items()},
                "mean": {key: run.mean(key) for key, _ in METRICS},
                **{
                    f"mean_{name}": {
                        key: sum(getattr(run.results[t], key) for t in group) / len(group)
                        for key, _ in METRICS
                    }
                    for name, group in groups.items()
                    if held and group
                },
            }
            for run in runs
        },
    }
    atomic_write_text(
        out_dir / "results.json", json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
    )
    md = out_dir / "results.md"
    held_out = tuple((meta or {}).get("held_out", ()))
    atomic_write_text(md, "# IMHI evaluation\n\n" + markdown_table(runs, held_out))
    for run in runs:
        lines = [
            json.dumps({"task": task, **asdict(p)}, ensure_ascii=False)
            for task, preds in run.predictions.items()
            for p in preds
        ]
        atomic_write_text(out_dir / f"predictions-{run.name}.jsonl", "\n".join(lines) + "\n")
    return md
