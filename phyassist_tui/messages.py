"""Typed messages that widgets and workers exchange.

Workers run in threads and talk to the UI only through these (``post_message`` is
thread-safe), so every cross-thread hand-off is visible in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message

from engine.records import AnalysisDraft, Citation, Patient, PatientSummary
from engine.session import Outcome, RunKind

GenerationKind = RunKind


@dataclass
class PatientChosen(Message):
    """The counselor picked a patient in the list (Enter)."""

    patient_id: str


@dataclass
class PatientsListed(Message):
    """A worker finished listing or searching patients."""

    patients: list[PatientSummary]
    query: str = ""


@dataclass
class PatientLoaded(Message):
    """A patient was read from the vault, with any unsaved draft left from last time."""

    patient: Patient
    autosave: dict[str, Any] | None = None
    kept_autosave: dict[str, Any] | None = None  # an earlier one the counselor put off ("Later")


@dataclass
class PatientSaved(Message):
    """A patient record changed in the vault (new patient, new note)."""

    patient: Patient


@dataclass
class GenerationStarted(Message):
    kind: GenerationKind


@dataclass
class GenerationChunk(Message):
    """Text that just streamed out of the model."""

    kind: GenerationKind
    text: str
    tokens_per_s: float | None = None


@dataclass
class GenerationFinished(Message):
    """A run ended: finished, cancelled (text kept) or failed (``outcome.error`` set).

    ``outcome`` is the Session's typed result: an ``AnalysisOutcome`` (the parsed draft),
    ``ItemOutcome`` (the item's new text) or ``ChatOutcome`` (the reply), with its stats."""

    outcome: Outcome


@dataclass
class DraftChanged(Message):
    """The draft was edited; the workspace autosaves it (encrypted)."""

    draft: AnalysisDraft


@dataclass
class TrainingProgress(Message):
    """One progress event from the training subprocess (step, loss, eta_s, phase, ...)."""

    event: dict[str, Any]


@dataclass
class TrainingDone(Message):
    ok: bool
    cancelled: bool = False
    detail: str = ""


@dataclass
class RegenerateItemRequested(Message):
    section: str
    item_id: str


@dataclass
class RegenerateAllRequested(Message):
    """Regenerate the whole draft, with every comment as guidance."""


@dataclass
class SaveNoteRequested(Message):
    draft: AnalysisDraft


@dataclass
class ChatSubmitted(Message):
    text: str


@dataclass
class SimilarRequested(Message):
    """The Similar pane wants matches for the current statement (the screen knows it)."""


@dataclass
class CitedPointRequested(Message):
    """Insert ``text`` into the draft's advice, citing ``citation`` (an engine Citation)."""

    text: str
    citation: Citation
