"""Local bookkeeping of backups, outside the vault: what was sent where, and when.

``<data dir>/backup/`` holds no patient text (only random file ids, SHA-256 digests of
ciphertext files, target names and times), so the status line can read it while the vault
is locked and a headless cron job can update it while the app holds the vault:

    state.json            per target: last success, last snapshot, last error
    hashes.json           vault file -> (size, mtime, inode, SHA-256) to skip rehashing
                          (no SHA-256 for a file modified within 2 s of the scan)
    targets/<name>.json   the file list of the last snapshot sent to that target
    jobs/<id>/            a prepared snapshot being sent (hard links/copies of ciphertext)
    <name>.lock           held while a backup to that target runs
"""

from __future__ import annotations

import json
import os
from contextlib import suppress
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.vault.atomicio import atomic_write, ensure_dir

STATE_NAME = "state.json"


def backup_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "backup"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class TargetState:
    last_success: str = ""  # ISO time of the last snapshot that reached the target
    last_snapshot: str = ""
    last_attempt: str = ""
    last_error: str = ""  # "" after a success
    bytes_sent: int = 0  # of the last successful run

    def age_hours(self, now: datetime | None = None) -> float | None:
        if not self.last_success:
            return None
        then = datetime.fromisoformat(self.last_success)
        return ((now or datetime.now(UTC)) - then).total_seconds() / 3600


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_json(path: Path, doc: Any) -> None:
    ensure_dir(path.parent)
    atomic_write(path, json.dumps(doc, ensure_ascii=False).encode("utf-8"))


def load_state(data_dir: Path) -> dict[str, TargetState]:
    doc = read_json(backup_dir(data_dir) / STATE_NAME)
    out: dict[str, TargetState] = {}
    if isinstance(doc, dict):
        for name, row in doc.items():
            with suppress(TypeError):
                out[name] = TargetState(**row)
    return out


def update_state(data_dir: Path, name: str, **changes: Any) -> None:
    """Change one target's row (read-modify-write; each writer holds that target's lock)."""
    states = load_state(data_dir)
    row = states.get(name, TargetState())
    for key, value in changes.items():
        setattr(row, key, value)
    states[name] = row
    write_json(backup_dir(data_dir) / STATE_NAME, {k: asdict(v) for k, v in states.items()})


def forget_state(data_dir: Path, name: str) -> None:
    states = load_state(data_dir)
    if states.pop(name, None) is not None:
        write_json(backup_dir(data_dir) / STATE_NAME, {k: asdict(v) for k, v in states.items()})
    with suppress(FileNotFoundError):
        os.unlink(backup_dir(data_dir) / "targets" / f"{name}.json")


def status_summary(data_dir: Path, warn_hours: float, names: list[str] | None = None) -> str:
    """One short line for the status bar: each target's last success, stale ones flagged."""
    states = load_state(data_dir)
    if names is None:
        names = sorted(states)
    parts = []
    for name in names:
        row = states.get(name, TargetState())
        age = row.age_hours()
        if age is None:
            parts.append(f"{name}: never!")
            continue
        text = _age_text(age)
        stale = age > warn_hours or bool(row.last_error)
        parts.append(f"{name}: {text}{'!' if stale else ''}")
    return ", ".join(parts)


def stale_targets(data_dir: Path, warn_hours: float, names: list[str] | None = None) -> list[str]:
    states = load_state(data_dir)
    names = sorted(states) if names is None else names
    out = []
    for name in names:
        row = states.get(name, TargetState())
        age = row.age_hours()
        if age is None or age > warn_hours or row.last_error:
            out.append(name)
    return out


def _age_text(hours: float) -> str:
    if hours < 1:
        return f"{max(0, int(hours * 60))} min ago"
    if hours < 48:
        return f"{hours:.0f} h ago"
    return f"{hours / 24:.0f} d ago"
