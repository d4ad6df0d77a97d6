"""Fuzz every decoder that reads bytes from disk: random or mutated input must raise only
the documented error types (TamperedFile / UnknownSchema / AdapterLoadError), never crash
with anything else, and never return partially decrypted data."""

from __future__ import annotations

import contextlib
import json
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import AdapterLoadError, TamperedFile, UnknownSchema
from engine.records import Note
from engine.trust.audit import AuditLog
from engine.vault import crypto
from engine.vault import header as vault
from engine.vault.chat import decode_history

DOCUMENTED = (TamperedFile, UnknownSchema)
KEY = bytes(range(32))
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# examples that write real vault files (fsync) are slower: fewer of them
FUZZ_FS = settings(FUZZ, max_examples=50)


def _mutations():
    """(kind, position fraction, value) describing one damage to a byte string."""
    return st.tuples(
        st.sampled_from(["flip", "truncate", "insert", "delete", "replace_tail"]),
        st.floats(min_value=0, max_value=1, exclude_max=True),
        st.binary(min_size=1, max_size=16),
    )


def _mutate(data: bytes, how: tuple) -> bytes:
    kind, frac, value = how
    i = int(frac * len(data)) if data else 0
    if kind == "flip":
        return data[:i] + bytes([data[i] ^ (value[0] or 1)]) + data[i + 1 :] if data else value
    if kind == "truncate":
        return data[:i]
    if kind == "insert":
        return data[:i] + value + data[i:]
    if kind == "delete":
        return data[:i] + data[i + len(value) :]
    return data[:i] + value


@given(blob=st.binary(max_size=400))
@FUZZ
def test_decrypt_random_bytes(blob: bytes) -> None:
    with pytest.raises(DOCUMENTED):
        crypto.decrypt(KEY, blob, b"aad")


@given(how=_mutations())
@FUZZ
def test_decrypt_mutated_envelope(how) -> None:
    good = crypto.encrypt(KEY, "来访者的陈述".encode(), b"p|record")
    bad = _mutate(good, how)
    if bad == good:
        return
    with pytest.raises(DOCUMENTED):
        crypto.decrypt(KEY, bad, b"p|record")


@given(data=st.one_of(st.binary(max_size=600), _mutations()))
@FUZZ_FS
def test_vault_header_parse(data, store, tmp_path) -> None:
    real = vault.header_path(store.vault_dir).read_bytes()
    raw = data if isinstance(data, bytes) else _mutate(real, data)
    try:
        header = vault.VaultHeader.parse(raw, tmp_path / "vault.json")
    except DOCUMENTED:
        return
    # a mutation that still parses (whitespace, key order) must not unlock with changed fields
    assert isinstance(header, vault.VaultHeader)


@given(how=_mutations(), name=st.sampled_from(["record.bin", "key.bin", "blobs/draft.bin"]))
@FUZZ_FS
def test_mutated_patient_files(how, name, store) -> None:
    patient = store.create_patient("赵某")
    store.add_note(patient.id, Note(question="总是失眠，想很多事情"))
    store.write_blob(patient.id, "draft", b'{"draft": 1}')
    path = store.vault_dir / "patients" / patient.id / name
    good = path.read_bytes()
    bad = _mutate(good, how)
    path.write_bytes(bad)
    store._data_keys.clear()  # force the key file to be read again
    try:
        if name == "blobs/draft.bin":
            got = store.read_blob(patient.id, "draft")
            assert bad == good and got == b'{"draft": 1}'
        else:
            got = store.load_patient(patient.id)
            assert bad == good and got.notes[0].question == "总是失眠，想很多事情"
    except DOCUMENTED:
        assert bad != good
    finally:
        store.delete_patient(patient.id)


