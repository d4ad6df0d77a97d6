"""Ship a trained domain adapter: copy it to ``adapters/<name>`` with a card built from the
run's own files (prepare report, training summary, IMHI results), so every number on the card
is one that was measured.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from engine.errors import InputRejected
from engine.settings import EMBEDDED_MODEL
from engine.training.domain_train import ADAPTER_DIR, SUMMARY_FILE

CARD = "README.md"
DEFAULT_COMMAND = "scripts/train_domain_adapter.sh ../shared/data build/domain"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputRejected(f"{path} is missing")
    return json.loads(path.read_text(encoding="utf-8"))


def _save_bf16(src: Path, dst: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(str(src))
    save_file(
        {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in state.items()},
        str(dst),
        metadata={"format": "pt"},
    )


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def card_text(
    *,
    name: str,
    base_model: str,
    prepare_report: dict[str, Any],
    summary: dict[str, Any],
    results_md: str,
    command: str,
    eval_settings: dict[str, Any] | None = None,
    notes: str = "",
) -> str:
    recipe = summary.get("recipe", {})
    sources = prepare_report.get("sources", {})
    rows = [
        f"| {src} | {r['rows_in']} | {r['rows_out']} | "
        + ", ".join(f"{k} {v}" for k, v in r["dropped"].items())
        + " |"
        for src, r in sources.items()
    ]
    per_task = ", ".join(
        f"{k} {v}" for k, v in prepare_report.get("train_rows_per_task", {}).items()
    )
    prep = prepare_report.get("settings", {})
    format_lines = []
    if prep.get("hold_out"):
        format_lines.append(
            "Held out of training entirely (instructions and drafts): "
            f"{', '.join(prep['hold_out'])} (loneliness has no IMHI training file either); "
            "the evaluation reports them apart."
        )
    if prep.get("drafts"):
        cases = ", ".join(f"{k} {v}" for k, v in prep.get("draft_cases", {}).items())
        format_lines.append(
            "Draft-format rows (`engine.dataprep.drafts`): the engine's own Analysis prompt and "
            "layout, IMHI reasoning as reasons, CounselChat answers as reasons/advice, Chinese "
            f"cases written for the project (each repeated {prep.get('zh_repeat')}x) and the "
            f"seed case; cases per source: {cases}."
        )
    data_format = ("\n" + "\n".join(format_lines) + "\n") if format_lines else ""
    seconds = float(summary.get("seconds") or 0)
    train_loss, eval_loss = _num(summary.get("train_loss")), _num(summary.get("eval_loss"))
    hp = ", ".join(f"{k}={v}" for k, v in recipe.items())
    table = results_md.split("\n", 2)[-1].strip() if results_md.startswith("#") else results_md
    how = ""
    if eval_settings and "max_new_tokens" in eval_settings:
        limit = eval_settings.get("limit")
        sample = f"a seeded random sample of {limit} rows per task" if limit else "all rows"
        how = (
            f"Test rows: {sample} (seed {eval_settings.get('seed')}, the same rows for base "
            f"and adapter); {eval_settings.get('decoding', 'greedy')} decoding, at most "
            f"{eval_settings.get('max_new_tokens')} new tokens, batch "
            f"{eval_settings.get('batch_size')}. n = rows whose gold answer has a label.\n\n"
        )
    return f"""# {name}

Domain LoRA adapter for **{base_model}** (PhyAssist's embedded model), trained on the IMHI
instruction data (MentalLLaMA, MIT) and CounselChat (MIT) prepared by `phyassist data prepare`.

## Data
| source | rows in | rows out | dropped per rule |
|---|---|---|---|
{chr(10).join(rows)}

Splits: {", ".join(f"{k} {v}" for k, v in prepare_report.get("splits", {}).items())}.
Training rows per task: {per_task}.
{data_format}
## Training
{summary.get("steps")} optimizer steps, {summary.get("tokens")} tokens, {seconds:.0f} s;
final training loss {train_loss}, validation loss {eval_loss}.
Hyperparameters: {hp}.

## Evaluation (IMHI test sets)
{how}{table}
{notes}

## Reproduce
```
{command}
```
"""


def ship(
    run_dir: Path,
    eval_dir: Path,
    data_dir: Path,
    dest: Path,
    *,
    base_model: str = "SmolLM2-135M-Instruct",
    command: str | None = None,
    base_spec: str = EMBEDDED_MODEL,
    bf16: bool = False,
    notes: str = "",
) -> Path:
    """Copy ``run_dir/adapter`` to ``dest`` and write its card; returns the card path.

    ``adapter_config.json`` gets ``base_spec`` as its base model (the training host's path
    means nothing elsewhere; the spec is what ``domain_adapter = "auto"`` matches on).
    ``bf16`` stores the LoRA weights as bfloat16: half the size in the repository.
    """
    from engine.dataprep.pipeline import REPORT_FILE

    run_dir, eval_dir, dest = Path(run_dir), Path(eval_dir), Path(dest)
    adapter = run_dir / ADAPTER_DIR
    missing = [f for f in ADAPTER_FILES if not (adapter / f).is_file()]
    if missing:
        raise InputRejected(f"{adapter}: not a trained adapter (missing {', '.join(missing)})")
    results = eval_dir / "results.md"
    if not results.is_file():
        raise InputRejected(f"{results} is missing: run `phyassist eval imhi` first")
    results_json = _read_json(eval_dir / "results.json")
    eval_settings = next(iter(results_json.get("runs", {}).values()), {}).get("settings")
    text = card_text(
        name=dest.name,
        base_model=base_model,
        prepare_report=_read_json(Path(data_dir) / REPORT_FILE),
        summary=_read_json(run_dir / SUMMARY_FILE),
        results_md=results.read_text(encoding="utf-8"),
        command=command or DEFAULT_COMMAND,
        eval_settings=eval_settings,
        notes=notes,
    )
    dest.mkdir(parents=True, exist_ok=True)
    config = _read_json(adapter / ADAPTER_FILES[0])
    config["base_model_name_or_path"] = base_spec
    (dest / ADAPTER_FILES[0]).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    if bf16:
        _save_bf16(adapter / ADAPTER_FILES[1], dest / ADAPTER_FILES[1])
    else:
        shutil.copy2(adapter / ADAPTER_FILES[1], dest / ADAPTER_FILES[1])
    shutil.copy2(eval_dir / "results.json", dest / "imhi_results.json")
    (dest / CARD).write_text(text, encoding="utf-8")
    return dest / CARD
