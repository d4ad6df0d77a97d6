"""Ship a trained domain adapter: copy it to ``adapters/<name>`` with a card built from the
run's own files (prepare report, training summary, IMHI results), so every number on the card
is one that was measured.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from engine.domain_train import ADAPTER_DIR, SUMMARY_FILE
from engine.errors import InputRejected

CARD = "README.md"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputRejected(f"{path} is missing")
    return json.loads(path.read_text(encoding="utf-8"))


def card_text(
    *,
    name: str,
    base_model: str,
    prepare_report: dict[str, Any],
    summary: dict[str, Any],
    results_md: str,
    command: str,
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
    seconds = float(summary.get("seconds") or 0)
    hp = ", ".join(f"{k}={v}" for k, v in recipe.items())
    table = results_md.split("\n", 2)[-1].strip() if results_md.startswith("#") else results_md
    return f"""# {name}

Domain LoRA adapter for **{base_model}** (PhyAssist's embedded model), trained on the IMHI
instruction data (MentalLLaMA, MIT) and CounselChat (MIT) prepared by `phyassist data prepare`.

## Data
| source | rows in | rows out | dropped per rule |
|---|---|---|---|
{chr(10).join(rows)}

Splits: {", ".join(f"{k} {v}" for k, v in prepare_report.get("splits", {}).items())}.
Training rows per task: {per_task}.

## Training
{summary.get("steps")} optimizer steps, {summary.get("tokens")} tokens, {seconds:.0f} s;
final training loss {summary.get("train_loss")}, validation loss {summary.get("eval_loss")}.
Hyperparameters: {hp}.

## Evaluation (IMHI test sets)
{table}

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
    command: str = "scripts/train_domain_adapter.sh ../shared/data build/domain",
) -> Path:
    """Copy ``run_dir/adapter`` to ``dest`` and write its card; returns the card path."""
    from engine.dataprep.pipeline import REPORT_FILE

    run_dir, eval_dir, dest = Path(run_dir), Path(eval_dir), Path(dest)
    adapter = run_dir / ADAPTER_DIR
    missing = [f for f in ADAPTER_FILES if not (adapter / f).is_file()]
    if missing:
        raise InputRejected(f"{adapter}: not a trained adapter (missing {', '.join(missing)})")
    results = eval_dir / "results.md"
    if not results.is_file():
        raise InputRejected(f"{results} is missing: run `phyassist eval imhi` first")
    text = card_text(
        name=dest.name,
        base_model=base_model,
        prepare_report=_read_json(Path(data_dir) / REPORT_FILE),
        summary=_read_json(run_dir / SUMMARY_FILE),
        results_md=results.read_text(encoding="utf-8"),
        command=command,
    )
    dest.mkdir(parents=True, exist_ok=True)
    for f in ADAPTER_FILES:
        shutil.copy2(adapter / f, dest / f)
    shutil.copy2(eval_dir / "results.json", dest / "imhi_results.json")
    (dest / CARD).write_text(text, encoding="utf-8")
    return dest / CARD
