"""Authenticated encryption for everything PhyAssist writes about a patient.

One envelope format for every encrypted file and sealed blob::

    b"PHYA" | format version (1 byte) | nonce (12 bytes) | AES-256-GCM ciphertext + tag

The associated data always starts with the magic and the format version, followed by
whatever the caller binds (for vault files: patient id and file kind), so a file moved to
another patient, another kind or another format version fails authentication.

Keys come from a passphrase through scrypt (memory-hard; parameters stored with the
vault); the derived key only wraps the random master key, so changing the passphrase
rewraps 32 bytes instead of re-encrypting the vault.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from engine.errors import TamperedFile, UnknownSchema

MAGIC = b"PHYA"
FORMAT_VERSION = 1
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
NONCE_OFFSET = len(MAGIC) + 1
HEADER_BYTES = NONCE_OFFSET + NONCE_BYTES
OVERHEAD = HEADER_BYTES + TAG_BYTES

__all__ = [
    "FORMAT_VERSION",
    "KEY_BYTES",
    "OVERHEAD",
    "KdfParams",
    "decrypt",
    "derive_key",
    "encrypt",
    "new_key",
    "open_sealed",
    "seal",
]


def new_key() -> bytes:
    """A fresh random 256-bit key (master key, patient data key, one-time transfer key)."""
    return os.urandom(KEY_BYTES)


@dataclass(frozen=True)
class KdfParams:
    """scrypt parameters, stored in the vault header so a later cost change keeps old vaults."""

    salt: bytes
    log2_n: int = 15
    r: int = 8
    p: int = 1

    @classmethod
    def fresh(cls, log2_n: int, r: int, p: int) -> KdfParams:
        return cls(salt=os.urandom(16), log2_n=log2_n, r=r, p=p)


def normalize_passphrase(passphrase: str) -> bytes:
    """NFC so that the same passphrase typed on two keyboards (composed vs decomposed) matches."""
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")


def derive_key(passphrase: str, params: KdfParams) -> bytes:
    """The key-encryption key for ``passphrase`` (scrypt; ~0.1 s at n=2**15, r=8).

    Through the standard library's OpenSSL scrypt where it can: the same function and key as
    ``cryptography``'s ``Scrypt`` (tested), but it releases the GIL while it runs, so the
    TUI's other threads (importing the workspace while the vault opens) are not stalled for
    the whole derivation. ``cryptography`` is used where hashlib cannot take the cost.
    """
    secret = normalize_passphrase(passphrase)
    n = 2**params.log2_n
    maxmem = 128 * params.r * (n + params.p + 2) + (1 << 20)
    if maxmem < 2**31 - 1:
        try:
            return hashlib.scrypt(
                secret, salt=params.salt, n=n, r=params.r, p=params.p, maxmem=maxmem,
                dklen=KEY_BYTES,
            )  # fmt: skip
        except (ValueError, MemoryError):
            pass  # e.g. an OpenSSL build that refuses these parameters
    kdf = Scrypt(salt=params.salt, length=KEY_BYTES, n=n, r=params.r, p=params.p)
    return kdf.derive(secret)


def stamp_of(envelope: bytes) -> str:
    """The envelope's nonce in hex: unique per write and readable without the key."""
    return envelope[NONCE_OFFSET:HEADER_BYTES].hex()


def _full_aad(aad: bytes, version: int) -> bytes:
    return MAGIC + bytes([version]) + b"\x00" + aad


def encrypt(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Encrypt with a fresh random 96-bit nonce; returns the whole envelope."""
    nonce = os.urandom(NONCE_BYTES)
    body = AESGCM(key).encrypt(nonce, plaintext, _full_aad(aad, FORMAT_VERSION))
    return MAGIC + bytes([FORMAT_VERSION]) + nonce + body


def decrypt(key: bytes, blob: bytes, aad: bytes, *, label: object = "encrypted data") -> bytes:
    """Open an envelope made by :func:`encrypt`.

    Raises :class:`UnknownSchema` for a format version this code does not know and
    :class:`TamperedFile` (naming ``label``) for anything that fails authentication:
    wrong magic, truncation, edited bytes, wrong key, wrong associated data.
    """
    if len(blob) < len(MAGIC) + 1 or blob[: len(MAGIC)] != MAGIC:
        raise TamperedFile(label, "not a PhyAssist encrypted file")
    version = blob[len(MAGIC)]
    if version != FORMAT_VERSION:
        raise UnknownSchema(label, version)
    if len(blob) < OVERHEAD:
        raise TamperedFile(label, "truncated")
    nonce = blob[len(MAGIC) + 1 : HEADER_BYTES]
    try:
        return AESGCM(key).decrypt(nonce, blob[HEADER_BYTES:], _full_aad(aad, version))
    except InvalidTag:
        raise TamperedFile(label, "authentication failed") from None


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Encrypt ``plaintext`` for a one-time transfer (e.g. a training subprocess to its parent).

    ``key`` must be 32 bytes (use :func:`new_key`); ``aad`` binds context the receiver
    checks (e.g. ``b"adapter|<patient id>"``).
    """
    if len(key) != KEY_BYTES:
        raise ValueError(f"seal needs a {KEY_BYTES}-byte key, got {len(key)}")
    return encrypt(key, plaintext, aad)


def open_sealed(key: bytes, blob: bytes, aad: bytes, *, label: object = "sealed data") -> bytes:
    """Open what :func:`seal` made.

    Any failure (wrong key, other ``aad``, edited or truncated blob) raises
    :class:`engine.errors.TamperedFile` naming ``label``; a blob from a newer format raises
    :class:`engine.errors.UnknownSchema`. Nothing partial is ever returned.
    """
    if len(key) != KEY_BYTES:
        raise ValueError(f"open_sealed needs a {KEY_BYTES}-byte key, got {len(key)}")
    return decrypt(key, blob, aad, label=label)
