"""``phyassist audit show`` and ``phyassist audit verify``: read the encrypted audit log.

Both open the vault read-only (no writer lock), so they work while the TUI is running.
``verify`` exits 0 when the chain is intact and 1, naming the first bad entry, when an
entry was removed, edited, reordered or cut off.
"""

from __future__ import annotations

import argparse
import json
import sys

from engine.trust.sanitize import safe_terminal_text


def register(subparsers: argparse._SubParsersAction) -> None:
    audit = subparsers.add_parser("audit", help="show or verify the encrypted audit log")
    sub = audit.add_subparsers(dest="audit_command", metavar="ACTION")
    show = sub.add_parser("show", help="list audit entries, oldest first")
    show.add_argument("--patient", metavar="ID", help="only this patient's entries (id or prefix)")
    show.add_argument("--limit", type=int, default=0, help="only the newest N entries")
    show.add_argument("--json", action="store_true", help="one JSON object per line")
    show.set_defaults(handler=_cmd_show)
    verify = sub.add_parser("verify", help="check the hash chain; exit 1 on any tampering")
    verify.add_argument(
        "--anchor", metavar="HASH", help="a head hash recorded earlier that must still be present"
    )
    verify.add_argument("--json", action="store_true", help="the result as JSON")
    verify.set_defaults(handler=_cmd_verify)
    audit.set_defaults(handler=lambda args: (audit.print_help(), 2)[1])


def _resolve_patient(entries: list, prefix: str) -> str:
    """The id among the log's entries (a deleted patient's too) that ``prefix`` starts."""
    from engine.errors import PatientNotFound
    from phyassist_tui.commands._common import match_patient_id

    try:
        return match_patient_id((e.patient_id for e in entries if e.patient_id), prefix)
    except PatientNotFound:
        return prefix  # no entries for it: an empty listing, not an error


def _cmd_show(args: argparse.Namespace) -> int:
    from engine.trust.hardening import harden_process

    harden_process(umask=False)  # decrypted data here: no core dumps, not dumpable
    from engine.trust.audit import AuditLog
    from phyassist_tui.commands._common import open_store

    with open_store(writer=False) as store:
        log = AuditLog(store)
        entries = log.entries()
        if args.patient:
            pid = _resolve_patient(entries, args.patient)
            entries = [e for e in entries if e.patient_id == pid]
        if args.limit > 0:
            entries = entries[-args.limit :]
        for e in entries:
            if args.json:
                print(e.to_line())
                continue
            who = safe_terminal_text(e.os_user)
            line = f"#{e.seq:<5} {e.time[:19]}Z  {who:<12} {e.action:<18} {e.patient_id or '-'}"
            if e.detail:
                line += "  " + safe_terminal_text(e.detail).replace("\n", " ")
            print(line)
        if not entries and not args.json:
            print("No audit entries.", file=sys.stderr)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from engine.trust.hardening import harden_process

    harden_process(umask=False)  # decrypted data here: no core dumps, not dumpable
    from engine.trust.audit import AuditLog
    from phyassist_tui.commands._common import open_store

    with open_store(writer=False) as store:
        result = AuditLog(store).verify(anchor=args.anchor)
    if args.json:
        print(
            json.dumps(
                {
                    "ok": result.ok,
                    "count": result.count,
                    "head_count": result.head_count,
                    "head_hash": result.head_hash,
                    "first_bad_seq": result.first_bad_seq,
                    "problems": result.problems,
                    "notes": result.notes,
                },
                ensure_ascii=False,
            )
        )
    else:
        print(result.summary(), file=sys.stdout if result.ok else sys.stderr)
    return 0 if result.ok else 1
