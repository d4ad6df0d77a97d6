"""``phyassist data prepare`` and ``phyassist domain train``: the domain data pipeline.

``domain train`` lives here; ``phyassist train domain`` (the issue's spelling, next to
``train patient``) is the same command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.settings import EMBEDDED_MODEL


def _prepare(args: argparse.Namespace) -> int:
    from engine.dataprep.cli import run

    return run(args)


def _domain_train(args: argparse.Namespace) -> int:
    from engine.training.domain_train import run_from_args

    # Forward the command's own arguments so a multi-GPU relaunch runs the same command.
    return run_from_args(args, forwarded_arguments(sys.argv[1:]))


def forwarded_arguments(argv: list[str]) -> list[str] | None:
    """The arguments after ``domain train`` (or its alias ``train domain``); None if absent."""
    for i in range(len(argv) - 1):
        if (argv[i], argv[i + 1]) in (("domain", "train"), ("train", "domain")):
            return argv[i + 2 :]
    return None


def _domain_ship(args: argparse.Namespace) -> int:
    from engine.training.domain_card import ship

    notes = args.notes.read_text(encoding="utf-8") if args.notes else ""
    card = ship(
        args.run,
        args.eval,
        args.data,
        args.dest,
        base_spec=args.base_spec,
        bf16=args.bf16,
        notes=notes,
        command=args.command,
    )
    print(f"adapter and card written: {card}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from engine.dataprep.cli import add_arguments as add_prepare_arguments
    from engine.training.domain_train import add_arguments as add_train_arguments

    data = subparsers.add_parser("data", help="prepare domain training data")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    prepare = data_sub.add_parser(
        "prepare",
        help="clean IMHI + CounselChat and write a chat-format dataset",
        description="Clean IMHI and CounselChat with counted rules and write a datasets "
        "DatasetDict (conversational prompt/completion, loss on the answer only).",
    )
    add_prepare_arguments(prepare)
    prepare.set_defaults(handler=_prepare)

    domain = subparsers.add_parser("domain", help="domain fine-tuning (QLoRA/LoRA SFT)")
    domain_sub = domain.add_subparsers(dest="domain_command", metavar="ACTION")
    train = domain_sub.add_parser(
        "train",
        help="fine-tune the configured model on a prepared dataset",
        description="(Q)LoRA SFT with TRL; resumes from OUT/checkpoints; the adapter goes to "
        "OUT/adapter.",
    )
    add_train_arguments(train)
    train.set_defaults(handler=_domain_train)

    ship = domain_sub.add_parser(
        "ship",
        help="copy a trained adapter to adapters/ with a card built from the run's results",
    )
    ship.add_argument("--run", type=Path, required=True, help="the `domain train --out` dir")
    ship.add_argument("--eval", type=Path, required=True, help="the `eval imhi --out` dir")
    ship.add_argument("--data", type=Path, required=True, help="the `data prepare --out` dir")
    ship.add_argument("--dest", type=Path, default=Path("adapters/domain"))
    ship.add_argument(
        "--base-spec",
        default=EMBEDDED_MODEL,
        help="model spec the adapter belongs to (recorded in adapter_config.json)",
    )
    ship.add_argument(
        "--bf16", action="store_true", help="store the LoRA weights as bfloat16 (half the size)"
    )
    ship.add_argument("--notes", type=Path, help="Markdown file appended to the card")
    ship.add_argument("--command", help="the command to reproduce, shown on the card")
    ship.set_defaults(handler=_domain_ship)
