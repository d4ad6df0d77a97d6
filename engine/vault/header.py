"""The vault header: passphrase -> scrypt -> key-encryption key -> wrapped master key.

``vault.json`` is the only plaintext file in a vault and holds nothing about patients:
the schema version, a random vault id, the scrypt parameters and salt, and the master
key wrapped (AES-GCM) under the passphrase-derived key. The wrap's associated data covers
every other header field, so an edited header reads as a wrong passphrase rather than
silently weakening the KDF.
"""

from __future__ import annotations

import base64
import functools
import importlib.resources
import itertools
import json
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from engine.errors import InputRejected, TamperedFile, UnknownSchema, WrongPassphrase
from engine.settings import StoreSettings
from engine.vault import crypto
from engine.vault.atomicio import atomic_write

HEADER_NAME = "vault.json"
# 2: the vault keeps a manifest (engine/vault/manifest.py); the version is bound into the
# wrapped key's associated data, so a header edited back to 1 reads as a wrong passphrase.
VAULT_SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)
MIN_PASSPHRASE_CHARS = 8
MAX_PASSPHRASE_CHARS = 1024
COMMON_PASSPHRASES_FILE = "common_passphrases.txt"


@functools.cache
def _common_passphrases() -> frozenset[str]:
    text = (
        importlib.resources.files("engine.vault")
        .joinpath(COMMON_PASSPHRASES_FILE)
        .read_text(encoding="utf-8")
    )
    return frozenset(
        _passphrase_key(line) for line in text.splitlines() if line and not line.startswith("#")
    )


def _passphrase_key(text: str) -> str:
    return "".join(unicodedata.normalize("NFKC", text).casefold().split())


def _is_trivial(key: str) -> bool:
    """One repeated character or block ("abababab"), or a run of consecutive characters."""
    for size in (1, 2, 3, 4):
        if len(key) % size == 0 and key == key[:size] * (len(key) // size):
            return True
    steps = {ord(b) - ord(a) for a, b in itertools.pairwise(key)}
    return steps in ({1}, {-1})


def check_new_passphrase(passphrase: str) -> None:
    """Reject passphrases too weak (or too odd) to protect clinical records."""
    if not passphrase or not passphrase.strip():
        raise InputRejected("The passphrase cannot be empty.")
    if len(passphrase) < MIN_PASSPHRASE_CHARS:
        raise InputRejected(
            f"The passphrase must be at least {MIN_PASSPHRASE_CHARS} characters long."
        )
    if len(passphrase) > MAX_PASSPHRASE_CHARS:
        raise InputRejected(f"The passphrase must be at most {MAX_PASSPHRASE_CHARS} characters.")
    try:
        passphrase.encode("utf-8")
    except UnicodeEncodeError:
        raise InputRejected("The passphrase holds bytes that are not valid text.") from None
    key = _passphrase_key(passphrase)
    if key in _common_passphrases() or _is_trivial(key):
        raise InputRejected(
            "That passphrase is among the most common ones and would be guessed first. "
            "Use a few unrelated words or a sentence only you would write."
        )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


@dataclass(frozen=True)
class VaultHeader:
    vault_id: str
    kdf: crypto.KdfParams
    wrapped_master_key: bytes
    created: str
    schema_version: int = VAULT_SCHEMA_VERSION

    def wrap_aad(self) -> bytes:
        """Everything in the header except the wrapped key itself."""
        return (
            f"vault-master-key|v{self.schema_version}|{self.vault_id}|scrypt|"
            f"{self.kdf.log2_n}|{self.kdf.r}|{self.kdf.p}|{_b64(self.kdf.salt)}"
        ).encode()

    def to_json(self) -> bytes:
        doc = {
            "schema_version": self.schema_version,
            "app": "phyassist",
            "vault_id": self.vault_id,
            "created": self.created,
            "kdf": {
                "name": "scrypt",
                "log2_n": self.kdf.log2_n,
                "r": self.kdf.r,
                "p": self.kdf.p,
                "salt": _b64(self.kdf.salt),
            },
            "wrapped_master_key": _b64(self.wrapped_master_key),
        }
        return json.dumps(doc, indent=2).encode("utf-8") + b"\n"

    @classmethod
    def parse(cls, raw: bytes, path: Path) -> VaultHeader:
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise TamperedFile(path, "the vault header is not valid JSON") from None
        if not isinstance(doc, dict):
            raise TamperedFile(path, "the vault header is not a JSON object")
        version = doc.get("schema_version")
        if version not in READABLE_SCHEMA_VERSIONS:
            raise UnknownSchema(path, version)
        try:
            kdf = doc["kdf"]
            if kdf["name"] != "scrypt":
                raise UnknownSchema(path, f"kdf {kdf['name']!r}")
            params = crypto.KdfParams(
                salt=_unb64(kdf["salt"]),
                log2_n=int(kdf["log2_n"]),
                r=int(kdf["r"]),
                p=int(kdf["p"]),
            )
            if not (1 <= params.log2_n <= 30 and 1 <= params.r <= 64 and 1 <= params.p <= 64):
                raise TamperedFile(path, "implausible key-derivation parameters")
            return cls(
                vault_id=str(doc["vault_id"]),
                kdf=params,
                wrapped_master_key=_unb64(doc["wrapped_master_key"]),
                created=str(doc.get("created", "")),
                schema_version=version,
            )
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError):
            raise TamperedFile(path, "the vault header is incomplete") from None


