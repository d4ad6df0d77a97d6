"""Per-patient training as the Session runs it: the real runner and its cancel path.

``run_training`` is the default ``TrainingRunner``: ``engine.training.runner.TrainingRun``
(a subprocess) with its events as plain dicts for a front end to show; ``cancellable``
stops the subprocess when a front end's cancel flag is set (from any thread). The audit
entries around a run are written by ``Session``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.records import Patient
    from engine.settings import Settings

__all__ = ["cancellable", "run_training"]


def cancellable(run: Any, cancel: threading.Event) -> Iterator[Any]:
    """``run.events()``, with ``cancel`` (from any thread) stopping the subprocess."""
    done = threading.Event()

    def watch_cancel() -> None:
        while not done.is_set():
            if cancel.wait(0.1):
                run.cancel()
                return

    threading.Thread(target=watch_cancel, name="training-cancel", daemon=True).start()
    try:
        yield from run.events()
    finally:
        done.set()


def run_training(
    *, patient: Patient, store: Any, settings: Settings, cancel: threading.Event
) -> Iterator[dict[str, Any]]:
    """The real runner: ``engine.training.runner.TrainingRun``'s events as dicts."""
    from engine.training.runner import TrainingRun

    for event in cancellable(TrainingRun(store, patient.id, settings), cancel):
        yield {
            "phase": event.phase,
            "step": event.step,
            "total_steps": event.total_steps,
            "loss": event.loss,
            "tokens_per_s": event.tokens_per_s,
            "eta_s": event.eta_s,
            "message": event.message,
        }
