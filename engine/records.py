"""The patient record: what a counselor keeps about one client.

These models are the contract between the store (which encrypts them), the engine
(which builds prompts from them and fills drafts) and the TUI (which shows and edits them).
Every editable line is an ``Item`` that remembers the model's original text next to the
counselor's final text: that pair is the preference signal used for training.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

SCHEMA_VERSION = 1

BASIC_FIELDS: dict[str, tuple[str, str]] = {
    # field name -> (English label, Chinese label)
    "demographics": ("Demographics", "人口学资料"),
    "developmental_history": ("Developmental history", "成长史"),
    "mental_state": ("Mental state", "精神状态"),
    "physical_condition": ("Physical condition", "身体状况"),
    "social_functioning": ("Social functioning", "社会功能"),
}

Section = Literal["symptom_type", "reasons", "advice", "unplaced"]


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Model(BaseModel):
    model_config = ConfigDict(validate_assignment=True, extra="ignore")


class BasicInfo(_Model):
    """The five basic-information fields of the product's intake form."""

    demographics: str = ""
    developmental_history: str = ""
    mental_state: str = ""
    physical_condition: str = ""
    social_functioning: str = ""

    def filled(self) -> dict[str, str]:
        return {k: v for k, v in self.model_dump().items() if v.strip()}


class Regeneration(_Model):
    """One "regenerate this item" step: the text the counselor's comments were about, the
    comments that steered it and the text the model produced. Kept so the comment and what it
    produced stay training signal after the item's text is replaced (learning record)."""

    previous: str = ""
    comments: list[str] = Field(default_factory=list)
    produced: str = ""
    created: datetime = Field(default_factory=utcnow)


class Item(_Model):
    """One reason, advice line or symptom type.

    ``draft`` is the model's original text (``None`` when the counselor wrote the item),
    ``text`` the counselor's final text, ``comments`` guidance for regeneration.
    """

    id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    text: str = ""
    draft: str | None = None
    comments: list[str] = Field(default_factory=list)
    deleted: bool = False  # the counselor rejected a model item; kept for preference data
    # Why the engine (not the model, not the counselor) put this item here, e.g.
    # "risk:suicide_self_harm" for the safety-assessment item; "" for every other item.
    inserted_by: str = ""
    regenerations: list[Regeneration] = Field(default_factory=list)  # oldest first

    def apply_regeneration(self, produced: str) -> None:
        """Put a regenerated text in place, remembering what it replaced and why."""
        self.regenerations = [
            *self.regenerations,
            Regeneration(previous=self.text, comments=list(self.comments), produced=produced),
        ]
        self.draft = produced
        self.text = produced

    @property
    def edited(self) -> bool:
        return self.draft is not None and self.draft.strip() != self.text.strip()

    @property
    def added_by_counselor(self) -> bool:
        return self.draft is None


class Citation(_Model):
    """What a ``[n]`` marker in a draft item points to: a similar own case or a reference
    entry from the knowledge index (engine.knowledge), with the passage the prompt used."""

    marker: str  # "1" for "[1]"
    key: str  # the knowledge entry's key
    source: str  # "note", "counselchat", "imhi"
    label: str  # e.g. "own case · Case 3f2a91 · 2026-11-02" (never a patient's name)
    passage: str = ""


class AnalysisDraft(_Model):
    """A structured Analysis + Advice, as drafted by the model and edited by the counselor."""

    symptom_type: Item = Field(default_factory=Item)
    reasons: list[Item] = Field(default_factory=list)
    advice: list[Item] = Field(default_factory=list)
    unplaced: list[Item] = Field(default_factory=list)  # text the parser could not place
    raw_output: str = ""  # the model's whole output, verbatim
    model_name: str = ""  # model (+ adapter) that produced the draft
    citations: list[Citation] = Field(default_factory=list)  # what "[n]" in items points to

    def live(self, section: Section) -> list[Item]:
        if section == "symptom_type":
            return [self.symptom_type]
        return [i for i in getattr(self, section) if not i.deleted]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def removed_engine_items(self) -> list[str]:
        """What the counselor removed of the engine's own items (e.g. the safety-assessment
        item): ``inserted_by`` of each, saved with the note so the removal stays on record."""
        return [
            i.inserted_by
            for section in (self.reasons, self.advice)
            for i in section
            if i.inserted_by and i.deleted
        ]


