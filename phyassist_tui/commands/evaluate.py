"""``phyassist eval imhi``: score a model (and optionally an adapter) on the IMHI test sets.

The command line lives here; ``engine.evaluation.pipeline`` does the work with typed
arguments. No textual import: it runs on a headless GPU host.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from engine.dataprep.imhi import TASKS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="IMHI folder (test/<TASK>.csv)")
    parser.add_argument("--adapter", type=Path, help="PEFT adapter directory to evaluate")
    parser.add_argument(
        "--patient-adapter",
        type=Path,
        action="append",
        help="a patient adapter (PEFT dir, e.g. `phyassist adapter export`) stacked on --adapter "
        "as the app stacks it; reports --adapter alone and both together (repeat it: each "
        "patient adapter is its own run)",
    )
    parser.add_argument(
        "--compare-base",
        action="store_true",
        help="also run the base model (adapter disabled) and report both side by side",
    )
    parser.add_argument("--model", help="model spec (default: settings model.spec)")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated IMHI tasks")
    parser.add_argument("--limit", type=int, help="rows per task (seeded random sample)")
    parser.add_argument(
        "--held-out",
        default="",
        metavar="TASKS",
        help="tasks the adapter was not trained on: the report gives their mean and the "
        "trained tasks' mean separately",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--out", type=Path, required=True, help="where results.{json,md} go")
    parser.add_argument(
        "--rescore",
        type=Path,
        metavar="DIR",
        help="no generation: re-extract labels from DIR/predictions-*.jsonl with the current "
        "rules and write a new report",
    )


def _say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def _imhi(args: argparse.Namespace) -> int:
    from engine.evaluation.pipeline import evaluate, rescore_predictions
    from phyassist_tui.commands._common import settings

    if args.rescore is not None:
        print(rescore_predictions(args.rescore, args.out).read_text(encoding="utf-8"))
        return 0
    report = evaluate(
        settings(spec=args.model, device=args.device),
        args.data,
        args.out,
        adapter=args.adapter,
        patient_adapter=args.patient_adapter,
        compare_base=args.compare_base,
        tasks=[t.strip() for t in args.tasks.split(",") if t.strip()],
        limit=args.limit,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        progress=_say,
        held_out=tuple(t.strip() for t in args.held_out.split(",") if t.strip()),
    )
    print(report.read_text(encoding="utf-8"))
    print(f"results: {args.out / 'results.json'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    evaluate = subparsers.add_parser("eval", help="evaluate models on benchmarks")
    sub = evaluate.add_subparsers(dest="eval_command", metavar="BENCHMARK")
    imhi = sub.add_parser(
        "imhi",
        help="IMHI: weighted F1, accuracy, unlabeled share and ROUGE-L per task",
        description="Run the model (+ --adapter) on IMHI test CSVs with batched greedy "
        "generation and write results.json / results.md (base vs adapter side by side).",
    )
    add_arguments(imhi)
    imhi.set_defaults(handler=_imhi)
