"""The patient index: a tinydb table of summaries, encrypted at rest, written atomically.

The index is a cache for listing and searching without decrypting every patient file;
the per-patient record files are the truth and :meth:`Store.rebuild_index` can always
recreate it. tinydb's own ``JSONStorage`` rewrites its file in place (a kill mid-write
leaves it unparseable), so :class:`EncryptedStorage` keeps the decrypted tables in memory
and writes the whole database as one encrypted, atomically replaced file: at once, or, for
changes made inside :meth:`EncryptedStorage.deferred`, at the next :meth:`~EncryptedStorage.flush`
(the store makes that safe with its ``index.pending`` marker).
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from tinydb import where
from tinydb.storages import Storage
from tinydb.table import Document, Table

from engine.errors import TamperedFile
from engine.records import PatientSummary
from engine.vault import crypto
from engine.vault.atomicio import atomic_write

INDEX_NAME = "index.bin"
INDEX_AAD = b"\x00index"
TABLE = "patients"


def search_key(text: str) -> str:
    """Normalized form used for case-insensitive matching (full-width letters fold too)."""
    return unicodedata.normalize("NFKC", text).casefold()


class EncryptedStorage(Storage):
    """A tinydb Storage that holds the tables decrypted in memory.

    ``read`` returns the in-memory tables (decrypting the file once); ``write`` encrypts
    the whole database with the vault's master key and atomically replaces the file.
    Inside :meth:`deferred` writes only update memory and mark the storage dirty until
    :meth:`flush`; with ``persist=False`` (a read-only vault handle) nothing is written.
    """

    def __init__(
        self, path: Path, key: bytes, *, persist: bool = True, temp_dir: Path | None = None
    ) -> None:
        self.path = path
        self._key = key
        self._persist = persist
        self._temp_dir = temp_dir
        self._tables: dict[str, dict[str, Any]] | None = None
        self._defer = 0
        self.dirty = False
        self.writes = 0  # times the file was written (for tests and benchmarks)
        self.stamp: str | None = None  # nonce of the file as last read or written

    @property
    def persist(self) -> bool:
        return self._persist

    def load(self) -> None:
        """Decrypt the file into memory; raises FileNotFoundError, TamperedFile, UnknownSchema."""
        blob = self.path.read_bytes()
        plain = crypto.decrypt(self._key, blob, INDEX_AAD, label=self.path)
        self.stamp = crypto.stamp_of(blob)
        try:
            tables = json.loads(plain.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise TamperedFile(self.path, "the index is not valid JSON") from None
        if not isinstance(tables, dict) or not all(isinstance(t, dict) for t in tables.values()):
            raise TamperedFile(self.path, "the index has an unexpected shape")
        self._tables = tables
        self.dirty = False

    def read(self) -> dict[str, dict[str, Any]] | None:
        if self._tables is None:
            try:
                self.load()
            except FileNotFoundError:
                self._tables = {}
        return self._tables

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        self._tables = data
        if not self._persist:
            return
        if self._defer:
            self.dirty = True
            return
        self._write_file(data)

    def _write_file(self, data: dict[str, dict[str, Any]]) -> None:
        payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        envelope = crypto.encrypt(self._key, payload, INDEX_AAD)
        atomic_write(self.path, envelope, temp_dir=self._temp_dir)
        self.stamp = crypto.stamp_of(envelope)
        self.dirty = False
        self.writes += 1

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Keep writes in memory until :meth:`flush` (the caller guarantees recovery)."""
        self._defer += 1
        try:
            yield
        finally:
            self._defer -= 1

    def flush(self) -> bool:
        """Write pending changes; returns whether anything was written."""
        if not (self._persist and self.dirty and self._tables is not None):
            return False
        self._write_file(self._tables)
        return True

    def close(self) -> None:
        self._tables = None


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


