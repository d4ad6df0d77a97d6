"""The reference corpus: CounselChat questions with a therapist's answer, IMHI posts with a
label and its explanation (examples of symptom reasoning).

Built from the user's copy of the public data sets (``phyassist knowledge build --data DIR``,
the layout of ``../shared/data``) and stored encrypted in the vault; nothing is downloaded.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from pathlib import Path

from engine.dataprep.counselchat import build_prompt
from engine.dataprep.imhi import find_train_csvs, read_csv_rows
from engine.errors import InputRejected
from engine.knowledge.entries import Entry

_POST = re.compile(r'Consider this post:\s*"(?P<post>.*)"\s*Question:\s*(?P<q>.*)$', re.S)
# What a yes/no question asks about: "Does the post show risk of thwarted belongingness?",
# "Does the spiritual wellness dimension exist in the post?"
_ASKED = re.compile(
    r"risk of (?P<risk>[\w\s-]+?)\?|the (?P<dimension>[\w-]+) wellness dimension", re.I
)


def short_label(question: str, label: str) -> str:
    """An IMHI gold label that says what it answers: Irf's "Yes, the post shows this risk."
    becomes "perceived burdensomeness: yes" (a post is asked about two risks, so the Similar
    pane listed "Yes, ... this risk.; No, ... this risk." without saying which was which)."""
    asked = _ASKED.search(question)
    answer = label.strip().split(",", 1)[0].strip().lower()
    if asked is None or answer not in ("yes", "no"):
        return label.strip()
    subject = asked["risk"] or f"{asked['dimension']} wellness"
    return f"{subject.strip()}: {answer}"


def _votes(raw: str | None) -> int:
    try:
        return int(float(raw or 0))
    except ValueError:
        return 0


def counselchat_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise InputRejected(f"{path}: CounselChat CSV not found")
    with path.open(encoding="utf-8", errors="replace", newline="") as fh:
        return list(csv.DictReader(fh))


def counselchat_entries(rows: list[dict[str, str]], splits: set[str] | None = None) -> list[Entry]:
    """One entry per question (title + text), with its best-voted answer and its topic."""
    groups: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        split = (row.get("split") or "train").strip().lower()
        if splits is not None and split not in splits:
            continue
        title, text = (row.get("questionTitle") or "").strip(), (row.get("questionText") or "")
        if not (title or text.strip()):
            continue
        groups[(title, text.strip())].append(row)
    entries = []
    for n, ((title, text), answers) in enumerate(groups.items()):
        best = max(answers, key=lambda r: _votes(r.get("upvotes")))
        answer = (best.get("answerText") or "").strip()
        question = build_prompt(title, text)
        topic = (best.get("topic") or "").strip()
        entries.append(
            Entry(
                key=f"counselchat:{n}",
                source="counselchat",
                title=title or question[:120],
                text=f"{question}\n\nTherapist's answer:\n{answer}",
                search=question,
                label=topic,
                advice=answer,
                lang="en",
            )
        )
    return entries


def imhi_entries(root: Path) -> list[Entry]:
    """IMHI training posts, one entry per post, with every gold label sentence and reasoning
    given for it (a post is asked about several risks or wellness dimensions)."""
    by_post: dict[str, list[tuple[str, str, str, str]]] = {}
    for task, _stem, path in find_train_csvs(root):
        for row in read_csv_rows(path, task):
            match = _POST.match(row.query.strip())
            if not match or not row.answer.strip() or not match["post"].strip():
                continue
            label, _, reasoning = row.answer.partition("Reasoning:")
            answer = (task, match["q"].strip(), label.strip(), reasoning.strip())
            answers = by_post.setdefault(match["post"].strip(), [])
            if answer not in answers:
                answers.append(answer)
    entries: list[Entry] = []
    for n, (post, answers) in enumerate(by_post.items()):
        lines = [post, ""]
        for _task, question, label, reasoning in answers:
            lines.append(f"{question}\n{label}\nReasoning: {reasoning}")
        task, question, label, reasoning = answers[0]
        entries.append(
            Entry(
                key=f"imhi:{task}:{n}",
                source="imhi",
                title=f"{task}: {question}"[:120],
                text="\n".join(lines),
                search=post,
                label="; ".join(short_label(a[1], a[2]) for a in answers)[:300],
                advice=reasoning,
                lang="en",
            )
        )
    return entries


def build_reference(data_dir: Path, *, imhi: bool = True) -> list[Entry]:
    """Every reference entry found under ``data_dir`` (``counsel_chat/``, ``imhi/``)."""
    data_dir = Path(data_dir)
    entries: list[Entry] = []
    cc = data_dir / "counsel_chat" / "counsel_chat.csv"
    if cc.is_file():
        entries.extend(counselchat_entries(counselchat_rows(cc)))
    if imhi and (data_dir / "imhi").is_dir():
        entries.extend(imhi_entries(data_dir / "imhi"))
    if not entries:
        raise InputRejected(
            f"{data_dir}: found neither counsel_chat/counsel_chat.csv nor imhi/train/ "
            "(the layout of the project's shared data folder)."
        )
    return entries
