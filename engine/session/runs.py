"""A generation as one object: stream its ``chunks``, then read its typed ``result()``.

``Session.analysis`` / ``regenerate_item`` / ``chat`` return a :class:`Run` at once (no
model needed yet). Iterating ``chunks`` in a worker thread waits for the model (woken, not
polled), puts the patient's adapter in, streams the text and ends; ``result()`` then gives
the outcome of that kind: :class:`AnalysisOutcome` (the parsed draft), :class:`ItemOutcome`
(the cleaned item text) or :class:`ChatOutcome` (the reply), each with the run's
``GenerationStats`` and context report. ``cancel()`` from any thread stops the wait or the
stream within a token; the text so far is kept and still parsed. Everything a run produces
lives on the run: nothing is left on shared attributes for a caller to pick up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Literal, TypeVar

from engine.errors import GenerationCancelled, PhyAssistError

if TYPE_CHECKING:
    from engine.inference.stream import GenerationStats, TextStream
    from engine.records import AnalysisDraft, Patient
    from engine.session.backend import ModelBackend
    from engine.session.core import Session

__all__ = [
    "AnalysisOutcome",
    "ChatOutcome",
    "ItemOutcome",
    "Outcome",
    "Run",
    "RunKind",
]

RunKind = Literal["analysis", "regenerate_item", "regenerate_all", "chat"]


@dataclass(frozen=True)
class Outcome:
    """What every run ends with: its text, whether it was stopped or failed, its cost."""

    kind: RunKind
    text: str  # everything that streamed
    cancelled: bool = False
    error: str | None = None  # for the counselor; the text so far is kept
    stats: GenerationStats | None = None
    context_report: str = ""  # what of the record fit the prompt
    caveat: str = ""  # the engine's warning about this output's reliability (e.g. language)
    # the stream's own reading of ``text`` (TextStream.draft_of), for Analysis runs
    draft_of: Callable[[str], AnalysisDraft] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class AnalysisOutcome(Outcome):
    """A whole draft (Analysis or regenerate-all), parsed in the engine."""

    draft: AnalysisDraft | None = None  # None: nothing usable streamed, or it failed


@dataclass(frozen=True)
class ItemOutcome(Outcome):
    """One regenerated item: ``item_text`` is its new text (numbering, heading, quotes gone)."""

    section: str = ""
    item_id: str = ""
    item_text: str = ""


@dataclass(frozen=True)
class ChatOutcome(Outcome):
    """A chat reply (``reply`` is the text as it should be kept in the history)."""

    reply: str = ""


OutcomeT = TypeVar("OutcomeT", bound=Outcome)
Start = Callable[["ModelBackend", threading.Event], "TextStream"]
Finish = Callable[[Outcome], OutcomeT]


class Run(Generic[OutcomeT]):
    """One generation. Iterate ``chunks`` once (in a worker thread), then call ``result()``."""

    def __init__(
        self,
        session: Session,
        kind: RunKind,
        patient: Patient | None,
        start: Start,
        finish: Finish[OutcomeT],
    ) -> None:
        self.kind = kind
        self.patient = patient
        self._session = session
        self._start = start
        self._finish = finish
        self._cancel = session.new_cancel()
        self._stream: TextStream | None = None
        self._pieces: list[str] = []
        self._error: str | None = None
        self._iterated = False
        self._done = False
        self._outcome: OutcomeT | None = None

    # -- control (any thread) --------------------------------------------------------------
    def cancel(self) -> None:
        """Stop waiting or streaming; the text so far is kept."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    # -- the worker side -------------------------------------------------------------------
    def wait_for_model(self) -> bool:
        """Block until the model is ready (``False``: cancelled, or the model failed)."""
        return self._session.wait_ready(self._cancel)

    @property
    def chunks(self) -> Iterator[str]:
        """The text as it streams (once). Errors end it and are kept for ``result()``."""
        if self._iterated:
            raise RuntimeError("a Run's chunks can be iterated once")
        self._iterated = True
        return self._generate()

    def _generate(self) -> Iterator[str]:
        session = self._session
        try:
            if not self.wait_for_model():
                if not self.cancelled:
                    self._error = f"The model is not available: {session.model_state.detail}"
                return
            if self.patient is not None:
                session.use_patient(self.patient)
            self._stream = self._start(session.model, self._cancel)
            for chunk in self._stream:
                if self.cancelled:
                    # the engine flushes what it held back when stopped: a character cut in
                    # half by the stop decodes as U+FFFD, which is not text the model wrote
                    chunk = chunk.rstrip("\ufffd")
                    if not chunk:
                        break
                self._pieces.append(chunk)
                yield chunk
                if self.cancelled:
                    break
        except GenerationCancelled:
            pass
        except PhyAssistError as exc:
            self._error = str(exc)
        except Exception as exc:  # keep the partial text whatever the engine does
            self._error = f"Generation failed: {type(exc).__name__}: {exc}"
        finally:
            if self._stream is not None:
                self._stream.close()
            self._done = True

    def result(self) -> OutcomeT:
        """The typed outcome (runs the stream to its end first if nobody iterated it)."""
        if self._outcome is None:
            if not self._iterated:
                for _ in self.chunks:
                    pass
            elif not self._done:
                raise RuntimeError("result() before the chunks were finished")
            stream = self._stream
            base = Outcome(
                kind=self.kind,
                text="".join(self._pieces),
                cancelled=self.cancelled,
                error=self._error,
                stats=stream.stats if stream is not None else None,
                context_report=stream.context_report if stream is not None else "",
                caveat=stream.caveat if stream is not None else "",
                draft_of=getattr(stream, "draft_of", None),
            )
            self._outcome = self._finish(base)
        return self._outcome
