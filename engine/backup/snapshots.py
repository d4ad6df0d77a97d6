"""Incremental, encrypted snapshots of the vault's own files, sent with rclone.

What leaves the machine is the vault's ciphertext (every file but ``vault.json`` is AES-GCM
already), inside rclone's ``crypt`` layer (NaCl secretbox per 64 KiB chunk: contents and
names encrypted and authenticated) keyed from the vault. At the target::

    <root>/phyassist-vault.json             a copy of vault.json (wrapped master key only)
    <root>/data/  (crypt)  objects/<hh>/<sha256>   each vault file, named by its digest
                           snapshots/<id>.json     file list: path -> digest, size

A file is sent once: its digest names it, and a write in the vault always makes a new file
(fresh nonce), so an incremental run sends the changed files and a small snapshot list
(a delta against the previous snapshot; a full list every ``FULL_EVERY`` runs).
Objects go first and the snapshot list last, so a run that dies midway leaves the older
snapshots whole and the next run simply sends what is missing.

The vault copy at the target lets ``restore`` on a fresh machine need only the target and
the passphrase: it unwraps the master key, whose HKDF gives the crypt key. Anyone with the
target's files gets what a stolen disk gives (offline guessing against scrypt) and nothing
more.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from engine.backup.rclone import Rclone, TargetError
from engine.backup.state import backup_dir, now_iso, read_json, update_state, write_json
from engine.errors import InputRejected, TamperedFile
from engine.vault.atomicio import ensure_dir
from engine.vault.header import HEADER_NAME

HEADER_COPY = "phyassist-vault.json"
SNAPSHOT_FORMAT = 1
FULL_EVERY = 32  # a full file list after this many deltas (bounds the chain a restore reads)
COPY_BELOW = 64 * 1024  # smaller files are copied into a job (key.bin is shredded in place)
SKIP = {"vault.lock", "tmp"}  # not vault state
TRANSFERS = ("--transfers", "8", "--checkers", "8")


def transfers_for(count: int) -> tuple[str, ...]:
    """Parallel streams for ``count`` files: each SFTP stream is its own SSH handshake
    (~0.1 s), which for an incremental run of a few files costs more than it saves."""
    n = 1 if count <= 16 else 4 if count <= 200 else 8
    return ("--transfers", str(n), "--checkers", str(n))


@dataclass
class Job:
    """A snapshot taken of the vault, ready to be sent to one or more targets."""

    snapshot_id: str
    created: str
    vault_id: str
    job_dir: Path
    files: dict[str, list]  # relative path -> [sha256, size]

    @property
    def objects_dir(self) -> Path:
        return self.job_dir / "objects"

    def to_json(self) -> dict:
        return {
            "snapshot_id": self.snapshot_id,
            "created": self.created,
            "vault_id": self.vault_id,
            "job_dir": str(self.job_dir),
        }

    @classmethod
    def load(cls, job_dir: Path) -> Job:
        doc = read_json(job_dir / "job.json")
        if not isinstance(doc, dict):
            raise InputRejected(f"{job_dir} is not a prepared backup.")
        return cls(
            snapshot_id=doc["snapshot_id"],
            created=doc["created"],
            vault_id=doc["vault_id"],
            job_dir=job_dir,
            files=doc["files"],
        )

    def cleanup(self) -> None:
        shutil.rmtree(self.job_dir, ignore_errors=True)


@dataclass
class SendResult:
    target: str
    snapshot_id: str
    files_sent: int
    bytes_sent: int
    seconds: float = 0.0
    full: bool = False
    error: str = ""
    extra: dict = field(default_factory=dict)


def object_name(digest: str) -> str:
    return f"{digest[:2]}/{digest}"


# Snapshot ids sort by time: a restore takes the last id in sorted order as the newest, so two
# runs in one second must not share a stamp (their random suffixes would order them by chance).
_STAMP = "%Y%m%dT%H%M%S.%fZ"
_OLD_STAMP = "%Y%m%dT%H%M%SZ"  # ids written before microseconds were added


def snapshot_time(snapshot_id: str) -> datetime:
    stamp = snapshot_id.split("-", 1)[0]
    fmt = _STAMP if "." in stamp else _OLD_STAMP
    return datetime.strptime(stamp, fmt).replace(tzinfo=UTC)


def new_snapshot_id(when: datetime | None = None, *, after: str | None = None) -> str:
    """A time-ordered id; it sorts after ``after`` even if the clock did not move on."""
    when = when or datetime.now(UTC)
    if after is not None:
        when = max(when, snapshot_time(after) + timedelta(microseconds=1))
    return when.strftime(_STAMP) + "-" + secrets.token_hex(3)


# -- taking a snapshot -----------------------------------------------------------------------


def vault_files(vault_dir: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every file of the vault that is state (relative path, stat), lock and temp files aside."""
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(vault_dir / rel if rel else vault_dir) as entries:
            for entry in entries:
                path = f"{rel}/{entry.name}" if rel else entry.name
                if not rel and entry.name in SKIP:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(path)
                elif entry.is_file(follow_symlinks=False):
                    yield path, entry.stat(follow_symlinks=False)


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# A file modified this close to a scan may change again within the same timestamp tick (and,
# rewritten atomically, get a recycled inode) with its size unchanged: its digest is not kept
# for the next scan, which reads it again (git's "racily clean" rule).
RACY_NS = 2_000_000_000


