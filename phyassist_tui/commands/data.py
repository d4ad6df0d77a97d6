"""``phyassist data prepare``, ``phyassist domain train|ship``: the domain data pipeline.

The command lines live here; the engine functions they call (``engine.dataprep.prepare``,
``engine.training.domain_train.train_domain``, ``engine.training.domain_card.ship``) take
typed arguments. ``phyassist train domain`` (the issue's spelling, next to ``train patient``)
is the same command as ``domain train``. None of this imports textual, so these commands run
on a headless GPU host with only the engine's dependencies.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from engine.dataprep.clean import DEFAULT_MAX_CHARS
from engine.settings import EMBEDDED_MODEL

if TYPE_CHECKING:
    from engine.dataprep.pipeline import PrepareResult


def add_prepare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--imhi", type=Path, help="IMHI folder (train/<TASK>/*.csv, test/*.csv)")
    parser.add_argument("--counselchat", type=Path, help="CounselChat CSV")
    parser.add_argument("--out", type=Path, required=True, help="where to write the dataset")
    parser.add_argument(
        "--all-answers",
        action="store_true",
        help="keep every CounselChat answer, not only the best-voted one per question",
    )
    parser.add_argument(
        "--max-chars",
        type=int,
        default=DEFAULT_MAX_CHARS,
        help=f"drop rows whose question + answer exceed this (default {DEFAULT_MAX_CHARS})",
    )
    parser.add_argument(
        "--val-share",
        type=float,
        default=0.02,
        help="share of IMHI rows held out for validation loss (default 0.02)",
    )
    parser.add_argument(
        "--hold-out",
        default="",
        metavar="TASKS",
        help="comma-separated IMHI tasks left out of training entirely (measured as unseen)",
    )
    parser.add_argument(
        "--drafts",
        action="store_true",
        help="add rows in the product's Analysis draft format (IMHI reasoning -> reasons, "
        "CounselChat answers -> reasons/advice, Chinese cases)",
    )
    parser.add_argument(
        "--no-counselchat-qa",
        action="store_true",
        help="leave CounselChat out in its own question/answer form (drafts only)",
    )
    parser.add_argument(
        "--zh-cases",
        type=Path,
        action="append",
        default=[],
        help="JSON of Chinese draft cases written for the project (repeatable)",
    )
    parser.add_argument("--seed-case", type=Path, help="the seed case JSON (with its analysis)")
    parser.add_argument("--draft-cap", type=int, default=2000, help="draft rows per IMHI task")
    parser.add_argument("--zh-repeat", type=int, default=10, help="copies of each Chinese case")


def format_report(result: PrepareResult) -> str:
    """Per-source, per-rule drop counts as an aligned text table."""
    names: list[str] = []
    for report in result.reports.values():
        names.extend(n for n in report.dropped if n not in names)
    sources = list(result.reports)
    width = max([len(n) for n in names] + [len("rows in"), 10])
    total = result.total

    col = max([14] + [len(s) + 2 for s in sources])

    def row(label: str, values: list[int | str], tot: int) -> str:
        return f"{label:<{width}}" + "".join(f"{v:>{col}}" for v in values) + f"{tot:>10}"

    lines = [f"{'rule':<{width}}" + "".join(f"{s:>{col}}" for s in sources) + f"{'total':>10}"]
    lines.append(row("rows in", [result.reports[s].rows_in for s in sources], total.rows_in))
    for name in names:
        vals: list[int | str] = [result.reports[s].dropped.get(name, "-") for s in sources]
        lines.append(row(name, vals, total.dropped.get(name, 0)))
    lines.append(row("rows out", [result.reports[s].rows_out for s in sources], total.rows_out))
    splits = ", ".join(f"{k} {v}" for k, v in result.split_rows.items())
    lines.append(f"dataset: {splits} -> {result.out_dir}")
    return "\n".join(lines)


def _prepare(args: argparse.Namespace) -> int:
    from engine.dataprep.pipeline import prepare

    result = prepare(
        args.out,
        imhi_dir=args.imhi,
        counselchat_csv=args.counselchat,
        all_answers=args.all_answers,
        max_chars=args.max_chars,
        val_share=args.val_share,
        hold_out=tuple(t.strip() for t in args.hold_out.split(",") if t.strip()),
        drafts=args.drafts,
        counselchat_qa=not args.no_counselchat_qa,
        zh_cases=tuple(args.zh_cases),
        seed_case=args.seed_case,
        draft_cap=args.draft_cap,
        zh_repeat=args.zh_repeat,
    )
    print(format_report(result))
    if result.tasks:
        print("train rows: " + ", ".join(f"{k} {v}" for k, v in result.tasks.items()))
    return 0


def add_domain_train_arguments(parser: argparse.ArgumentParser) -> None:
    from engine.training.domain_train import DomainRecipe

    d = DomainRecipe()
    parser.add_argument("--data", required=True, type=Path, help="dir from `data prepare`")
    parser.add_argument(
        "--out", required=True, type=Path, help="output dir (checkpoints/, adapter/)"
    )
    parser.add_argument("--model", default=None, help="model spec (default: settings model.spec)")
    parser.add_argument("--epochs", type=float, default=d.num_train_epochs)
    parser.add_argument("--max-steps", type=int, default=d.max_steps)
    parser.add_argument("--batch-size", type=int, default=d.per_device_train_batch_size)
    parser.add_argument("--grad-accum", type=int, default=d.gradient_accumulation_steps)
    parser.add_argument("--lr", type=float, default=d.learning_rate)
    parser.add_argument("--lora-r", type=int, default=d.lora_r)
    parser.add_argument("--lora-alpha", type=int, default=d.lora_alpha)
    parser.add_argument("--max-length", type=int, default=d.max_length)
    parser.add_argument("--save-steps", type=int, default=d.save_steps)
    parser.add_argument("--logging-steps", type=int, default=d.logging_steps)
    parser.add_argument("--max-train-rows", type=int, default=None)
    parser.add_argument(
        "--max-eval-rows", type=int, default=None, help="validation rows for the loss (all)"
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop training after this many seconds (the adapter is saved as usual)",
    )
    parser.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints")
    parser.add_argument("--no-4bit", action="store_true", help="LoRA on a full-precision base")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    parser.add_argument(
        "--gradient-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="recompute activations to save memory (default: on with CUDA); a small model "
        "trains faster without it",
    )
    parser.add_argument(
        "--optim",
        default=None,
        help="optimizer (default: paged_adamw_32bit on GPU, else adamw_torch)",
    )


def _domain_train(args: argparse.Namespace) -> int:
    from engine.training.domain_train import DomainRecipe, accelerate_command, train_domain
    from phyassist_tui.commands._common import settings

    # With several GPUs and no launcher yet, run this same command once per GPU under
    # ``accelerate launch`` (the relaunched processes see LOCAL_RANK and train).
    forwarded = forwarded_arguments(sys.argv[1:])
    if forwarded is not None:
        command = accelerate_command(["-m", "phyassist_tui", "domain", "train", *forwarded])
        if command is not None:
            return subprocess.call(command)
    recipe = DomainRecipe(
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        learning_rate=args.lr,
        lora_r=args.lora_r,
        lora_alpha=args.lora_alpha,
        max_length=args.max_length,
        save_steps=args.save_steps,
        logging_steps=args.logging_steps,
        load_in_4bit=False if args.no_4bit else None,
        optim=args.optim,
        gradient_checkpointing=args.gradient_checkpointing,
        time_budget_s=args.time_budget,
    )
    result = train_domain(
        args.data,
        args.out,
        settings=settings(spec=args.model, device=args.device),
        recipe=recipe,
        resume=not args.no_resume,
        max_train_rows=args.max_train_rows,
        max_eval_rows=args.max_eval_rows,
        printer=lambda line: print(line, flush=True),
    )
    print(json.dumps(result.as_dict(), indent=2), flush=True)
    return 0


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
    add_domain_train_arguments(train)
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
