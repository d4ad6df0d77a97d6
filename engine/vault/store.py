"""The encrypted patient store: the one object the TUI, the engine and training talk to.

Layout of a vault directory (every file but ``vault.json`` and the lock file is AES-GCM
encrypted; no file name carries patient text; ids are random)::

    vault.json                  header: scrypt params + master key wrapped by the passphrase
    vault.lock                  flock'ed by the one writer process
    index.bin                   tinydb index of PatientSummary rows (master key)
    index.pending               present while index.bin may lag the records (master key)
    tmp/                        temp files of in-flight atomic writes
    vault-blobs/<kind>.bin      vault-level blobs (audit log, registries) (master key)
    patients/<id>/key.bin       the patient's random data key, wrapped by the master key
    patients/<id>/record.bin    the Patient (basic info + notes) (data key)
    patients/<id>/blobs/<kind>.bin  drafts, chat, adapters, training logs (data key)

Each encrypted file binds (format version, patient id, file kind) as associated data, so
a file copied to another patient or kind fails authentication. Deleting a patient shreds
the wrapped data key first (cryptographic erase), then removes the files.

The index is a cache of the record files, kept decrypted in memory. Creating, deleting
and flagging a patient write it at once; saving a record (the frequent, latency-sensitive
path) updates it in memory and writes it at most ``INDEX_FLUSH_DELAY_S`` later and on
close. Before any record changes, an ``index.pending`` marker is made durable; it is
removed once the index on disk matches again. Opening a vault that has the marker (a
writer died) checks every record's nonce against the index and refreshes what differs,
and a missing or unreadable index is rebuilt from the record files: nothing a save
returned from is ever missing from the list.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import shutil
import threading
import unicodedata
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from urllib.parse import quote, unquote

from engine.errors import (
    InputRejected,
    PatientNotFound,
    PhyAssistError,
    ReadOnlyVault,
    RolledBack,
    StorageError,
    TamperedFile,
    UnknownSchema,
    VaultClosed,
    VaultExists,
    VaultNotFound,
    WrongPassphrase,
)
from engine.records import (
    BASIC_FIELDS,
    SCHEMA_VERSION,
    AnalysisDraft,
    BasicInfo,
    Item,
    Note,
    NoteTombstone,
    NoteVersion,
    Patient,
    PatientSummary,
    utcnow,
)
from engine.settings import Limits, Settings, load_settings
from engine.vault import crypto, unlock_throttle
from engine.vault import header as vault
from engine.vault.atomicio import (
    WriterLock,
    atomic_write,
    ensure_dir,
    fsync_dir,
    remove_stale_temps,
    shred_file,
)
from engine.vault.index import INDEX_NAME, EncryptedStorage, PatientIndex
from engine.vault.manifest import MANIFEST_NAME, Manifest, PatientFiles

LOCK_NAME = "vault.lock"
PENDING_NAME = "index.pending"  # exists while the index on disk may lag the record files
TMP_DIR = "tmp"
PATIENTS_DIR = "patients"
VAULT_BLOBS_DIR = "vault-blobs"
KEY_FILE = "key.bin"
RECORD_FILE = "record.bin"
BLOBS_DIR = "blobs"
BLOB_SUFFIX = ".bin"

# Generous bounds for text the model writes (the counselor's own text uses Settings.limits).
MAX_RAW_OUTPUT_CHARS = 200_000
MAX_COMMENTS_PER_ITEM = 100

_ID_RE = re.compile(r"[0-9a-f]{8,64}")  # always fullmatch()
_KIND_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*")
_MAX_KIND_CHARS = 120
_CONTROL = {"Cc", "Cf", "Zl", "Zp"}
MANIFEST_AAD = b"\x00manifest"

# Test hook: called with a step name at each durable step of a multi-step change (deletion),
# so tests can kill the process exactly there. None in the product.
fault_hook = None


def _step(name: str) -> None:
    if fault_hook is not None:
        fault_hook(name)


logger = logging.getLogger("phyassist.store")

# Writers still open at interpreter exit get closed (index written, lock released) then.
_OPEN_WRITERS: weakref.WeakSet[Store] = weakref.WeakSet()


@atexit.register
def _close_open_writers() -> None:
    for store in list(_OPEN_WRITERS):
        with suppress(Exception):
            store.close()


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


class Store:
    """An unlocked vault. Thread-safe; one writer process per vault (others get VaultBusy).

    Open with :meth:`open` or :meth:`create`; use as a context manager or call :meth:`close`.
    A handle opened with ``writer=False`` takes no lock, never writes, and raises
    :class:`ReadOnlyVault` on any change.
    """

    INDEX_FLUSH_DELAY_S = 2.0  # how long a saved record may stay ahead of index.bin on disk

    def __init__(
        self,
        vault_dir: Path,
        master_key: bytes,
        header: vault.VaultHeader,
        settings: Settings,
        lock: WriterLock | None,
    ) -> None:
        self.vault_dir = vault_dir
        self.settings = settings
        self.writer = lock is not None
        self.index_rebuilt = False  # the last open had to rebuild the index
        self.index_repaired = 0  # index rows the last open refreshed after a crash
        self._header = header
        self._master_key: bytes | None = master_key
        self._lock = lock
        self._mutex = threading.RLock()
        self._data_keys: dict[str, bytes] = {}
        self._damaged: dict[str, str] = {}
        self._pending = False  # index.pending exists because of this handle
        # What the vault last wrote (None: a schema-1 vault opened read-only, no manifest yet).
        self._manifest: Manifest | None = None
        self._manifest_strict = True  # in-memory manifest knows every write (see _verify_file)
        self._problems: list[str] = []  # rollbacks and disappearances found so far
        self._startup_leftovers: list[Path] | None = None  # one folder scan serves the open
        self._flush_timer: threading.Timer | None = None
        self._index = PatientIndex(
            EncryptedStorage(
                vault_dir / INDEX_NAME,
                master_key,
                persist=self.writer,
                temp_dir=vault_dir / TMP_DIR,
            )
        )
        if self.writer:
            _OPEN_WRITERS.add(self)

    # -- opening and closing -------------------------------------------------------------

    @staticmethod
    def exists(vault_dir: Path) -> bool:
        return vault.header_path(Path(vault_dir)).is_file()

    @classmethod
    def create(cls, vault_dir: Path, passphrase: str, *, settings: Settings | None = None) -> Store:
        """Make a new, empty vault and return it open for writing.

        Raises VaultExists, InputRejected (empty passphrase or shorter than 8 characters).
        """
        vault_dir = Path(vault_dir)
        settings = settings or load_settings()
        if cls.exists(vault_dir):
            raise VaultExists(f"A vault already exists at {vault_dir}.")
        vault.check_new_passphrase(passphrase)
        if vault_dir.is_dir():
            leftovers = {p.name for p in vault_dir.iterdir()} - {LOCK_NAME, TMP_DIR}
            if leftovers:
                raise VaultExists(
                    f"{vault_dir} is not empty and holds no vault header; "
                    "refusing to create a vault over unknown files."
                )
        ensure_dir(vault_dir)
        lock = WriterLock(vault_dir / LOCK_NAME)
        lock.acquire()
        try:
            for sub in (TMP_DIR, PATIENTS_DIR, VAULT_BLOBS_DIR):
                ensure_dir(vault_dir / sub)
            master_key = vault.write_new_header(vault_dir, passphrase, settings.store)
            store = cls(vault_dir, master_key, vault.read_header(vault_dir), settings, lock)
            store._manifest = Manifest()
            store._index.replace_all([])
            store._write_manifest(dirty=False)
            return store
        except BaseException:
            lock.release()
            raise

    @classmethod
    def open(
        cls,
        vault_dir: Path,
        passphrase: str,
        *,
        writer: bool = True,
        settings: Settings | None = None,
    ) -> Store:
        """Unlock an existing vault.

        Raises VaultNotFound, UnknownSchema / TamperedFile (header), VaultBusy (another
        writer), WrongPassphrase. A damaged index is rebuilt, not reported.
        """
        vault_dir = Path(vault_dir)
        settings = settings or load_settings()
        if not cls.exists(vault_dir):
            raise VaultNotFound(f"No vault at {vault_dir}. Create one with `phyassist init` first.")
        header = vault.read_header(vault_dir)
        unlock_throttle.check(vault_dir)  # UnlockThrottled after repeated wrong passphrases
        lock = WriterLock(vault_dir / LOCK_NAME) if writer else None
        if lock is not None:
            lock.acquire()
        store: Store | None = None
        try:
            try:
                master_key = vault.unlock(header, passphrase)
            except WrongPassphrase:
                unlock_throttle.failed(vault_dir)
                raise
            unlock_throttle.succeeded(vault_dir)
            store = cls(vault_dir, master_key, header, settings, lock)
            store._startup(passphrase)
            return store
        except BaseException:
            if store is not None:
                store._abandon()
            if lock is not None:
                lock.release()
            raise

    def _startup(self, passphrase: str) -> None:
        if self.writer:
            for sub in (TMP_DIR, PATIENTS_DIR, VAULT_BLOBS_DIR):
                ensure_dir(self.vault_dir / sub)
            remove_stale_temps(self.vault_dir / TMP_DIR)
        manifest_state = self._load_manifest()
        try:
            self._index.load()
        except (OSError, PhyAssistError) as exc:
            if manifest_state == "clean":
                self._problem(f"index.bin cannot be read ({exc}); rebuilt from the record files")
            logger.warning("index unreadable (%s); rebuilding it", type(exc).__name__)
            self.rebuild_index()
            self.index_rebuilt = True
        else:
            if manifest_state == "clean" and self._index.storage.stamp != (
                self._manifest.index_stamp if self._manifest else None
            ):
                self._problem(
                    "index.bin is not the copy the vault last wrote (an older copy put back?); "
                    "rebuilt from the record files"
                )
                self.rebuild_index()
                self.index_rebuilt = True
            elif (self.vault_dir / PENDING_NAME).exists() or manifest_state != "clean":
                self._pending = self.writer
                self._verify_index()
        self._check_folders(manifest_state)
        if self.writer:
            self._finish_manifest(manifest_state, passphrase)

    # -- the manifest: what the vault last wrote ------------------------------------------------

    @property
    def _manifest_path(self) -> Path:
        return self.vault_dir / MANIFEST_NAME

    def _problem(self, text: str) -> None:
        if text not in self._problems:
            logger.warning("vault integrity: %s", text)
            self._problems.append(text)

    def integrity_problems(self) -> list[str]:
        """Rollbacks and disappearances found since this handle opened (empty: none)."""
        with self._mutex:
            return list(self._problems)

    def _read_manifest(self) -> Manifest | None:
        try:
            raw = self._read_encrypted(self._manifest_path, self._key(), MANIFEST_AAD)
        except FileNotFoundError:
            return None
        return Manifest.from_bytes(raw, self._manifest_path)

    def _load_manifest(self) -> str:
        """Read the manifest; returns "clean", "dirty" (a writer died mid-change) or "none"."""
        try:
            manifest = self._read_manifest()
        except PhyAssistError as exc:
            self._problem(f"{MANIFEST_NAME} cannot be read ({exc}); rollback checks were reset")
            manifest = None
        if manifest is None:
            if self._header.schema_version >= 2 and not self._problems:
                self._problem(
                    f"{MANIFEST_NAME} is missing although the vault header says it keeps one: "
                    "rollbacks before this open cannot be detected"
                )
            self._manifest = None
            return "none"
        self._manifest = manifest
        # A dirty manifest lags the files until _finish_manifest has taken them in.
        self._manifest_strict = not manifest.dirty
        return "dirty" if manifest.dirty else "clean"

    def _reload_manifest(self) -> None:
        """Read-only handles: another process may have written since this one opened."""
        manifest = self._read_manifest()
        if manifest is not None:
            self._manifest = manifest
            self._manifest_strict = not manifest.dirty

    def _write_manifest(self, *, dirty: bool) -> None:
        manifest = self._manifest
        if manifest is None or not self.writer:
            return
        manifest.dirty = dirty
        manifest.generation += 1
        if self._index.storage.persist:
            manifest.index_stamp = self._index.storage.stamp
        self._write_encrypted(self._manifest_path, self._key(), manifest.to_bytes(), MANIFEST_AAD)

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

    def _manifest_from_disk(self, known: Manifest | None) -> Manifest:
        """What is on disk now, keeping ``known``'s record versions as a floor."""
        fresh = Manifest(generation=known.generation if known else 0)
        complete, _leftovers = self._scan()
        for pid, stamp in complete.items():
            old = known.patients.get(pid) if known else None
            if old is not None and (pid in self._damaged or old.stamp == stamp):
                # unchanged since the manifest (or unreadable: keep what the vault wrote)
                fresh.patients[pid] = PatientFiles(
                    version=old.version,
                    stamp=old.stamp,
                    blobs=self._scan_blobs(self._patient_dir(pid) / BLOBS_DIR),
                )
                continue
            try:
                _patient, _has, stamp, version = self._read_record_raw(pid)
            except PhyAssistError as exc:
                self._damaged[pid] = str(exc)
                continue
            floor = old.version if old is not None else 0
            if version < floor:
                self._problem(
                    f"the record of patient {pid} was rolled back: it is save #{version}, "
                    f"the vault last wrote save #{floor}"
                )
            fresh.patients[pid] = PatientFiles(
                version=max(version, floor),
                stamp=stamp,
                blobs=self._scan_blobs(self._patient_dir(pid) / BLOBS_DIR),
            )
        fresh.vault_blobs = self._scan_blobs(self.vault_dir / VAULT_BLOBS_DIR)
        return fresh

    def _finish_manifest(self, state: str, passphrase: str) -> None:
        """Writers: finish interrupted deletions, take in a crashed writer's files, migrate."""
        manifest = self._manifest
        if manifest is not None and manifest.deleting:
            for pid in sorted(manifest.deleting):
                self._complete_delete(pid)
        if state == "clean":
            leftovers = self._startup_leftovers or []
            self._clean_leftovers(leftovers)
            return
        if state == "dirty" or manifest is None:
            self._manifest = self._manifest_from_disk(manifest)
            self._manifest_strict = True
            self._flush_index()
            self._write_manifest(dirty=False)
        if self._header.schema_version < vault.VAULT_SCHEMA_VERSION:
            self._header = vault.upgrade(
                self.vault_dir, self._header, self._key(), passphrase, self.settings.store
            )

    def _check_folders(self, state: str) -> None:
        """Every patient the manifest knows still has its files; no unknown patient appeared."""
        if self._manifest is None:
            return
        complete, leftovers = self._scan()
        self._startup_leftovers = leftovers
        missing, unknown = self._folder_mismatches(complete, state)
        if (missing or unknown) and not self.writer:
            # a writer in another process may have created or deleted since we read
            self._reload_manifest()
            complete, _leftovers = self._scan()
            missing, unknown = self._folder_mismatches(complete, state)
        manifest = self._manifest
        for pid in missing:
            summary = self._index.summary(pid)
            self._damaged[pid] = "its folder or record was removed"
            self._problem(
                f"patient {pid} is gone: its folder or record was removed"
                + (" (the index was older too)" if summary is None else "")
            )
        for pid in unknown:
            self._damaged[pid] = "not in the vault manifest"
            self._problem(
                f"patient folder {pid} is not in the vault manifest "
                "(restored from an older copy or another vault?)"
            )
        for pid, stamp in complete.items():
            if pid in manifest.deleting or pid not in manifest.patients:
                continue
            if self._index.stamp(pid) != stamp and pid not in self._damaged:
                try:
                    self._read_record(pid)
                except RolledBack as exc:
                    self._damaged[pid] = str(exc)
                except PhyAssistError as exc:
                    self._damaged[pid] = str(exc)

    def _folder_mismatches(
        self, complete: dict[str, Stamp], state: str
    ) -> tuple[list[str], list[str]]:
        """Patients the manifest knows whose files are gone; folders it does not know."""
        manifest = self._manifest
        assert manifest is not None
        strict = state == "clean" and self._manifest_strict
        missing = [
            pid for pid in manifest.patients if pid not in complete and pid not in manifest.deleting
        ]
        unknown = [
            pid
            for pid in complete
            if strict and pid not in manifest.patients and pid not in manifest.deleting
        ]
        return missing, unknown

    def _verify_file(self, path: Path, problem_of) -> None:
        """Raise RolledBack when ``problem_of(manifest, strict)`` finds one."""
        if self._manifest is None:
            return
        problem = problem_of(self._manifest, self._manifest_strict)
        if problem is not None and not self.writer:
            self._reload_manifest()
            problem = problem_of(self._manifest, self._manifest_strict)
        if problem is not None:
            self._problem(problem)
            raise RolledBack(path, problem)

    def _verify_stamp(self, patient_id: str | None, kind: str, stamp: Stamp | None) -> None:
        path = (
            self._vault_blob_path(kind) if patient_id is None else self._blob_path(patient_id, kind)
        )
        self._verify_file(
            path, lambda m, strict: m.blob_problem(patient_id, kind, stamp, strict=strict)
        )

    def verify_manifest(self) -> list[str]:
        """Check every record, blob, vault blob and the index against the manifest (doctor)."""
        with self._mutex:
            self._key()
            manifest = self._manifest
            if manifest is None:
                self._problem(f"no {MANIFEST_NAME}: open the vault for writing once to make it")
                return self.integrity_problems()
            complete, _leftovers = self._scan()
            for pid in sorted(set(manifest.patients) | set(complete)):
                if pid in manifest.deleting:
                    continue
                with suppress(PhyAssistError):
                    self._read_record(pid)
                expected = manifest.patients.get(pid, PatientFiles()).blobs
                present = self._scan_blobs(self._patient_dir(pid) / BLOBS_DIR)
                for kind in sorted(set(expected) | set(present)):
                    with suppress(PhyAssistError):
                        self._verify_stamp(pid, kind, present.get(kind))
            present = self._scan_blobs(self.vault_dir / VAULT_BLOBS_DIR)
            for kind in sorted(set(manifest.vault_blobs) | set(present)):
                with suppress(PhyAssistError):
                    self._verify_stamp(None, kind, present.get(kind))
            index_stamp = _read_head(self.vault_dir / INDEX_NAME)
            if self._manifest_strict and not self._pending and index_stamp != manifest.index_stamp:
                self._problem("index.bin is not the copy the vault last wrote")
            return self.integrity_problems()

    def missing_vault_blobs(self, prefix: str = "") -> list[str]:
        """Vault-level blobs the manifest lists that are gone (e.g. deleted audit segments)."""
        with self._mutex:
            if self._manifest is None:
                return []
            present = set(self._kinds_in(self.vault_dir / VAULT_BLOBS_DIR, prefix))
            missing = [
                k for k in self._manifest.vault_blobs if k.startswith(prefix) and k not in present
            ]
            if missing and not self.writer:
                self._reload_manifest()
                if not self._manifest_strict:
                    return []
                missing = [
                    k
                    for k in self._manifest.vault_blobs
                    if k.startswith(prefix) and k not in present
                ]
            return sorted(missing)

    def close(self) -> None:
        """Write what the index still owes, drop the keys and release the writer lock."""
        with self._mutex:
            if self._master_key is None:
                return
            self._cancel_flush_timer()
            if self.writer:
                self._flush_index(raise_errors=False)
            self._index.close()
            self._master_key = None
            self._data_keys.clear()
            _OPEN_WRITERS.discard(self)
            if self._lock is not None:
                self._lock.release()

    def _abandon(self) -> None:
        """Drop a handle whose opening failed, writing nothing."""
        self._cancel_flush_timer()
        self._master_key = None
        self._data_keys.clear()
        _OPEN_WRITERS.discard(self)

    @property
    def closed(self) -> bool:
        return self._master_key is None

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        with suppress(Exception):
            self.close()

    def _key(self) -> bytes:
        if self._master_key is None:
            raise VaultClosed("The vault is locked; unlock it again with the passphrase.")
        return self._master_key

    def _require_writer(self) -> None:
        self._key()
        if not self.writer:
            raise ReadOnlyVault(
                "This vault was opened read-only; open it for writing to change anything."
            )

    # -- keys and snapshots for other layers (backup) ------------------------------------------

    def derive_key(self, info: bytes) -> bytes:
        """A 256-bit key for another purpose (HKDF-SHA256 of the master key, bound to ``info``).

        Lets a layer such as the backup have its own key without storing one: the vault
        passphrase stays the only secret.
        """
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        hkdf = HKDF(algorithm=hashes.SHA256(), length=crypto.KEY_BYTES, salt=None, info=info)
        return hkdf.derive(self._key())

    @contextmanager
    def quiesced(self) -> Iterator[None]:
        """Hold every writer of this handle still, the index written: a consistent file set.

        Used to take a snapshot of the vault's files (backup) while the app stays open.
        """
        with self._mutex:
            self._key()
            if self.writer:
                self._flush_index()
            yield

    # -- passphrase ------------------------------------------------------------------------

    def change_passphrase(self, old: str, new: str) -> None:
        """Re-wrap the master key under ``new``; nothing else is re-encrypted.

        Raises WrongPassphrase (``old`` is wrong), InputRejected (``new`` too weak).
        """
        with self._mutex:
            self._require_writer()
            master = vault.unlock(vault.read_header(self.vault_dir), old)
            if master != self._master_key:
                raise TamperedFile(vault.header_path(self.vault_dir), "master key changed")
            self._header = vault.rewrap(
                self.vault_dir, self._header, master, new, self.settings.store
            )

    # -- the index on disk: pending marker, deferred writes -----------------------------------

    @contextmanager
    def _changing(self, *, defer: bool) -> Iterator[None]:
        """Bracket a change to record files: durable pending marker first, index after."""
        self._require_writer()
        self._mark_pending()
        ok = False
        try:
            with self._index.storage.deferred():
                yield
            ok = True
        finally:
            if ok and defer:
                self._schedule_flush()
            else:
                self._flush_index(raise_errors=False)

    def _mark_pending(self) -> None:
        if self._pending:
            return
        # The manifest says "dirty" on disk before any file changes (see engine/vault/manifest.py).
        self._write_manifest(dirty=True)
        # An encrypted empty payload, so that every vault file but the header and the lock
        # is an authenticated envelope (what `phyassist doctor` checks).
        self._write_encrypted(
            self.vault_dir / PENDING_NAME, self._key(), b"", _aad("", "index-pending")
        )
        self._pending = True

    def _flush_index(self, *, raise_errors: bool = True) -> None:
        """Write the index if it changed, then drop the pending marker."""
        self._cancel_flush_timer()
        try:
            self._index.storage.flush()
            manifest = self._manifest
            if (
                manifest is not None
                and self.writer
                and self._manifest_strict  # not while startup still takes in a crash's files
                and (
                    self._pending
                    or manifest.dirty
                    or manifest.index_stamp != self._index.storage.stamp
                )
            ):
                self._write_manifest(dirty=False)
            if self._pending:
                with suppress(FileNotFoundError):
                    (self.vault_dir / PENDING_NAME).unlink()
                self._pending = False
        except Exception:
            if raise_errors:
                raise
            # The marker stays, so the next open repairs the index from the record files.
            logger.exception("could not write the patient index; it will be repaired on open")

    def _schedule_flush(self) -> None:
        if self._flush_timer is not None:
            return
        timer = threading.Timer(self.INDEX_FLUSH_DELAY_S, self._timed_flush)
        timer.daemon = True
        timer.name = "phyassist-index-flush"
        self._flush_timer = timer
        timer.start()

    def _timed_flush(self) -> None:
        with self._mutex:
            self._flush_timer = None
            if not self.closed:
                self._flush_index(raise_errors=False)

    def _cancel_flush_timer(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None

    def flush(self) -> None:
        """Write pending index changes now (records are always written at once)."""
        with self._mutex:
            self._require_writer()
            self._flush_index()

    # -- paths and low-level encrypted files -----------------------------------------------

    @property
    def _patients_dir(self) -> Path:
        return self.vault_dir / PATIENTS_DIR

    def _patient_dir(self, patient_id: str) -> Path:
        if not isinstance(patient_id, str) or not _ID_RE.fullmatch(patient_id):
            raise PatientNotFound(f"No patient with id {patient_id!r}.")
        return self._patients_dir / patient_id

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

    # -- records -----------------------------------------------------------------------------

    def _read_record(self, patient_id: str) -> tuple[Patient, bool, Stamp]:
        """The patient, its has_adapter flag and the record file's stamp.

        Raises RolledBack when the record is older than the one the vault last wrote.
        """
        patient, has_adapter, stamp, version = self._read_record_raw(patient_id)
        path = self._patient_dir(patient_id) / RECORD_FILE
        self._verify_file(
            path, lambda m, strict: m.record_problem(patient_id, version, strict=strict)
        )
        return patient, has_adapter, stamp

    def _read_record_raw(self, patient_id: str) -> tuple[Patient, bool, Stamp, int]:
        """The record as it is on disk (no manifest check) and its save counter."""
        path = self._patient_dir(patient_id) / RECORD_FILE
        key = self._data_key(patient_id)
        try:
            blob = self._read_file(path)
        except FileNotFoundError:
            raise PatientNotFound(f"No patient with id {patient_id!r}.") from None
        plain = crypto.decrypt(key, blob, _aad(patient_id, "record"), label=path)
        try:
            doc = json.loads(plain)
            version = doc["patient"].get("schema_version")
            saves = int(doc.get("saves", 0))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TamperedFile(path, f"unreadable record: {type(exc).__name__}") from None
        if version != SCHEMA_VERSION:
            raise UnknownSchema(path, version)
        try:
            patient = Patient.model_validate(doc["patient"])
            has_adapter = bool(doc.get("has_adapter", False))
        except ValueError as exc:
            raise TamperedFile(path, f"unreadable record: {type(exc).__name__}") from None
        if patient.id != patient_id:
            raise TamperedFile(path, "the record belongs to another patient")
        return patient, has_adapter, _stamp_of(blob), saves

    def _manifest_entry(self, patient_id: str) -> PatientFiles | None:
        if self._manifest is None:
            return None
        return self._manifest.patients.setdefault(patient_id, PatientFiles())

    def _write_record(self, patient: Patient, has_adapter: bool) -> Stamp:
        path = self._patient_dir(patient.id) / RECORD_FILE
        entry = self._manifest_entry(patient.id)
        saves = (entry.version if entry is not None else 0) + 1
        try:
            body = patient.model_dump_json().encode("utf-8")
        except UnicodeEncodeError:
            raise InputRejected(
                "The text holds characters that are not valid Unicode (e.g. a lone surrogate); "
                "nothing was saved."
            ) from None
        if len(body) > self.limits.max_record_bytes:
            raise InputRejected(
                f"The record would be {len(body) / 1e6:.1f} MB; the limit is "
                f"{self.limits.max_record_bytes / 1e6:.0f} MB. Nothing was saved."
            )
        payload = (
            b'{"has_adapter":'
            + (b"true" if has_adapter else b"false")
            + b',"saves":'
            + str(saves).encode()
            + b',"patient":'
            + body
            + b"}"
        )
        envelope = self._write_encrypted(
            path, self._data_key(patient.id), payload, _aad(patient.id, "record")
        )
        stamp = _stamp_of(envelope)
        if entry is not None:
            entry.version = saves
            entry.stamp = stamp
        return stamp

    @staticmethod
    def _summary_of(patient: Patient, has_adapter: bool) -> PatientSummary:
        return PatientSummary(
            id=patient.id,
            name=patient.name,
            created=patient.created,
            updated=patient.updated,
            note_count=len(patient.notes),
            has_adapter=has_adapter,
        )

    # -- validation ------------------------------------------------------------------------

    @property
    def limits(self) -> Limits:
        return self.settings.limits

    @staticmethod
    def _check_text(label: str, text: str | None, limit: int) -> None:
        if text is None:
            return
        if len(text) > limit:
            raise InputRejected(
                f"{label} is {len(text):,} characters long; the limit is {limit:,}. "
                "Shorten it and try again (nothing was saved)."
            )
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise InputRejected(
                    f"{label} holds bytes that are not valid text (invalid UTF-8 or a lone "
                    "surrogate). Retype it; nothing was saved."
                ) from None

    def _clean_name(self, name: str) -> str:
        name = unicodedata.normalize("NFC", name or "").strip()
        if not name:
            raise InputRejected("A patient needs a name (it cannot be empty).")
        self._check_text("The name", name, self.limits.max_name_chars)
        if any(unicodedata.category(ch) in _CONTROL for ch in name):
            raise InputRejected("The name cannot contain line breaks or control characters.")
        return name

    def _check_basic(self, basic: BasicInfo) -> None:
        for field, (label, _zh) in BASIC_FIELDS.items():
            self._check_text(
                f"Basic information '{label}'", getattr(basic, field), self.limits.max_field_chars
            )

    def _check_item(self, where: str, item: Item) -> None:
        limit = self.limits.max_field_chars
        self._check_text(where, item.text, limit)
        self._check_text(f"{where} (model draft)", item.draft, limit)
        if len(item.comments) > MAX_COMMENTS_PER_ITEM:
            raise InputRejected(f"{where} has more than {MAX_COMMENTS_PER_ITEM} comments.")
        for comment in item.comments:
            self._check_text(f"A comment on {where.lower()}", comment, limit)

    def _check_note(self, note: Note, *, new: bool) -> None:
        if new and not note.question.strip():
            raise InputRejected("A note needs the client's statement (it cannot be empty).")
        self._check_text("The client's statement", note.question, self.limits.max_statement_chars)
        self._check_text("The observed state", note.observed_state, self.limits.max_field_chars)
        analysis = note.analysis
        self._check_item("The symptom type", analysis.symptom_type)
        for section in ("reasons", "advice", "unplaced"):
            items = getattr(analysis, section)
            if len(items) > self.limits.max_items_per_section:
                raise InputRejected(
                    f"{section.capitalize()} has {len(items)} items; the limit is "
                    f"{self.limits.max_items_per_section}. Merge some; nothing was saved."
                )
            for number, item in enumerate(items, start=1):
                self._check_item(f"{section.capitalize()} item {number}", item)
        self._check_text("The model output", analysis.raw_output, MAX_RAW_OUTPUT_CHARS)
        self._check_text("The model name", analysis.model_name, self.limits.max_field_chars)

    def _check_patient(self, patient: Patient) -> None:
        clean = self._clean_name(patient.name)
        if clean != patient.name:
            patient.name = clean
        self._check_basic(patient.basic)
        for note in patient.notes:
            self._check_note(note, new=False)

    # -- patients --------------------------------------------------------------------------

    def list_patients(self) -> list[PatientSummary]:
        """Every patient, most recently updated first."""
        with self._mutex:
            self._key()
            return self._index.all()

    def search(self, text: str) -> list[PatientSummary]:
        """Case-insensitive substring of the name (Chinese fine) or id prefix; '' = all."""
        with self._mutex:
            self._key()
            return self._index.search(text or "")

    def record_stamps(self) -> dict[str, str | None]:
        """Patient id -> stamp of its record file (a per-write nonce), from memory.

        A derived index (engine.knowledge) keeps the stamp it read each record at and
        compares: a changed stamp is a saved or amended note, a missing id a deleted patient.
        """
        with self._mutex:
            self._key()
            return self._index.stamps()

    def get_summary(self, patient_id: str) -> PatientSummary:
        with self._mutex:
            self._key()
            summary = self._index.summary(patient_id)
            if summary is None:
                raise PatientNotFound(f"No patient with id {patient_id!r}.")
            return summary

    def create_patient(self, name: str, basic: BasicInfo | None = None) -> Patient:
        """A new patient with a fresh random data key, saved and indexed."""
        patient = Patient(name=self._clean_name(name), basic=basic or BasicInfo())
        return self.import_patient(patient)

    def import_patient(self, patient: Patient) -> Patient:
        """Store a complete Patient built elsewhere (its id must be new); returns a copy."""
        self.import_patients([patient])
        return patient.model_copy(deep=True)

    def import_patients(self, patients: Iterable[Patient]) -> int:
        """Store many new patients with a single index write (migration, benchmarks)."""
        with self._mutex, self._changing(defer=False):
            count = 0
            for patient in patients:
                stamp = self._write_new_patient(patient)
                self._index.upsert(self._summary_of(patient, False), stamp)
                count += 1
            return count

    def _write_new_patient(self, patient: Patient) -> Stamp:
        self._check_patient(patient)
        directory = self._patient_dir(patient.id)
        if directory.exists() or patient.id in self._index:
            raise InputRejected(f"A patient with id {patient.id} already exists.")
        ensure_dir(directory)
        data_key = crypto.new_key()
        try:
            self._write_encrypted(
                directory / KEY_FILE, self._key(), data_key, _aad(patient.id, "key")
            )
            self._data_keys[patient.id] = data_key
            return self._write_record(patient, False)
        except BaseException:
            # leave no folder holding only a key behind
            self._data_keys.pop(patient.id, None)
            if self._manifest is not None:
                self._manifest.patients.pop(patient.id, None)
            with suppress(OSError):
                shred_file(directory / KEY_FILE)
                self._remove_patient_dir(directory)
            raise

    def load_patient(self, patient_id: str) -> Patient:
        """The whole record. Raises PatientNotFound, TamperedFile, UnknownSchema."""
        with self._mutex:
            self._key()
            patient, _has_adapter, _stamp = self._read_record(patient_id)
            return patient

    def save_patient(self, patient: Patient) -> None:
        """Atomically replace the patient's record; bumps ``updated`` on ``patient``."""
        with self._mutex:
            self._require_writer()
            self._check_patient(patient)
            if (
                patient.id not in self._index
                and not (self._patient_dir(patient.id) / RECORD_FILE).is_file()
            ):
                raise PatientNotFound(
                    f"No patient with id {patient.id!r} (deleted?). Use create_patient."
                )
            has_adapter = self._has_adapter(patient.id)
            with self._changing(defer=True):
                patient.updated = max(utcnow(), patient.updated)
                stamp = self._write_record(patient, has_adapter)
                self._index.upsert(self._summary_of(patient, has_adapter), stamp)

    def _has_adapter(self, patient_id: str) -> bool:
        summary = self._index.summary(patient_id)
        if summary is not None:
            return summary.has_adapter
        _patient, has_adapter, _stamp = self._read_record(patient_id)
        return has_adapter

    def add_note(self, patient_id: str, note: Note) -> Patient:
        """Append ``note`` to the patient's record and save; returns the updated patient."""
        with self._mutex:
            self._require_writer()
            self._check_note(note, new=True)
            patient, has_adapter, _stamp = self._read_record(patient_id)
            patient.notes.append(note.model_copy(deep=True))
            patient.updated = max(utcnow(), patient.updated)
            with self._changing(defer=True):
                stamp = self._write_record(patient, has_adapter)
                self._index.upsert(self._summary_of(patient, has_adapter), stamp)
            return patient

    # -- corrections: basic information, amended and deleted notes -------------------------

    def update_patient_info(
        self, patient_id: str, *, name: str | None = None, basic: BasicInfo | None = None
    ) -> Patient:
        """Correct the name and/or the basic information; returns the updated patient."""
        with self._mutex:
            self._require_writer()
            patient, has_adapter, _stamp = self._read_record(patient_id)
            if name is not None:
                patient.name = self._clean_name(name)
            if basic is not None:
                self._check_basic(basic)
                patient.basic = basic.model_copy(deep=True)
            return self._rewrite(patient, has_adapter)

    def amend_note(
        self,
        patient_id: str,
        note_id: str,
        *,
        question: str | None = None,
        observed_state: str | None = None,
        analysis: AnalysisDraft | None = None,
        reason: str = "",
    ) -> Patient:
        """Replace a note's content, keeping the content it had as an earlier version.

        ``reason`` (optional) says why; it is kept with the earlier version.
        """
        with self._mutex:
            self._require_writer()
            self._check_text("The reason", reason, self.limits.max_field_chars)
            patient, has_adapter, _stamp = self._read_record(patient_id)
            note = self._live_note(patient, note_id)
            amended = note.model_copy(deep=True)
            if question is not None:
                amended.question = question
            if observed_state is not None:
                amended.observed_state = observed_state
            if analysis is not None:
                amended.analysis = analysis.model_copy(deep=True)
            self._check_note(amended, new=True)
            if (amended.question, amended.observed_state, amended.analysis) == (
                note.question,
                note.observed_state,
                note.analysis,
            ):
                raise InputRejected("The amendment changes nothing; the note is as it was.")
            now = max(utcnow(), note.amended or note.created)
            amended.versions.append(
                NoteVersion(
                    question=note.question,
                    observed_state=note.observed_state,
                    analysis=note.analysis,
                    written=note.amended or note.created,
                    replaced=now,
                    reason=reason.strip(),
                )
            )
            amended.amended = now
            patient.notes[patient.notes.index(note)] = amended
            return self._rewrite(patient, has_adapter)

    def delete_note(self, patient_id: str, note_id: str, reason: str = "") -> Patient:
        """Delete a note: its text and versions go, a tombstone (date, reason) stays."""
        with self._mutex:
            self._require_writer()
            self._check_text("The reason", reason, self.limits.max_field_chars)
            patient, has_adapter, _stamp = self._read_record(patient_id)
            note = self._live_note(patient, note_id)
            patient.notes.remove(note)
            patient.deleted_notes.append(
                NoteTombstone(id=note.id, created=note.created, reason=reason.strip())
            )
            return self._rewrite(patient, has_adapter)

    @staticmethod
    def _live_note(patient: Patient, note_id: str) -> Note:
        try:
            return patient.note(note_id)
        except KeyError:
            gone = any(t.id == note_id for t in patient.deleted_notes)
            raise InputRejected(
                "That note was deleted." if gone else f"No note with id {note_id!r}."
            ) from None

    def _rewrite(self, patient: Patient, has_adapter: bool) -> Patient:
        patient.updated = max(utcnow(), patient.updated)
        with self._changing(defer=True):
            stamp = self._write_record(patient, has_adapter)
            self._index.upsert(self._summary_of(patient, has_adapter), stamp)
        return patient

    def set_has_adapter(self, patient_id: str, value: bool) -> None:
        """Record whether the patient has a trained adapter (shown in the list)."""
        with self._mutex:
            self._require_writer()
            patient, has_adapter, _stamp = self._read_record(patient_id)
            if has_adapter == value and patient_id in self._index:
                return
            with self._changing(defer=False):
                stamp = self._write_record(patient, value)
                self._index.upsert(self._summary_of(patient, value), stamp)

    def delete_patient(self, patient_id: str) -> None:
        """Cryptographic erase, as a transaction a later open finishes if this one dies.

        A durable tombstone in the manifest first, then the wrapped data key is shredded,
        then the folder and the index row are removed, then the tombstone.
        """
        with self._mutex:
            self._require_writer()
            directory = self._patient_dir(patient_id)
            if not directory.is_dir() and patient_id not in self._index:
                raise PatientNotFound(f"No patient with id {patient_id!r}.")
            with self._changing(defer=False):
                if self._manifest is not None:
                    self._manifest.deleting.add(patient_id)
                    self._write_manifest(dirty=True)
                _step("delete:tombstoned")
                self._complete_delete(patient_id)

    def _complete_delete(self, patient_id: str) -> None:
        """The steps after the tombstone; each can be repeated after a kill."""
        directory = self._patient_dir(patient_id)
        shred_file(directory / KEY_FILE)
        self._data_keys.pop(patient_id, None)
        _step("delete:key_shredded")
        self._remove_patient_dir(directory)
        _step("delete:folder_removed")
        self._damaged.pop(patient_id, None)
        self._index.remove(patient_id)
        if self._manifest is not None:
            self._manifest.patients.pop(patient_id, None)
            self._manifest.deleting.discard(patient_id)

    def _remove_patient_dir(self, directory: Path) -> None:
        shutil.rmtree(directory, ignore_errors=True)
        fsync_dir(self._patients_dir)

    def accept_current_files(self) -> None:
        """Take the files as they are now as what the vault wrote (after a deliberate restore).

        Clears the rollback reports; `phyassist doctor --accept-restore` calls it.
        """
        with self._mutex:
            self._require_writer()
            self._manifest = self._manifest_from_disk(None)
            self._manifest_strict = True
            self._damaged.clear()
            self._problems.clear()
            self.rebuild_index()
            self._write_manifest(dirty=False)

    def damaged_patients(self) -> dict[str, str]:
        """Patients whose record could not be read at the last index check: id -> reason."""
        with self._mutex:
            return dict(self._damaged)

    # -- per-patient blobs -------------------------------------------------------------------

    def _blob_path(self, patient_id: str, kind: str) -> Path:
        return self._patient_dir(patient_id) / BLOBS_DIR / _blob_file_name(kind)

    def _check_blob_size(self, kind: str, data: bytes) -> None:
        if len(data) > self.limits.max_blob_bytes:
            raise InputRejected(
                f"{kind!r} is {len(data) / 1e6:.1f} MB; the limit for one stored item is "
                f"{self.limits.max_blob_bytes / 1e6:.0f} MB (PHYASSIST_LIMITS__MAX_BLOB_BYTES). "
                "Nothing was saved."
            )

    def write_blob(self, patient_id: str, kind: str, data: bytes) -> None:
        """Encrypt ``data`` under the patient's key as ``kind`` (e.g. "draft", "adapter/v3")."""
        with self._mutex:
            self._require_writer()
            path = self._blob_path(patient_id, kind)
            data = _as_bytes(data)
            self._check_blob_size(kind, data)
            key = self._data_key(patient_id)
            ensure_dir(path.parent)
            with self._changing(defer=True):
                envelope = self._write_encrypted(path, key, data, _aad(patient_id, f"blob:{kind}"))
                entry = self._manifest_entry(patient_id)
                if entry is not None:
                    entry.blobs[kind] = _stamp_of(envelope)

    def read_blob(self, patient_id: str, kind: str) -> bytes | None:
        """The blob's bytes, or None if never written.

        Raises TamperedFile, PatientNotFound, RolledBack (an older copy, or a blob the vault
        wrote that is gone).
        """
        with self._mutex:
            self._key()
            path = self._blob_path(patient_id, kind)
            key = self._data_key(patient_id)
            try:
                blob = self._read_file(path)
            except FileNotFoundError:
                blob = None
            self._verify_stamp(patient_id, kind, None if blob is None else _stamp_of(blob))
            if blob is None:
                return None
            return crypto.decrypt(key, blob, _aad(patient_id, f"blob:{kind}"), label=path)

    def delete_blob(self, patient_id: str, kind: str) -> None:
        with self._mutex:
            self._require_writer()
            path = self._blob_path(patient_id, kind)
            with self._changing(defer=True):
                with suppress(FileNotFoundError):
                    path.unlink()
                    fsync_dir(path.parent)
                entry = self._manifest_entry(patient_id)
                if entry is not None:
                    entry.blobs.pop(kind, None)

    def list_blobs(self, patient_id: str, prefix: str = "") -> list[str]:
        """Kinds of this patient's blobs that start with ``prefix``, sorted."""
        with self._mutex:
            self._key()
            directory = self._patient_dir(patient_id)
            if not (directory / KEY_FILE).is_file():
                raise PatientNotFound(f"No patient with id {patient_id!r}.")
            return self._kinds_in(directory / BLOBS_DIR, prefix)

    @staticmethod
    def _kinds_in(directory: Path, prefix: str) -> list[str]:
        kinds: list[str] = []
        with suppress(FileNotFoundError):
            for entry in os.scandir(directory):
                kind = _blob_kind_from_file(entry.name)
                if kind is not None and kind.startswith(prefix):
                    kinds.append(kind)
        return sorted(kinds)

    # -- vault-level blobs -------------------------------------------------------------------

    def _vault_blob_path(self, kind: str) -> Path:
        return self.vault_dir / VAULT_BLOBS_DIR / _blob_file_name(kind)

    def write_vault_blob(self, kind: str, data: bytes) -> None:
        """Encrypt ``data`` under the master key (audit log, domain registry, ...)."""
        with self._mutex:
            self._require_writer()
            path = self._vault_blob_path(kind)
            data = _as_bytes(data)
            self._check_blob_size(kind, data)
            ensure_dir(path.parent)
            with self._changing(defer=True):
                envelope = self._write_encrypted(
                    path, self._key(), data, _aad("", f"vault-blob:{kind}")
                )
                if self._manifest is not None:
                    self._manifest.vault_blobs[kind] = _stamp_of(envelope)

    def read_vault_blob(self, kind: str) -> bytes | None:
        """The blob's bytes or None; RolledBack when it is not what the vault last wrote."""
        with self._mutex:
            path = self._vault_blob_path(kind)
            key = self._key()
            try:
                blob = self._read_file(path)
            except FileNotFoundError:
                blob = None
            self._verify_stamp(None, kind, None if blob is None else _stamp_of(blob))
            if blob is None:
                return None
            return crypto.decrypt(key, blob, _aad("", f"vault-blob:{kind}"), label=path)

    def delete_vault_blob(self, kind: str) -> None:
        with self._mutex:
            self._require_writer()
            path = self._vault_blob_path(kind)
            with self._changing(defer=True):
                with suppress(FileNotFoundError):
                    path.unlink()
                    fsync_dir(path.parent)
                if self._manifest is not None:
                    self._manifest.vault_blobs.pop(kind, None)

    def list_vault_blobs(self, prefix: str = "") -> list[str]:
        with self._mutex:
            self._key()
            return self._kinds_in(self.vault_dir / VAULT_BLOBS_DIR, prefix)

    # -- index maintenance -------------------------------------------------------------------

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

    def _clean_leftovers(self, leftovers: list[Path]) -> None:
        if not self.writer:
            return
        for directory in leftovers:
            if self._manifest is not None and directory.name in self._manifest.patients:
                continue  # a patient the vault wrote whose record is gone: reported, kept
            shred_file(directory / KEY_FILE)
            self._remove_patient_dir(directory)

    def _verify_index(self) -> None:
        """After a writer died: refresh every row whose record changed since the index."""
        complete, leftovers = self._scan()
        self._clean_leftovers(leftovers)
        upserts: list[tuple[PatientSummary, Stamp | None]] = []
        removals = [pid for pid in self._index.ids() if pid not in complete]
        for pid, stamp in complete.items():
            if self._index.stamp(pid) == stamp:
                continue
            try:
                patient, has_adapter, fresh = self._read_record(pid)
            except PhyAssistError as exc:
                self._damaged[pid] = str(exc)
                if pid in self._index:
                    removals.append(pid)
                continue
            upserts.append((self._summary_of(patient, has_adapter), fresh))
        with self._index.storage.deferred():
            self._index.apply(upserts, removals)
        self.index_repaired = len(upserts) + len(removals)
        if self.writer:
            self._flush_index()

    def rebuild_index(self) -> int:
        """Recreate the index from the record files; returns the number of patients indexed.

        Unreadable records are left out and reported by :meth:`damaged_patients`.
        """
        with self._mutex:
            self._key()
            self._cancel_flush_timer()
            complete, leftovers = self._scan()
            self._clean_leftovers(leftovers)
            self._damaged.clear()
            rows = []
            for pid in sorted(complete):
                try:
                    patient, has_adapter, stamp = self._read_record(pid)
                except PhyAssistError as exc:
                    self._damaged[pid] = str(exc)
                    continue
                rows.append(PatientIndex.make_row(self._summary_of(patient, has_adapter), stamp))
            self._index.replace_all(rows)
            if self.writer:
                self._pending = self._pending or (self.vault_dir / PENDING_NAME).exists()
                self._flush_index()
            return len(rows)
