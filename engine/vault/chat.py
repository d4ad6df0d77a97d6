"""Chat history per patient, kept encrypted with the patient (store blob ``chat``).

The blob is JSON ``{"version": 1, "messages": [...]}``; a bare list (the TUI's fallback
format) is read too. Chat without an open patient is not stored.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from engine.errors import TamperedFile
from engine.records import ChatMessage

CHAT_BLOB = "chat"
CHAT_VERSION = 1


class ChatStore(Protocol):
    def read_blob(self, patient_id: str, kind: str) -> bytes | None: ...
    def write_blob(self, patient_id: str, kind: str, data: bytes) -> None: ...


def encode_history(messages: list[ChatMessage]) -> bytes:
    payload = {
        "version": CHAT_VERSION,
        "messages": [m.model_dump(mode="json") for m in messages if m.role != "system"],
    }
    return json.dumps(payload, ensure_ascii=False).encode("utf-8")


def decode_history(data: bytes) -> list[ChatMessage]:
    try:
        payload: Any = json.loads(data.decode("utf-8"))
        raw = payload["messages"] if isinstance(payload, dict) else payload
        return [ChatMessage.model_validate(m) for m in raw]
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise TamperedFile("chat history", f"not a chat history: {exc}") from exc


def load_history(store: ChatStore, patient_id: str) -> list[ChatMessage]:
    """The patient's chat so far, oldest first (empty if none)."""
    data = store.read_blob(patient_id, CHAT_BLOB)
    return decode_history(data) if data else []


def save_history(store: ChatStore, patient_id: str, messages: list[ChatMessage]) -> None:
    store.write_blob(patient_id, CHAT_BLOB, encode_history(messages))


def append_turn(store: ChatStore, patient_id: str, user: str, assistant: str) -> list[ChatMessage]:
    """Add one user/assistant exchange and save; returns the new history."""
    history = load_history(store, patient_id)
    history.append(ChatMessage(role="user", content=user))
    history.append(ChatMessage(role="assistant", content=assistant))
    save_history(store, patient_id, history)
    return history
