"""The envelope format and the one-time transfer helpers (seal / open_sealed)."""

from __future__ import annotations

import pytest

from engine.errors import TamperedFile, UnknownSchema
from engine.vault import crypto


def test_seal_round_trip_with_chinese_payload():
    key = crypto.new_key()
    data = "适配器权重 adapter weights".encode()
    blob = crypto.seal(key, data, b"adapter|p1")
    assert crypto.open_sealed(key, blob, b"adapter|p1") == data
    assert data not in blob


def test_fresh_nonce_per_seal():
    key = crypto.new_key()
    assert crypto.seal(key, b"same", b"") != crypto.seal(key, b"same", b"")
    assert len({crypto.new_key() for _ in range(8)}) == 8
    assert len(crypto.new_key()) == 32


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda b: b[:-1], id="truncated-tag"),
        pytest.param(lambda b: b[:10], id="truncated-header"),
        pytest.param(lambda b: b"", id="empty"),
        pytest.param(lambda b: b[:-5] + bytes([b[-5] ^ 1]) + b[-4:], id="flipped-tag-byte"),
        pytest.param(lambda b: b[:20] + bytes([b[20] ^ 0x80]) + b[21:], id="flipped-body"),
        pytest.param(lambda b: b"XXXX" + b[4:], id="bad-magic"),
    ],
)
def test_open_sealed_rejects_damage(mutate):
    key = crypto.new_key()
    blob = crypto.seal(key, b"secret payload here", b"ctx")
    with pytest.raises(TamperedFile, match="transfer"):
        crypto.open_sealed(key, mutate(blob), b"ctx", label="transfer")


def test_open_sealed_rejects_wrong_key_and_context():
    key = crypto.new_key()
    blob = crypto.seal(key, b"payload", b"adapter|p1")
    with pytest.raises(TamperedFile):
        crypto.open_sealed(crypto.new_key(), blob, b"adapter|p1")
    with pytest.raises(TamperedFile):
        crypto.open_sealed(key, blob, b"adapter|p2")


def test_unknown_format_version_is_reported_as_such():
    key = crypto.new_key()
    blob = bytearray(crypto.seal(key, b"payload", b""))
    blob[4] = 99
    with pytest.raises(UnknownSchema) as info:
        crypto.open_sealed(key, bytes(blob), b"")
    assert info.value.version == 99


def test_key_length_is_checked():
    with pytest.raises(ValueError):
        crypto.seal(b"short", b"x", b"")
    with pytest.raises(ValueError):
        crypto.open_sealed(b"short", b"x" * 40, b"")


def test_passphrase_is_unicode_normalized():
    params = crypto.KdfParams.fresh(10, 8, 1)
    composed = "caf\u00e9 passphrase"
    decomposed = "cafe\u0301 passphrase"
    assert crypto.derive_key(composed, params) == crypto.derive_key(decomposed, params)
    assert crypto.derive_key(composed, params) != crypto.derive_key("cafe passphrase", params)


@pytest.mark.parametrize("log2_n", [10, 14])
def test_derived_key_is_cryptographys_scrypt(log2_n: int, monkeypatch) -> None:
    """The stdlib path (releases the GIL) and the ``cryptography`` fallback give one key, so
    vaults made by either open with the other."""
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    params = crypto.KdfParams.fresh(log2_n, 8, 1)
    reference = Scrypt(salt=params.salt, length=32, n=2**log2_n, r=8, p=1).derive(
        "口令 passphrase".encode()
    )
    assert crypto.derive_key("口令 passphrase", params) == reference

    def refuse(*args, **kwargs):
        raise ValueError("unsupported parameters")

    monkeypatch.setattr(crypto.hashlib, "scrypt", refuse)
    assert crypto.derive_key("口令 passphrase", params) == reference
