"""Read the IMHI instruction CSVs (``query``, ``gpt-3.5-turbo``) from a user-given folder.

Accepted layouts (MentalLLaMA's and ``../shared/data/imhi``): ``DIR/train/<TASK>/{train,val}.csv``
and ``DIR/test/<TASK>.csv``; ``DIR`` may also be the ``train`` or ``test`` folder itself.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from engine.dataprep.clean import Example
from engine.errors import InputRejected

TASKS = ("DR", "dreaddit", "Irf", "MultiWD", "SAD", "loneliness")
QUERY_COLUMN = "query"
ANSWER_COLUMN = "gpt-3.5-turbo"


@dataclass(frozen=True)
class ImhiRow:
    task: str
    query: str
    answer: str


def read_csv_rows(path: Path, task: str) -> list[ImhiRow]:
    """Rows of one IMHI CSV; a file without the two columns is rejected with its name."""
    # csv (not pandas): keeps every cell a str, empty cells included, so cleaning sees them.
    with path.open(encoding="utf-8", errors="replace", newline="") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        missing = [c for c in (QUERY_COLUMN, ANSWER_COLUMN) if c not in fields]
        if missing:
            raise InputRejected(f"{path}: not an IMHI CSV (missing column(s) {', '.join(missing)})")
        return [
            ImhiRow(task, row.get(QUERY_COLUMN) or "", row.get(ANSWER_COLUMN) or "")
            for row in reader
        ]


def _task_name(name: str) -> str | None:
    lowered = {t.lower(): t for t in TASKS}
    return lowered.get(name.lower())


def find_train_csvs(root: Path) -> list[tuple[str, str, Path]]:
    """``(task, split_file_stem, path)`` for every IMHI training CSV under ``root``."""
    root = Path(root)
    base = root / "train" if (root / "train").is_dir() else root
    found = []
    for task_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        task = _task_name(task_dir.name)
        if task is None:
            continue
        for csv_path in sorted(task_dir.glob("*.csv")):
            found.append((task, csv_path.stem, csv_path))
    return found


def find_test_csvs(root: Path) -> dict[str, Path]:
    """``task -> path`` of the IMHI test CSVs under ``root`` (``root/test`` or ``root``)."""
    root = Path(root)
    base = root / "test" if (root / "test").is_dir() else root
    found = {}
    for csv_path in sorted(base.glob("*.csv")):
        task = _task_name(csv_path.stem)
        if task is not None:
            found[task] = csv_path
    return found


def read_train(root: Path) -> list[Example]:
    """Every IMHI training row as an Example (all go to the training pool; see pipeline)."""
    files = find_train_csvs(root)
    if not files:
        raise InputRejected(
            f"{root}: no IMHI training CSVs found (expected train/<TASK>/*.csv, TASK in "
            f"{', '.join(TASKS)})"
        )
    rows: list[Example] = []
    for task, _stem, path in files:
        rows.extend(
            Example("imhi", task, "train", r.query.strip(), r.answer.strip())
            for r in read_csv_rows(path, task)
        )
    return rows


def read_test(root: Path, task: str) -> list[ImhiRow]:
    files = find_test_csvs(root)
    if task not in files:
        raise InputRejected(f"{root}: no IMHI test CSV for task {task!r}")
    return read_csv_rows(files[task], task)


def all_test_queries(root: Path) -> list[str]:
    """All test-set questions under ``root`` (empty when there is no test folder)."""
    root = Path(root)
    if not (root / "test").is_dir():
        return []
    return [r.query for task in find_test_csvs(root) for r in read_test(root, task)]
