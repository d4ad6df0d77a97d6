"""Arguments and runner of ``phyassist data prepare`` (also ``python -m engine.dataprep``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.dataprep.clean import DEFAULT_MAX_CHARS


def add_arguments(parser: argparse.ArgumentParser) -> None:
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


def format_report(result) -> str:
    """Per-source, per-rule drop counts as an aligned text table."""
    lines = []
    names: list[str] = []
    for report in result.reports.values():
        names.extend(n for n in report.dropped if n not in names)
    sources = list(result.reports)
    width = max([len(n) for n in names] + [len("rows in"), 10])
    header = f"{'rule':<{width}}" + "".join(f"{s:>14}" for s in sources) + f"{'total':>10}"
    lines.append(header)
    total = result.total

    def row(label: str, values: list[int | str], tot: int) -> str:
        return f"{label:<{width}}" + "".join(f"{v:>14}" for v in values) + f"{tot:>10}"

    lines.append(row("rows in", [result.reports[s].rows_in for s in sources], total.rows_in))
    for name in names:
        vals: list[int | str] = [result.reports[s].dropped.get(name, "-") for s in sources]
        lines.append(row(name, vals, total.dropped.get(name, 0)))
    lines.append(row("rows out", [result.reports[s].rows_out for s in sources], total.rows_out))
    splits = ", ".join(f"{k} {v}" for k, v in result.split_rows.items())
    lines.append(f"dataset: {splits} -> {result.out_dir}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from engine.dataprep.pipeline import prepare

    result = prepare(
        args.out,
        imhi_dir=args.imhi,
        counselchat_csv=args.counselchat,
        all_answers=args.all_answers,
        max_chars=args.max_chars,
        val_share=args.val_share,
    )
    print(format_report(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.dataprep")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
