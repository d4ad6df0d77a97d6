"""Domain rehearsal: each pass over a patient's notes replays a few domain training rows."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from engine.errors import TrainingError
from engine.training.config import Hyperparameters
from engine.training.rehearsal import (
    REHEARSAL_FILE,
    read_pool,
    rows_for_passes,
    select_rows,
    write_pool,
)
from engine.training.worker import _with_rehearsal

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "adapters" / "smollm2-135m-drafts"
SHARED_TEST = ROOT.parent / "shared" / "data" / "imhi" / "test"


def _row(task: str, answer: str, post: str, source: str = "imhi") -> dict:
    return {
        "prompt": [{"role": "user", "content": f'Consider this post: "{post}" Question: ?'}],
        "completion": [{"role": "assistant", "content": answer}],
        "source": source,
        "task": task,
    }


def _words(text: str) -> int:
    return len(text.split())


def test_the_pool_alternates_answers_and_tasks_and_skips_what_domain_training_left_out():
    rows = []
    for i in range(6):
        for task in ("DR", "dreaddit", "Irf"):
            rows.append(_row(task, "Yes, it does. Reasoning: " + "x " * 20, f"yes post {i}"))
            rows.append(_row(task, "No, it does not. Reasoning: " + "x " * 20, f"no post {i}"))
        rows.append(_row("SAD", "This post shows other stress causes. " + "y " * 20, f"s {i}"))
        rows.append(_row("MultiWD", "Yes, this wellness dimension exists. " + "z " * 20, "m"))
        rows.append(_row("DR", "Yes. " + "x " * 20, "a draft row", source="counselchat"))
    rows.append(_row("DR", "No, short.", "too short"))  # under min_tokens: only when needed
    rows.append(_row("DR", "No. " + "x " * 80, "too long"))  # over max_tokens: never
    pool = select_rows(rows, _words, size=12, min_tokens=20, max_tokens=60)
    assert len(pool) == 12
    kinds = [(r["task"], r["completion"][0]["content"].split(",")[0][:4]) for r in pool]
    assert kinds[:8] == [
        ("DR", "No"),
        ("DR", "Yes"),
        ("dreaddit", "No"),
        ("dreaddit", "Yes"),
        ("Irf", "No"),
        ("Irf", "Yes"),
        ("SAD", "This"),
        ("SAD", "This"),
    ]
    # every pass of two rows replays one "no" and one "yes" answer
    for first, second in zip(kinds[0:6:2], kinds[1:6:2], strict=True):
        assert first[0] == second[0] and {first[1], second[1]} == {"No", "Yes"}
    assert not any(r["task"] == "MultiWD" for r in pool)
    assert all("draft row" not in r["prompt"][0]["content"] for r in pool)
    assert all("too short" not in r["prompt"][0]["content"] for r in pool)
    everything = select_rows(rows, _words, size=100, min_tokens=20, max_tokens=60)
    assert "too short" in everything[-1]["prompt"][0]["content"]  # the last "DR no" row
    assert all("too long" not in r["prompt"][0]["content"] for r in everything)


def test_each_pass_takes_the_next_rows_and_the_pool_wraps_round():
    pool = [{"n": i} for i in range(5)]
    passes = rows_for_passes(pool, 3, per_pass=2)
    assert [[r["n"] for r in p] for p in passes] == [[0, 1], [2, 3], [4, 0]]
    assert rows_for_passes([], 3) == [[], [], []]
    assert rows_for_passes(pool, 2, per_pass=0) == [[], []]


def test_a_pool_round_trips_and_a_missing_one_is_empty(tmp_path):
    assert read_pool(None) == [] and read_pool(tmp_path) == []
    pool = [_row("Irf", "是的，有风险。", "我觉得自己是个负担")]
    write_pool(tmp_path, pool)
    back = read_pool(tmp_path)
    assert back == [{"prompt": pool[0]["prompt"], "completion": pool[0]["completion"]}]
    assert "是个负担" in (tmp_path / REHEARSAL_FILE).read_text(encoding="utf-8")
    (tmp_path / REHEARSAL_FILE).write_text('{"prompt": [}\n', encoding="utf-8")
    with pytest.raises(TrainingError, match="cannot be read"):
        read_pool(tmp_path)


def test_passes_are_laid_out_with_their_own_rehearsal_rows():
    notes = [{"prompt": [{"role": "user", "content": f"note {i}"}], "completion": []} for i in "ab"]
    pool = [_row("DR", f"No {i}.", f"p{i}") for i in range(4)]
    hp = Hyperparameters(num_train_epochs=3, rehearsal_per_pass=2)
    rows, epochs, replayed = _with_rehearsal(notes, pool, hp, weigh=False)
    assert epochs == 1.0 and replayed == 4  # 3 passes x 2 rows from a pool of 4
    assert len(rows) == 3 * (2 + 2)
    assert [r["prompt"][0]["content"] for r in rows[:2]] == ["note a", "note b"]
    assert rows[2]["completion"][0]["content"] == "No 0." and "source" not in rows[2]
    assert rows[-1]["completion"][0]["content"] == "No 1."  # the third pass wraps round
    weighted, _, _ = _with_rehearsal(notes, pool, hp, weigh=True)
    assert weighted[2]["edited_lines"] == []  # replayed rows keep plain weights
    off = Hyperparameters(num_train_epochs=3, rehearsal_per_pass=0)
    assert _with_rehearsal(notes, pool, off, weigh=False) == (notes, 3, 0)
    steps = Hyperparameters(num_train_epochs=3, rehearsal_per_pass=2, max_steps=5)
    assert _with_rehearsal(notes, pool, steps, weigh=False)[2] == 0


def test_the_shipped_domain_adapter_has_a_balanced_pool_of_training_rows():
    pool = [json.loads(line) for line in (SHIPPED / REHEARSAL_FILE).read_text().splitlines()]
    assert len(pool) == 48
    answers = [r["completion"][0]["content"].split(",")[0] for r in pool if r["task"] != "SAD"]
    assert answers.count("Yes") == answers.count("No") == 18
    assert {r["task"] for r in pool} == {"DR", "dreaddit", "Irf", "SAD"}


@pytest.mark.skipif(not SHARED_TEST.is_dir(), reason="../shared/data/imhi absent")
def test_no_rehearsal_row_is_an_imhi_test_post():
    test_posts = set()
    for path in SHARED_TEST.glob("*.csv"):
        with path.open(encoding="utf-8", newline="") as fh:
            test_posts |= {row["query"].strip() for row in csv.DictReader(fh)}
    pool = read_pool(SHIPPED)
    assert pool and not any(r["prompt"][-1]["content"].strip() in test_posts for r in pool)
