"""``phyassist eval imhi``: score a model (and optionally an adapter) on the IMHI test sets."""

from __future__ import annotations

import argparse


def _imhi(args: argparse.Namespace) -> int:
    from engine.evaluation.cli import run

    return run(args)


def register(subparsers: argparse._SubParsersAction) -> None:
    from engine.evaluation.cli import add_arguments

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
