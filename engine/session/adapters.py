"""A patient's adapter as Session actions: train it, use, roll back, export, compare.

Training runs in a subprocess (``engine.session.training``) and is audited as started,
then finished, killed or failed whatever way it ends. Rolling back, exporting and the
counselor's Compare picks each write their own audit entry.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from engine.errors import PhyAssistError
from engine.session.training import cancellable, run_training
from engine.session.vault_access import VaultLocked

if TYPE_CHECKING:
    from pathlib import Path

    from engine.inference.compare import DraftPair
    from engine.records import Patient, PreferenceChoice
    from engine.session.backend import VaultStore
    from engine.training.runner import TrainingEvent
    from engine.training.versions import AdapterVersion

T = TypeVar("T")


class AdapterActions:
    """Training and adapter methods of :class:`~engine.session.Session` (a base of it; the
    Session provides ``settings``, ``origin``, ``_training_runner``, ``_model_lock``,
    ``_patient_in_model``, ``_vault``, ``_audit``, ``use_patient`` and ``wait_ready``)."""

    _vault: Callable[..., Any]
    _audit: Callable[..., None]

    def train(self, patient: Patient, cancel: threading.Event) -> Iterator[dict[str, Any]]:
        """Train this patient's adapter in a subprocess; yields progress dicts (phase, step,
        total_steps, loss, tokens_per_s, eta_s, message). Audited as started, then finished,
        killed (``cancel``, Ctrl-C) or failed. Raises like the runner does."""
        runner = self._training_runner or run_training
        store = self._vault(lambda s: s)  # the runner takes its own turns on the vault
        events = runner(patient=patient, store=store, settings=self.settings, cancel=cancel)
        return self._audited_training(patient.id, events, cancel)

    def training_events(
        self,
        patient_id: str,
        cancel: threading.Event,
        *,
        overrides: dict[str, Any] | None = None,
    ) -> Iterator[TrainingEvent]:
        """:meth:`train` for the command line: the runner's own ``TrainingEvent`` objects,
        with training overrides (epochs, steps, preference method)."""
        from engine.training.runner import TrainingRun

        store = self._vault(lambda s: s)
        run = TrainingRun(store, patient_id, self.settings, overrides=overrides)
        return self._audited_training(patient_id, cancellable(run, cancel), cancel)

    def _audited_training(
        self, patient_id: str, events: Iterator[T], cancel: threading.Event
    ) -> Iterator[T]:
        self._vault(lambda s: self._audit(s, "training_started", patient_id))
        outcome, detail = "training_failed", ""
        try:
            for event in events:
                yield event
                if cancel.is_set():
                    break
            outcome = "training_killed" if cancel.is_set() else "training_finished"
        except BaseException as exc:
            stopped = cancel.is_set() or isinstance(exc, KeyboardInterrupt)
            outcome = "training_killed" if stopped else "training_failed"
            detail = type(exc).__name__
            raise
        finally:
            with contextlib.suppress(VaultLocked):  # locked meanwhile: nothing to write to
                self._vault(lambda s: self._audit(s, outcome, patient_id, detail or self.origin))

    def after_training(self, patient: Patient) -> str | None:
        """Use the adapter just trained (returns the model's new label)."""
        return self.use_patient(patient, force=True)

    def rollback_adapter(self, patient_id: str, version: int | None = None) -> tuple[int, int]:
        """Make an earlier adapter version active; returns (previous, now active)."""
        from engine.model.adapters import AdapterRegistry
        from engine.training.versions import rollback

        def roll(store: VaultStore) -> tuple[int, int]:
            current = AdapterRegistry(store).active(patient_id)
            now = rollback(store, patient_id, version)
            self._audit(store, "adapter_activated", patient_id, f"rollback v{current}->v{now}")
            return current, now

        return self._vault(roll)

    def adapter_versions(self, patient_id: str) -> list[AdapterVersion]:
        """The patient's adapter versions, oldest first, with their cards and which is active."""
        from engine.training.versions import list_versions

        return self._vault(lambda store: list_versions(store, patient_id))

    def compare(
        self, patient: Patient, question: str, cancel: threading.Event, *, observed: str = ""
    ) -> DraftPair:
        """Draft ``question`` with the domain model (left) and the patient's adapter (right),
        for the counselor to pick from (blocking: call it from a worker). Waits for the model;
        nothing else switches adapters meanwhile, and the patient's adapter is in use after.
        Raises ``AdapterNotFound`` (nothing to compare), ``GenerationCancelled`` or
        ``PhyAssistError`` (the model is not available)."""
        from engine.errors import GenerationCancelled
        from engine.inference.compare import compare_drafts

        if not self.wait_ready(cancel):
            if cancel.is_set():
                raise GenerationCancelled()
            raise PhyAssistError(f"The model is not available: {self.model_state.detail}")
        assistant = self.model
        store = self._vault(lambda s: s)  # compare_drafts takes its own turns on the vault
        with self._model_lock:
            try:
                return compare_drafts(
                    assistant, patient, store, question, cancel=cancel, observed=observed
                )
            finally:
                self._patient_in_model = patient.id  # compare_drafts leaves this patient's

    def record_preferences(self, patient_id: str, choices: list[PreferenceChoice]) -> int:
        """Keep the counselor's Compare picks (encrypted, in the patient file) as training
        signal; audited with counts only. Returns how many were kept."""
        from engine.inference.compare import choice_audit_detail, record_choice

        def keep(store: VaultStore) -> int:
            kept = record_choice(store, patient_id, choices)
            if kept:
                self._audit(store, "preference_recorded", patient_id, choice_audit_detail(choices))
            return kept

        return self._vault(keep)

    def export_adapter(self, patient_id: str, out: Path, version: int | None = None) -> Path:
        """Write an adapter UNENCRYPTED to ``out`` (audited)."""
        from engine.training.versions import export_adapter

        def export(store: VaultStore) -> Path:
            path = export_adapter(store, patient_id, out, version)
            self._audit(store, "export", patient_id, f"adapter v{version or 'active'}")
            return path

        return self._vault(export)
