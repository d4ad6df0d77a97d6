"""Benchmark Analysis drafts: structure, language, risk item, advice overlap, speed. One JSON.

A fixed set of statements (English: CounselChat questions from its ``val`` split, the
therapist answer with most upvotes as the advice reference, plus the passive-ideation
statement of issue 15; Chinese: the seed case and data/fixtures/drafts_zh.json), drafted by the
base model and by the shipped domain adapter, each with the engine's layout and language
constraints (``engine``) and without them (``free``: the model writes the layout, the tolerant
parser reads it). Per model x mode x language:

* ``structured``: share of drafts with a symptom type (<= 6 words; <= 12 characters in
  Chinese), >= 2 reasons and >= 2 advice items of the model's, each ending as a sentence,
  nothing unplaced;
* ``language_match``: share whose symptom type and every model item are in the statement's
  language (``detect_language``);
* ``risk_item``: share of flagged statements (``engine.trust.risk.assess``) whose draft carries
  the engine's safety item;
* ``reasons`` / ``advice``: model items per section (mean), ``chrf``: chrF (character 6-grams,
  beta 2, as sacrebleu's default) of the advice against the therapist's answer (English only);
* ``ttft_s``, ``total_s``: means; ``decode_tok_s``: median over drafts.

Modes: ``engine`` (the engine's layout with its token constraints), ``layout`` (the same
layout, every blank generated with no token constraint at all: what the constraints cost is
engine vs layout) and ``free`` (the model writes the layout). The modes run interleaved,
statement by statement (their order alternating), so a load change on a shared box hits every
mode alike; speed is compared per statement (``paired``: median over statements of the ratio
of decode tok/s), which cancels load drift between statements.

``constraint_cost`` per model = 1 - median paired ratio decode tok/s (engine / layout): the
token constraints' own cost. ``engine_vs_free_cost`` = 1 - median paired ratio (engine /
free): constraints plus drafting item by item (short runs).

    python bench/drafts.py [--limit N] [--max-new-tokens 256] [--models base,adapter]
                           [--modes engine,layout,free] [--threads 1] [--samples 0]
                           [--adapter DIR]

``--limit N`` keeps the first N statements per language (flagged and unflagged alternate, so a
reduced run still has flagged ones). ``--samples K`` prints the first K drafts of each
combination to stderr.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED = ROOT / ".." / "shared" / "data"
COUNSEL_CHAT = SHARED / "counsel_chat" / "counsel_chat.csv"
SEED = SHARED / "cases" / "seed_case_zh.json"
ZH_FIXTURES = ROOT / "data" / "fixtures" / "drafts_zh.json"
ADAPTER = ROOT / "adapters" / "smollm2-135m-drafts"
PASSIVE = (
    "Sometimes I think it would be easier if I just didn't wake up in the morning. "
    "I wouldn't do anything, but the thought is there."
)
N_ENGLISH = 40


# The statements -------------------------------------------------------------------------------


def _alternate(flagged: list[dict], other: list[dict]) -> list[dict]:
    out: list[dict] = []
    while flagged or other:
        if flagged:
            out.append(flagged.pop(0))
        if other:
            out.append(other.pop(0))
        if other:
            out.append(other.pop(0))
    return out


def statements() -> dict[str, list[dict]]:
    from engine.trust.risk import assess

    by_id: dict[str, list[dict]] = {}
    with COUNSEL_CHAT.open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["split"] == "val" and row["questionText"].strip():
                by_id.setdefault(row["questionID"], []).append(row)
    english = []
    for qid in sorted(by_id, key=int):
        rows = by_id[qid]
        best = max(rows, key=lambda r: int(r["upvotes"] or 0))
        text = " ".join(rows[0]["questionText"].split())
        english.append({"id": f"cc{qid}", "text": text, "reference": best["answerText"]})
    flagged = [s for s in english if assess(s["text"])]
    other = [s for s in english if not assess(s["text"])]
    english = [{"id": "passive", "text": PASSIVE, "reference": None}]
    english += _alternate(flagged, other)[:N_ENGLISH]
    seed = json.loads(SEED.read_text(encoding="utf-8"))
    chinese = [{"id": "seed", "text": seed["counseling_question"]["statement"], "reference": None}]
    fixtures = json.loads(ZH_FIXTURES.read_text(encoding="utf-8"))["statements"]
    zh_flagged = [dict(s, reference=None) for s in fixtures if assess(s["text"])]
    zh_other = [dict(s, reference=None) for s in fixtures if not assess(s["text"])]
    chinese += _alternate(zh_flagged, zh_other)
    return {"en": english, "zh": chinese}


# Scores ---------------------------------------------------------------------------------------


def _ngrams(text: str, n: int) -> Counter:
    text = "".join(text.split())
    return Counter(text[i : i + n] for i in range(len(text) - n + 1))


def chrf(hypothesis: str, reference: str, order: int = 6, beta: float = 2.0) -> float:
    """Sentence chrF (0-100) as sacrebleu computes it by default (no word n-grams)."""
    precisions, recalls = [], []
    for n in range(1, order + 1):
        hyp, ref = _ngrams(hypothesis, n), _ngrams(reference, n)
        if not hyp or not ref:
            continue
        match = sum((hyp & ref).values())
        precisions.append(match / sum(hyp.values()))
        recalls.append(match / sum(ref.values()))
    if not precisions:
        return 0.0
    p, r = statistics.fmean(precisions), statistics.fmean(recalls)
    if p + r == 0:
        return 0.0
    return 100 * (1 + beta**2) * p * r / (beta**2 * p + r)


def judge(draft, lang: str, statement: str) -> dict:
    from engine.inference.prompts import detect_language
    from engine.trust.risk import assess

    ends = "。！？" if lang == "zh" else ".!?"
    label = draft.symptom_type.text.strip()
    reasons = [i for i in draft.reasons if not i.inserted_by and i.text.strip()]
    advice = [i for i in draft.advice if not i.inserted_by and i.text.strip()]
    items = reasons + advice
    short = (len(label) <= 12) if lang == "zh" else (len(label.split()) <= 6)
    sentences = all(i.text.strip().rstrip('”"’」)）')[-1:] in ends for i in items)
    structured = (
        bool(label)
        and short
        and len(reasons) >= 2
        and len(advice) >= 2
        and sentences
        and not draft.unplaced
    )
    texts = [label, *(i.text for i in items)] if label else [i.text for i in items]
    language = bool(texts) and all(detect_language(t) == lang for t in texts)
    flagged = bool(assess(statement))
    return {
        "structured": structured,
        "language_match": language,
        "flagged": flagged,
        "risk_item": any(i.inserted_by.startswith("risk:") for i in draft.advice),
        "reasons": len(reasons),
        "advice": len(advice),
        "advice_text": " ".join(i.text for i in advice),
    }


# Runs -----------------------------------------------------------------------------------------


def make_assistant(model: str, root: Path, max_new_tokens: int, adapter: Path = ADAPTER):
    from platformdirs import user_cache_path

    from engine.inference.assistant import Assistant
    from engine.settings import GenerationSettings, ModelSettings, Settings, StoreSettings

    cache = os.environ.get("PHYASSIST_TEST_MODEL_CACHE")
    settings = Settings(
        data_dir=root / "data",
        config_dir=root / "config",
        cache_dir=Path(cache) if cache else user_cache_path("phyassist"),
        model=ModelSettings(domain_adapter=str(adapter) if model == "adapter" else None),
        generation=GenerationSettings(max_new_tokens=max_new_tokens, do_sample=False),
        store=StoreSettings(scrypt_log2_n=10),
    )
    assistant = Assistant(settings)
    assistant.load()
    label = assistant.use_patient(None)
    if model == "adapter" and "domain adapter" not in label:
        raise SystemExit(f"the shipped adapter did not load: {assistant.last_adapter_error}")
    return assistant


def _without_constraints(segments):  # type: ignore[no-untyped-def]
    """``Assistant._segments`` whose runs get no token constraint (the ``layout`` mode)."""

    def make(patient, cancel, start):  # type: ignore[no-untyped-def]
        run = segments(patient, cancel, start)
        return lambda ids, max_new, constraint, stop: run(ids, max_new, None, stop)

    return make


def draft_once(assistant, statement: str, mode: str) -> tuple[object, str, object]:
    from engine.records import Patient

    gen = assistant.settings.generation
    gen.draft_layout = "free" if mode == "free" else "engine"
    gen.language_constraint = mode == "engine"
    assistant.prefix_cache.clear()  # every draft reads its prompt: same work in all modes
    original = assistant._segments
    if mode == "layout":
        assistant._segments = _without_constraints(original)
    try:
        stream = assistant.stream_analysis(
            Patient(name="Bench"), statement, cancel=threading.Event()
        )
        text = "".join(stream)
    finally:
        assistant._segments = original
    return stream.draft_of(text), text, stream.stats


def paired_cost(rows: dict[str, list[dict]], mode: str, baseline: str) -> dict | None:
    """1 - median over statements of decode tok/s (mode) / decode tok/s (baseline), by the
    wall clock and by the generating thread's CPU time (``cpu``: what a shared box's load
    does not move; with ``--threads 1`` on a CPU)."""
    out: dict = {}
    for name, key in (("cost", "decode_tok_s"), ("cpu_cost", "decode_cpu_tok_s")):
        pairs = [
            a[key] / b[key]
            for a, b in zip(rows.get(mode, []), rows.get(baseline, []), strict=False)
            if a[key] > 0 and b[key] > 0
        ]
        if pairs:
            out[name] = round(1 - statistics.median(pairs), 3)
            out["pairs"] = len(pairs)
    return out or None


def summarize(rows: list[dict]) -> dict:
    if not rows:
        return {}
    flagged = [r for r in rows if r["flagged"]]
    chrfs = [r["chrf"] for r in rows if r["chrf"] is not None]
    rates = [r["decode_tok_s"] for r in rows if r["decode_tok_s"] > 0]
    cpu = [r["decode_cpu_tok_s"] for r in rows if r["decode_cpu_tok_s"] > 0]
    return {
        "n": len(rows),
        "structured": round(statistics.fmean(r["structured"] for r in rows), 3),
        "language_match": round(statistics.fmean(r["language_match"] for r in rows), 3),
        "flagged": len(flagged),
        "risk_item": (
            round(statistics.fmean(r["risk_item"] for r in flagged), 3) if flagged else None
        ),
        "reasons": round(statistics.fmean(r["reasons"] for r in rows), 2),
        "advice": round(statistics.fmean(r["advice"] for r in rows), 2),
        "chrf": round(statistics.fmean(chrfs), 2) if chrfs else None,
        "ttft_s": round(statistics.fmean(r["ttft_s"] for r in rows), 3),
        "total_s": round(statistics.fmean(r["total_s"] for r in rows), 3),
        "decode_tok_s": round(statistics.median(rates), 2) if rates else None,
        "decode_cpu_tok_s": round(statistics.median(cpu), 2) if cpu else None,
        "tokens": round(statistics.fmean(r["tokens"] for r in rows), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=0, help="statements per language (0: all)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="free mode's budget")
    parser.add_argument("--models", default="base,adapter")
    parser.add_argument("--modes", default="engine,layout,free")
    parser.add_argument("--adapter", type=Path, default=ADAPTER, help="the adapter to bench")
    parser.add_argument("--langs", default="en,zh")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--samples", type=int, default=0)
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    sets = statements()
    langs = args.langs.split(",")
    chosen = {lang: sets[lang][: args.limit] if args.limit else sets[lang] for lang in langs}
    result: dict = {
        "statements": {
            lang: {
                "n": len(items),
                "flagged": sum(bool(_flags(s["text"])) for s in items),
                "ids": [s["id"] for s in items],
            }
            for lang, items in chosen.items()
        },
        "full_set": {lang: len(items) for lang, items in sets.items()},
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "runs": {},
    }
    started = time.perf_counter()
    modes = args.modes.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            assistant = make_assistant(model, Path(tmp), args.max_new_tokens, args.adapter)
            draft_once(assistant, "Warm-up statement about stress at work.", "engine")
            by_mode: dict[str, list[dict]] = {}
            for lang, items in chosen.items():
                rows: dict[str, list[dict]] = {m: [] for m in modes}
                for n, item in enumerate(items):
                    # interleaved, order alternating: load drift hits every mode alike
                    for mode in modes if n % 2 == 0 else modes[::-1]:
                        draft, text, stats = draft_once(assistant, item["text"], mode)
                        row = judge(draft, lang, item["text"])
                        ref = item.get("reference")
                        row["chrf"] = chrf(row.pop("advice_text"), ref) if ref else None
                        row.update(
                            ttft_s=stats.ttft_s,
                            total_s=stats.total_s,
                            decode_tok_s=stats.tokens_per_s,
                            decode_cpu_tok_s=stats.cpu_tokens_per_s,
                            tokens=stats.tokens,
                        )
                        rows[mode].append(row)
                        if n < args.samples:
                            print(f"--- {model}/{mode}/{item['id']}\n{text}\n", file=sys.stderr)
                for mode in modes:
                    key = f"{model}/{mode}/{lang}"
                    result["runs"][key] = summarize(rows[mode])
                    by_mode.setdefault(mode, []).extend(rows[mode])
                    # each figure as soon as it exists: a run cut short still reports it
                    print(json.dumps({key: result["runs"][key]}), file=sys.stderr, flush=True)
            for name, (mode, baseline) in {
                "constraint_cost": ("engine", "layout"),
                "engine_vs_free_cost": ("engine", "free"),
            }.items():
                cost = paired_cost(by_mode, mode, baseline)
                if cost is not None:
                    result.setdefault(name, {})[model] = cost
    result["wall_s"] = round(time.perf_counter() - started, 1)
    result["goals"] = {
        "structured": 1.0,
        "language_match": 0.95,
        "risk_item": 1.0,
        "constraint_cost_max": 0.10,
    }
    print(json.dumps(result, indent=1, ensure_ascii=False))


def _flags(text: str):
    from engine.trust.risk import assess

    return assess(text)


if __name__ == "__main__":
    main()