def scan(vault_dir: Path, data_dir: Path) -> dict[str, list]:
    """path -> [sha256, size] of every vault file; unchanged files are not re-read."""
    cache_path = backup_dir(data_dir) / "hashes.json"
    cache = read_json(cache_path) or {}
    files: dict[str, list] = {}
    fresh: dict[str, list] = {}
    started_ns = time.time_ns()
    for rel, st in vault_files(vault_dir):
        key = [st.st_size, st.st_mtime_ns, st.st_ino]
        hit = cache.get(rel)
        cached = hit[3] if hit and hit[:3] == key else None
        digest = cached or _digest(vault_dir / rel)
        files[rel] = [digest, st.st_size]
        fresh[rel] = [*key, digest if st.st_mtime_ns < started_ns - RACY_NS else None]
    if fresh != cache:
        write_json(cache_path, fresh)
    return files


def last_sent(data_dir: Path, target: str) -> dict | None:
    """The file list of the last snapshot that reached ``target`` ({snapshot, files, chain})."""
    doc = read_json(backup_dir(data_dir) / "targets" / f"{target}.json")
    return doc if isinstance(doc, dict) and "files" in doc else None


def remember_sent(data_dir: Path, target: str, snapshot_id: str, files: dict, chain: int) -> None:
    write_json(
        backup_dir(data_dir) / "targets" / f"{target}.json",
        {"snapshot": snapshot_id, "files": files, "chain": chain},
    )


def forget_sent(data_dir: Path, target: str) -> None:
    """Make the next run to ``target`` a full one (objects it lacks are sent again)."""
    with suppress(FileNotFoundError):
        os.unlink(backup_dir(data_dir) / "targets" / f"{target}.json")


def clean_stale_jobs(data_dir: Path) -> int:
    """Remove job folders whose owner process is gone (a run killed midway)."""
    removed = 0
    jobs = backup_dir(data_dir) / "jobs"
    with suppress(FileNotFoundError):
        for entry in os.scandir(jobs):
            try:
                pid = int((Path(entry.path) / "owner.pid").read_text())
            except (OSError, ValueError):
                pid = 0
            if pid and _alive(pid):
                continue
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_job(job: Job) -> None:
    """Mark the current process as the one sending ``job`` (so it is not cleaned up)."""
    (job.job_dir / "owner.pid").write_text(str(os.getpid()))


def prepare(store, data_dir: Path, targets: list[str]) -> Job:
    """Freeze the vault's current files into a job folder (fast: links and small copies).

    Runs while the store is quiesced, so the files form one consistent state of the vault.
    Only files that some target has not received yet are staged.
    """
    data_dir = Path(data_dir)
    clean_stale_jobs(data_dir)
    vault_dir = Path(store.vault_dir)
    job_dir = backup_dir(data_dir) / "jobs" / secrets.token_hex(8)
    ensure_dir(job_dir)
    (job_dir / "owner.pid").write_text(str(os.getpid()))
    created = datetime.now(UTC)
    with store.quiesced():
        files = scan(vault_dir, data_dir)
        known = [set(d[0] for d in (last_sent(data_dir, t) or {"files": {}})["files"].values())
                 for t in targets]  # fmt: skip
        for rel, (digest, size) in files.items():
            if all(digest in k for k in known):
                continue
            dest = job_dir / "objects" / object_name(digest)
            if dest.exists():
                continue
            ensure_dir(dest.parent)
            if size < COPY_BELOW:
                shutil.copyfile(vault_dir / rel, dest)
            else:
                try:
                    os.link(vault_dir / rel, dest)
                except OSError as exc:
                    if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                        raise
                    shutil.copyfile(vault_dir / rel, dest)
        shutil.copyfile(vault_dir / HEADER_NAME, job_dir / HEADER_COPY)
    vault_id = json.loads((job_dir / HEADER_COPY).read_text(encoding="utf-8"))["vault_id"]
    sent_ids = [s["snapshot"] for t in targets if (s := last_sent(data_dir, t))]
    snapshot_id = new_snapshot_id(created, after=max(sent_ids, default=None))
    job = Job(snapshot_id, created.isoformat(timespec="seconds"), vault_id, job_dir,
              files)  # fmt: skip
    write_json(job_dir / "job.json", {**job.to_json(), "files": files})
    return job


