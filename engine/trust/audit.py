"""The audit log: who did what to which patient, append-only, hash-chained, encrypted.

Entries live in the vault's encrypted vault-level blobs (master key, AES-GCM):

    audit/seg-000000, audit/seg-000001, ...   JSON lines, SEGMENT_ENTRIES entries each
    audit/head                                {"count": N, "head_hash": "<hash of entry N-1>"}

Each entry carries the hash of the one before it (``prev_hash``) and its own hash over all
its fields, so an edited, removed or reordered entry breaks the chain. The head lives in a
separately authenticated file, so cutting entries off the end (or deleting the newest
segment, or putting back an older copy of it) is detected too. An append rewrites only the
newest segment (at most SEGMENT_ENTRIES lines) and the head, never the whole log.

Writes go segment first, head second: a crash between the two leaves one valid entry past
the head, which :meth:`AuditLog.verify` reports as a note (not a failure) and the next
append absorbs.

Limits (see SECURITY.md): whoever holds the passphrase holds the key and could rewrite the
whole log consistently; a copy of the head hash kept elsewhere (``phyassist audit verify
--anchor HASH``) proves the history up to that point was not rewritten. Putting back an
older copy of the whole vault directory is also undetectable without such an anchor.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import re
import threading
import weakref
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from engine.errors import (
    InputRejected,
    PhyAssistError,
    StorageError,
    TamperedFile,
    UnknownSchema,
)

if TYPE_CHECKING:
    from engine.vault.store import Store

__all__ = [
    "ACTIONS",
    "GENESIS_HASH",
    "SEGMENT_ENTRIES",
    "AuditEntry",
    "AuditLog",
    "VerifyResult",
    "current_os_user",
    "record",
]

logger = logging.getLogger(__name__)

SEGMENT_ENTRIES = 128
HEAD_KIND = "audit/head"
SEGMENT_PREFIX = "audit/seg-"
GENESIS_HASH = "0" * 64
AUDIT_VERSION = 1
MAX_DETAIL_CHARS = 1000

# Actions the product records; others are accepted if they look like identifiers.
ACTIONS = (
    "vault_created",
    "unlock",
    "lock",
    "patient_created",
    "patient_opened",
    "patient_updated",
    "note_saved",
    "note_amended",
    "note_deleted",
    "draft_saved",
    "chat_saved",
    "adapter_trained",
    "adapter_activated",
    "preference_recorded",  # learning: a Compare choice (counts only)
    "adapter_deleted",
    "export",
    "import",
    "patient_deleted",
    "risk_flagged",
    "risk_acknowledged",
    "passphrase_changed",
    "backup_target_added",
    "vault_restored",
    # written by engine.session.Session for every front end
    "unlock_failed",
    "risk_cancelled",
    "training_started",
    "training_finished",
    "training_failed",
    "training_killed",
    "restore_accepted",
)
_ACTION_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_ID_RE = re.compile(r"^[0-9a-f]{8,64}$")


def current_os_user() -> str:
    """The OS account running PhyAssist (falls back to the uid where no passwd entry exists)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    time: str
    os_user: str
    action: str
    patient_id: str | None
    detail: str
    prev_hash: str
    hash: str

    def compute_hash(self) -> str:
        return _entry_hash(
            self.seq,
            self.time,
            self.os_user,
            self.action,
            self.patient_id,
            self.detail,
            self.prev_hash,
        )

    def to_line(self) -> str:
        # ASCII only: no character in any field (U+2028, U+0085, ...) can end the line.
        return json.dumps(asdict(self), ensure_ascii=True, sort_keys=True, separators=(",", ":"))


