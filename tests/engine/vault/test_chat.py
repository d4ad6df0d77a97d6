"""Chat history per patient, encrypted with the patient."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import TamperedFile
from engine.records import ChatMessage
from engine.vault.chat import CHAT_BLOB, append_turn, decode_history, load_history, save_history


def test_history_roundtrip_in_the_real_vault(real_store) -> None:
    patient = real_store.create_patient("王某")
    assert load_history(real_store, patient.id) == []
    history = append_turn(real_store, patient.id, "她最近睡眠怎么样？", "据记录，她失眠已三个月。")
    assert [m.role for m in history] == ["user", "assistant"]
    again = load_history(real_store, patient.id)
    assert [(m.role, m.content) for m in again] == [
        ("user", "她最近睡眠怎么样？"),
        ("assistant", "据记录，她失眠已三个月。"),
    ]
    for path in Path(real_store.vault_dir).rglob("*"):
        if path.is_file():
            assert "失眠已三个月".encode() not in path.read_bytes()


def test_system_messages_are_not_stored_and_old_format_reads(fake_store) -> None:
    save_history(
        fake_store,
        "p",
        [ChatMessage(role="system", content="x"), ChatMessage(role="user", content="hi")],
    )
    assert [m.role for m in load_history(fake_store, "p")] == ["user"]
    # The TUI's fallback format: a bare JSON list.
    fake_store.write_blob("p", CHAT_BLOB, b'[{"role": "user", "content": "old"}]')
    assert load_history(fake_store, "p")[0].content == "old"


def test_a_damaged_history_is_reported() -> None:
    with pytest.raises(TamperedFile):
        decode_history(b"{not json")
