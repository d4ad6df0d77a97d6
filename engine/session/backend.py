"""What a :class:`~engine.session.Session` needs from the model and the vault, as protocols.

``engine.inference.assistant.Assistant`` is the real :class:`ModelBackend` and
``engine.vault.store.Store`` the real :class:`VaultOpener`/:class:`VaultStore`; a test hands
the Session a fake model (tests/tui/fakes.py) and keeps the real vault, so the Session's own
logic (adapter choice, audit entries, parsing) is what the TUI tests exercise. Written down
in full: nothing here is probed with ``getattr``. Torch-free (the types are names only).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from engine.inference.stream import TextStream
    from engine.records import (
        AnalysisDraft,
        BasicInfo,
        ChatMessage,
        Note,
        Patient,
        PatientSummary,
    )
    from engine.settings import Settings
    from engine.trust.risk import RiskFlag

__all__ = ["ModelBackend", "TrainingRunner", "VaultOpener", "VaultStore"]


@runtime_checkable
class ModelBackend(Protocol):
    """The model side: ``engine.inference.assistant.Assistant``."""

    # What Analysis and Chat are grounded in (``engine.knowledge``): the Session sets a
    # proxy of the open vault's index once the model is ready; ``None``: no grounding.
    knowledge: Any | None
    # Which adapter(s) the model uses now (``"domain+patient-…-v3"`` for a stack; ``None``:
    # the base) and why the patient's adapter could not be used (Compare says so).
    last_adapter_error: str | None

    @property
    def active_adapter(self) -> str | None: ...
    @property
    def loaded(self) -> bool: ...
    @property
    def model_label(self) -> str: ...

    def load(self, progress: Callable[..., None] | None = None) -> None: ...
    def use_patient(self, patient: Patient | None, store: Any | None = None) -> str: ...
    def prefill_record(self, patient: Patient, cancel: threading.Event) -> int: ...
    def risk_model_refusal(self) -> str | None: ...
    def risk_flags(self, text: str) -> tuple[list[RiskFlag], str]: ...
    def stream_analysis(
        self,
        patient: Patient,
        question: str,
        *,
        cancel: threading.Event,
        guidance: AnalysisDraft | None = None,
        observed: str = "",
    ) -> TextStream: ...
    def stream_regenerate_item(
        self,
        patient: Patient,
        question: str,
        draft: AnalysisDraft,
        section: str,
        item_id: str,
        *,
        cancel: threading.Event,
    ) -> TextStream: ...
    def stream_chat(
        self,
        patient: Patient | None,
        history: list[ChatMessage],
        message: str,
        *,
        cancel: threading.Event,
    ) -> TextStream: ...


class VaultStore(Protocol):
    """An open vault: ``engine.vault.store.Store``."""

    def close(self) -> None: ...
    def list_patients(self) -> list[PatientSummary]: ...
    def search(self, text: str) -> list[PatientSummary]: ...
    def create_patient(self, name: str, basic: BasicInfo | None = None) -> Patient: ...
    def load_patient(self, patient_id: str) -> Patient: ...
    def save_patient(self, patient: Patient) -> None: ...
    def delete_patient(self, patient_id: str) -> None: ...
    def add_note(self, patient_id: str, note: Note) -> Patient: ...
    def update_patient_info(
        self, patient_id: str, *, name: str | None = None, basic: BasicInfo | None = None
    ) -> Patient: ...
    def amend_note(
        self,
        patient_id: str,
        note_id: str,
        *,
        question: str | None = None,
        observed_state: str | None = None,
        analysis: AnalysisDraft | None = None,
        reason: str = "",
    ) -> Patient: ...
    def delete_note(self, patient_id: str, note_id: str, reason: str = "") -> Patient: ...
    def write_blob(self, patient_id: str, kind: str, data: bytes) -> None: ...
    def read_blob(self, patient_id: str, kind: str) -> bytes | None: ...
    def delete_blob(self, patient_id: str, kind: str) -> None: ...
    def integrity_problems(self) -> list[str]: ...
    def record_stamps(self) -> dict[str, str | None]: ...


class VaultOpener(Protocol):
    """``engine.vault.store.Store`` as a class: the three ways in."""

    def exists(self, vault_dir: Path) -> bool: ...
    def create(self, vault_dir: Path, passphrase: str, *, settings: Settings = ...) -> Any: ...
    def open(
        self, vault_dir: Path, passphrase: str, writer: bool = ..., settings: Settings = ...
    ) -> Any: ...


# ``runner(patient=, store=, settings=, cancel=)`` yields progress dicts (phase, step,
# total_steps, loss, tokens_per_s, eta_s, message); ends normally when a new adapter is stored.
TrainingRunner = Callable[..., Iterator[dict[str, Any]]]
