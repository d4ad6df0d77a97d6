"""The encrypted patient store: the one object the TUI, the engine and training talk to.

Layout of a vault directory (every file but ``vault.json`` and the lock file is AES-GCM
encrypted; no file name carries patient text; ids are random)::

    vault.json                  header: scrypt params + master key wrapped by the passphrase
    vault.lock                  flock'ed by the one writer process
    manifest.bin                what the vault last wrote: versions and stamps (master key)
    index.bin                   tinydb index of PatientSummary rows (master key)
    index.pending               present while index.bin may lag the records (master key)
    tmp/                        temp files of in-flight atomic writes
    vault-blobs/<kind>.bin      vault-level blobs (audit log, registries) (master key)
    patients/<id>/key.bin       the patient's random data key, wrapped by the master key
    patients/<id>/record.bin    the Patient (basic info + notes) (data key)
    patients/<id>/blobs/<kind>.bin  drafts, chat, adapters, training logs (data key)

Each encrypted file binds (format version, patient id, file kind) as associated data, so
a file copied to another patient or kind fails authentication.

This module holds the handle itself: opening (unlock, writer lock, start-up checks) and
closing, the master key and what other layers derive from it. Its jobs live in their own
modules, each a base of :class:`Store`: ``files`` (paths, encrypted file I/O, data keys),
``validation`` (input limits), ``patients`` (records and notes), ``deletion`` (the
cryptographic-erase transaction), ``blobs`` (per-patient and vault-level blobs),
``indexing`` (``index.bin`` kept in step with the records) and ``integrity`` (the
manifest: rollbacks and vanished files noticed).
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType

from engine.errors import (
    PhyAssistError,
    ReadOnlyVault,
    TamperedFile,
    VaultClosed,
    VaultExists,
    VaultNotFound,
    WrongPassphrase,
)
from engine.settings import Settings, load_settings
from engine.vault import crypto, unlock_throttle
from engine.vault import header as vault
from engine.vault.atomicio import WriterLock, ensure_dir, remove_stale_temps
from engine.vault.blobs import BlobStore
from engine.vault.deletion import PatientDeletion
from engine.vault.files import (
    LOCK_NAME,
    PATIENTS_DIR,
    PENDING_NAME,
    TMP_DIR,
    VAULT_BLOBS_DIR,
    VaultFiles,
)
from engine.vault.index import INDEX_NAME, EncryptedStorage, PatientIndex
from engine.vault.indexing import IndexUpkeep
from engine.vault.integrity import ManifestChecks
from engine.vault.manifest import Manifest
from engine.vault.patients import PatientRecords
from engine.vault.validation import RecordChecks

logger = logging.getLogger("phyassist.store")

# Writers still open at interpreter exit get closed (index written, lock released) then.
_OPEN_WRITERS: weakref.WeakSet[Store] = weakref.WeakSet()


@atexit.register
def _close_open_writers() -> None:
    for store in list(_OPEN_WRITERS):
        with suppress(Exception):
            store.close()


class Store(
    PatientRecords,
    PatientDeletion,
    BlobStore,
    ManifestChecks,
    IndexUpkeep,
    RecordChecks,
    VaultFiles,
):
    """An unlocked vault. Thread-safe; one writer process per vault (others get VaultBusy).

    Open with :meth:`open` or :meth:`create`; use as a context manager or call :meth:`close`.
    A handle opened with ``writer=False`` takes no lock, never writes, and raises
    :class:`ReadOnlyVault` on any change.
    """

    # -- opening and closing -------------------------------------------------------------

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