def header_path(vault_dir: Path) -> Path:
    return vault_dir / HEADER_NAME


def _wrap(master_key: bytes, passphrase: str, store: StoreSettings, vault_id: str, created: str):
    params = crypto.KdfParams.fresh(store.scrypt_log2_n, store.scrypt_r, store.scrypt_p)
    draft = VaultHeader(vault_id=vault_id, kdf=params, wrapped_master_key=b"", created=created)
    kek = crypto.derive_key(passphrase, params)
    wrapped = crypto.encrypt(kek, master_key, draft.wrap_aad())
    return VaultHeader(vault_id=vault_id, kdf=params, wrapped_master_key=wrapped, created=created)


def upgrade(
    vault_dir: Path, header: VaultHeader, master_key: bytes, passphrase: str, store: StoreSettings
) -> VaultHeader:
    """Rewrite a schema-1 header as the current schema (same master key, current KDF cost)."""
    fresh = _wrap(master_key, passphrase, store, header.vault_id, header.created)
    atomic_write(header_path(vault_dir), fresh.to_json())
    return fresh


def write_new_header(vault_dir: Path, passphrase: str, store: StoreSettings) -> bytes:
    """Write a fresh header for a new vault; returns the new random master key."""
    check_new_passphrase(passphrase)
    master_key = crypto.new_key()
    created = datetime.now(UTC).isoformat(timespec="seconds")
    header = _wrap(master_key, passphrase, store, secrets.token_hex(16), created)
    atomic_write(header_path(vault_dir), header.to_json())
    return master_key


def read_header(vault_dir: Path) -> VaultHeader:
    path = header_path(vault_dir)
    return VaultHeader.parse(path.read_bytes(), path)


def unlock(header: VaultHeader, passphrase: str) -> bytes:
    """The master key, or :class:`WrongPassphrase`."""
    kek = crypto.derive_key(passphrase, header.kdf)
    try:
        master_key = crypto.decrypt(kek, header.wrapped_master_key, header.wrap_aad())
    except (TamperedFile, UnknownSchema):
        raise WrongPassphrase() from None
    if len(master_key) != crypto.KEY_BYTES:
        raise WrongPassphrase()
    return master_key


def rewrap(
    vault_dir: Path, header: VaultHeader, master_key: bytes, new: str, store: StoreSettings
) -> VaultHeader:
    """Re-wrap the same master key under ``new`` (fresh salt, current scrypt cost)."""
    check_new_passphrase(new)
    if header.schema_version < VAULT_SCHEMA_VERSION:
        raise InputRejected("Open the vault for writing once (it upgrades) before re-wrapping.")
    fresh = _wrap(master_key, new, store, header.vault_id, header.created)
    atomic_write(header_path(vault_dir), fresh.to_json())
    return fresh
