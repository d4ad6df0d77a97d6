"""The open vault's knowledge index (engine.knowledge), held by the Session: one per unlocked
vault, shared by the Similar pane and the model (grounded Analysis and Chat), dropped on lock.

Opening it costs seconds on a large vault (every patient's encrypted shard, BM25 built in
memory; importing scipy and jieba alone stalled the TUI's first frames under load), so it is
never read on the start-up path: the model gets a :class:`KnowledgeProxy` that reads the
index on first use (in the generation's worker), and a front end may warm it up from a
worker of its own (``Session.knowledge()``) a little after unlock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from engine.errors import PhyAssistError

if TYPE_CHECKING:
    from engine.knowledge.entries import Entry, Match
    from engine.knowledge.index import KnowledgeIndex
    from engine.records import Patient
    from engine.settings import Settings

logger = logging.getLogger("phyassist.session.knowledge")


class KnowledgeHolder:
    """The index of one open vault, created lazily and forgotten with it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._index: KnowledgeIndex | None = None

    def get(self, store: Any, *, load: bool = True) -> KnowledgeIndex | None:
        """The index of ``store`` (read now when ``load``); blocking: call from a worker.
        ``None`` when it cannot be read (the product works without it; the log says why)."""
        with self._lock:
            index = self._index
            if index is None or index.store is not store:
                from engine.knowledge.index import KnowledgeIndex

                embedder = "auto" if self.settings.knowledge.embedding else None
                index = KnowledgeIndex(store, embedder=embedder)
                self._index = index
        if load and not index.loaded:
            try:
                index.sync()  # reads it (once; the index's own lock serialises callers)
            except Exception:
                logger.exception("the knowledge index could not be opened")
                return None
        return index

    def loaded(self, store: Any) -> KnowledgeIndex | None:
        """The index of ``store`` if it was read already (never blocks on reading it)."""
        index = self._index
        if index is None or index.store is not store or not index.loaded:
            return None
        return index

    def entry(self, store: Any, key: str) -> Entry | None:
        index = self.loaded(store)
        return index.entry(key) if index is not None else None

    def note_saved(self, store: Any, patient: Patient) -> None:
        """Index the patient's notes now (a read index only; an unread one reads them later)."""
        index = self.loaded(store)
        if index is not None:
            with suppress(PhyAssistError):  # locked meanwhile: the next sync catches up
                index.update_patient(patient)

    def patient_deleted(self, store: Any, patient_id: str) -> None:
        index = self.loaded(store)
        if index is not None:
            with suppress(PhyAssistError):
                index.remove_patient(patient_id)

    def drop(self) -> None:
        """Forget the index (the vault is being locked): its decrypted entries go with it."""
        with self._lock:
            self._index = None


class KnowledgeProxy:
    """What the model holds: the calls ``Assistant._grounded`` makes (``len``, ``sync``,
    ``query``), each reading the open vault's index first (in the caller's worker). Empty
    while the vault is locked."""

    def __init__(self, get: Callable[[], KnowledgeIndex | None]) -> None:
        self._get = get

    def __len__(self) -> int:
        index = self._get()
        return len(index) if index is not None else 0

    def sync(self) -> int:
        index = self._get()
        return index.sync() if index is not None else 0

    def query(self, text: str, k: int = 5, **kwargs: Any) -> list[Match]:
        index = self._get()
        return index.query(text, k, **kwargs) if index is not None else []
