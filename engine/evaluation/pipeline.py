"""One IMHI evaluation end to end: load the model, score base and/or adapter, write the report.

``evaluate`` is what ``phyassist eval imhi`` runs (the command line lives with the CLI);
``rescore_predictions`` re-extracts labels from a finished run's predictions without a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.dataprep.imhi import TASKS
from engine.errors import InputRejected
from engine.evaluation.imhi import EvalRun, Progress, evaluate_imhi, rescore
from engine.evaluation.report import write_report
from engine.settings import Settings


def evaluate(
    settings: Settings,
    data_dir: Path,
    out_dir: Path,
    *,
    adapter: Path | None = None,
    patient_adapter: Path | Sequence[Path] | None = None,
    compare_base: bool = False,
    tasks: Sequence[str] = TASKS,
    limit: int | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    seed: int = 0,
    progress: Progress = print,
    held_out: Sequence[str] = (),
) -> Path:
    """Score the configured model (with ``adapter``; also without it if ``compare_base``;
    also with ``patient_adapter`` stacked on ``adapter``, as the app stacks them; several
    patient adapters are stacked one at a time, each its own run, the model loaded once) on
    IMHI's test sets; returns the written ``results.md`` (``results.json`` beside it).

    Bad arguments raise ``InputRejected`` before any model is loaded.
    """
    from engine.model.llm import load_model

    tasks = list(tasks)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise InputRejected(f"unknown IMHI task(s) {', '.join(unknown)}; known: {', '.join(TASKS)}")
    strange = [t for t in held_out if t not in TASKS]
    if strange:
        raise InputRejected(f"unknown IMHI task(s) to report as held out: {', '.join(strange)}")
    if limit is not None and limit < 1:
        raise InputRejected("--limit must be at least 1")
    if adapter is None and compare_base:
        raise InputRejected("--compare-base needs --adapter (the base is what runs without one)")
    if adapter is not None and not (adapter / "adapter_config.json").is_file():
        raise InputRejected(f"{adapter}: not a PEFT adapter (no adapter_config.json)")
    if isinstance(patient_adapter, str | Path):
        patient_adapter = [Path(patient_adapter)]
    patients = [Path(p) for p in patient_adapter or []]
    for path in patients:
        _check_patient_adapter(path, adapter)

    loaded = load_model(settings, progress=progress)
    common: dict[str, Any] = dict(
        tasks=tasks,
        limit=limit,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        context_window=loaded.context_window,
        seed=seed,
        progress=progress,
    )
    runs: list[EvalRun] = []
    meta: dict[str, Any] = {"model": loaded.name, "device": loaded.device, "data": str(data_dir)}
    if held_out:  # tasks the adapter was not trained on: reported as their own mean
        meta["held_out"] = list(held_out)
    if adapter is None:
        runs.append(evaluate_imhi(loaded.model, loaded.tokenizer, data_dir, name="base", **common))
    else:
        from peft import PeftModel

        meta["adapter"] = str(adapter)
        if compare_base:  # before any LoRA layer exists: the base at full speed
            runs.append(
                evaluate_imhi(loaded.model, loaded.tokenizer, data_dir, name="base", **common)
            )
        model = PeftModel.from_pretrained(loaded.model, str(adapter), adapter_name="domain")
        # Merged LoRA weights generate as fast as the base; a quantized base cannot merge.
        merge = not getattr(loaded.model, "is_loaded_in_4bit", False)
        meta["adapter_merged"] = merge
        try:
            if merge:
                model.merge_adapter()
            runs.append(evaluate_imhi(model, loaded.tokenizer, data_dir, name="adapter", **common))
            if patients:
                meta["patient_adapter"] = [str(p) for p in patients]
            for i, path in enumerate(patients):
                name = "adapter+patient" if len(patients) == 1 else f"adapter+{path.name}"
                if merge:
                    model.unmerge_adapter()
                model.load_adapter(str(path), adapter_name=f"patient{i}")
                both = ["domain", f"patient{i}"]
                model.base_model.set_adapter(both)  # the deltas add, as in the app
                if merge:
                    model.merge_adapter(adapter_names=both)
                runs.append(evaluate_imhi(model, loaded.tokenizer, data_dir, name=name, **common))
                if merge:
                    model.unmerge_adapter()
                model.delete_adapter(f"patient{i}")
                model.base_model.set_adapter("domain")
        finally:
            # load_model shares the model in-process: restore the weights, drop the layers.
            if merge and any(getattr(m, "merged", False) for m in model.modules()):
                model.unmerge_adapter()
            model.unload()
    return write_report(out_dir, runs, meta=meta)


def _check_patient_adapter(path: Path, adapter: Path | None) -> None:
    """A patient adapter is only meaningful on the domain adapter it was trained over."""
    import json

    from engine.model.stack import adapter_identity, stack_refusal

    if adapter is None:
        raise InputRejected("--patient-adapter needs --adapter (the domain adapter under it)")
    if not (path / "adapter_config.json").is_file():
        raise InputRejected(f"{path}: not a PEFT adapter (no adapter_config.json)")
    card_path = path / "phyassist_card.json"
    card = json.loads(card_path.read_text(encoding="utf-8")) if card_path.is_file() else {}
    why = stack_refusal(card, adapter_identity(adapter))
    if why is not None:
        raise InputRejected(f"{path}: {why}")


def rescore_predictions(predictions_dir: Path, out_dir: Path) -> Path:
    """A new report from ``predictions_dir/predictions-*.jsonl`` with the current label rules
    (no generation); returns the written ``results.md``."""
    files = sorted(Path(predictions_dir).glob("predictions-*.jsonl"))
    if not files:
        raise InputRejected(f"{predictions_dir}: no predictions-*.jsonl to rescore")
    order = {"base": 0, "adapter": 1, "adapter+patient": 2}
    runs = sorted((rescore(f) for f in files), key=lambda r: order.get(r.name, 2))
    return write_report(out_dir, runs, meta={"rescored_from": str(predictions_dir)})