# -- sending ---------------------------------------------------------------------------------


@contextmanager
def target_lock(data_dir: Path, target: str) -> Iterator[None]:
    import fcntl

    path = backup_dir(data_dir) / f"{target}.lock"
    ensure_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TargetError(
                f"A backup to '{target}' is already running; this one was skipped."
            ) from None
        yield
    finally:
        os.close(fd)


def send(job: Job, data_dir: Path, target: str, rc: Rclone) -> SendResult:
    """Send ``job`` to one target: missing objects, then the snapshot list, then the header."""
    import time

    start = time.perf_counter()
    data_dir = Path(data_dir)
    with target_lock(data_dir, target):
        update_state(data_dir, target, last_attempt=now_iso())
        try:
            result = _send(job, data_dir, target, rc)
        except TargetError as exc:
            update_state(data_dir, target, last_error=str(exc))
            raise
        result.seconds = time.perf_counter() - start
        update_state(
            data_dir,
            target,
            last_success=now_iso(),
            last_snapshot=job.snapshot_id,
            last_error="",
            bytes_sent=result.bytes_sent,
        )
        return result


def _send(job: Job, data_dir: Path, target: str, rc: Rclone) -> SendResult:
    last = last_sent(data_dir, target)
    last_files = last["files"] if last else {}
    have = {d[0] for d in last_files.values()}
    needed = sorted({d[0] for d in job.files.values()} - have)
    sizes = {d[0]: d[1] for d in job.files.values()}
    bytes_sent = 0
    if needed:
        listing = job.job_dir / f"{target}.list"
        listing.write_text("".join(object_name(d) + "\n" for d in needed))
        args = ["copy", str(job.objects_dir), rc.crypt_path("objects"), "--files-from",
                str(listing), *transfers_for(len(needed))]  # fmt: skip
        if last:
            args.append("--no-traverse")  # few files: check each instead of listing all
        rc.run(args)
        bytes_sent += sum(sizes[d] for d in needed)
    chain = (last or {}).get("chain", 0) + 1 if last else 0
    full = last is None or chain >= FULL_EVERY
    doc: dict = {
        "format": SNAPSHOT_FORMAT,
        "id": job.snapshot_id,
        "created": job.created,
        "vault_id": job.vault_id,
    }
    if full:
        chain = 0
        doc.update(parent=None, files=job.files)
    else:
        changed = {p: d for p, d in job.files.items() if last_files.get(p) != d}
        removed = sorted(set(last_files) - set(job.files))
        doc.update(parent=last["snapshot"], changed=changed, removed=removed)
    payload = json.dumps(doc, separators=(",", ":")).encode()
    manifest = job.job_dir / f"{target}.snapshot.json"
    manifest.write_bytes(payload)
    rc.run(["copyto", str(manifest), rc.crypt_path(f"snapshots/{job.snapshot_id}.json")])
    bytes_sent += len(payload)
    header_digest = hashlib.sha256((job.job_dir / HEADER_COPY).read_bytes()).hexdigest()
    if (last or {}).get("header") != header_digest:
        rc.run(["copyto", str(job.job_dir / HEADER_COPY), rc.base_path(HEADER_COPY)])
        bytes_sent += (job.job_dir / HEADER_COPY).stat().st_size
    remember_sent(data_dir, target, job.snapshot_id, job.files, chain)
    _remember_header(data_dir, target, header_digest)
    return SendResult(target, job.snapshot_id, len(needed), bytes_sent, full=full)


