"""The app's knowledge index (engine.knowledge): one per unlocked vault, shared by the
Similar pane and the assistant (grounded Analysis and Chat), dropped on lock.

Opening it costs seconds on a large vault (every patient's encrypted shard, BM25 built in
memory; importing scipy and jieba alone stalled the first frames under load) and holds the
GIL in bursts, so it is kept off the start-up path: the assistant gets a proxy, and the
index is read ``settings.knowledge.warm_up_s`` after the vault and model are ready, or on
first use (a Similar lookup or a generation, both in workers), whichever comes first.
Kept out of app.py and the workspace so the hooks there are one line each.
"""

from __future__ import annotations

import logging
import threading
from functools import partial
from typing import Any

logger = logging.getLogger("phyassist.tui.knowledge")
_lock = threading.Lock()


def ensure_knowledge(app: Any, *, load: bool = True) -> Any | None:
    """The index of ``app.store`` (read now when ``load``); blocking: call from a worker.

    ``None`` where no vault is open or the store is not a real one (test doubles)."""
    with _lock:
        store = getattr(app, "store", None)
        if store is None or not hasattr(store, "record_stamps"):
            return None
        index = getattr(app, "knowledge", None)
        if index is None or index.store is not store:
            from engine.knowledge.index import KnowledgeIndex

            embedder = "auto" if app.settings.knowledge.embedding else None
            index = KnowledgeIndex(store, embedder=embedder)
            app.knowledge = index
        assistant = getattr(app, "assistant", None)
        if assistant is not None and hasattr(assistant, "knowledge"):
            assistant.knowledge = index
    if load and not index.loaded:
        try:
            index.sync()  # reads it (once; the index's own lock serialises callers)
        except Exception:  # the product works without it; the log says why
            logger.exception("the knowledge index could not be opened")
            return None
    return index


class KnowledgeProxy:
    """What the assistant holds until the index is read: the same calls the assistant makes
    (``len``, ``sync``, ``query``), each opening the index first (in the caller's worker).
    Made on the UI thread without importing the index's libraries (scipy, jieba)."""

    def __init__(self, app: Any) -> None:
        self._app = app

    def _index(self) -> Any | None:
        return ensure_knowledge(self._app)

    def __len__(self) -> int:
        index = self._index()
        return len(index) if index is not None else 0

    def sync(self) -> int:
        index = self._index()
        return index.sync() if index is not None else 0

    def query(self, text: str, k: int = 5, **kwargs: Any) -> list:
        index = self._index()
        return index.query(text, k, **kwargs) if index is not None else []


def attach_knowledge(app: Any) -> None:
    """On the UI thread, once the vault (or the model) is ready: give the assistant a proxy
    to the index and schedule reading it (nothing slow happens here)."""
    store = getattr(app, "store", None)
    if store is None or not hasattr(store, "record_stamps"):
        return
    assistant = getattr(app, "assistant", None)
    has_hook = assistant is not None and hasattr(assistant, "knowledge")
    if has_hook and getattr(app, "knowledge", None) is None:
        assistant.knowledge = KnowledgeProxy(app)
    delay = app.settings.knowledge.warm_up_s
    if delay > 0:
        app.set_timer(delay, partial(_warm_up, app, store))


def _warm_up(app: Any, store: Any) -> None:
    if getattr(app, "store", None) is not store:
        return  # locked (or another vault) since
    index = getattr(app, "knowledge", None)
    if index is not None and index.loaded:
        return
    app.run_worker(
        partial(ensure_knowledge, app),
        name="warm-knowledge",
        group="knowledge",
        exclusive=True,
        thread=True,
        exit_on_error=False,
    )


def drop_knowledge(app: Any) -> None:
    """Forget the index (the vault is being locked): its decrypted entries go with it."""
    with _lock:
        app.knowledge = None
        assistant = getattr(app, "assistant", None)
        if assistant is not None and hasattr(assistant, "knowledge"):
            assistant.knowledge = None
