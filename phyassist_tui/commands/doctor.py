"""``phyassist doctor``: check permissions, vault health, model, GPU and versions.

Prints one line per finding and, for each problem, what to do about it. Exit status 0 when
nothing failed (warnings allowed), 1 otherwise. ``--unlock`` also asks for the passphrase
and authenticates every patient file (read-only; works while the TUI runs).
"""

from __future__ import annotations

import argparse
import json

_MARK = {"ok": "[ ok ]", "warn": "[warn]", "fail": "[FAIL]"}


def register(subparsers: argparse._SubParsersAction) -> None:
    doctor = subparsers.add_parser(
        "doctor", help="check permissions, vault health, model, GPU and versions"
    )
    doctor.add_argument(
        "--unlock",
        action="store_true",
        help="ask for the passphrase and authenticate every patient file and the audit log",
    )
    doctor.add_argument(
        "--fix-permissions",
        action="store_true",
        help="set directories to 0700 and files to 0600 under the data directory first",
    )
    doctor.add_argument(
        "--no-gpu", action="store_true", help="skip the GPU check (no torch import)"
    )
    doctor.add_argument(
        "--accept-restore",
        action="store_true",
        help="after restoring files from a backup on purpose: take the vault's files as they "
        "are now as what it last wrote (clears rollback reports; audited)",
    )
    doctor.add_argument("--json", action="store_true", help="findings as JSON")
    doctor.set_defaults(handler=_cmd_doctor)


def _cmd_doctor(args: argparse.Namespace) -> int:
    from engine.trust.hardening import harden_process

    harden_process(umask=False)  # decrypted data here: no core dumps, not dumpable
    from engine.trust.doctor import fix_permissions, problems, run_checks
    from engine.trust.sanitize import safe_terminal_text
    from phyassist_tui.commands._common import read_passphrase, settings

    cfg = settings()
    if args.fix_permissions:
        changed = fix_permissions(cfg)
        if not args.json:
            print(f"Fixed the mode of {changed} path(s) under {cfg.data_dir}.")
    passphrase = read_passphrase() if (args.unlock or args.accept_restore) else None
    if args.accept_restore:
        from engine.trust.audit import record
        from engine.vault.store import Store

        with Store.open(cfg.vault_dir, passphrase, settings=cfg) as store:
            before = store.integrity_problems()
            store.accept_current_files()
            record(store, "restore_accepted", None, f"{len(before)} problem(s) cleared")
        print(f"Took the vault's files as they are now ({len(before)} report(s) cleared).")
    findings = run_checks(cfg, passphrase, gpu=not args.no_gpu)
    bad = problems(findings)
    if args.json:
        print(json.dumps([f.as_dict() for f in findings], ensure_ascii=False, indent=2))
        return 1 if bad else 0
    for f in findings:
        print(f"{_MARK[f.level]} {f.area:<12} {safe_terminal_text(f.message)}")
        if f.fix and f.level != "ok":
            print(f"{'':20}fix: {safe_terminal_text(f.fix)}")
    warns = sum(f.level == "warn" for f in findings)
    print(
        f"\n{len(bad)} problem(s), {warns} warning(s)."
        + (" PhyAssist is healthy." if not bad else " Fix the [FAIL] lines above.")
    )
    return 1 if bad else 0
