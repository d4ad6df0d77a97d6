"""``prepare``: read both sources, clean each with counted rules, split, write the dataset."""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from engine.dataprep import counselchat, imhi
from engine.dataprep.clean import DEFAULT_MAX_CHARS, CleanReport, Example, clean, default_rules
from engine.dataprep.format import build_dataset
from engine.errors import InputRejected

REPORT_FILE = "prepare_report.json"
ROWS_FILE = "rows.jsonl.gz"


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
    hold_out: tuple[str, ...] = (),
    drafts: bool = False,
    counselchat_qa: bool = True,
    zh_cases: tuple[Path, ...] = (),
    seed_case: Path | None = None,
    draft_cap: int = 2000,
    zh_repeat: int = 10,
) -> PrepareResult:
    """Clean IMHI training data and/or CounselChat and save a chat-format DatasetDict.

    IMHI rows all go to the training pool (Irf and MultiWD ship only ``val`` files) and a
    hashed ``val_share`` is held out for validation loss; questions that also occur in the
    IMHI test sets are dropped so evaluation stays unseen. CounselChat keeps its own split.

    ``hold_out``: IMHI tasks left out entirely (instructions and drafts), to measure the
    adapter on tasks it never saw. ``drafts``: add rows in the product's draft format
    (``engine.dataprep.drafts``) from the cleaned IMHI rows, every CounselChat answer, the
    ``zh_cases`` files and the ``seed_case``; ``counselchat_qa=False`` leaves CounselChat out
    in its own question/answer form. Besides the DatasetDict, the rows are written to
    ``rows.jsonl.gz`` (a few MB, what a GPU host needs: ``load_prepared`` reads either).
    """
    unknown = [t for t in hold_out if t not in imhi.TASKS]
    if unknown:
        raise InputRejected(f"unknown IMHI task(s) to hold out: {', '.join(unknown)}")
    if imhi_dir is None and counselchat_csv is None:
        raise InputRejected("give at least one source: --imhi DIR and/or --counselchat CSV")
    if max_chars < 100:
        raise InputRejected("--max-chars must be at least 100")
    reports: dict[str, CleanReport] = {}
    kept: list[Example] = []
    imhi_rows: list[Example] = []
    counselchat_rows: list[Example] = []
    if imhi_dir is not None:
        rows = imhi.read_train(Path(imhi_dir))
        rules = default_rules(
            max_chars=max_chars,
            best_answer_only=False,
            test_prompts=imhi.all_test_queries(Path(imhi_dir)),
        )
        rows = [r for r in rows if r.task not in hold_out]
        rows, reports["imhi"] = clean(rows, rules)
        imhi_rows = [
            replace(r, split="validation") if _in_validation(r.prompt, val_share) else r
            for r in rows
        ]
        kept.extend(imhi_rows)
    if counselchat_csv is not None:
        rows = counselchat.read_counselchat(Path(counselchat_csv))
        if counselchat_qa:
            rules = default_rules(max_chars=max_chars, best_answer_only=not all_answers)
            qa, reports["counselchat"] = clean(rows, rules)
            kept.extend(qa)
        if drafts:  # every answer is a draft of its own: no best-answer choice
            counselchat_rows, reports["counselchat_drafts"] = clean(
                rows, default_rules(max_chars=max_chars, best_answer_only=False)
            )
    draft_counts: dict[str, int] = {}
    if drafts:
        from engine.dataprep import drafts as draft_format

        written = [c for path in zh_cases for c in draft_format.written_cases(Path(path))]
        if seed_case is not None:
            written.append(draft_format.seed_case(Path(seed_case)))
        banned = (
            draft_format.imhi_test_posts(imhi.all_test_queries(Path(imhi_dir)))
            if imhi_dir is not None
            else set()
        )
        built = draft_format.build_draft_rows(
            imhi_rows,
            counselchat_rows,
            written,
            banned_posts=banned,
            hold_out=hold_out,
            per_task_cap=draft_cap,
            zh_repeat=zh_repeat,
        )
        draft_counts = built.counts
        kept.extend(built.examples)

    dataset = build_dataset(kept)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset.save_to_disk(str(out_dir))
    tasks: dict[str, int] = {}
    for ex in kept:
        if ex.split == "train":
            key = ex.task if ex.source == "imhi" else ex.source
            if ex.system:  # a draft-format row
                key = f"draft:{key}"
            tasks[key] = tasks.get(key, 0) + 1
    result = PrepareResult(
        out_dir=out_dir,
        reports=reports,
        split_rows={name: len(ds) for name, ds in dataset.items()},
        tasks=dict(sorted(tasks.items())),
    )
    write_rows(out_dir / ROWS_FILE, dataset)
    settings = {
        "all_answers": all_answers,
        "max_chars": max_chars,
        "val_share": val_share,
        "hold_out": list(hold_out),
        "drafts": drafts,
        "counselchat_qa": counselchat_qa,
        "zh_cases": [str(p) for p in zh_cases],
        "seed_case": str(seed_case) if seed_case else None,
        "draft_cap": draft_cap,
        "zh_repeat": zh_repeat,
        "draft_cases": draft_counts,
    }
    (out_dir / REPORT_FILE).write_text(
        json.dumps({**result.as_dict(), "settings": settings}, indent=2, ensure_ascii=False),
        encoding="utf-8",
    )
    return result


def write_rows(path: Path, dataset) -> None:  # type: ignore[no-untyped-def]
    """Every row with its split, one JSON a line, gzip: the portable copy of the dataset."""
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=9) as out:
        for split, rows in dataset.items():
            for row in rows:
                out.write(json.dumps({"split": split, **row}, ensure_ascii=False) + "\n")


def load_prepared(path: Path):
    """The DatasetDict written by ``prepare`` (its folder, or its ``rows.jsonl.gz`` alone);
    a clear error when ``path`` is neither."""
    from datasets import Dataset, DatasetDict, load_from_disk

    path = Path(path)
    if (path / "dataset_dict.json").is_file():
        return load_from_disk(str(path))
    rows_file = path / ROWS_FILE if path.is_dir() else path
    if not rows_file.is_file() or not rows_file.name.endswith(".jsonl.gz"):
        raise InputRejected(f"{path}: not a prepared dataset (run `phyassist data prepare` first)")
    splits: dict[str, list[dict]] = {}
    with gzip.open(rows_file, "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            splits.setdefault(row.pop("split"), []).append(row)
    return DatasetDict({name: Dataset.from_list(rows) for name, rows in sorted(splits.items())})
