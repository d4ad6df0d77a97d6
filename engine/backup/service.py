"""The backup operations the CLI and the app call: add a target, back up, recovery sheet.

A backup run has two halves. :func:`plan_run` needs the open vault, and takes a consistent
snapshot of its files in well under a second (the store is held still meanwhile).
:func:`execute` needs only the plan (targets, the derived backup key, the job folder) and
does the slow part, sending; the app runs it in a detached process
(:mod:`engine.backup.worker`) so it goes on after a lock or a quit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from engine.backup import snapshots
from engine.backup.rclone import TargetError
from engine.backup.restore import fetch_header
from engine.backup.state import forget_state, update_state
from engine.backup.targets import (
    BackupKeys,
    Target,
    check_name,
    keys_of,
    load_targets,
    parse_url,
    rclone_for,
    save_targets,
)
from engine.errors import InputRejected

EXIT_TEMPFAIL = 75  # sysexits: a target was down or full; cron/systemd retry later


@dataclass
class RunPlan:
    data_dir: Path
    job: snapshots.Job
    targets: list[Target]
    keys: BackupKeys
    retry_delays_s: tuple[float, ...] = ()  # background runs: retry a down/full target later

    def to_json(self) -> str:
        return json.dumps(
            {
                "data_dir": str(self.data_dir),
                "job_dir": str(self.job.job_dir),
                "backup_key": self.keys.backup_key.hex(),
                "targets": [t.__dict__ for t in self.targets],
                "retry_delays_s": list(self.retry_delays_s),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> RunPlan:
        doc = json.loads(text)
        job = snapshots.Job.load(Path(doc["job_dir"]))
        return cls(
            data_dir=Path(doc["data_dir"]),
            job=job,
            targets=[Target(**t) for t in doc["targets"]],
            keys=BackupKeys(bytes.fromhex(doc["backup_key"])),
            retry_delays_s=tuple(doc.get("retry_delays_s", ())),
        )


def add_target(store, data_dir: Path, name: str, url: str, secret: str = "") -> Target:
    """Check that the target answers, mark it as this vault's, and save it in the vault.

    Refuses a target folder that already holds another vault's backup. Giving an existing
    name replaces that target's URL and secret.
    """
    from engine.trust import audit

    check_name(name)
    parse_url(url)
    target = Target(name=name, url=url, secret=secret)
    rc = rclone_for(target, keys_of(store))
    rc.run(["mkdir", rc.base_path()])
    try:
        existing = fetch_header(rc)
    except (TargetError, InputRejected):
        existing = None
    header_path = Path(store.vault_dir) / "vault.json"
    mine = json.loads(header_path.read_text(encoding="utf-8"))["vault_id"]
    if existing is not None and existing.vault_id != mine:
        raise InputRejected(
            f"{url} already holds the backup of another vault ({existing.vault_id[:8]}…). "
            "Use an empty folder or bucket prefix for this vault."
        )
    rc.run(["copyto", str(header_path), rc.base_path(snapshots.HEADER_COPY)])
    rc.run(["mkdir", rc.crypt_path("snapshots")])
    targets = [t for t in load_targets(store) if t.name != name]
    save_targets(store, [*targets, target])
    forget_state(Path(data_dir), name)
    update_state(Path(data_dir), name, last_attempt="")  # listed (as never backed up) at once
    audit.record(store, "backup_target_added", None, f"target '{name}' ({target.kind})")
    return target


def remove_target(store, data_dir: Path, name: str) -> None:
    targets = load_targets(store)
    if not any(t.name == name for t in targets):
        raise InputRejected(f"No backup target named {name!r}.")
    save_targets(store, [t for t in targets if t.name != name])
    forget_state(Path(data_dir), name)


def select_targets(store, names: list[str] | None) -> list[Target]:
    targets = load_targets(store)
    if not targets:
        raise InputRejected(
            "No backup target yet. Add one with `phyassist backup init URL --name NAME`."
        )
    if not names:
        return targets
    by_name = {t.name: t for t in targets}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise InputRejected(
            f"No backup target named {', '.join(unknown)} (known: {', '.join(by_name)})."
        )
    return [by_name[n] for n in names]


def plan_run(store, data_dir: Path, names: list[str] | None = None) -> RunPlan:
    """Snapshot the vault's files for the chosen targets (all by default)."""
    targets = select_targets(store, names)
    job = snapshots.prepare(store, Path(data_dir), [t.name for t in targets])
    return RunPlan(Path(data_dir), job, targets, keys_of(store))


