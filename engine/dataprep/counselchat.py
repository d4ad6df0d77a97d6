"""Read CounselChat (questions from people, answers from licensed therapists).

Columns used: ``questionTitle``, ``questionText``, ``answerText``, ``topic``, ``upvotes``,
``split``. Title and text form the prompt; rows with the same title and text are one question
(``group``), so the best-voted-answer rule can pick among its answers.
"""

from __future__ import annotations

import csv
from pathlib import Path

from engine.dataprep.clean import Example
from engine.errors import InputRejected

COLUMNS = ("questionTitle", "questionText", "answerText", "topic", "upvotes", "split")


def _votes(raw: str | None) -> int:
    try:
        return int(float(raw or 0))
    except ValueError:
        return 0


def build_prompt(title: str, text: str) -> str:
    title, text = title.strip(), text.strip()
    if title and text and not text.startswith(title):
        return f"{title}\n\n{text}"
    return text or title


def read_counselchat(path: Path) -> list[Example]:
    path = Path(path)
    if not path.is_file():
        raise InputRejected(f"{path}: CounselChat CSV not found")
    with path.open(encoding="utf-8", errors="replace", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputRejected(f"{path}: not a CounselChat CSV (missing {', '.join(missing)})")
        rows = []
        for row in reader:
            title, text = row["questionTitle"] or "", row["questionText"] or ""
            split = (row["split"] or "train").strip().lower()
            rows.append(
                Example(
                    source="counselchat",
                    task=(row["topic"] or "").strip(),
                    split="validation" if split in ("val", "valid", "validation") else "train",
                    prompt=build_prompt(title, text),
                    completion=(row["answerText"] or "").strip(),
                    group=f"{title.strip()}\x1f{text.strip()}",
                    votes=_votes(row["upvotes"]),
                )
            )
    return rows
