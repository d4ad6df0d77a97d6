"""The app's knowledge index (engine.knowledge): opened once per unlocked vault, shared by
the Similar pane and the assistant (grounded Analysis and Chat), dropped on lock.

Kept out of app.py and the workspace so the hooks there are one line each.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

logger = logging.getLogger("phyassist.tui.knowledge")
_lock = threading.Lock()


def ensure_knowledge(app: Any) -> Any | None:
    """The index of ``app.store``, opened now if needed (blocking: call from a worker).

    ``None`` where there is no vault open or the store is not a real one (test doubles)."""
    with _lock:
        store = getattr(app, "store", None)
        if store is None or not hasattr(store, "record_stamps"):
            return None
        index = getattr(app, "knowledge", None)
        if index is None or index.store is not store:
            from engine.knowledge.index import KnowledgeIndex

            embedder = "auto" if app.settings.knowledge.embedding else None
            try:
                index = KnowledgeIndex(store, embedder=embedder).load()
            except Exception:  # the product works without it; say so in the log only
                logger.exception("the knowledge index could not be opened")
                return None
            if getattr(app, "store", None) is not store:
                return None  # locked meanwhile
            app.knowledge = index
        assistant = getattr(app, "assistant", None)
        if assistant is not None and hasattr(assistant, "knowledge"):
            assistant.knowledge = index
        return index


def drop_knowledge(app: Any) -> None:
    """Forget the index (the vault is being locked): its decrypted entries go with it."""
    with _lock:
        app.knowledge = None
        assistant = getattr(app, "assistant", None)
        if assistant is not None and hasattr(assistant, "knowledge"):
            assistant.knowledge = None
