"""The model's background load and readiness, for :class:`~engine.session.Session`.

Loading the model (importing torch, reading the weights) takes seconds to minutes, so it
runs in its own thread from the moment a front end asks (``start``). Its progress is a
:class:`ModelState` that listeners hear about (from the loading thread) and that
``wait_ready`` waits on with a ``threading.Condition``: woken by the load finishing or
failing, or by a :class:`CancelFlag` being set, never by polling.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from engine.errors import PhyAssistError

if TYPE_CHECKING:
    from engine.session.backend import ModelBackend
    from engine.settings import Settings

__all__ = ["CancelFlag", "ModelLoader", "ModelState"]


@dataclass(frozen=True)
class ModelState:
    """Where the background model load stands; ``label`` once ready, ``detail`` progress/why."""

    state: Literal["idle", "loading", "ready", "failed"] = "idle"
    label: str = ""
    detail: str = ""


class CancelFlag(threading.Event):
    """A cancel flag that also wakes the waits on the model (no polling)."""

    def __init__(self, condition: threading.Condition) -> None:
        super().__init__()
        self._condition = condition

    def set(self) -> None:
        super().set()
        with self._condition:
            self._condition.notify_all()


def _real_assistant(settings: Settings) -> ModelBackend:
    """The model in this process (``backend.kind = "local"``) or on a server (``"openai"``)."""
    if settings.backend.kind == "openai":
        from engine.inference.remote import RemoteAssistant  # transformers: load thread only

        return RemoteAssistant(settings)
    from engine.inference.assistant import Assistant  # torch: in the load thread only

    return Assistant(settings)


class ModelLoader:
    """Builds and loads the model once, in a thread; says how far it got."""

    def __init__(
        self,
        settings: Settings,
        assistant: ModelBackend | None = None,
        factory: Callable[[Settings], ModelBackend] | None = None,
    ) -> None:
        self.settings = settings
        self._assistant = assistant
        self._factory = factory or _real_assistant
        self._state = ModelState()
        self._condition = threading.Condition()
        self._listeners: list[Callable[[ModelState], None]] = []
        self._started = False

    @property
    def state(self) -> ModelState:
        return self._state

    @property
    def ready_backend(self) -> ModelBackend | None:
        """The loaded model, or ``None`` until it is ready."""
        return self._assistant if self._state.state == "ready" else None

    @property
    def label(self) -> str:
        return self._assistant.model_label if self._assistant is not None else ""

    def subscribe(self, listener: Callable[[ModelState], None]) -> None:
        with self._condition:
            self._listeners.append(listener)
            state = self._state
        listener(state)

    def _set(self, state: ModelState) -> None:
        with self._condition:
            self._state = state
            listeners = list(self._listeners)
            self._condition.notify_all()
        for listener in listeners:
            with contextlib.suppress(Exception):  # a front end gone away must not stop the load
                listener(state)

    def start(self) -> bool:
        with self._condition:
            if self._started:
                return False
            self._started = True
        self._set(ModelState("loading", "", ""))
        threading.Thread(target=self._load, name="load-model", daemon=True).start()
        return True

    def _load(self) -> None:
        def progress(*args: Any, **kwargs: Any) -> None:
            detail = " ".join(str(a) for a in args if a is not None)
            detail = detail or " ".join(f"{v}" for v in kwargs.values())
            self._set(ModelState("loading", "", detail[:200]))

        try:
            if self._assistant is None:
                self._assistant = self._factory(self.settings)
            if not self._assistant.loaded:
                self._assistant.load(progress=progress)
        except Exception as exc:
            message = (
                str(exc) if isinstance(exc, PhyAssistError) else f"{type(exc).__name__}: {exc}"
            )
            self._set(ModelState("failed", "", message))
            return
        self._set(ModelState("ready", self._assistant.model_label, ""))

    def new_cancel(self) -> threading.Event:
        return CancelFlag(self._condition)

    def wait_ready(
        self, cancel: threading.Event | None = None, timeout: float | None = None
    ) -> bool:
        with self._condition:
            self._condition.wait_for(
                lambda: (
                    self._state.state in ("ready", "failed")
                    or (cancel is not None and cancel.is_set())
                ),
                timeout,
            )
            return self._state.state == "ready"