def _remember_header(data_dir: Path, target: str, digest: str) -> None:
    path = backup_dir(data_dir) / "targets" / f"{target}.json"
    doc = read_json(path) or {}
    doc["header"] = digest
    write_json(path, doc)


# -- reading snapshots -----------------------------------------------------------------------


def list_snapshots(rc: Rclone) -> list[str]:
    """Snapshot ids at the target, oldest first."""
    try:
        out = rc.run(["lsf", rc.crypt_path("snapshots"), "--files-only"]).stdout.decode()
    except TargetError as exc:
        if "directory not found" in str(exc).lower():
            return []
        raise
    return sorted(line[:-5] for line in out.splitlines() if line.endswith(".json"))


def read_snapshot(rc: Rclone, snapshot_id: str) -> dict:
    raw = rc.run(["cat", rc.crypt_path(f"snapshots/{snapshot_id}.json")]).stdout
    try:
        doc = json.loads(raw)
    except ValueError:
        raise TamperedFile(f"snapshot {snapshot_id} at {rc.target}", "not a snapshot") from None
    if not isinstance(doc, dict) or doc.get("id") != snapshot_id:
        raise TamperedFile(f"snapshot {snapshot_id} at {rc.target}", "wrong snapshot id")
    return doc


def resolve(rc: Rclone, snapshot_id: str) -> tuple[dict, dict[str, list]]:
    """The snapshot's own list and its complete file list (following delta parents)."""
    chain = []
    current: str | None = snapshot_id
    while current is not None:
        doc = read_snapshot(rc, current)
        chain.append(doc)
        if len(chain) > FULL_EVERY + 2:
            raise TamperedFile(f"snapshot {snapshot_id} at {rc.target}", "parent chain too long")
        current = doc.get("parent")
    files: dict[str, list] = {}
    for doc in reversed(chain):
        if doc.get("parent") is None:
            files = dict(doc["files"])
        else:
            files.update(doc["changed"])
            for path in doc["removed"]:
                files.pop(path, None)
    return chain[0], files


def remote_objects(rc: Rclone) -> set[str]:
    try:
        out = rc.run(["lsf", "-R", "--files-only", rc.crypt_path("objects"), *TRANSFERS])
    except TargetError as exc:
        if "directory not found" in str(exc).lower():
            return set()
        raise
    return {line.rsplit("/", 1)[-1] for line in out.stdout.decode().splitlines()}


def download(rc: Rclone, digests: list[str], into: Path) -> None:
    """Fetch objects into ``into/<hh>/<digest>``; raise TamperedFile for one that differs."""
    ensure_dir(into)
    listing = into.parent / f".{into.name}.list"
    listing.write_text("".join(object_name(d) + "\n" for d in digests))
    try:
        rc.run(["copy", rc.crypt_path("objects"), str(into), "--files-from", str(listing),
                "--no-traverse", *transfers_for(len(digests))])  # fmt: skip
    finally:
        listing.unlink(missing_ok=True)
    for digest in digests:
        path = into / object_name(digest)
        if not path.is_file():
            raise TamperedFile(f"object {digest[:12]}… at {rc.target}", "missing at the target")
        if _digest(path) != digest:
            raise TamperedFile(f"object {digest[:12]}… at {rc.target}", "content does not match")


@dataclass
class VerifyReport:
    target: str
    snapshot_id: str
    files: int
    missing: list[str]
    deep_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.missing


def verify(rc: Rclone, data_dir: Path, snapshot_id: str | None = None, *, deep: bool = False):
    """Check that every file of a snapshot (the newest by default) is at the target.

    ``deep`` downloads each object (rclone crypt authenticates it) and checks its digest.
    """
    snapshots = list_snapshots(rc)
    if not snapshots:
        raise InputRejected(f"Target '{rc.target}' holds no snapshot yet.")
    snapshot_id = snapshot_id or snapshots[-1]
    _doc, files = resolve(rc, snapshot_id)
    digests = sorted({d[0] for d in files.values()})
    present = remote_objects(rc)
    missing = [d for d in digests if d not in present]
    report = VerifyReport(rc.target, snapshot_id, len(files), missing)
    if deep and not missing:
        scratch = backup_dir(data_dir) / "jobs" / f"verify-{secrets.token_hex(6)}"
        ensure_dir(scratch)
        (scratch / "owner.pid").write_text(str(os.getpid()))
        try:
            download(rc, digests, scratch / "objects")
            report.deep_checked = len(digests)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return report
