"""Vault and patient subcommands: ``init``, ``passwd``, ``patients ...``, ``index rebuild``.

They work without the TUI (over a plain SSH session or in scripts). The passphrase comes
from ``PHYASSIST_PASSPHRASE_FD`` / ``PHYASSIST_PASSPHRASE``, else a prompt (or stdin lines
when stdin is not a terminal); a new passphrase is asked twice.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import unicodedata
from typing import TYPE_CHECKING

from engine.errors import InputRejected
from engine.trust.audit import record as audit_record  # trust: audit hook
from engine.trust.sanitize import safe_terminal_text as _safe
from phyassist_tui.commands._common import resolve_patient_id

if TYPE_CHECKING:
    from engine.records import Patient, PatientSummary
    from engine.vault.store import Store


def register(subparsers: argparse._SubParsersAction) -> None:
    init = subparsers.add_parser(
        "init", help="create an encrypted vault (asks for a passphrase twice)"
    )
    init.set_defaults(handler=_cmd_init)

    passwd = subparsers.add_parser(
        "passwd", help="change the vault passphrase (re-wraps the key; data stays as is)"
    )
    passwd.set_defaults(handler=_cmd_passwd)

    patients = subparsers.add_parser("patients", help="list, search, show, add or delete patients")
    psub = patients.add_subparsers(dest="patients_command", metavar="ACTION")
    plist = psub.add_parser("list", help="every patient, most recently updated first")
    plist.add_argument("--json", action="store_true", help="machine-readable output")
    plist.set_defaults(handler=_cmd_list)
    psearch = psub.add_parser("search", help="patients whose name contains TEXT (or id prefix)")
    psearch.add_argument("text")
    psearch.add_argument("--json", action="store_true", help="machine-readable output")
    psearch.set_defaults(handler=_cmd_search)
    pshow = psub.add_parser("show", help="a patient's basic information and notes")
    pshow.add_argument("id", help="patient id or a unique prefix of it")
    pshow.add_argument("--json", action="store_true", help="the whole record as JSON")
    pshow.set_defaults(handler=_cmd_show)
    padd = psub.add_parser("add", help="create a patient")
    padd.add_argument("name")
    padd.set_defaults(handler=_cmd_add)
    pdel = psub.add_parser("delete", help="delete a patient for good (cryptographic erase)")
    pdel.add_argument("id", help="patient id or a unique prefix of it")
    pdel.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    pdel.set_defaults(handler=_cmd_delete)
    patients.set_defaults(handler=lambda args: _usage(patients))

    index = subparsers.add_parser("index", help="maintain the patient index")
    isub = index.add_subparsers(dest="index_command", metavar="ACTION")
    rebuild = isub.add_parser("rebuild", help="recreate the index from the patient files")
    rebuild.set_defaults(handler=_cmd_rebuild)
    index.set_defaults(handler=lambda args: _usage(index))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


# -- passphrases --------------------------------------------------------------------------


def _from_environment() -> bool:
    return bool(os.environ.get("PHYASSIST_PASSPHRASE_FD")) or (
        os.environ.get("PHYASSIST_PASSPHRASE") is not None
    )


def _ask_new_passphrase(env_var: str | None = None) -> str:
    """A new passphrase: from ``env_var`` if set, else typed twice (or two stdin lines)."""
    if env_var and os.environ.get(env_var) is not None:
        return os.environ[env_var]
    if sys.stdin.isatty():
        first = getpass.getpass("New passphrase: ")
        second = getpass.getpass("Repeat the new passphrase: ")
    else:
        first = sys.stdin.readline().rstrip("\n")
        second = sys.stdin.readline().rstrip("\n")
    if first != second:
        raise InputRejected("The two passphrases differ; nothing was changed.")
    return first


# -- commands -----------------------------------------------------------------------------


def _cmd_init(args: argparse.Namespace) -> int:
    from engine.vault.store import Store
    from phyassist_tui.commands._common import read_passphrase, settings

    cfg = settings()
    if Store.exists(cfg.vault_dir):
        print(f"phyassist: a vault already exists at {cfg.vault_dir}", file=sys.stderr)
        return 1
    passphrase = read_passphrase() if _from_environment() else _ask_new_passphrase()
    with Store.create(cfg.vault_dir, passphrase, settings=cfg):
        pass
    print(f"Created an encrypted vault at {cfg.vault_dir}.")
    print("Keep the passphrase safe: without it nothing in the vault can be recovered.")
    return 0


def _cmd_passwd(args: argparse.Namespace) -> int:
    from engine.vault.store import Store
    from phyassist_tui.commands._common import read_passphrase, settings

    cfg = settings()
    old = read_passphrase("Current passphrase: ")
    with Store.open(cfg.vault_dir, old, settings=cfg) as store:
        new = _ask_new_passphrase("PHYASSIST_NEW_PASSPHRASE")
        store.change_passphrase(old, new)
        audit_record(store, "passphrase_changed", None, "cli")  # trust
    print("Passphrase changed.")
    return 0


def _open(writer: bool) -> Store:
    from phyassist_tui.commands._common import open_store

    return open_store(writer=writer)


def _json_for_terminal(value: object) -> str:
    """Readable JSON (Chinese as is) with every control character escaped, never raw."""
    text = json.dumps(value, ensure_ascii=False, indent=2)
    return "".join(
        f"\\u{ord(ch):04x}"
        if ch != "\n" and unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")
        else ch
        for ch in text
    )


def _print_summaries(rows: list[PatientSummary], as_json: bool) -> None:
    if as_json:
        print(_json_for_terminal([r.model_dump(mode="json") for r in rows]))
        return
    if not rows:
        print("No patients.")
        return
    width = max(12, *(_display_width(_safe(r.name)) for r in rows))
    print(f"{'ID':<10}{_pad('NAME', width)}  {'UPDATED':<16}  NOTES  ADAPTER")
    for r in rows:
        updated = r.updated.astimezone().strftime("%Y-%m-%d %H:%M")
        adapter = "yes" if r.has_adapter else "-"
        name = _pad(_safe(r.name), width)
        print(f"{r.id[:8]:<10}{name}  {updated:<16}  {r.note_count:>5}  {adapter}")


def _display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - _display_width(text))


def _cmd_list(args: argparse.Namespace) -> int:
    with _open(writer=False) as store:
        _print_summaries(store.list_patients(), args.json)
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    with _open(writer=False) as store:
        _print_summaries(store.search(args.text), args.json)
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    with _open(writer=False) as store:
        patient = store.load_patient(resolve_patient_id(store, args.id))
        audit_record(store, "patient_opened", patient.id, "cli show")  # trust
    if args.json:
        print(_json_for_terminal(patient.model_dump(mode="json")))
    else:
        print(_format_patient(patient))
    return 0


def _format_patient(patient: Patient) -> str:
    from engine.records import BASIC_FIELDS

    lines = [f"# {_safe(patient.name)}", f"id: {patient.id}"]
    lines.append(f"created: {patient.created.astimezone():%Y-%m-%d %H:%M}")
    lines.append(f"updated: {patient.updated.astimezone():%Y-%m-%d %H:%M}")
    for field, (label, zh) in BASIC_FIELDS.items():
        value = getattr(patient.basic, field)
        if value.strip():
            lines.append(f"{label} / {zh}: {_safe(value)}")
    for number, note in enumerate(patient.notes_newest_first(), start=1):
        lines.append("")
        lines.append(f"## Note {number} — {note.created.astimezone():%Y-%m-%d %H:%M}")
        lines.append(f"Question: {_safe(note.question)}")
        if note.observed_state:
            lines.append(f"Observed state: {_safe(note.observed_state)}")
        analysis = note.analysis
        if analysis.symptom_type.text:
            lines.append(f"Symptom type: {_safe(analysis.symptom_type.text)}")
        for title, items in (
            ("Reasons", analysis.live("reasons")),
            ("Advice", analysis.live("advice")),
        ):
            if items:
                lines.append(f"{title}:")
                lines.extend(f"  {i}. {_safe(item.text)}" for i, item in enumerate(items, start=1))
    return "\n".join(lines)


def _cmd_add(args: argparse.Namespace) -> int:
    with _open(writer=True) as store:
        patient = store.create_patient(args.name)
        audit_record(store, "patient_created", patient.id, "cli")  # trust
    print(patient.id)
    return 0


def _cmd_delete(args: argparse.Namespace) -> int:
    with _open(writer=True) as store:
        patient_id = resolve_patient_id(store, args.id)
        name = _safe(store.get_summary(patient_id).name)
        if not args.yes:
            if not sys.stdin.isatty():
                raise InputRejected("Refusing to delete without --yes when not on a terminal.")
            answer = input(f"Delete {name} ({patient_id[:8]}) and all their files for good? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("Nothing deleted.")
                return 1
        store.delete_patient(patient_id)
        audit_record(store, "patient_deleted", patient_id, "cli")  # trust
    print(f"Deleted {patient_id}.")
    return 0


def _cmd_rebuild(args: argparse.Namespace) -> int:
    with _open(writer=True) as store:
        count = store.rebuild_index()
        damaged = store.damaged_patients()
    print(f"Index rebuilt: {count} patient(s).")
    for patient_id, reason in damaged.items():
        print(f"  unreadable: {patient_id}: {reason}", file=sys.stderr)
    return 1 if damaged else 0
