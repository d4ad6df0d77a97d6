"""Per-patient training: progress, ETA and a live loss plot; Esc stops it.

The runner (from ``engine.training``) drives a subprocess and yields progress events as
dicts (``step``, ``total_steps``, ``loss``, ``tokens_per_s``, ``eta_s``, ``phase``); this
screen only shows them. Training runs in a thread worker so the UI keeps answering keys.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Label, ProgressBar, Static

from engine.errors import PhyAssistError
from phyassist_tui.bindings import bindings_for
from phyassist_tui.messages import TrainingDone, TrainingProgress
from phyassist_tui.widgets.loss_plot import LossPlot
from phyassist_tui.widgets.text import clean

TrainingStart = Callable[[threading.Event], Iterator[dict[str, Any]]]


def format_eta(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "ETA --"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"ETA {hours}:{minutes:02d}:{secs:02d}" if hours else f"ETA {minutes}:{secs:02d}"


class TrainScreen(ModalScreen[bool]):
    """Dismisses with ``True`` when a new adapter was trained."""

    BINDINGS = bindings_for("train")
    DEFAULT_CSS = """
    TrainScreen { align: center middle; }
    TrainScreen > #train-box {
        width: 100%; max-width: 110; height: 100%; max-height: 36;
        border: round $primary; background: $surface; padding: 0 1;
    }
    TrainScreen #train-phase { text-style: bold; }
    TrainScreen #train-stats { color: $text-muted; }
    TrainScreen ProgressBar { margin: 1 0; }
    TrainScreen #train-result { height: auto; }
    """

    def __init__(self, patient_name: str, start: TrainingStart) -> None:
        super().__init__()
        self.patient_name = patient_name
        self.start = start
        self.cancel = threading.Event()
        self.finished = False
        self.succeeded = False
        self.outcome = ""  # what the result line says once finished

    def compose(self) -> ComposeResult:
        with Vertical(id="train-box") as box:
            box.border_title = f"Training the adapter for {clean(self.patient_name)}"
            yield Label("starting…", id="train-phase", markup=False)
            yield ProgressBar(total=None, show_eta=False, id="train-progress")
            yield Label("", id="train-stats", markup=False)
            yield LossPlot(id="loss-plot")
            yield Static("", id="train-result", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.run_worker(self._train, name="train-adapter", thread=True, exit_on_error=False)

    def _train(self) -> None:
        try:
            for event in self.start(self.cancel):
                self.post_message(TrainingProgress(dict(event)))
                if self.cancel.is_set():
                    break
        except PhyAssistError as exc:
            self.post_message(TrainingDone(False, self.cancel.is_set(), str(exc)))
            return
        except Exception as exc:
            self.post_message(TrainingDone(False, self.cancel.is_set(), f"Training failed: {exc}"))
            return
        self.post_message(TrainingDone(not self.cancel.is_set(), self.cancel.is_set()))

    @on(TrainingProgress)
    def _progress(self, message: TrainingProgress) -> None:
        event = message.event
        phase = str(event.get("phase", "training"))
        self.query_one("#train-phase", Label).update(phase)
        step, total = event.get("step"), event.get("total_steps")
        bar = self.query_one(ProgressBar)
        if isinstance(total, int | float) and total > 0:
            bar.update(total=total, progress=float(step or 0))
        stats = [f"step {step}/{total}" if step is not None else ""]
        if event.get("loss") is not None:
            stats.append(f"loss {float(event['loss']):.4f}")
        if event.get("tokens_per_s") is not None:
            stats.append(f"{float(event['tokens_per_s']):.0f} tok/s")
        stats.append(format_eta(event.get("eta_s")))
        self.query_one("#train-stats", Label).update(" · ".join(s for s in stats if s))
        if event.get("loss") is not None and step is not None:
            self.query_one(LossPlot).add_point(int(step), float(event["loss"]))

    @on(TrainingDone)
    def _done(self, message: TrainingDone) -> None:
        self.finished = True
        self.succeeded = message.ok
        if message.ok:
            text = "Done: the new adapter is active for this patient. Esc closes."
        elif message.cancelled:
            text = "Stopped: the previous adapter stays active. Esc closes."
        else:
            text = f"{message.detail} The previous adapter stays active. Esc closes."
        self.outcome = text.removesuffix(" Esc closes.")
        self.query_one("#train-result", Static).update(text)
        self.query_one("#train-phase", Label).update(
            "finished" if message.ok else ("cancelled" if message.cancelled else "failed")
        )

    def action_cancel_training(self) -> None:
        if self.finished:
            self.dismiss(self.succeeded)
        elif not self.cancel.is_set():
            self.cancel.set()
            self.query_one("#train-phase", Label).update("stopping…")

    def on_unmount(self) -> None:
        self.cancel.set()