class PatientIndex:
    """Summaries of every patient, keyed by patient id, on top of tinydb."""

    def __init__(self, storage: EncryptedStorage) -> None:
        self.storage = storage
        self._table = Table(storage, TABLE, cache_size=0)  # no query cache: rows change often
        self._doc_ids: dict[str, int] = {}
        self._summaries: dict[str, PatientSummary] = {}
        self._order: list[PatientSummary] | None = None  # most recently updated first
        self._stamps: dict[str, str | None] = {}  # id -> record stamp, kept with the rows

    def load(self) -> None:
        """Read the file (see :meth:`EncryptedStorage.load`) and build the in-memory maps."""
        self.storage.load()
        self._reindex()

    def _reindex(self) -> None:
        self._table.clear_cache()
        self._doc_ids = {}
        self._summaries = {}
        self._order = None
        self._stamps = {}
        for doc in self._table.all():
            self._doc_ids[doc["id"]] = doc.doc_id
            self._summaries[doc["id"]] = self._summary(doc)
            self._stamps[doc["id"]] = doc.get("stamp")

    @staticmethod
    def _summary(row: dict[str, Any]) -> PatientSummary:
        return PatientSummary.model_construct(
            id=row["id"],
            name=row["name"],
            created=_parse_time(row["created"]),
            updated=_parse_time(row["updated"]),
            note_count=int(row.get("note_count", 0)),
            has_adapter=bool(row.get("has_adapter", False)),
        )

    @staticmethod
    def make_row(summary: PatientSummary, stamp: str | None = None) -> dict[str, Any]:
        return {
            "id": summary.id,
            "name": summary.name,
            "key": search_key(summary.name),
            "created": summary.created.isoformat(),
            "updated": summary.updated.isoformat(),
            "note_count": summary.note_count,
            "has_adapter": summary.has_adapter,
            "stamp": stamp,
        }

    # -- queries ---------------------------------------------------------------------------

    def __contains__(self, patient_id: str) -> bool:
        return patient_id in self._doc_ids

    def __len__(self) -> int:
        return len(self._doc_ids)

    def ids(self) -> list[str]:
        return list(self._doc_ids)

    def row(self, patient_id: str) -> dict[str, Any] | None:
        doc_id = self._doc_ids.get(patient_id)
        if doc_id is None:
            return None
        return self._table.get(doc_id=doc_id)  # type: ignore[return-value]

    def stamp(self, patient_id: str) -> str | None:
        row = self.row(patient_id)
        return None if row is None else row.get("stamp")

    def stamps(self) -> dict[str, str | None]:
        """Every patient's record stamp (what a derived index compares to see changes).
        From memory: the knowledge index asks on every query (tinydb's ``all()`` of 2,000
        rows took ~2 ms)."""
        return dict(self._stamps)

    def summary(self, patient_id: str) -> PatientSummary | None:
        cached = self._summaries.get(patient_id)
        return cached.model_copy() if cached is not None else None

    def all(self) -> list[PatientSummary]:
        """Every summary, most recently updated first."""
        if self._order is None:
            self._order = sorted(
                self._summaries.values(), key=lambda s: (s.updated, s.id), reverse=True
            )
        return [s.model_copy() for s in self._order]

    def search(self, text: str) -> list[PatientSummary]:
        """Case-insensitive substring of the name, or a prefix of the id; empty = all."""
        needle = search_key(text.strip())
        if not needle:
            return self.all()
        docs = self._table.search(
            (_field("key").test(_contains, needle)) | (_field("id").test(_startswith, needle))
        )
        return self._sorted(self._summaries[d["id"]] for d in docs)

    @staticmethod
    def _sorted(summaries: Iterable[PatientSummary]) -> list[PatientSummary]:
        ordered = sorted(summaries, key=lambda s: (s.updated, s.id), reverse=True)
        return [s.model_copy() for s in ordered]

    # -- changes (each one is one atomic, encrypted write) ---------------------------------

    def upsert(self, summary: PatientSummary, stamp: str | None) -> None:
        row = self.make_row(summary, stamp)
        doc_id = self._doc_ids.get(summary.id)
        if doc_id is None:
            doc_id = self._table.insert(row)
            self._doc_ids[summary.id] = doc_id
        else:
            self._table.upsert(Document(row, doc_id=doc_id))
        self._summaries[summary.id] = self._summary(row)
        self._stamps[summary.id] = stamp
        self._order = None

    def remove(self, patient_id: str) -> None:
        doc_id = self._doc_ids.pop(patient_id, None)
        self._summaries.pop(patient_id, None)
        self._stamps.pop(patient_id, None)
        self._order = None
        if doc_id is not None:
            self._table.remove(doc_ids=[doc_id])

    def apply(self, upserts: list[tuple[PatientSummary, str | None]], removals: list[str]):
        """Several changes in one write (used when reconciling with the patient files)."""
        if not upserts and not removals:
            return
        rows = {pid: self.row(pid) for pid in self._doc_ids}
        for pid in removals:
            rows.pop(pid, None)
        for summary, stamp in upserts:
            rows[summary.id] = self.make_row(summary, stamp)
        self.replace_all(rows.values())

    def replace_all(self, rows: Iterable[dict[str, Any]]) -> None:
        """Swap the whole table for ``rows`` in a single write."""
        table = {str(i): dict(row) for i, row in enumerate(rows, start=1)}
        self.storage.write({TABLE: table})
        # a tinydb Table remembers its next free document id: start a fresh one
        self._table = Table(self.storage, TABLE, cache_size=0)
        self._reindex()

    def close(self) -> None:
        self.storage.close()


def _field(name: str):
    return where(name)


def _contains(value: object, needle: str) -> bool:
    return isinstance(value, str) and needle in value


def _startswith(value: object, needle: str) -> bool:
    return isinstance(value, str) and value.startswith(needle)
