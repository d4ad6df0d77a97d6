"""What the knowledge index holds: entries (a saved note or a reference item) and matches."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from engine.inference.prompts import SECTION_TITLES, detect_language
from engine.records import Note, Patient

Source = Literal["note", "counselchat", "imhi"]
SOURCE_LABELS: dict[str, str] = {
    "note": "own case",
    "counselchat": "CounselChat",
    "imhi": "IMHI",
}


@dataclass
class Entry:
    """One retrievable thing.

    ``search`` is what the lexical and embedding indexes see; ``text`` is what the counselor
    reads when the entry is opened; ``advice`` is the part a cited point is taken from.
    """

    key: str  # "note:<patient id>:<note id>", "counselchat:<n>", "imhi:<task>:<n>"
    source: Source
    title: str
    text: str
    search: str
    label: str = ""  # CounselChat topic, IMHI label, or the note's symptom type
    advice: str = ""
    patient_id: str = ""
    note_id: str = ""
    date: str = ""  # YYYY-MM-DD for notes
    lang: str = ""  # "en" or "zh" (detect_language of ``search``); "" = not known yet
    terms: list[str] = field(default_factory=list)  # tokenize(search), kept to skip re-segmenting

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Entry:
        fields = cls.__dataclass_fields__
        if not data.keys() <= fields.keys():  # a key from a newer format: leave it out
            data = {k: v for k, v in data.items() if k in fields}
        return cls(**data)

    @property
    def pseudonym(self) -> str:
        """How an own case is named outside its record: a short form of the random id."""
        return f"Case {self.patient_id[:6]}" if self.patient_id else ""

    @property
    def citation_label(self) -> str:
        """Short, human label for a citation (no patient name ever)."""
        if self.source == "note":
            return f"{SOURCE_LABELS['note']} · {self.pseudonym} · {self.date}"
        extra = f" · {self.label}" if self.label else ""
        return f"{SOURCE_LABELS[self.source]}{extra}"


@dataclass
class Match:
    """An entry found for a query, with the passage that matched and the fused score."""

    entry: Entry
    score: float
    passage: str
    lexical_rank: int | None = None
    embedding_rank: int | None = None


def _live(items) -> list[str]:
    return [i.text.strip() for i in items if not i.deleted and i.text.strip()]


def note_entry(patient: Patient, note: Note) -> Entry:
    """The entry of a saved note: the statement plus the counselor's final analysis."""
    lang = detect_language(note.question)
    titles = SECTION_TITLES[lang]
    sep = "：" if lang == "zh" else ": "
    a = note.analysis
    symptom = a.symptom_type.text.strip() if not a.symptom_type.deleted else ""
    reasons, advice = _live(a.reasons), _live(a.advice)
    lines = [note.question.strip()]
    if note.observed_state.strip():
        lines.append(note.observed_state.strip())
    if symptom:
        lines.append(f"{titles['symptom_type']}{sep}{symptom}")
    for title, items in ((titles["reasons"], reasons), (titles["advice"], advice)):
        if items:
            lines.append(f"{title}{sep}" + " ".join(f"{n}. {t}" for n, t in enumerate(items, 1)))
    text = "\n".join(lines)
    first = note.question.strip().splitlines()[0] if note.question.strip() else ""
    return Entry(
        key=f"note:{patient.id}:{note.id}",
        source="note",
        title=first[:120],
        text=text,
        search="\n".join([note.question, symptom, *reasons, *advice]),
        label=symptom,
        advice="\n".join(advice),
        patient_id=patient.id,
        note_id=note.id,
        date=note.created.strftime("%Y-%m-%d"),
        lang=lang,
    )


def patient_entries(patient: Patient) -> list[Entry]:
    return [note_entry(patient, n) for n in patient.notes if n.question.strip()]
