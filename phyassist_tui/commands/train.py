"""``phyassist train patient ID``: train the patient's adapter, streaming progress lines.

Training runs in a subprocess (``engine.training.worker``); Ctrl-C cancels it and the
previous adapter stays active.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.training.runner import TrainingEvent


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train a patient's adapter on their notes")
    tsub = train.add_subparsers(dest="train_command", metavar="WHAT")
    patient = tsub.add_parser("patient", help="train (a new version of) one patient's adapter")
    patient.add_argument("id", help="patient id or a unique prefix of it")
    patient.add_argument("--epochs", type=float, help="passes over the notes (default: scaled)")
    patient.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    patient.add_argument(
        "--preference",
        choices=("dpo", "orpo", "none"),
        help="preference step after SFT (default: none; the pairs stay stored)",
    )
    patient.add_argument("--json", action="store_true", help="print the raw JSON events")
    patient.set_defaults(handler=_cmd_train_patient)
    from phyassist_tui.commands.data import add_domain_train_arguments

    domain = tsub.add_parser(
        "domain",
        help="domain fine-tuning on a prepared dataset (same as `phyassist domain train`)",
    )
    add_domain_train_arguments(domain)
    domain.set_defaults(handler=_cmd_train_domain)
    train.set_defaults(handler=lambda args: _usage(train))


def _cmd_train_domain(args: argparse.Namespace) -> int:
    from phyassist_tui.commands.data import _domain_train

    return _domain_train(args)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def format_event(event: TrainingEvent) -> str | None:
    """One human line per event (None for events not worth a line)."""
    if event.phase == "loading":
        return f"Loading the base model on {event.data.get('device', '?')}…"
    if event.phase == "prepared":
        d = event.data
        pref = ", then a preference step" if d.get("preference_step") else ""
        return (
            f"Training on {d.get('examples')} notes ({d.get('tokens')} tokens) and "
            f"{d.get('preference_pairs')} preference pairs (counselor edits, deletions, added "
            f"items, regenerations, Compare choices){pref}."
        )
    if event.phase in ("sft", "dpo", "orpo"):
        if event.step == 0:
            return f"[{event.phase}] {event.total_steps} steps"
        parts = [f"[{event.phase}] step {event.step}/{event.total_steps}"]
        if event.loss is not None:
            parts.append(f"loss {event.loss:.4f}")
        if event.tokens_per_s:
            parts.append(f"{event.tokens_per_s:.0f} tok/s")
        if event.eta_s is not None:
            parts.append(f"ETA {event.eta_s:.0f} s")
        return " · ".join(parts)
    if event.phase == "saving":
        return "Sealing the adapter…"
    if event.phase == "stored":
        return event.message
    if event.phase == "error":
        return None  # raised as an exception by the runner
    return None


def _cmd_train_patient(args: argparse.Namespace) -> int:
    from engine.session import Session
    from phyassist_tui.commands._common import open_store, resolve_patient_id, settings

    cfg = settings()
    overrides: dict[str, Any] = {}
    if args.epochs is not None:
        overrides["num_train_epochs"] = args.epochs
    if args.max_steps is not None:
        overrides["max_steps"] = args.max_steps
    if args.preference is not None:
        overrides["preference_method"] = args.preference
    with open_store(cfg, writer=True) as store:
        patient_id = resolve_patient_id(store, args.id)
        session = Session.over(store, cfg, origin="cli")
        cancel = threading.Event()
        try:  # audited by the Session: started, then finished, killed or failed
            for event in session.training_events(patient_id, cancel, overrides=overrides):
                if args.json:
                    payload = (
                        event.data
                        if event.phase != "stored"
                        else {
                            "phase": "stored",
                            "version": event.data.get("version"),
                            "pruned": event.data.get("pruned"),
                        }
                    )
                    print(json.dumps(payload, ensure_ascii=False), flush=True)
                    continue
                line = format_event(event)
                if line:
                    print(line, flush=True)
        except KeyboardInterrupt:
            cancel.set()  # the subprocess was stopped as the events ended
            print("Training cancelled; the previous adapter stays active.", file=sys.stderr)
            return 130
    return 0
