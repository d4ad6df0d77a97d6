"""Bring a vault back from a backup target, all or nothing.

The snapshot is downloaded into ``<data dir>/vault.restoring-<random>``, every file's
digest is checked, the vault is opened there with the passphrase and its audit chain
verified, an audited ``vault_restored`` entry and a restore marker are written into it,
and only then does it take the place of ``<data dir>/vault`` in one atomic rename (or an
atomic exchange, when a vault was there: the old one is kept whole as
``vault.replaced-<time>``). A crash or SIGKILL at any point leaves either the old vault
or the restored one, never a mix; leftovers of a killed restore are removed by the next.

Restoring over an existing vault must be asked for (``replace=True``); when the existing
vault's audit log is longer than the snapshot's (restoring an *older* state over a newer
one), that is said in the audit entry and the marker, so the rollback detection can tell
an intended restore from a silent rollback.

Restore marker (vault blob ``backup/restore-marker``, encrypted with the master key)::

    {"version": 1, "snapshot": id, "snapshot_created": iso, "target": name,
     "restored_at": iso, "audit_seq": n, "audit_hash": h,       # the vault_restored entry
     "replaced": {"path": ..., "audit_count": n|null, "audit_head": h|null} | null,
     "older_than_replaced": bool}
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import secrets
import shutil
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from engine.backup.rclone import Rclone
from engine.backup.snapshots import (
    HEADER_COPY,
    download,
    list_snapshots,
    object_name,
    remember_sent,
    resolve,
)
from engine.backup.state import update_state
from engine.backup.targets import KEY_INFO, BackupKeys, Target, load_targets, save_targets
from engine.errors import InputRejected, PhyAssistError, TamperedFile, VaultBusy
from engine.vault import header as vault_header
from engine.vault.atomicio import WriterLock, ensure_dir, fsync_dir

MARKER_BLOB = "backup/restore-marker"
RESTORING_PREFIX = "vault.restoring-"
REPLACED_PREFIX = "vault.replaced-"
RESTORE_ACTION = "vault_restored"

Progress = Callable[[str], None]


@dataclass
class RestoreResult:
    target: str  # the name the restored vault knows the target by
    vault_dir: Path
    snapshot_id: str
    files: int
    patients: int
    replaced: Path | None
    older_than_replaced: bool
    audit_entries: int


def read_restore_marker(store) -> dict | None:
    """The marker of the restore that produced this vault, if it is genuine; else None.

    For the rollback detection (issue 18): a vault that went back in time through
    ``phyassist backup restore`` carries this marker, and the audit entry it names
    (``vault_restored``, by sequence number and hash) must be in the audit chain, so a
    marker copied from elsewhere or edited does not excuse a rollback.
    """
    from engine.trust.audit import AuditLog

    raw = store.read_vault_blob(MARKER_BLOB)
    if raw is None:
        return None
    try:
        marker = json.loads(raw)
        seq, digest = int(marker["audit_seq"]), str(marker["audit_hash"])
    except (ValueError, KeyError, TypeError):
        return None
    for entry in AuditLog(store).entries():
        if entry.seq == seq:
            ok = entry.hash == digest and entry.action == RESTORE_ACTION
            return marker if ok and entry.compute_hash() == entry.hash else None
    return None


def fetch_header(rc: Rclone) -> vault_header.VaultHeader:
    """The vault header copy kept at the target (plaintext: wrapped master key only)."""
    from engine.backup.rclone import TargetError

    missing = InputRejected(
        f"Target '{rc.target}' holds no PhyAssist backup (no {HEADER_COPY} at its root). "
        "Check the URL; if that file was lost, restore with --recovery-code (recovery sheet)."
    )
    try:
        raw = rc.run(["cat", rc.base_path(HEADER_COPY)]).stdout
    except TargetError as exc:
        if "not found" in str(exc).lower():
            raise missing from None
        raise
    if not raw:
        raise missing
    return vault_header.VaultHeader.parse(raw, f"{HEADER_COPY} at {rc.target}")


def keys_from_passphrase(header: vault_header.VaultHeader, passphrase: str) -> BackupKeys:
    """Unwrap the master key with the passphrase, then derive the backup key as the vault does."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    master = vault_header.unlock(header, passphrase)
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=KEY_INFO)
    return BackupKeys(hkdf.derive(master))