@given(data=st.one_of(st.binary(max_size=300), _mutations()))
@FUZZ_FS
def test_mutated_index_is_rebuilt(data, store, reopen) -> None:
    """A damaged index never stops the vault from opening: it is rebuilt from the records."""
    store.close()
    with reopen() as writer:
        if not writer.list_patients():
            writer.create_patient("钱某")
    path = store.vault_dir / "index.bin"
    backup = path.read_bytes()
    path.write_bytes(data if isinstance(data, bytes) else _mutate(backup, data))
    with reopen(writer=False) as ro:
        assert [s.name for s in ro.list_patients()] == ["钱某"]
    with reopen() as writer:  # a writer repairs the file for the next example
        assert [s.name for s in writer.list_patients()] == ["钱某"]


@given(data=st.one_of(st.binary(max_size=300), st.text(max_size=200).map(str.encode)))
@FUZZ
def test_chat_history_decoder(data: bytes) -> None:
    with contextlib.suppress(TamperedFile):
        decode_history(data)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(value=_json_values)
@FUZZ
def test_chat_history_decoder_on_json(value) -> None:
    with contextlib.suppress(TamperedFile):
        decode_history(json.dumps(value).encode())


@given(data=st.one_of(st.binary(max_size=3000), _mutations()))
@FUZZ
def test_adapter_container_decoder(data) -> None:
    torch = pytest.importorskip("torch")
    from engine.model.adapters import pack_adapter, unpack_adapter

    good = pack_adapter({"r": 4, "lora_alpha": 8}, {"w": torch.zeros(2, 2)})
    raw = data if isinstance(data, bytes) else _mutate(good, data)
    try:
        config, state = unpack_adapter(raw)
    except AdapterLoadError:
        return
    assert isinstance(config, dict) and isinstance(state, dict)


@given(lines=st.lists(st.one_of(st.text(max_size=80), _json_values.map(json.dumps)), max_size=6))
@FUZZ_FS
def test_audit_segment_garbage(lines, store) -> None:
    """Any content in an audit segment: verify() reports, never raises."""
    for kind in store.list_vault_blobs("audit/"):
        store.delete_vault_blob(kind)
    log = AuditLog(store)
    log.append("unlock")
    store.write_vault_blob("audit/seg-000000", "\n".join(lines).encode())
    result = log.verify()
    assert isinstance(result.ok, bool)
    if lines and not result.ok:
        assert result.problems


def test_copied_vault_with_other_passphrase_does_not_mix(store, tmp_path, settings) -> None:
    """A record copied from another vault (other master key) fails authentication."""
    from engine.settings import Settings, StoreSettings
    from engine.vault.store import Store

    p = store.create_patient("孙某")
    other_dir = tmp_path / "other"
    with Store.create(
        other_dir, "another passphrase", settings=Settings(store=StoreSettings(scrypt_log2_n=10))
    ) as other:
        q = other.create_patient("李某")
        shutil.copy(
            store.vault_dir / "patients" / p.id / "record.bin",
            other_dir / "patients" / q.id / "record.bin",
        )
        with pytest.raises(TamperedFile):
            other.load_patient(q.id)


# Deeply nested JSON makes json.loads raise RecursionError, which is not a documented error.
# vault.json is plaintext (read before anything is authenticated), so anyone who can write
# to the data directory could otherwise make an open crash with a traceback instead of a
# clear message. Both decoders must report it as TamperedFile.
DEEP = [b"[" * 100_000, b'{"a":' * 100_000]


@pytest.mark.parametrize("raw", DEEP, ids=["lists", "objects"])
def test_vault_header_deeply_nested(raw: bytes, tmp_path) -> None:
    with pytest.raises(TamperedFile):
        vault.VaultHeader.parse(raw, tmp_path / "vault.json")


@pytest.mark.parametrize("raw", DEEP, ids=["lists", "objects"])
def test_chat_history_deeply_nested(raw: bytes) -> None:
    with pytest.raises(TamperedFile):
        decode_history(raw)


@pytest.mark.parametrize("raw", DEEP, ids=["lists", "objects"])
def test_audit_deeply_nested(raw: bytes, store) -> None:
    log = AuditLog(store)
    log.append("unlock")
    store.write_vault_blob("audit/seg-000000", raw)
    result = log.verify()
    assert not result.ok and "cannot be read" in result.summary()
