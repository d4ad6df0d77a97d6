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
from engine.trust.sanitize import safe_terminal_text as _safe
from phyassist_tui.commands._common import resolve_patient_id

if TYPE_CHECKING:
    from engine.records import Patient, PatientSummary
    from engine.session import Session
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
    pedit = psub.add_parser("edit", help="correct a patient's name or basic information")
    pedit.add_argument("id", help="patient id or a unique prefix of it")
    pedit.add_argument("--name", help="the corrected name")
    for field in _basic_fields():
        pedit.add_argument(f"--{field.replace('_', '-')}", dest=field, metavar="TEXT")
    pedit.set_defaults(handler=_cmd_edit)
    pamend = psub.add_parser(
        "amend", help="amend a saved note (the earlier version is kept, encrypted)"
    )
    pamend.add_argument("id", help="patient id or a unique prefix of it")
    pamend.add_argument("note", help="note number as `patients show` prints it (oldest = 1)")
    pamend.add_argument("--question", help="the corrected counseling question")
    pamend.add_argument("--observed", help="the corrected observed state")
    pamend.add_argument("--symptom", help="the corrected symptom type")
    pamend.add_argument(
        "--reason-item",
        action="append",
        dest="reasons",
        metavar="TEXT",
        help="the reasons, one option each, in order (replaces the list)",
    )
    pamend.add_argument(
        "--advice",
        action="append",
        metavar="TEXT",
        help="the advice, one option each, in order (replaces the list)",
    )
    pamend.add_argument("--why", default="", help="why the note is amended (optional, kept)")
    pamend.set_defaults(handler=_cmd_amend)
    phist = psub.add_parser("history", help="a note's earlier versions, with time and reason")
    phist.add_argument("id", help="patient id or a unique prefix of it")
    phist.add_argument("note", help="note number (oldest = 1)")
    phist.set_defaults(handler=_cmd_history)
    pdeln = psub.add_parser(
        "delete-note", help="delete a note (its text goes; a dated, audited tombstone stays)"
    )
    pdeln.add_argument("id", help="patient id or a unique prefix of it")
    pdeln.add_argument("note", help="note number (oldest = 1)")
    pdeln.add_argument("--why", default="", help="why the note is deleted (optional, kept)")
    pdeln.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    pdeln.set_defaults(handler=_cmd_delete_note)
    patients.set_defaults(handler=lambda args: _usage(patients))

    index = subparsers.add_parser("index", help="maintain the patient index")
    isub = index.add_subparsers(dest="index_command", metavar="ACTION")
    rebuild = isub.add_parser("rebuild", help="recreate the index from the patient files")
    rebuild.set_defaults(handler=_cmd_rebuild)
    index.set_defaults(handler=lambda args: _usage(index))


NAME_COLUMN = 30  # longer names are cut with an ellipsis in `patients list`


def _basic_fields() -> list[str]:
    from engine.records import BASIC_FIELDS

    return list(BASIC_FIELDS)


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
    from engine.session import Session
    from engine.vault.store import Store
    from phyassist_tui.commands._common import read_passphrase, settings

    cfg = settings()
    if Store.exists(cfg.vault_dir):
        print(f"phyassist: a vault already exists at {cfg.vault_dir}", file=sys.stderr)
        return 1
    passphrase = read_passphrase() if _from_environment() else _ask_new_passphrase()
    session = Session(cfg, origin="cli")
    session.create_vault(passphrase)  # audited as vault_created
    session.close()
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
        _session(store).change_passphrase(old, new)  # audited
    print("Passphrase changed.")
    return 0


def _session(store: Store) -> Session:
    """The engine's Session over the store this command opened: it writes the audit entry
    of each action (the same entries as the TUI's)."""
    from engine.session import Session

    return Session.over(store, store.settings, origin="cli")


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
    width = min(NAME_COLUMN, max(12, *(_display_width(_safe(r.name)) for r in rows)))
    print(f"{'ID':<10}{_pad('NAME', width)}  {'UPDATED':<16}  NOTES  ADAPTER")
    for r in rows:
        updated = r.updated.astimezone().strftime("%Y-%m-%d %H:%M")
        adapter = "yes" if r.has_adapter else "-"
        name = _pad(_ellipsize(_safe(r.name), width), width)
        print(f"{r.id[:8]:<10}{name}  {updated:<16}  {r.note_count:>5}  {adapter}")


def _display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _ellipsize(text: str, width: int) -> str:
    """``text`` cut to ``width`` terminal columns, with an ellipsis where it was cut."""
    if _display_width(text) <= width:
        return text
    out = ""
    for ch in text:
        if _display_width(out + ch) > width - 1:
            break
        out += ch
    return out + "…"


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
        opened = _session(store).open_patient(resolve_patient_id(store, args.id), detail="cli show")
        patient = opened.patient
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
    # numbered oldest = 1, as stored (and as `patients amend/history/delete-note` take them)
    for number, note in enumerate(patient.notes, start=1):
        lines.append("")
        lines.append(f"## Note {number} — {note.created.astimezone():%Y-%m-%d %H:%M}")
        if note.amended is not None:
            lines.append(
                f"(amended {note.amended.astimezone():%Y-%m-%d %H:%M}; "
                f"{len(note.versions)} earlier version(s): "
                f"phyassist patients history {patient.id[:8]} {number})"
            )
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
    for tomb in patient.deleted_notes:
        why = f": {_safe(tomb.reason)}" if tomb.reason else ""
        lines.append("")
        lines.append(
            f"(a note of {tomb.created.astimezone():%Y-%m-%d %H:%M} was deleted "
            f"{tomb.deleted.astimezone():%Y-%m-%d %H:%M}{why})"
        )
    return "\n".join(lines)


