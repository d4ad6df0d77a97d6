"""Domain rehearsal: a few of the domain adapter's own training rows in every patient run.

A patient LoRA learns from one patient's notes, and what it learns reaches every prompt: ten
notes of a depressed client taught the model to answer "yes" to IMHI's risk questions about
anyone (``phyassist eval imhi --patient-adapter``, bench/RESULTS.md). Mixing a few rows of the
data the domain adapter was trained on into each pass (replay, the usual remedy for
forgetting) keeps the domain answers while the notes teach the counselor's drafts. The rows
ship beside the domain adapter (``REHEARSAL_FILE``), so a run needs no data folder, and they are
public training rows (IMHI's training split, never its test sets), never patient text.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from engine.errors import TrainingError

REHEARSAL_FILE = "rehearsal.jsonl"
# Rows mixed into each pass over the notes; each pass takes the next ones (a "no" and a "yes"
# of one task), so three passes see six different rows. Two rows of ~150 tokens add about
# 10 % to a ten-note pass.
REHEARSAL_PER_PASS = 2
# Rows a domain adapter keeps for rehearsal, and the longest (prompt + answer tokens): short
# rows cost little CPU time.
POOL_SIZE = 48
MIN_ROW_TOKENS = 100  # shorter rows are mostly fragments ("lonely", a spreadsheet's "#NAME?")
MAX_ROW_TOKENS = 200
# The binary tasks the domain adapter learned, with their answers; SAD (one of nine causes)
# takes its turn between them. MultiWD and loneliness are held out of domain training.
BINARY_TASKS = ("DR", "dreaddit", "Irf")
_LEAD = re.compile(r"(?i)^\W*(yes|no)\b")


def _answer_of(row: dict[str, Any]) -> str:
    return row["completion"][-1]["content"]


def _kind(row: dict[str, Any]) -> tuple[str, str] | None:
    """(task, yes/no or "cause") of a training row; None for rows rehearsal does not use."""
    task = row.get("task", "")
    if row.get("source") != "imhi":
        return None
    if task == "SAD":
        return task, "cause"
    if task not in BINARY_TASKS:
        return None
    lead = _LEAD.match(_answer_of(row))
    return (task, lead.group(1).lower()) if lead else None


def select_rows(
    rows: Iterable[dict[str, Any]],
    count_tokens: Any,
    *,
    size: int = POOL_SIZE,
    min_tokens: int = MIN_ROW_TOKENS,
    max_tokens: int = MAX_ROW_TOKENS,
) -> list[dict[str, Any]]:
    """A balanced pool from a domain adapter's training rows (``to_record`` form).

    Round-robin over DR, dreaddit and Irf, a "no" then a "yes" of the same task, then two SAD
    rows: the pool's order is the order passes take them, so with an even ``per_pass`` every
    pass replays as many "no" as "yes" answers. (A pass of two "no" rows at the patient rate
    of 1e-3 turned the domain model's Irf answers to "no" on 47 of 48 posts.) Within a kind
    the order is a hash of the text (deterministic, not by length).
    ``count_tokens(text) -> int`` sizes a row."""
    buckets: dict[tuple[str, str], list[tuple[int, str, dict[str, Any]]]] = {}
    for row in rows:
        kind = _kind(row)
        if kind is None:
            continue
        text = row["prompt"][-1]["content"] + _answer_of(row)
        n = count_tokens(text)
        if n <= max_tokens:
            digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
            # rows in the window first (by hash); shorter ones only when a kind has no more,
            # the longest of them first
            rank = (0, 0, digest) if n >= min_tokens else (1, -n, digest)
            buckets.setdefault(kind, []).append((rank, text, row))
    for bucket in buckets.values():
        bucket.sort(key=lambda item: item[0])
    order = [(t, a) for t in BINARY_TASKS for a in ("no", "yes")]
    order += [("SAD", "cause"), ("SAD", "cause")]
    pool: list[dict[str, Any]] = []
    while len(pool) < size and any(buckets.get(k) for k in order):
        for kind in order:
            if buckets.get(kind) and len(pool) < size:
                _, _, row = buckets[kind].pop(0)
                pool.append(
                    {"prompt": row["prompt"], "completion": row["completion"], "task": row["task"]}
                )
    return pool


def write_pool(adapter_dir: Path, pool: Sequence[dict[str, Any]]) -> Path:
    path = Path(adapter_dir) / REHEARSAL_FILE
    lines = [json.dumps(row, ensure_ascii=False) for row in pool]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_pool(adapter_dir: Path | str | None) -> list[dict[str, Any]]:
    """The rehearsal rows beside a domain adapter; [] when it has none (or no adapter)."""
    if not adapter_dir:
        return []
    path = Path(adapter_dir) / REHEARSAL_FILE
    if not path.is_file():
        return []
    pool = []
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                pool.append({"prompt": row["prompt"], "completion": row["completion"]})
    except (ValueError, KeyError, TypeError) as exc:
        raise TrainingError(
            f"{path} cannot be read ({exc.__class__.__name__}); write it again with "
            "`python -m engine.training.rehearsal` or delete it to train without rehearsal. "
            "Nothing was trained."
        ) from exc
    return pool


def rows_for_passes(
    pool: Sequence[dict[str, Any]], passes: int, per_pass: int = REHEARSAL_PER_PASS
) -> list[list[dict[str, Any]]]:
    """The rows each pass adds: the next ``per_pass`` of the pool (wrapping round)."""
    if not pool or per_pass <= 0:
        return [[] for _ in range(passes)]
    out = []
    for p in range(passes):
        out.append([pool[(p * per_pass + i) % len(pool)] for i in range(per_pass)])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Write a domain adapter's rehearsal rows from the IMHI training files it learned from:
    ``python -m engine.training.rehearsal --imhi ../shared/data/imhi/train --adapter DIR``
    (``phyassist domain train`` writes them itself)."""
    import argparse

    from engine.dataprep.format import to_record
    from engine.dataprep.imhi import read_train
    from engine.model.llm import load_tokenizer
    from engine.settings import load_settings

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--imhi", required=True, help="IMHI training folder (TASK/train.csv)")
    parser.add_argument("--adapter", required=True, help="the domain adapter's folder")
    args = parser.parse_args(argv)
    tokenizer = load_tokenizer(load_settings())
    rows = [to_record(e) for e in read_train(Path(args.imhi)) if e.split == "train"]
    pool = select_rows(rows, lambda text: len(tokenizer(text)["input_ids"]))
    path = write_pool(Path(args.adapter), pool)
    print(f"{len(pool)} rehearsal rows -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