def _entry_hash(
    seq: int,
    time: str,
    os_user: str,
    action: str,
    patient_id: str | None,
    detail: str,
    prev_hash: str,
) -> str:
    body = json.dumps(
        [AUDIT_VERSION, seq, time, os_user, action, patient_id, detail, prev_hash],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


@dataclass
class VerifyResult:
    """``ok`` is False when anything was removed, edited, reordered or cut off."""

    ok: bool
    count: int  # entries read in chain order up to the first problem
    head_count: int | None  # what the head says (None: no head)
    head_hash: str | None  # hash of the last good entry
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    first_bad_seq: int | None = None

    def summary(self) -> str:
        if self.ok:
            text = f"Audit log intact: {self.count} entries, head {self.head_hash or '-'}."
            return " ".join([text, *self.notes])
        where = (
            f" (first bad entry: #{self.first_bad_seq})" if self.first_bad_seq is not None else ""
        )
        return f"Audit log FAILED verification{where}: " + "; ".join(self.problems)


_LOCKS: weakref.WeakKeyDictionary[object, threading.Lock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def _lock_for(store: object) -> threading.Lock:
    with _LOCKS_GUARD:
        lock = _LOCKS.get(store)
        if lock is None:
            lock = _LOCKS[store] = threading.Lock()
        return lock


def _segment_kind(index: int) -> str:
    return f"{SEGMENT_PREFIX}{index:06d}"


def _parse_entry(line: str, label: str) -> AuditEntry:
    try:
        doc = json.loads(line)
        entry = AuditEntry(
            seq=int(doc["seq"]),
            time=str(doc["time"]),
            os_user=str(doc["os_user"]),
            action=str(doc["action"]),
            patient_id=None if doc["patient_id"] is None else str(doc["patient_id"]),
            detail=str(doc["detail"]),
            prev_hash=str(doc["prev_hash"]),
            hash=str(doc["hash"]),
        )
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise TamperedFile(label, f"unreadable audit entry: {type(exc).__name__}") from None
    return entry


class AuditLog:
    """The audit log of one open :class:`engine.vault.store.Store`.

    Appending needs a writer store (a read-only one raises ``ReadOnlyVault``); reading and
    verifying work on either.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = _lock_for(store)

    # -- reading -----------------------------------------------------------------------------

    def _head(self) -> dict | None:
        raw = self.store.read_vault_blob(HEAD_KIND)
        if raw is None:
            return None
        try:
            head = json.loads(raw)
            if head.get("version") != AUDIT_VERSION:
                raise UnknownSchema(HEAD_KIND, head.get("version"))
            return {"count": int(head["count"]), "head_hash": str(head["head_hash"])}
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            raise TamperedFile(HEAD_KIND, "unreadable audit head") from None

    def _segment(self, index: int) -> list[AuditEntry] | None:
        kind = _segment_kind(index)
        raw = self.store.read_vault_blob(kind)
        if raw is None:
            return None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise TamperedFile(kind, "not UTF-8") from None
        # Entries end at "\n" only (JSON escapes it inside strings). Not splitlines(): logs
        # written before entries were ASCII may hold U+2028/U+2029/U+0085 inside a field.
        return [_parse_entry(line, kind) for line in text.split("\n") if line]

    def _segment_indexes(self) -> list[int]:
        out = []
        for kind in self.store.list_vault_blobs(SEGMENT_PREFIX):
            suffix = kind[len(SEGMENT_PREFIX) :]
            if suffix.isdigit():
                out.append(int(suffix))
        return sorted(out)

    def entries(self, patient_id: str | None = None) -> list[AuditEntry]:
        """Every entry in order (optionally only one patient's). Raises on unreadable files."""
        out: list[AuditEntry] = []
        for index in self._segment_indexes():
            for entry in self._segment(index) or []:
                if patient_id is None or entry.patient_id == patient_id:
                    out.append(entry)
        return out

    # -- writing -----------------------------------------------------------------------------

    def append(self, action: str, patient_id: str | None = None, detail: str = "") -> AuditEntry:
        """Record one event; returns the entry. Cost: one segment and the head rewritten."""
        if not isinstance(action, str) or not _ACTION_RE.match(action):
            raise InputRejected(f"Invalid audit action {action!r}.")
        if patient_id is not None and not _ID_RE.match(patient_id):
            raise InputRejected(f"Invalid patient id {patient_id!r} for the audit log.")
        detail = (detail or "")[:MAX_DETAIL_CHARS]
        with self._lock:
            tail_index, last, segment_entries = self._tail()
            seq = 0 if last is None else last.seq + 1
            prev = GENESIS_HASH if last is None else last.hash
            when = datetime.now(UTC).isoformat(timespec="microseconds")
            user = current_os_user()
            entry = AuditEntry(
                seq=seq,
                time=when,
                os_user=user,
                action=action,
                patient_id=patient_id,
                detail=detail,
                prev_hash=prev,
                hash=_entry_hash(seq, when, user, action, patient_id, detail, prev),
            )
            index = seq // SEGMENT_ENTRIES
            lines = [e.to_line() for e in segment_entries] if index == tail_index else []
            lines.append(entry.to_line())
            self.store.write_vault_blob(_segment_kind(index), ("\n".join(lines) + "\n").encode())
            head = {"version": AUDIT_VERSION, "count": seq + 1, "head_hash": entry.hash}
            self.store.write_vault_blob(HEAD_KIND, json.dumps(head).encode())
            return entry

    def _tail(self) -> tuple[int, AuditEntry | None, list[AuditEntry]]:
        """The newest segment's index and entries, and its last entry (checked against the head).

        Refuses to append after a truncated or edited tail, so damage is never papered over.
        """
        indexes = self._segment_indexes()
        head = self._head()  # RolledBack when the vault wrote a head and it is gone or older
        missing = self.store.missing_vault_blobs(SEGMENT_PREFIX)
        if missing:
            raise TamperedFile(
                "audit log",
                f"{', '.join(missing)} removed; run `phyassist audit verify`",
            )
        if not indexes:
            if head is not None and head["count"] > 0:
                raise TamperedFile(
                    "audit log", f"the head counts {head['count']} entries but none exist"
                )
            return -1, None, []
        entries = self._segment(indexes[-1]) or []
        if not entries:
            raise TamperedFile(_segment_kind(indexes[-1]), "empty audit segment")
        last = entries[-1]
        if last.compute_hash() != last.hash:
            raise TamperedFile(_segment_kind(indexes[-1]), "the newest entry was edited")
        if head is not None and last.seq + 1 < head["count"]:
            raise TamperedFile(
                "audit log",
                f"the head counts {head['count']} entries but the newest is #{last.seq}: "
                "entries were removed; run `phyassist audit verify`",
            )
        return indexes[-1], last, entries

    # -- verifying ---------------------------------------------------------------------------

    def verify(self, anchor: str | None = None) -> VerifyResult:
        """Walk the whole chain; report the first entry that was removed, edited or moved.

        ``anchor``: a head hash recorded earlier; verification fails unless some entry of
        the chain has that hash (i.e. history up to that point is unchanged).
        """
        problems: list[str] = []
        notes: list[str] = []
        first_bad: int | None = None
        try:
            head = self._head()
        except PhyAssistError as exc:
            head = None
            problems.append(f"audit head unreadable ({exc})")
        count = 0
        prev = GENESIS_HASH
        seen_anchor = anchor is None
        indexes = self._segment_indexes()
        for kind in self.store.missing_vault_blobs(SEGMENT_PREFIX):
            problems.append(f"{kind} was removed (the vault wrote it)")
            suffix = kind[len(SEGMENT_PREFIX) :]
            if suffix.isdigit() and first_bad is None:
                first_bad = int(suffix) * SEGMENT_ENTRIES
        for expected_index, index in enumerate(indexes):
            if first_bad is not None or problems:
                break
            if index != expected_index:
                problems.append(
                    f"segment {expected_index} is missing (entries "
                    f"#{expected_index * SEGMENT_ENTRIES}..#{index * SEGMENT_ENTRIES - 1} removed)"
                )
                first_bad = expected_index * SEGMENT_ENTRIES
                break
            try:
                entries = self._segment(index) or []
            except PhyAssistError as exc:
                problems.append(f"segment {index} cannot be read ({exc})")
                first_bad = index * SEGMENT_ENTRIES
                break
            for entry in entries:
                bad = self._check_entry(entry, count, prev, index)
                if bad:
                    problems.append(bad)
                    first_bad = count
                    break
                if entry.hash == anchor:
                    seen_anchor = True
                prev = entry.hash
                count += 1
            else:
                if len(entries) < SEGMENT_ENTRIES and index != indexes[-1]:
                    problems.append(
                        f"segment {index} holds {len(entries)} entries; entries "
                        f"#{count}..#{(index + 1) * SEGMENT_ENTRIES - 1} were removed"
                    )
                    first_bad = count
        if not problems:
            if head is None:
                # No head and the vault never bound one (else _head raised RolledBack): a
                # crash between the very first segment write and its head leaves one entry.
                if count == 1:
                    notes.append(
                        "1 entry past the head: written just before a crash; it chains correctly."
                    )
                elif count:
                    problems.append(f"the audit head is missing but {count} entries exist")
            elif count < head["count"]:
                problems.append(
                    f"the log was cut short: the head counts {head['count']} entries, "
                    f"only {count} remain (entries #{count}..#{head['count'] - 1} removed)"
                )
                first_bad = count
            elif count == head["count"] and count and prev != head["head_hash"]:
                problems.append("the newest entry does not match the audit head")
                first_bad = count - 1
            elif count > head["count"]:
                notes.append(
                    f"{count - head['count']} entry(ies) past the head: written just before a "
                    "crash; they chain correctly."
                )
        if not seen_anchor and not problems:
            problems.append(f"no entry has the anchor hash {anchor}: history was rewritten")
        return VerifyResult(
            ok=not problems,
            count=count,
            head_count=None if head is None else head["count"],
            head_hash=prev if count else None,
            problems=problems,
            notes=notes,
            first_bad_seq=first_bad,
        )

    @staticmethod
    def _check_entry(entry: AuditEntry, expected_seq: int, prev: str, index: int) -> str | None:
        if entry.compute_hash() != entry.hash:
            return f"entry #{entry.seq} was edited (its hash does not match its content)"
        if entry.seq != expected_seq:
            how = "removed" if entry.seq > expected_seq else "reordered or duplicated"
            return f"entry #{entry.seq} found where #{expected_seq} belongs (entries {how})"
        if entry.prev_hash != prev:
            return f"entry #{entry.seq} does not follow entry #{expected_seq - 1} (chain broken)"
        if entry.seq // SEGMENT_ENTRIES != index:
            return f"entry #{entry.seq} sits in the wrong segment ({index})"
        return None


# -- the hook the product calls ------------------------------------------------------------


def record(
    store: Store | None, action: str, patient_id: str | None = None, detail: str = ""
) -> AuditEntry | None:
    """Append one audit entry after an action succeeded; never raises into the caller.

    The action already happened, so a failure to record it (vault closed, tampered log,
    disk full) must not turn a success into an error: it is logged as a warning (without
    the detail) and ``None`` is returned; ``phyassist audit verify`` then shows the gap.

    A read-only handle (``writer=False``) cannot append. For it, the vault's writer lock is
    taken just for this one append when no other process holds it; when another process
    does (e.g. the TUI is open), the entry is not written and a warning says so.
    """
    if store is None:
        return None
    try:
        if getattr(store, "writer", True):
            return AuditLog(store).append(action, patient_id, detail)
        return _append_via_temporary_lock(store, action, patient_id, detail)
    except Exception as exc:  # by contract: never break the caller
        logger.warning(
            "audit entry %r not recorded: %s: %s", action, type(exc).__name__, _safe_reason(exc)
        )
        return None


def _safe_reason(exc: BaseException) -> str:
    # Our own errors carry no clinical text; anything else is summarised by type only.
    return str(exc)[:200] if isinstance(exc, PhyAssistError) else "unexpected error"


def _append_via_temporary_lock(
    store: Store, action: str, patient_id: str | None, detail: str
) -> AuditEntry:
    """Append through a read-only handle by holding the writer lock for one append.

    Raises VaultBusy when another process is the writer (its own appends would race ours).
    """
    from engine.vault.atomicio import WriterLock
    from engine.vault.files import LOCK_NAME

    lock = WriterLock(store.vault_dir / LOCK_NAME)
    lock.acquire()  # VaultBusy when another process writes
    try:
        with store._mutex:  # no other thread of ours sees the handle as a writer
            store._reload_manifest()  # what the last writer left, not what we read at open
            if store._manifest is not None and store._manifest.dirty:
                raise StorageError(
                    "the last writer of this vault did not finish; open it for writing once"
                )
            store.writer = True
            try:
                entry = AuditLog(store).append(action, patient_id, detail)
                store._flush_index()  # the manifest is written before the lock goes
                return entry
            finally:
                store.writer = False
    finally:
        lock.release()