def _cmd_add(args: argparse.Namespace) -> int:
    with _open(writer=True) as store:
        patient = _session(store).create_patient(args.name)  # audited
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
        _session(store).delete_patient(patient_id)  # audited
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


# -- corrections --------------------------------------------------------------------------


def _note_by_number(patient: Patient, number: str) -> int:
    """The index of note ``number`` (1 = oldest, as `patients show` prints them)."""
    try:
        index = int(number) - 1
    except ValueError:
        index = -1
    if not 0 <= index < len(patient.notes):
        raise InputRejected(
            f"No note {number!r}: this patient has {len(patient.notes)} note(s), numbered "
            "from 1 (oldest) as `phyassist patients show` prints them."
        )
    return index


def _cmd_edit(args: argparse.Namespace) -> int:
    values = {f: getattr(args, f) for f in _basic_fields() if getattr(args, f) is not None}
    if args.name is None and not values:
        raise InputRejected("Nothing to change: give --name and/or a basic-information field.")
    with _open(writer=True) as store:
        patient = store.load_patient(resolve_patient_id(store, args.id))
        basic = patient.basic.model_copy(update=values) if values else None
        _session(store).update_patient_info(patient.id, name=args.name, basic=basic)  # audited
    print("Basic information saved.")
    return 0


def _cmd_amend(args: argparse.Namespace) -> int:
    from engine.records import items_from_lines

    with _open(writer=True) as store:
        patient = store.load_patient(resolve_patient_id(store, args.id))
        note = patient.notes[_note_by_number(patient, args.note)]
        analysis = None
        if args.symptom is not None or args.reasons is not None or args.advice is not None:
            analysis = note.analysis.model_copy(deep=True)
            if args.symptom is not None:
                analysis.symptom_type.text = args.symptom.strip()
            if args.reasons is not None:
                analysis.reasons = items_from_lines(note.analysis.reasons, "\n".join(args.reasons))
            if args.advice is not None:
                analysis.advice = items_from_lines(note.analysis.advice, "\n".join(args.advice))
        if args.question is None and args.observed is None and analysis is None:
            raise InputRejected(
                "Nothing to amend: give --question, --observed, --symptom, "
                "--reason-item or --advice."
            )
        _session(store).amend_note(  # audited
            patient.id,
            note.id,
            question=args.question,
            observed_state=args.observed,
            analysis=analysis,
            reason=args.why,
        )
    print(
        f"Note {args.note} amended; the earlier version is kept "
        f"(phyassist patients history {args.id} {args.note})."
    )
    return 0


def _cmd_history(args: argparse.Namespace) -> int:
    with _open(writer=False) as store:
        patient_id = resolve_patient_id(store, args.id)
        patient = _session(store).open_patient(patient_id, detail="cli history").patient
    note = patient.notes[_note_by_number(patient, args.note)]
    current = (note.amended or note.created).astimezone()
    print(f"# Note {args.note} — {note.created.astimezone():%Y-%m-%d %H:%M}")
    print(f"\n## Current version (saved {current:%Y-%m-%d %H:%M})")
    print(_format_version(note.question, note.observed_state, note.analysis))
    for number, version in reversed(list(enumerate(note.versions, start=1))):
        why = f" — reason: {_safe(version.reason)}" if version.reason else ""
        print(
            f"\n## Version {number} (saved {version.written.astimezone():%Y-%m-%d %H:%M}, "
            f"replaced {version.replaced.astimezone():%Y-%m-%d %H:%M}){why}"
        )
        print(_format_version(version.question, version.observed_state, version.analysis))
    if not note.versions:
        print("\n(never amended)")
    return 0


def _format_version(question: str, observed: str, analysis) -> str:
    lines = [f"Question: {_safe(question)}"]
    if observed:
        lines.append(f"Observed state: {_safe(observed)}")
    lines.append(f"Symptom type: {_safe(analysis.symptom_type.text) or '-'}")
    for title, items in (
        ("Reasons", analysis.live("reasons")),
        ("Advice", analysis.live("advice")),
    ):
        lines.append(f"{title}:")
        lines.extend(f"  {i}. {_safe(item.text)}" for i, item in enumerate(items, start=1))
    return "\n".join(lines)


def _cmd_delete_note(args: argparse.Namespace) -> int:
    with _open(writer=True) as store:
        patient = store.load_patient(resolve_patient_id(store, args.id))
        note = patient.notes[_note_by_number(patient, args.note)]
        if not args.yes:
            if not sys.stdin.isatty():
                raise InputRejected("Refusing without --yes when not on a terminal.")
            answer = input(
                f"Delete note {args.note} of {note.created.astimezone():%Y-%m-%d}? Its text and "
                "earlier versions are erased; a dated tombstone stays. [y/N] "
            )
            if answer.strip().lower() not in ("y", "yes"):
                print("Nothing deleted.")
                return 1
        _session(store).delete_note(patient.id, note.id, args.why)  # audited
    print(f"Note {args.note} deleted; the remaining notes are renumbered.")
    return 0
