"""Arguments and runner of ``phyassist eval imhi`` (also ``python -m engine.evaluation``)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from engine.dataprep.imhi import TASKS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="IMHI folder (test/<TASK>.csv)")
    parser.add_argument("--adapter", type=Path, help="PEFT adapter directory to evaluate")
    parser.add_argument(
        "--compare-base",
        action="store_true",
        help="also run the base model (adapter disabled) and report both side by side",
    )
    parser.add_argument(
        "--patient-adapter",
        type=Path,
        help="a patient adapter (PEFT dir, e.g. `phyassist adapter export`) stacked on --adapter "
        "as the app stacks it; reports --adapter alone and both together",
    )
    parser.add_argument("--model", help="model spec (default: settings model.spec)")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated IMHI tasks")
    parser.add_argument("--limit", type=int, help="rows per task (seeded random sample)")
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


def _settings(args: argparse.Namespace) -> Any:
    from engine.settings import load_settings

    settings = load_settings()
    update: dict[str, Any] = {}
    if args.model:
        update["spec"] = args.model
    if args.device:
        update["device"] = args.device
    if update:
        settings = settings.model_copy(
            update={"model": settings.model.model_copy(update=update)}, deep=True
        )
    return settings


def run(args: argparse.Namespace) -> int:
    from engine.errors import InputRejected
    from engine.evaluation.imhi import evaluate_imhi
    from engine.evaluation.report import write_report
    from engine.model.llm import load_model

    if args.rescore is not None:
        return _rescore(args)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise InputRejected(f"unknown IMHI task(s) {', '.join(unknown)}; known: {', '.join(TASKS)}")
    if args.limit is not None and args.limit < 1:
        raise InputRejected("--limit must be at least 1")
    if args.adapter is None and args.compare_base:
        raise InputRejected("--compare-base needs --adapter (the base is what runs without one)")
    if args.adapter is not None and not (args.adapter / "adapter_config.json").is_file():
        raise InputRejected(f"{args.adapter}: not a PEFT adapter (no adapter_config.json)")

    if args.patient_adapter is not None:
        _check_patient_adapter(args)

    def say(msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)

    loaded = load_model(_settings(args), progress=say)
    common = dict(
        tasks=tasks,
        limit=args.limit,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        context_window=loaded.context_window,
        seed=args.seed,
        progress=say,
    )
    runs = []
    meta: dict[str, Any] = {"model": loaded.name, "device": loaded.device, "data": str(args.data)}
    if args.adapter is None:
        runs.append(evaluate_imhi(loaded.model, loaded.tokenizer, args.data, name="base", **common))
    else:
        from peft import PeftModel

        meta["adapter"] = str(args.adapter)
        if args.compare_base:  # before any LoRA layer exists: the base at full speed
            runs.append(
                evaluate_imhi(loaded.model, loaded.tokenizer, args.data, name="base", **common)
            )
        model = PeftModel.from_pretrained(loaded.model, str(args.adapter), adapter_name="domain")
        # Merged LoRA weights generate as fast as the base; a quantized base cannot merge.
        merge = not getattr(loaded.model, "is_loaded_in_4bit", False)
        meta["adapter_merged"] = merge
        try:
            if merge:
                model.merge_adapter()
            runs.append(evaluate_imhi(model, loaded.tokenizer, args.data, name="adapter", **common))
            if args.patient_adapter is not None:
                meta["patient_adapter"] = str(args.patient_adapter)
                if merge:
                    model.unmerge_adapter()
                model.load_adapter(str(args.patient_adapter), adapter_name="patient")
                both = ["domain", "patient"]
                model.base_model.set_adapter(both)  # the deltas add, as in the app
                if merge:
                    model.merge_adapter(adapter_names=both)
                runs.append(
                    evaluate_imhi(
                        model, loaded.tokenizer, args.data, name="adapter+patient", **common
                    )
                )
        finally:
            # load_model shares the model in-process: restore the weights, drop the layers.
            if merge:
                model.unmerge_adapter()
            model.unload()
    md = write_report(args.out, runs, meta=meta)
    print(md.read_text(encoding="utf-8"))
    print(f"results: {args.out / 'results.json'}")
    return 0


def _check_patient_adapter(args: argparse.Namespace) -> None:
    """A patient adapter is only meaningful on the domain adapter it was trained over."""
    import json

    from engine.errors import InputRejected
    from engine.model.stack import adapter_identity, stack_refusal

    path = args.patient_adapter
    if args.adapter is None:
        raise InputRejected("--patient-adapter needs --adapter (the domain adapter under it)")
    if not (path / "adapter_config.json").is_file():
        raise InputRejected(f"{path}: not a PEFT adapter (no adapter_config.json)")
    card_path = path / "phyassist_card.json"
    card = json.loads(card_path.read_text(encoding="utf-8")) if card_path.is_file() else {}
    why = stack_refusal(card, adapter_identity(args.adapter))
    if why is not None:
        raise InputRejected(f"{path}: {why}")


def _rescore(args: argparse.Namespace) -> int:
    from engine.errors import InputRejected
    from engine.evaluation.imhi import rescore
    from engine.evaluation.report import write_report

    files = sorted(Path(args.rescore).glob("predictions-*.jsonl"))
    if not files:
        raise InputRejected(f"{args.rescore}: no predictions-*.jsonl to rescore")
    order = {"base": 0, "adapter": 1, "adapter+patient": 2}
    runs = sorted((rescore(f) for f in files), key=lambda r: order.get(r.name, 2))
    md = write_report(args.out, runs, meta={"rescored_from": str(args.rescore)})
    print(md.read_text(encoding="utf-8"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.evaluation")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
