"""``prepare``: read both sources, clean each with counted rules, split, write the dataset."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from engine.dataprep import counselchat, imhi
from engine.dataprep.clean import DEFAULT_MAX_CHARS, CleanReport, Example, clean, default_rules
from engine.dataprep.format import build_dataset
from engine.errors import InputRejected

REPORT_FILE = "prepare_report.json"


@dataclass
class PrepareResult:
    out_dir: Path
    reports: dict[str, CleanReport]  # per source
    split_rows: dict[str, int]
    tasks: dict[str, int] = field(default_factory=dict)  # training rows per IMHI task / topic

    @property
    def total(self) -> CleanReport:
        total = CleanReport()
        for report in self.reports.values():
            total = total.merge(report)
        return total

    def as_dict(self) -> dict[str, object]:
        return {
            "out_dir": str(self.out_dir),
            "sources": {name: r.as_dict() for name, r in self.reports.items()},
            "total": self.total.as_dict(),
            "splits": self.split_rows,
            "train_rows_per_task": self.tasks,
        }


def _in_validation(prompt: str, share: float) -> bool:
    """Deterministic hold-out by hash, so rerunning prepare gives the same split."""
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < share


def prepare(
    out_dir: Path,
    *,
    imhi_dir: Path | None = None,
    counselchat_csv: Path | None = None,
    all_answers: bool = False,
    max_chars: int = DEFAULT_MAX_CHARS,
    val_share: float = 0.02,
) -> PrepareResult:
    """Clean IMHI training data and/or CounselChat and save a chat-format DatasetDict.

    IMHI rows all go to the training pool (Irf and MultiWD ship only ``val`` files) and a
    hashed ``val_share`` is held out for validation loss; questions that also occur in the
    IMHI test sets are dropped so evaluation stays unseen. CounselChat keeps its own split.
    """
    if imhi_dir is None and counselchat_csv is None:
        raise InputRejected("give at least one source: --imhi DIR and/or --counselchat CSV")
    if max_chars < 100:
        raise InputRejected("--max-chars must be at least 100")
    reports: dict[str, CleanReport] = {}
    kept: list[Example] = []
    if imhi_dir is not None:
        rows = imhi.read_train(Path(imhi_dir))
        rules = default_rules(
            max_chars=max_chars,
            best_answer_only=False,
            test_prompts=imhi.all_test_queries(Path(imhi_dir)),
        )
        rows, reports["imhi"] = clean(rows, rules)
        kept.extend(
            replace(r, split="validation") if _in_validation(r.prompt, val_share) else r
            for r in rows
        )
    if counselchat_csv is not None:
        rows = counselchat.read_counselchat(Path(counselchat_csv))
        rules = default_rules(max_chars=max_chars, best_answer_only=not all_answers)
        rows, reports["counselchat"] = clean(rows, rules)
        kept.extend(rows)

    dataset = build_dataset(kept)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset.save_to_disk(str(out_dir))
    tasks: dict[str, int] = {}
    for ex in kept:
        if ex.split == "train":
            key = ex.task if ex.source == "imhi" else "counselchat"
            tasks[key] = tasks.get(key, 0) + 1
    result = PrepareResult(
        out_dir=out_dir,
        reports=reports,
        split_rows={name: len(ds) for name, ds in dataset.items()},
        tasks=dict(sorted(tasks.items())),
    )
    settings = {"all_answers": all_answers, "max_chars": max_chars, "val_share": val_share}
    (out_dir / REPORT_FILE).write_text(
        json.dumps({**result.as_dict(), "settings": settings}, indent=2, ensure_ascii=False),
        encoding="utf-8",
    )
    return result


def load_prepared(path: Path):
    """The DatasetDict written by ``prepare``; a clear error when ``path`` is not one."""
    from datasets import load_from_disk

    path = Path(path)
    if not (path / "dataset_dict.json").is_file():
        raise InputRejected(f"{path}: not a prepared dataset (run `phyassist data prepare` first)")
    return load_from_disk(str(path))