def execute(plan: RunPlan, report=None, *, sleep=None) -> list[snapshots.SendResult]:
    """Send the planned snapshot to each target; one target failing does not stop the others.

    A target that was down or full is tried again after each of ``plan.retry_delays_s``
    (background runs; the command line leaves retrying to cron / systemd).
    """
    import time

    sleep = sleep or time.sleep
    results: dict[str, snapshots.SendResult] = {}
    try:
        snapshots.claim_job(plan.job)
        pending = list(plan.targets)
        for delay in (0.0, *plan.retry_delays_s):
            if delay:
                sleep(delay)
            retry = []
            for target in pending:
                result = _send_one(plan, target)
                results[target.name] = result
                if report is not None:
                    report(result)
                if result.error and result.extra.get("retry_later"):
                    retry.append(target)
            pending = retry
            if not pending:
                break
    finally:
        plan.job.cleanup()
    return [results[t.name] for t in plan.targets]


def _send_one(plan: RunPlan, target: Target) -> snapshots.SendResult:
    last = snapshots.last_sent(plan.data_dir, target.name)
    if last and last.get("snapshot", "") > plan.job.snapshot_id:  # a newer run got there first
        result = snapshots.SendResult(target.name, last["snapshot"], 0, 0)
        result.extra["superseded"] = plan.job.snapshot_id
        return result
    try:
        rc = rclone_for(target, plan.keys)
        return snapshots.send(plan.job, plan.data_dir, target.name, rc)
    except TargetError as exc:
        result = snapshots.SendResult(target.name, plan.job.snapshot_id, 0, 0, error=str(exc))
        result.extra["retry_later"] = exc.retry_later
        return result


def spawn_background(plan: RunPlan) -> subprocess.Popen:
    """Send ``plan`` from a detached process that outlives the app (lock, quit).

    The plan (with the derived backup key, never the passphrase or the master key) goes
    over a pipe, not through a file or the environment.
    """
    secret_vars = ("PHYASSIST_PASSPHRASE", "PHYASSIST_BACKUP_SECRET")
    env = {k: v for k, v in os.environ.items() if not k.startswith(secret_vars)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.backup.worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=str(Path(__file__).resolve().parents[2]),
        start_new_session=True,  # not killed with the app's terminal
        close_fds=True,
    )
    assert proc.stdin is not None
    proc.stdin.write(plan.to_json().encode())
    proc.stdin.close()
    return proc


def recovery_sheet(store, targets: list[Target]) -> str:
    """What a counselor prints and keeps away from the machine, to restore elsewhere."""
    keys = keys_of(store)
    header = json.loads((Path(store.vault_dir) / "vault.json").read_text(encoding="utf-8"))
    lines = [
        "PhyAssist backup recovery sheet -- keep it on paper, away from this machine",
        "",
        f"Vault id:            {header['vault_id']}",
        f"Vault created:       {header.get('created', '?')}",
        f"Backup key check:    {keys.fingerprint}",
        "",
        "Backup targets (their passwords / secret keys are NOT printed here; keep them",
        "with your other credentials):",
    ]
    for t in targets:
        lines.append(f"  {t.name:<12} {t.url}")
    lines += [
        "",
        "To restore on a new machine: clone PhyAssist, run `./dev test` or `./dev run` once",
        "(it installs everything, rclone included), then:",
        "",
        "  ./dev sh phyassist backup restore --from URL",
        "",
        "It asks for the target's password or secret key (if it has one) and for the vault",
        "passphrase, and restores the newest snapshot (--snapshot ID for another).",
        "",
        "If the vault copy at the target is lost, the recovery code below opens the",
        "backup's encryption layer; the vault passphrase is still needed to read anything:",
        "",
        f"  Recovery code: {keys.recovery_code()}",
        "",
        "  ./dev sh phyassist backup restore --from URL --recovery-code",
        "",
        "Nothing on this sheet reads a patient's record without the vault passphrase.",
    ]
    return "\n".join(lines) + "\n"
