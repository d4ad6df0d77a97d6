"""``phyassist adapter list|rollback|export PATIENT_ID``: a patient's adapter versions."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.errors import InputRejected


def register(subparsers: argparse._SubParsersAction) -> None:
    adapter = subparsers.add_parser("adapter", help="list, roll back or export patient adapters")
    asub = adapter.add_subparsers(dest="adapter_command", metavar="ACTION")

    alist = asub.add_parser("list", help="a patient's adapter versions with their cards")
    alist.add_argument("id", help="patient id or a unique prefix of it")
    alist.add_argument("--json", action="store_true", help="machine-readable output")
    alist.set_defaults(handler=_cmd_list)

    roll = asub.add_parser("rollback", help="make an older version the active one")
    roll.add_argument("id", help="patient id or a unique prefix of it")
    roll.add_argument("--version", type=int, help="version to activate (default: previous)")
    roll.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    roll.set_defaults(handler=_cmd_rollback)

    export = asub.add_parser(
        "export", help="write a DECRYPTED standard PEFT folder (asks for confirmation)"
    )
    export.add_argument("id", help="patient id or a unique prefix of it")
    export.add_argument("--version", type=int, help="version to export (default: active)")
    export.add_argument("--out", required=True, type=Path, help="new or empty folder")
    export.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    export.set_defaults(handler=_cmd_export)
    adapter.set_defaults(handler=lambda args: _usage(adapter))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _confirm(question: str, yes: bool) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        raise InputRejected("Refusing without --yes when not on a terminal.")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def _fmt_loss(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


def _cmd_list(args: argparse.Namespace) -> int:
    from engine.training.data import build_training_data, count_edits
    from engine.training.versions import list_versions
    from phyassist_tui.commands._common import open_store, resolve_patient_id

    with open_store(writer=False) as store:
        patient_id = resolve_patient_id(store, args.id)
        versions = list_versions(store, patient_id)
        patient = store.load_patient(patient_id)
    data = build_training_data(patient)
    now = {"notes": len(patient.notes), "edits": count_edits(patient), "pairs": len(data.pairs)}
    if args.json:
        rows = [{"version": v.version, "active": v.active, "card": v.card} for v in versions]
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    if not versions:
        print("No adapter trained yet for this patient (the base model is used).")
        print(f"The record now: {now['notes']} notes, {now['edits']} edits by the counselor.")
        return 0
    for v in versions:
        card = v.card or {}
        mark = "*" if v.active else " "
        print(
            f"{mark} v{v.version}  {card.get('date', '?')}  base {card.get('base_model', '?')}  "
            f"{_over(card)}  steps {card.get('steps', '?')}  "
            f"final loss {_fmt_loss(card.get('final_loss'))}"
        )
        for line in signal_lines(card):
            print(f"      {line}")
    print("(* = active)")
    print(
        f"The record now: {now['notes']} notes, {now['edits']} edits by the counselor "
        f"({now['pairs']} usable as preference pairs)."
    )
    active = next((v for v in versions if v.active), None)
    if active is not None and (
        (active.card or {}).get("examples") != len(data.sft)
        or (active.card or {}).get("preference_pairs") != len(data.pairs)
    ):
        print("The active adapter was trained on an earlier record: train again to include it.")
    return 0


def _over(card: dict) -> str:
    domain = card.get("domain_adapter")
    if domain:
        return f"over domain {domain.get('name', '?')} ({str(domain.get('sha256', ''))[:12]})"
    if "domain_adapter" in card:
        return "over the bare base"
    return "over the bare base (older card)"


def signal_lines(card: dict) -> list[str]:
    """What went into a version: counts per signal, then per note (learning)."""
    signals = card.get("signals")
    if not isinstance(signals, dict):  # a card written before the counts were kept
        return [
            f"notes {card.get('examples', '?')}, preference pairs "
            f"{card.get('preference_pairs', '?')} (per-signal counts not recorded)"
        ]
    names = ("edits", "deletions", "added", "regenerations", "choices")
    lines = [
        f"notes {signals.get('notes_trained', 0)}/{signals.get('notes', 0)} trained; "
        + ", ".join(f"{n} {signals.get(n, 0)}" for n in names)
        + f"; preference pairs {signals.get('preference_pairs', 0)}"
        + (
            f" ({card['preference_pairs_used']} used)"
            if isinstance(card.get("preference_pairs_used"), int)
            and card["preference_pairs_used"] != signals.get("preference_pairs", 0)
            else ""
        )
    ]
    if card.get("rehearsal_rows"):
        lines.append(
            f"domain rehearsal: {card['rehearsal_rows']} public rows of the domain adapter's "
            "training data replayed (no patient text)"
        )
    for note in signals.get("per_note") or []:
        counts = ", ".join(f"{n} {note.get(n, 0)}" for n in names if note.get(n))
        state = "" if note.get("trained") else " (no saved Analysis: not trained)"
        lines.append(
            f"  note {note.get('date', '?')} {note.get('note', '')}: {counts or '-'}{state}"
        )
    return lines


def _cmd_rollback(args: argparse.Namespace) -> int:
    from engine.model.adapters import AdapterRegistry
    from engine.session import Session
    from phyassist_tui.commands._common import open_store, resolve_patient_id

    with open_store(writer=True) as store:
        patient_id = resolve_patient_id(store, args.id)
        current = AdapterRegistry(store).active(patient_id)
        target = args.version if args.version is not None else "the previous version"
        if not _confirm(f"Switch this patient's adapter from v{current} to {target}?", args.yes):
            print("Nothing changed.")
            return 1
        session = Session.over(store, store.settings, origin="cli")
        _previous, version = session.rollback_adapter(patient_id, args.version)  # audited
    print(f"Adapter v{version} is now active.")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from engine.session import Session
    from phyassist_tui.commands._common import open_store, resolve_patient_id

    with open_store(writer=False) as store:
        patient_id = resolve_patient_id(store, args.id)
        question = (
            f"Write this patient's adapter UNENCRYPTED to {args.out}? It was trained on their "
            "notes and may reveal them."
        )
        if not _confirm(question, args.yes):
            print("Nothing exported.")
            return 1
        session = Session.over(store, store.settings, origin="cli")
        out = session.export_adapter(patient_id, args.out, args.version)  # audited
    print(f"Exported to {out} (adapter_config.json + adapter_model.safetensors).")
    return 0