class NoteVersion(_Model):
    """A note's content as it was before an amendment (kept, encrypted with the record)."""

    question: str
    observed_state: str = ""
    analysis: AnalysisDraft = Field(default_factory=AnalysisDraft)
    written: datetime  # when this version was saved (the note's date, or its amendment's)
    replaced: datetime = Field(default_factory=utcnow)  # when the next version replaced it
    reason: str = ""  # the counselor's reason for the amendment that replaced it, optional


def items_from_lines(old: list[Item], text: str) -> list[Item]:
    """The section's items after an amendment given one item per line.

    Line *n* replaces the text of the *n*-th live item (its model original and comments stay,
    so the change is still a preference pair); extra lines are the counselor's own items;
    live items beyond the last line are marked deleted (model items) or dropped (own items).
    Items deleted in the draft stay as they were.
    """
    lines = [" ".join(line.split()) for line in text.splitlines()]
    lines = [line for line in lines if line]
    result: list[Item] = []
    used = 0
    for item in old:
        if item.deleted:
            result.append(item.model_copy(deep=True))
            continue
        copy = item.model_copy(deep=True)
        if used < len(lines):
            copy.text = lines[used]
            used += 1
            result.append(copy)
        elif not copy.added_by_counselor:
            copy.deleted = True
            result.append(copy)
    result.extend(Item(text=line, draft=None) for line in lines[used:])
    return result


class Note(_Model):
    """One dated session note: the counseling question, the Analysis and the Advice.

    The fields hold the current version; ``versions`` the earlier ones, oldest first, so a
    corrected note never loses what it said before. Everything built from notes (prompts,
    training data) reads the current version only.
    """

    id: str = Field(default_factory=new_id)
    created: datetime = Field(default_factory=utcnow)
    question: str  # the client's statement / counseling question
    observed_state: str = ""  # the counselor's observation of the client, optional
    analysis: AnalysisDraft = Field(default_factory=AnalysisDraft)
    amended: datetime | None = None  # when the current version was saved, if not the first
    versions: list[NoteVersion] = Field(default_factory=list)


class NoteTombstone(_Model):
    """What remains of a deleted note: that it existed, when, and why it was deleted.

    Its text is gone (with its versions); the tombstone stays until the patient is deleted.
    """

    id: str
    created: datetime
    deleted: datetime = Field(default_factory=utcnow)
    reason: str = ""


class PreferenceChoice(_Model):
    """The counselor took one of two drafts (Compare): per item or the whole answer.

    ``chosen``/``rejected`` are the taken and the passed-over text (one item's text, or the
    whole Analysis + Advice for ``section == "whole"``); ``chosen_from``/``rejected_from`` name
    the model that wrote each (e.g. "domain", "patient v3"). Stored in the encrypted patient
    file; training turns each into a preference pair (learning record)."""

    id: str = Field(default_factory=new_id)
    created: datetime = Field(default_factory=utcnow)
    question: str
    observed_state: str = ""
    section: Literal["symptom_type", "reasons", "advice", "whole"] = "whole"
    chosen: str
    rejected: str
    chosen_from: str = ""
    rejected_from: str = ""


class ChatMessage(_Model):
    role: Literal["system", "user", "assistant"]
    content: str
    created: datetime = Field(default_factory=utcnow)


class Patient(_Model):
    """Everything about one client. Stored as one encrypted file."""

    schema_version: int = SCHEMA_VERSION
    id: str = Field(default_factory=new_id)
    name: str
    created: datetime = Field(default_factory=utcnow)
    updated: datetime = Field(default_factory=utcnow)
    basic: BasicInfo = Field(default_factory=BasicInfo)
    notes: list[Note] = Field(default_factory=list)  # live notes only, oldest first
    deleted_notes: list[NoteTombstone] = Field(default_factory=list)
    preferences: list[PreferenceChoice] = Field(default_factory=list)  # Compare choices

    def note(self, note_id: str) -> Note:
        """The live note with ``note_id`` (``KeyError`` if there is none)."""
        for note in self.notes:
            if note.id == note_id:
                return note
        raise KeyError(note_id)

    def notes_newest_first(self) -> list[Note]:
        return sorted(self.notes, key=lambda n: n.created, reverse=True)


class PatientSummary(_Model):
    """What the index keeps per patient for listing and searching."""

    id: str
    name: str
    created: datetime
    updated: datetime
    note_count: int = 0
    has_adapter: bool = False