def clean_restore_leftovers(data_dir: Path) -> int:
    """Remove half-downloaded restores (their process is gone: a vault is never half-made)."""
    removed = 0
    with suppress(FileNotFoundError):
        for entry in os.scandir(data_dir):
            if entry.name.startswith(RESTORING_PREFIX) and entry.is_dir(follow_symlinks=False):
                lock = data_dir / f".{entry.name}.lock"
                try:
                    holder = WriterLock(lock)
                    holder.acquire()
                except VaultBusy:
                    continue  # a restore in progress
                except FileNotFoundError:
                    pass
                else:
                    holder.release()
                shutil.rmtree(entry.path, ignore_errors=True)
                lock.unlink(missing_ok=True)
                removed += 1
    return removed


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return rc == 0


def restore(
    data_dir: Path,
    rc: Rclone,
    passphrase: str,
    *,
    target: Target,
    snapshot_id: str | None = None,
    replace: bool = False,
    keys: BackupKeys | None = None,
    settings=None,
    progress: Progress | None = None,
) -> RestoreResult:
    """Restore ``snapshot_id`` (newest by default) from ``rc`` into ``data_dir/vault``.

    ``rc`` must be built without crypt keys; they come from the passphrase (or ``keys``,
    from a recovery code). Raises InputRejected (a vault exists and ``replace`` is False,
    no snapshot), WrongPassphrase, TamperedFile (a file at the target does not match),
    TargetError (the target is down or refuses).
    """
    from engine.trust.audit import AuditLog
    from engine.vault.files import LOCK_NAME
    from engine.vault.store import Store

    say = progress or (lambda _msg: None)
    data_dir = Path(data_dir)
    vault_dir = data_dir / "vault"
    if Store.exists(vault_dir) and not replace:
        raise InputRejected(
            f"A vault already exists at {vault_dir}. Restoring would replace it: run again with "
            "--replace (the current vault is kept as vault.replaced-<time>)."
        )
    ensure_dir(data_dir)
    clean_restore_leftovers(data_dir)
    target_header: vault_header.VaultHeader | None = None
    if keys is None:
        say("reading the vault header at the target")
        target_header = fetch_header(rc)
        keys = keys_from_passphrase(target_header, passphrase)  # WrongPassphrase
    rc = _with_keys(rc, keys)
    snapshots = list_snapshots(rc)
    if not snapshots:
        raise InputRejected(f"Target '{rc.target}' holds no snapshot to restore.")
    if snapshot_id is None:
        snapshot_id = snapshots[-1]
    elif snapshot_id not in snapshots:
        matches = [s for s in snapshots if s.startswith(snapshot_id)]
        if len(matches) != 1:
            raise InputRejected(f"No single snapshot {snapshot_id!r} at '{rc.target}'.")
        snapshot_id = matches[0]
    say(f"reading snapshot {snapshot_id}")
    doc, files = resolve(rc, snapshot_id)
    if vault_header.HEADER_NAME not in files:
        raise TamperedFile(f"snapshot {snapshot_id} at {rc.target}", "no vault header in it")

    work = data_dir / f"{RESTORING_PREFIX}{secrets.token_hex(6)}"
    ensure_dir(work)
    guard_path = data_dir / f".{work.name}.lock"
    guard = WriterLock(guard_path)
    guard.acquire()
    try:
        objects = work / ".objects"
        digests = sorted({d[0] for d in files.values()})
        say(f"downloading {len(digests)} files")
        download(rc, digests, objects)
        say("checking the restored files")
        for rel, (digest, _size) in files.items():
            parts = Path(rel).parts
            if not parts or any(p in ("", ".", "..") for p in parts) or Path(rel).is_absolute():
                raise TamperedFile(f"snapshot {snapshot_id}", f"bad path {rel!r}")
            dest = work / rel
            ensure_dir(dest.parent)
            src = objects / object_name(digest)
            if src.exists():
                os.rename(src, dest)
            else:  # the same content at two paths (rare): copy the first one's file
                first = next(p for p, d in files.items() if d[0] == digest and p != rel)
                shutil.copyfile(work / first, dest)
            os.chmod(dest, 0o600)
        shutil.rmtree(objects, ignore_errors=True)
        if target_header is not None:
            _prefer_current_header(work, target_header)
        say("opening the restored vault")
        replaced_info = _describe_existing(vault_dir, passphrase, settings)
        with Store.open(work, passphrase, writer=True, settings=settings) as store:
            log = AuditLog(store)
            check = log.verify()
            if not check.ok:
                raise TamperedFile(f"snapshot {snapshot_id}", "its audit log " + check.summary())
            older = bool(
                replaced_info
                and replaced_info.get("audit_count") is not None
                and replaced_info["audit_count"] > check.count
            )
            detail = (
                f"snapshot {snapshot_id} (taken {doc.get('created', '?')}) from target "
                f"'{target.name}'"
                + (
                    f"; replaced a vault with {replaced_info.get('audit_count')} audit entries"
                    + (" (NEWER than the snapshot: rollback by restore)" if older else "")
                    if replaced_info
                    else "; onto an empty data directory"
                )
            )
            entry = log.append(RESTORE_ACTION, None, detail)
            marker = {
                "version": 1,
                "snapshot": snapshot_id,
                "snapshot_created": doc.get("created"),
                "target": target.name,
                "restored_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "audit_seq": entry.seq,
                "audit_hash": entry.hash,
                "replaced": replaced_info,
                "older_than_replaced": older,
            }
            store.write_vault_blob(MARKER_BLOB, json.dumps(marker).encode())
            target = _keep_target(store, target)
            patients = len(store.list_patients())
            audit_entries = entry.seq + 1
        (work / LOCK_NAME).unlink(missing_ok=True)
        replaced = _swap_into_place(work, vault_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        guard.release()
        guard_path.unlink(missing_ok=True)
        raise
    guard.release()
    guard_path.unlink(missing_ok=True)
    # The next backup to this target is incremental against what we just restored.
    restored_files = dict(files)
    remember_sent(data_dir, target.name, snapshot_id, restored_files, 0)
    update_state(data_dir, target.name, last_snapshot=snapshot_id)
    return RestoreResult(
        target.name, vault_dir, snapshot_id, len(files), patients, replaced, older, audit_entries
    )


def _with_keys(rc: Rclone, keys: BackupKeys) -> Rclone:
    from engine.backup.rclone import obscure

    return Rclone(
        target=rc.target,
        base_type=rc.base_type,
        base_options=rc.base_options,
        root=rc.root,
        crypt_password=obscure(keys.password),
        crypt_salt=obscure(keys.salt),
    )


def _prefer_current_header(work: Path, current: vault_header.VaultHeader) -> None:
    """Use the target's newest header (the passphrase in use now) if it is the same vault."""
    restored = vault_header.read_header(work)
    if restored.vault_id == current.vault_id and restored != current:
        from engine.vault.atomicio import atomic_write

        atomic_write(vault_header.header_path(work), current.to_json())


def _describe_existing(vault_dir: Path, passphrase: str, settings) -> dict | None:
    """What is being replaced (audit length and head), read-only; None if nothing is there."""
    from engine.trust.audit import AuditLog
    from engine.vault.store import Store

    if not Store.exists(vault_dir):
        return None
    info: dict = {"path": str(vault_dir), "audit_count": None, "audit_head": None}
    try:
        with Store.open(vault_dir, passphrase, writer=False, settings=settings) as old:
            result = AuditLog(old).verify()
            info["audit_count"] = result.count
            info["audit_head"] = result.head_hash
    except (PhyAssistError, OSError) as exc:  # damaged, other passphrase: replaced all the same
        info["unreadable"] = type(exc).__name__
    return info


def _keep_target(store, target: Target) -> Target:
    """Make sure the restored vault knows the target it came from (for the next backup).

    A target it already knows at the same URL keeps its name (and gets the secret just used).
    """
    targets = load_targets(store)
    for i, known in enumerate(targets):
        if known.url == target.url:
            if known.secret != target.secret:
                targets[i] = Target(known.name, known.url, target.secret)
                save_targets(store, targets)
            return targets[i]
    names = {t.name for t in targets}
    name, n = target.name, 2
    while name in names:
        name, n = f"{target.name}{n}", n + 1
    kept = Target(name, target.url, target.secret)
    save_targets(store, [*targets, kept])
    return kept


def _swap_into_place(work: Path, vault_dir: Path) -> Path | None:
    """Put ``work`` at ``vault_dir`` atomically; return where the old vault now is."""
    from engine.vault.files import LOCK_NAME
    from engine.vault.store import Store

    data_dir = vault_dir.parent
    if not vault_dir.exists():
        os.rename(work, vault_dir)
        fsync_dir(data_dir)
        return None
    lock = WriterLock(vault_dir / LOCK_NAME) if Store.exists(vault_dir) else None
    if lock is not None:
        lock.acquire()  # VaultBusy: the app (or another command) has it open
    try:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        kept = data_dir / f"{REPLACED_PREFIX}{stamp}-{secrets.token_hex(2)}"
        if _renameat2_exchange(work, vault_dir):
            fsync_dir(data_dir)
            os.rename(work, kept)  # ``work`` now holds the old vault
        else:  # two renames; a crash between them leaves both folders whole, no vault
            os.rename(vault_dir, kept)
            os.rename(work, vault_dir)
        fsync_dir(data_dir)
        return kept
    finally:
        if lock is not None:
            lock.release()
