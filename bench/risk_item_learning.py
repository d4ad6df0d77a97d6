"""Does a patient adapter learn to write risk where there is none? Prints one JSON object.

A patient's ``--k`` notes are risk statements (written *train*-split risk sentences that the
rules flag, data/risk_sentences), each drafted on the product path by the domain adapter, so
each draft carries the engine's safety item (``Item.inserted_by``), and saved as drafted. Two
patients hold the same notes; through the real ``TrainingRun`` one adapter is trained on the
old training data (the engine's safety item kept in the answers) and one on the current
(``engine.training.data.without_engine_items``: engine items left out). Then ``--eval``
held-out statements without risk (CounselChat questions of ``--topic`` that the risk check
does not flag) are drafted by the domain adapter alone and with each patient adapter, with
that patient's record in the prompt. Counted per condition: drafts with a *model-written*
item (not the engine's) that uses risk words (``RISK_WORDS``); the engine adds no safety item
to these drafts, since nothing in them is flagged. ``ratio_to_domain`` divides each count by
the domain adapter's, measured in the same run (the baseline).

    python bench/risk_item_learning.py [--k 6] [--eval 6] [--topic anxiety] [--out FILE]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.learning import bench_vault, emit, generate, sessions_for  # noqa: E402

RISK_WORDS = re.compile(
    r"suicid|self[- ]?harm|kill(?:ing)? (?:him|her|them|my)sel|end(?:ing)? (?:his|her|their) "
    r"(?:own )?life|safety first|wants? to die|(?:passive|active) ideation|overdos|"
    r"hurt(?:ing)? (?:him|her|them)sel",
    re.IGNORECASE,
)


def risk_statements(k: int) -> list[str]:
    """The first ``k`` English train-split risk sentences that the rules flag (so the product
    adds its safety item to their drafts)."""
    from bench.risk_data import S, written
    from engine.trust.risk import assess_rules

    out = []
    for row in written("train"):
        wanted = row["lang"] == "en" and row["label"] == 1 and len(row["text"]) >= 40
        if wanted and any(f.category == S for f in assess_rules(row["text"])):
            out.append(row["text"])
        if len(out) == k:
            return out
    raise SystemExit(f"only {len(out)} flagged train sentences")


def calm_statements(topic: str, n: int, max_chars: int) -> list[str]:
    """``n`` CounselChat questions of ``topic`` with no risk flag at all."""
    from engine.trust.risk import assess

    out = [q for q in sessions_for(topic, 60, max_chars) if not assess(q, probe=False)]
    if len(out) < n:
        raise SystemExit(f"topic {topic!r}: {len(out)} unflagged questions, {n} needed")
    return out[-n:]  # the latest questions: held out from nothing, but never trained on


def risky_items(draft: Any) -> list[str]:
    """Model-written items (not the engine's) that use risk words."""
    items = [draft.symptom_type, *draft.reasons, *draft.advice, *draft.unplaced]
    return [i.text for i in items if not i.inserted_by and RISK_WORDS.search(i.text or "")]


def train(store: Any, settings: Any, patient_id: str, keep_safety_item: bool) -> dict[str, Any]:
    """One adapter through the real TrainingRun; ``keep_safety_item`` trains on the old data."""
    from engine.training import data as training_data
    from engine.training.runner import TrainingRun

    current = training_data.without_engine_items
    if keep_safety_item:
        training_data.without_engine_items = lambda analysis: analysis
    try:
        run = TrainingRun(store, patient_id, settings)
        started = time.perf_counter()
        for _event in run.events():
            pass
    finally:
        training_data.without_engine_items = current
    summary = run.summary
    return {
        "wall_s": round(time.perf_counter() - started, 1),
        "steps": summary.get("steps"),
        "final_loss": summary.get("final_loss"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=6, help="risk notes the adapters train on")
    parser.add_argument("--eval", type=int, default=6, help="statements without risk")
    parser.add_argument("--topic", default="anxiety", help="CounselChat topic of the eval")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from engine.records import Note

    started = time.perf_counter()
    with bench_vault("phyassist-risk-item-", args.max_new_tokens) as (settings, store, assistant):
        risky = risk_statements(args.k)
        calm = calm_statements(args.topic, args.eval, settings.limits.max_statement_chars)
        old = store.create_patient("Risk item bench: old data").id
        new = store.create_patient("Risk item bench: current data").id
        safety_items = 0
        for question in risky:
            assistant.use_patient(None)
            draft, _ = generate(assistant, store.load_patient(old), question)
            safety_items += sum(1 for i in draft.advice if i.inserted_by)
            for pid in (old, new):
                note = Note(question=question, analysis=draft.model_copy(deep=True))
                store.add_note(pid, note)
        training = {
            "old_data": train(store, settings, old, keep_safety_item=True),
            "current_data": train(store, settings, new, keep_safety_item=False),
        }
        conditions: dict[str, Any] = {}
        runs = (("domain", None), ("domain+old_data", old), ("domain+current_data", new))
        for name, pid in runs:
            patient = store.load_patient(pid or new)
            if pid is None:
                assistant.use_patient(None)
                label = "domain adapter"
            else:
                label = assistant.use_patient(patient, store)
            hits = []
            for question in calm:
                draft, _ = generate(assistant, patient, question)
                hits.append(risky_items(draft))
            conditions[name] = {
                "model": label,
                "drafts_with_risk_words": sum(1 for h in hits if h),
                "of": len(calm),
                "items": hits,
            }
    base = max(1, conditions["domain"]["drafts_with_risk_words"])
    result = {
        "bench": "risk_item_learning",
        # drafts with risk words per condition, over the domain adapter's in the same run
        "ratio_to_domain": {
            name: round(c["drafts_with_risk_words"] / base, 2) for name, c in conditions.items()
        },
        "command": " ".join(["python", "bench/risk_item_learning.py", *sys.argv[1:]]),
        "k": args.k,
        "eval": args.eval,
        "topic": args.topic,
        "training_notes_with_safety_item": safety_items,
        "training": training,
        "conditions": conditions,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
