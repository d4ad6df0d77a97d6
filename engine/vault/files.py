"""Where each file of a vault lives, and how one encrypted file is written and read.

The names of the vault's files and folders, the associated data each encrypted file is bound
to (format version, patient id, file kind), blob kinds as file names, and
:class:`VaultFiles`, the base of :class:`~engine.vault.store.Store` that turns a patient id
or a blob kind into a path, writes and reads envelopes, unwraps a patient's data key and
scans the patients folder reading only the plaintext headers (no decryption).
"""

from __future__ import annotations

import os
import re
import shutil
from contextlib import suppress
from pathlib import Path
from urllib.parse import quote, unquote

from engine.errors import InputRejected, PatientNotFound, StorageError, TamperedFile
from engine.vault import crypto
from engine.vault.atomicio import atomic_write, fsync_dir

LOCK_NAME = "vault.lock"
PENDING_NAME = "index.pending"  # exists while the index on disk may lag the record files
TMP_DIR = "tmp"
PATIENTS_DIR = "patients"
VAULT_BLOBS_DIR = "vault-blobs"
KEY_FILE = "key.bin"
RECORD_FILE = "record.bin"
BLOBS_DIR = "blobs"
BLOB_SUFFIX = ".bin"

_ID_RE = re.compile(r"[0-9a-f]{8,64}")  # always fullmatch()
_KIND_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*")
_MAX_KIND_CHARS = 120

Stamp = str  # the record file's nonce (hex): unique per write, readable without the key


def _stamp_of(envelope: bytes) -> Stamp:
    return crypto.stamp_of(envelope)


def _read_head(path: Path) -> Stamp | None:
    """The stamp of an encrypted file from its plaintext header, None when it is missing."""
    try:
        with open(path, "rb") as fh:
            return _stamp_of(fh.read(crypto.HEADER_BYTES))
    except FileNotFoundError:
        return None


def _as_bytes(data: bytes | bytearray | memoryview) -> bytes:
    return data if isinstance(data, bytes) else bytes(data)


def _aad(patient_id: str, kind: str) -> bytes:
    return f"{patient_id}\x00{kind}".encode()


def _check_kind(kind: str) -> str:
    if not isinstance(kind, str) or len(kind) > _MAX_KIND_CHARS or not _KIND_RE.fullmatch(kind):
        raise InputRejected(
            f"Invalid blob kind {kind!r}: use letters, digits, '.', '_', '-' and '/' "
            f"(at most {_MAX_KIND_CHARS} characters)."
        )
    return kind


def _blob_file_name(kind: str) -> str:
    return quote(_check_kind(kind), safe="") + BLOB_SUFFIX


def _blob_kind_from_file(name: str) -> str | None:
    if name.startswith(".") or not name.endswith(BLOB_SUFFIX):
        return None
    kind = unquote(name[: -len(BLOB_SUFFIX)])
    return kind if _KIND_RE.fullmatch(kind) else None


class VaultFiles:
    """Paths, encrypted files and data keys: a base of :class:`~engine.vault.store.Store`
    (it provides ``vault_dir``, ``_key()`` and the ``_data_keys`` cache)."""

    @property
    def _patients_dir(self) -> Path:
        return self.vault_dir / PATIENTS_DIR

    def _patient_dir(self, patient_id: str) -> Path:
        if not isinstance(patient_id, str) or not _ID_RE.fullmatch(patient_id):
            raise PatientNotFound(f"No patient with id {patient_id!r}.")
        return self._patients_dir / patient_id

    def _blob_path(self, patient_id: str, kind: str) -> Path:
        return self._patient_dir(patient_id) / BLOBS_DIR / _blob_file_name(kind)

    def _vault_blob_path(self, kind: str) -> Path:
        return self.vault_dir / VAULT_BLOBS_DIR / _blob_file_name(kind)

    def _write_encrypted(self, path: Path, key: bytes, data: bytes, aad: bytes) -> bytes:
        envelope = crypto.encrypt(key, data, aad)
        try:
            atomic_write(path, envelope, temp_dir=self.vault_dir / TMP_DIR)
        except OSError as exc:
            raise StorageError(
                f"Could not write {path}: {exc.strerror or exc}. "
                "The previous version is intact; free some space or check the disk, then retry."
            ) from exc
        return envelope

    @staticmethod
    def _read_file(path: Path) -> bytes:
        """The file's bytes; FileNotFoundError passes, other OS errors become StorageError."""
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise StorageError(f"Could not read {path}: {exc.strerror or exc}.") from exc

    @classmethod
    def _read_encrypted(cls, path: Path, key: bytes, aad: bytes) -> bytes:
        return crypto.decrypt(key, cls._read_file(path), aad, label=path)

    def _data_key(self, patient_id: str) -> bytes:
        cached = self._data_keys.get(patient_id)
        if cached is not None:
            return cached
        path = self._patient_dir(patient_id) / KEY_FILE
        try:
            key = self._read_encrypted(path, self._key(), _aad(patient_id, "key"))
        except FileNotFoundError:
            raise PatientNotFound(f"No patient with id {patient_id!r}.") from None
        if len(key) != crypto.KEY_BYTES:
            raise TamperedFile(path, "wrong key length")
        self._data_keys[patient_id] = key
        return key

    def _scan(self) -> tuple[dict[str, Stamp], list[Path]]:
        """Complete patients (id -> record stamp) and leftovers of interrupted creates/deletes.

        Reads only the 17-byte plaintext header of each record (no decryption).
        """
        complete: dict[str, Stamp] = {}
        leftovers: list[Path] = []
        try:
            entries = list(os.scandir(self._patients_dir))
        except FileNotFoundError:
            return complete, leftovers
        for entry in entries:
            if not _ID_RE.fullmatch(entry.name) or not entry.is_dir(follow_symlinks=False):
                continue
            try:
                os.stat(os.path.join(entry.path, KEY_FILE))
                with open(os.path.join(entry.path, RECORD_FILE), "rb") as fh:
                    head = fh.read(crypto.HEADER_BYTES)
            except FileNotFoundError:
                leftovers.append(Path(entry.path))
                continue
            complete[entry.name] = _stamp_of(head)
        return complete, leftovers

    def _scan_blobs(self, directory: Path) -> dict[str, Stamp]:
        stamps: dict[str, Stamp] = {}
        with suppress(FileNotFoundError):
            for entry in os.scandir(directory):
                kind = _blob_kind_from_file(entry.name)
                if kind is not None:
                    stamp = _read_head(Path(entry.path))
                    if stamp is not None:
                        stamps[kind] = stamp
        return stamps

    @staticmethod
    def _kinds_in(directory: Path, prefix: str) -> list[str]:
        kinds: list[str] = []
        with suppress(FileNotFoundError):
            for entry in os.scandir(directory):
                kind = _blob_kind_from_file(entry.name)
                if kind is not None and kind.startswith(prefix):
                    kinds.append(kind)
        return sorted(kinds)

    def _remove_patient_dir(self, directory: Path) -> None:
        shutil.rmtree(directory, ignore_errors=True)
        fsync_dir(self._patients_dir)
