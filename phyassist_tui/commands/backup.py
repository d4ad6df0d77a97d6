"""``phyassist backup init|run|list|verify|restore|sheet|remove``: encrypted backups via rclone.

Secrets: the vault passphrase as for every command (``PHYASSIST_PASSPHRASE_FD`` /
``PHYASSIST_PASSPHRASE`` / prompt); a target's password or S3 secret key from
``PHYASSIST_BACKUP_SECRET_FD`` / ``PHYASSIST_BACKUP_SECRET`` / prompt (when stdin is not a
terminal: one line each, the target's secret first). Exit status: 0 done, 1 error,
75 (EX_TEMPFAIL) when a target was down or full or the vault was busy: try again later.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from engine.errors import InputRejected, VaultBusy


def register(subparsers: argparse._SubParsersAction) -> None:
    backup = subparsers.add_parser(
        "backup", help="encrypted, incremental backups to other disks and machines (rclone)"
    )
    sub = backup.add_subparsers(dest="backup_command", metavar="ACTION")
    init = sub.add_parser("init", help="add a backup target and print the recovery sheet")
    init.add_argument("url", help="a path, sftp://user@host[:port]/dir or s3://KEY@host/bucket")
    init.add_argument("--name", help="short name of the target (default: from its kind)")
    init.add_argument("--no-sheet", action="store_true", help="do not print the recovery sheet")
    init.set_defaults(handler=_cmd_init)
    run = sub.add_parser("run", help="back up to every target (or --target NAME)")
    run.add_argument("--target", action="append", help="only this target (repeatable)")
    run.set_defaults(handler=_cmd_run)
    lst = sub.add_parser("list", help="targets, their last backup, and their snapshots")
    lst.add_argument("--target", action="append", help="only this target (repeatable)")
    lst.add_argument("--local", action="store_true", help="do not contact the targets")
    lst.set_defaults(handler=_cmd_list)
    verify = sub.add_parser("verify", help="check that the newest snapshot is whole at a target")
    verify.add_argument("--target", action="append", help="only this target (repeatable)")
    verify.add_argument("--snapshot", help="this snapshot instead of the newest")
    verify.add_argument("--deep", action="store_true", help="download and check every file")
    verify.set_defaults(handler=_cmd_verify)
    restore = sub.add_parser("restore", help="restore the vault from a target")
    where = restore.add_mutually_exclusive_group(required=True)
    where.add_argument("--from", dest="url", help="the target's URL (on a new machine)")
    where.add_argument("--target", help="a target this vault already knows, by name")
    restore.add_argument("--name", help="name to keep the --from target under")
    restore.add_argument("--snapshot", help="snapshot id (or unique prefix); default: newest")
    restore.add_argument(
        "--replace", action="store_true", help="replace the vault here (it is kept aside)"
    )
    restore.add_argument(
        "--recovery-code", action="store_true", help="ask for the recovery sheet's code"
    )
    restore.set_defaults(handler=_cmd_restore)
    sheet = sub.add_parser("sheet", help="print the recovery sheet again")
    sheet.set_defaults(handler=_cmd_sheet)
    remove = sub.add_parser("remove", help="forget a target (its backups stay where they are)")
    remove.add_argument("name")
    remove.set_defaults(handler=_cmd_remove)
    backup.set_defaults(handler=lambda args: (backup.print_help(), 2)[1])


def _secret_needed(url: str) -> bool:
    from engine.backup.targets import parse_url

    kind, options, _root = parse_url(url)
    if kind == "s3":
        return "secret_access_key" not in options and "env_auth" not in options
    if kind == "sftp":
        return not ({"key_file", "key_pem", "key_use_agent", "pass"} & set(options))
    return False


def _read_secret(url: str) -> str:
    if not _secret_needed(url):
        return ""
    fd = os.environ.get("PHYASSIST_BACKUP_SECRET_FD")
    if fd:
        with os.fdopen(int(fd), encoding="utf-8", closefd=False) as stream:
            return stream.readline().rstrip("\n")
    env = os.environ.get("PHYASSIST_BACKUP_SECRET")
    if env is not None:
        return env
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    return getpass.getpass("Target password / secret key: ")


def _harden() -> None:
    from engine.trust.hardening import harden_process

    harden_process(umask=False)  # keys in memory: no core dumps, not dumpable


def _default_name(store, url: str, given: str | None) -> str:
    from engine.backup.targets import load_targets, parse_url

    if given:
        return given
    kind = parse_url(url)[0]
    names = {t.name for t in load_targets(store)} if store is not None else set()
    name, n = kind, 2
    while name in names:
        name, n = f"{kind}{n}", n + 1
    return name


def _cmd_init(args: argparse.Namespace) -> int:
    _harden()
    from engine.backup import service
    from phyassist_tui.commands._common import open_store, settings

    cfg = settings()
    with open_store(cfg) as store:
        name = _default_name(store, args.url, args.name)
        secret = _read_secret(args.url)
        target = service.add_target(store, cfg.data_dir, name, args.url, secret)
        print(f"Backup target '{target.name}' added ({target.kind}).", file=sys.stderr)
        if not args.no_sheet:
            from engine.backup.targets import load_targets

            print(service.recovery_sheet(store, load_targets(store)))
    return 0


def _cmd_sheet(args: argparse.Namespace) -> int:
    _harden()
    from engine.backup import service
    from engine.backup.targets import load_targets
    from phyassist_tui.commands._common import open_store

    with open_store(writer=False) as store:
        print(service.recovery_sheet(store, load_targets(store)))
    return 0


def _cmd_remove(args: argparse.Namespace) -> int:
    from engine.backup import service
    from phyassist_tui.commands._common import open_store, settings

    cfg = settings()
    with open_store(cfg) as store:
        service.remove_target(store, cfg.data_dir, args.name)
    print(f"Target '{args.name}' forgotten; its backups are left in place.", file=sys.stderr)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    _harden()
    from engine.backup import service
    from phyassist_tui.commands._common import open_store, settings

    cfg = settings()
    try:
        with open_store(cfg) as store:
            plan = service.plan_run(store, cfg.data_dir, args.target)
    except VaultBusy:
        print(
            "phyassist: the vault is open in PhyAssist right now; it backs up by itself on lock "
            "and quit (setting backup_on_lock). Try again later.",
            file=sys.stderr,
        )
        return service.EXIT_TEMPFAIL
    results = service.execute(plan)
    status = 0
    for r in results:
        if r.error:
            print(f"phyassist: {r.error}", file=sys.stderr)
            status = service.EXIT_TEMPFAIL if r.extra.get("retry_later") and status != 1 else 1
        else:
            print(
                f"{r.target}: snapshot {r.snapshot_id} ({'full' if r.full else 'incremental'}), "
                f"{r.files_sent} files, {r.bytes_sent} bytes sent in {r.seconds:.1f} s"
            )
    return status


def _targets_of(store, names):
    from engine.backup.service import select_targets

    return select_targets(store, names)


def _cmd_list(args: argparse.Namespace) -> int:
    _harden()
    from engine.backup.rclone import TargetError
    from engine.backup.snapshots import list_snapshots
    from engine.backup.state import load_state
    from engine.backup.targets import keys_of, rclone_for
    from phyassist_tui.commands._common import open_store, settings

    cfg = settings()
    states = load_state(cfg.data_dir)
    with open_store(cfg, writer=False) as store:
        targets = _targets_of(store, args.target)
        keys = keys_of(store)
    status = 0
    for t in targets:
        row = states.get(t.name)
        last = row.last_success if row and row.last_success else "never"
        print(f"{t.name}  {t.url}  last backup: {last}")
        if row and row.last_error:
            print(f"  last error: {row.last_error}")
        if args.local:
            continue
        try:
            for snap in list_snapshots(rclone_for(t, keys)):
                print(f"  {snap}")
        except TargetError as exc:
            print(f"  phyassist: {exc}", file=sys.stderr)
            status = 75
    return status


def _cmd_verify(args: argparse.Namespace) -> int:
    _harden()
    from engine.backup.rclone import TargetError
    from engine.backup.snapshots import verify
    from engine.backup.targets import keys_of, rclone_for
    from phyassist_tui.commands._common import open_store, settings

    cfg = settings()
    with open_store(cfg, writer=False) as store:
        targets = _targets_of(store, args.target)
        keys = keys_of(store)
    status = 0
    for t in targets:
        try:
            report = verify(rclone_for(t, keys), cfg.data_dir, args.snapshot, deep=args.deep)
        except TargetError as exc:
            print(f"phyassist: {exc}", file=sys.stderr)
            status = max(status, 75) if exc.retry_later else 1
            continue
        if report.ok:
            deep = f", {report.deep_checked} downloaded and checked" if args.deep else ""
            print(f"{t.name}: snapshot {report.snapshot_id} whole ({report.files} files{deep})")
        else:
            from engine.backup.snapshots import forget_sent

            forget_sent(cfg.data_dir, t.name)  # the next run sends everything that is missing
            print(
                f"phyassist: {t.name}: snapshot {report.snapshot_id} is missing "
                f"{len(report.missing)} of its files at the target; run `phyassist backup run` "
                "to send a complete new snapshot.",
                file=sys.stderr,
            )
            status = 1
    return status


def _cmd_restore(args: argparse.Namespace) -> int:
    _harden()
    from engine.backup.restore import restore
    from engine.backup.targets import BackupKeys, Target, check_name, rclone_for
    from phyassist_tui.commands._common import read_passphrase, settings

    cfg = settings()
    if args.url:
        name = check_name(_default_name(None, args.url, args.name))
        target = Target(name=name, url=args.url, secret=_read_secret(args.url))
    else:
        from engine.errors import TamperedFile, UnknownSchema, VaultNotFound
        from phyassist_tui.commands._common import open_store

        try:
            with open_store(cfg, writer=False) as store:
                target = _targets_of(store, [args.target])[0]
        except (TamperedFile, UnknownSchema, VaultNotFound) as exc:
            raise InputRejected(
                f"The vault here cannot be read to look up target {args.target!r} ({exc}). "
                "Give the target's URL instead: `phyassist backup restore --from URL --replace` "
                "(the URL is on the recovery sheet)."
            ) from None
    keys = None
    if args.recovery_code:
        code = getpass.getpass("Recovery code: ") if sys.stdin.isatty() else sys.stdin.readline()
        keys = BackupKeys.from_recovery_code(code)
    passphrase = read_passphrase("Vault passphrase: ")
    if not passphrase:
        raise InputRejected("The vault passphrase is needed to restore.")
    result = restore(
        Path(cfg.data_dir),
        rclone_for(target, None),
        passphrase,
        target=target,
        snapshot_id=args.snapshot,
        replace=args.replace,
        keys=keys,
        settings=cfg,
        progress=lambda msg: print(f"restore: {msg}", file=sys.stderr),
    )
    print(
        f"Restored snapshot {result.snapshot_id} from '{result.target}': {result.patients} "
        f"patients, {result.files} files, audit log {result.audit_entries} entries "
        f"(the restore is its last entry)."
    )
    if result.replaced is not None:
        print(f"The vault that was here is kept at {result.replaced}.")
    if result.older_than_replaced:
        print(
            "Note: the snapshot is OLDER than the vault it replaced; this rollback is recorded "
            "in the audit log."
        )
    return 0
