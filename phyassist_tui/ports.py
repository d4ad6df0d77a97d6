"""What the TUI needs from the engine, written down as protocols.

The app talks to the vault and the model only through these shapes, so a test can hand it
a fake at the boundary and the product hands it the real ``engine`` objects. The engine
modules are imported lazily (inside workers): importing torch must never delay the first
frame.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pydantic models: imported by the modules that use them, off the launch path
    from engine.records import (
        AnalysisDraft,
        BasicInfo,
        ChatMessage,
        Note,
        Patient,
        PatientSummary,
    )
    from engine.settings import Settings


class VaultStore(Protocol):
    def close(self) -> None: ...
    def list_patients(self) -> list[PatientSummary]: ...
    def search(self, text: str) -> list[PatientSummary]: ...
    def create_patient(self, name: str, basic: BasicInfo) -> Patient: ...
    def load_patient(self, patient_id: str) -> Patient: ...
    def save_patient(self, patient: Patient) -> None: ...
    def add_note(self, patient_id: str, note: Note) -> Patient: ...
    def write_blob(self, patient_id: str, kind: str, data: bytes) -> None: ...
    def read_blob(self, patient_id: str, kind: str) -> bytes | None: ...
    def delete_blob(self, patient_id: str, kind: str) -> None: ...


class VaultOpener(Protocol):
    """``engine.vault.store.Store`` as a class: the three ways in."""

    def exists(self, vault_dir: Path) -> bool: ...
    def create(self, vault_dir: Path, passphrase: str, settings: Settings = ...) -> VaultStore: ...
    def open(
        self, vault_dir: Path, passphrase: str, writer: bool = ..., settings: Settings = ...
    ) -> VaultStore: ...


class AssistantLike(Protocol):
    loaded: bool
    model_label: str
    last_stats: Any
    context_report: str

    def load(self, progress: Callable[..., None] | None = None) -> None: ...
    def use_patient(self, patient: Patient, store: Any = None) -> str: ...
    def stream_analysis(
        self, patient: Patient, question: str, *, cancel: threading.Event, guidance: Any = None
    ) -> Iterator[str]: ...
    def parse_analysis(self, text: str) -> AnalysisDraft: ...
    def stream_regenerate_item(
        self,
        patient: Patient,
        question: str,
        draft: AnalysisDraft,
        section: str,
        item_id: str,
        *,
        cancel: threading.Event,
    ) -> Iterator[str]: ...
    def stream_chat(
        self,
        patient: Patient,
        history: list[ChatMessage],
        message: str,
        *,
        cancel: threading.Event,
    ) -> Iterator[str]: ...


TrainingRunner = Callable[..., Iterator[dict[str, Any]]]


def real_store_class() -> VaultOpener:
    from engine.vault.store import Store

    return Store  # type: ignore[return-value]


def real_assistant(settings: Settings) -> AssistantLike:
    from engine.inference.assistant import Assistant

    return Assistant(settings)  # type: ignore[return-value]


def stats_dict(stats: Any) -> dict[str, Any]:
    """``GenerationStats`` (dataclass or pydantic) as a plain dict; ``{}`` when absent."""
    if stats is None:
        return {}
    if hasattr(stats, "model_dump"):
        return dict(stats.model_dump())
    if hasattr(stats, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(stats)
    return dict(getattr(stats, "__dict__", {}))


def find_training_runner() -> TrainingRunner | None:
    """The per-patient training runner from ``engine.training``, if this build has one."""
    try:
        from engine.training.runner import TrainingRun
    except ImportError:
        return None

    def run_training(
        *, patient: Patient, store: Any, settings: Settings, cancel: threading.Event
    ) -> Iterator[dict[str, Any]]:
        """Yield the subprocess's progress as dicts; ``cancel`` stops the subprocess."""
        run = TrainingRun(store, patient.id, settings)
        done = threading.Event()

        def watch_cancel() -> None:
            while not done.is_set():
                if cancel.wait(0.1):
                    run.cancel()
                    return

        threading.Thread(target=watch_cancel, name="training-cancel", daemon=True).start()
        try:
            for event in run.events():
                yield {
                    "phase": event.phase,
                    "step": event.step,
                    "total_steps": event.total_steps,
                    "loss": event.loss,
                    "tokens_per_s": event.tokens_per_s,
                    "eta_s": event.eta_s,
                    "message": event.message,
                }
        finally:
            done.set()

    return run_training


def chat_history_io() -> tuple[Callable[..., list[ChatMessage]], Callable[..., None]] | None:
    """``engine.vault.chat``'s encrypted history helpers, when present."""
    try:
        chat = importlib.import_module("engine.vault.chat")
    except ImportError:
        return None
    load, save = getattr(chat, "load_history", None), getattr(chat, "save_history", None)
    return (load, save) if callable(load) and callable(save) else None
