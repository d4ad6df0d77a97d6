"""Measure the risk rules (engine.trust.risk.assess): precision / recall / F1, printed as JSON.

Datasets:

* ``fixtures``: data/fixtures/risk_cases.jsonl, hand-labelled English and Chinese cases per
  category (positives and hard negatives), written for this project. Tuning splits: ``dev``,
  ``dev2`` (session 1) and ``dev3`` (session 2); the rules were tuned on their errors (and on
  the IMHI *val* posts). Held-out splits: ``heldout`` (40 cases, written after session 1's
  tuning) and ``heldout2`` (100 cases, written before session 2 changed any rule); neither was
  ever used to change a rule, and ``--errors`` lists tuning-split errors only, so the
  held-out numbers are the honest ones. Slices: per split, ``tuning``, ``heldout_all``,
  ``heldout_en``, ``heldout_zh``, ``en``, ``zh``, ``all``.
* ``imhi_irf_pbu``: IMHI Irf test posts (../shared/data/imhi/test/Irf.csv, one row per post),
  gold = "shows risk of perceived burdensomeness" (a suicide risk factor in the
  interpersonal theory of suicide), predicted = any suicide/self-harm flag. A proxy: PBu is
  neither necessary nor sufficient for a suicide flag, so read recall as coverage of a
  related construct, not as the rules' true recall.
* ``imhi_irf_any``: same posts, gold = PBu or thwarted belongingness.
* ``imhi_dr``: IMHI DR test posts, gold = depression, predicted = suicide/self-harm flag
  (a weak proxy: most depressed posters are not at acute risk).

IMHI has no violence or abuse labels; those categories are measured on the fixtures only.
A naive keyword matcher (no negation, no idiom exclusions) is measured in the same run as
the baseline; ``ratio_f1`` = rules F1 / baseline F1.

    python -m bench.risk [--shared ../shared/data] [--errors]
    python -m bench.risk --model embedded:smollm2-135m-instruct [--model-splits heldout2]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

from bench import REPO
from engine.trust.risk import (
    CATEGORIES,
    assess_rules,
)
from engine.trust.risk_model import assess_with_model, model_verdict, yes_no_scorer


def model_verdict_of(answer: str) -> bool | None:
    return model_verdict("", "abuse", lambda _prompt: answer)


FIXTURES = REPO / "data" / "fixtures" / "risk_cases.jsonl"
DEFAULT_SHARED = REPO.parent / "shared" / "data"
S = "suicide_self_harm"

_NAIVE = {
    "suicide_self_harm": re.compile(
        r"suicid|kill (?:my|him|her)self|die\b|dead\b|self[- ]?harm|cut(?:ting)? myself|overdose|"
        r"自杀|想死|不想活|自残|轻生",
        re.I,
    ),
    "violence": re.compile(r"\bkill|murder|shoot|stab|hurt (?:him|her|them)|杀|砍|打死|弄死", re.I),
    "abuse": re.compile(r"abus|rape|molest|hits me|beats|家暴|虐待|性侵|打我|强奸", re.I),
}


def naive(text: str) -> set[str]:
    return {c for c, p in _NAIVE.items() if p.search(text)}


def rules(text: str) -> set[str]:
    """The rules alone (the sentence classifier behind them is bench/risk_classifier.py's)."""
    return {f.category for f in assess_rules(text)}


def prf(gold: list[bool], pred: list[bool]) -> dict[str, float | int]:
    tp = sum(g and p for g, p in zip(gold, pred, strict=True))
    fp = sum(p and not g for g, p in zip(gold, pred, strict=True))
    fn = sum(g and not p for g, p in zip(gold, pred, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "n": len(gold),
        "positives": tp + fn,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
    }


def with_ratio(ours: dict, base: dict) -> dict:
    ratio = ours["f1"] / base["f1"] if base["f1"] else None
    return {"rules": ours, "baseline": base, "ratio_f1": None if ratio is None else round(ratio, 3)}


def load_fixtures(path: Path = FIXTURES) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


TUNING = ("dev", "dev2", "dev3", "dev4")
HELDOUT = ("heldout", "heldout2", "heldout3")
SLICES = ("all", "en", "zh", *TUNING, "tuning", *HELDOUT, "heldout_all", "heldout_en", "heldout_zh")


def _in_slice(case: dict, name: str) -> bool:
    if name == "all":
        return True
    if name == "tuning":
        return case["split"] in TUNING
    if name == "heldout_all":
        return case["split"] in HELDOUT
    if name.startswith("heldout_"):
        return case["split"] in HELDOUT and case["lang"] == name.split("_")[1]
    return name in (case["lang"], case["split"])


def fixture_metrics(
    cases: list[dict], predict: Callable[[str], set[str]]
) -> dict[str, dict[str, dict]]:
    """Per slice (all, en, zh, dev, dev2, heldout) and category, plus "any"."""
    preds = [predict(c["text"]) for c in cases]
    out: dict[str, dict[str, dict]] = {}
    for lang in SLICES:
        idx = [i for i, c in enumerate(cases) if _in_slice(c, lang)]
        if not idx:
            continue
        out[lang] = {
            cat: prf([cat in cases[i]["labels"] for i in idx], [cat in preds[i] for i in idx])
            for cat in CATEGORIES
        }
        out[lang]["any"] = prf(
            [bool(cases[i]["labels"]) for i in idx], [bool(preds[i]) for i in idx]
        )
    return out


def fixture_errors(cases: list[dict]) -> list[dict]:
    """Cases the rules get wrong, from the tuning splits only: looking at held-out errors
    would turn them into tuning data."""
    errs = []
    for c in cases:
        if c["split"] not in TUNING:
            continue
        got = rules(c["text"])
        if got != set(c["labels"]):
            errs.append(
                {
                    "id": c["id"],
                    "split": c["split"],
                    "gold": sorted(c["labels"]),
                    "pred": sorted(got),
                }
            )
    return errs


_POST = re.compile(r'Consider this post: "(.*)" Question: (.*)$', re.S)


def imhi_posts(path: Path) -> dict[str, dict[str, bool]]:
    """post text -> {question: gold yes/no} (Irf asks two questions per post)."""
    posts: dict[str, dict[str, bool]] = {}
    with path.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            m = _POST.match(row["query"])
            if not m:
                continue
            posts.setdefault(m.group(1), {})[m.group(2)] = row["gpt-3.5-turbo"].startswith("Yes")
    return posts


def imhi_metrics(shared: Path) -> dict[str, dict]:
    out: dict[str, dict] = {}
    irf = shared / "imhi" / "test" / "Irf.csv"
    if irf.is_file():
        posts = imhi_posts(irf)
        texts = list(posts)
        ours = [S in rules(t) for t in texts]
        base = [S in naive(t) for t in texts]
        pbu = [any(v for q, v in posts[t].items() if "burdensomeness" in q) for t in texts]
        anyrisk = [any(posts[t].values()) for t in texts]
        out["imhi_irf_pbu"] = with_ratio(prf(pbu, ours), prf(pbu, base))
        out["imhi_irf_any"] = with_ratio(prf(anyrisk, ours), prf(anyrisk, base))
    dr = shared / "imhi" / "test" / "DR.csv"
    if dr.is_file():
        posts = imhi_posts(dr)
        texts = list(posts)
        gold = [any(posts[t].values()) for t in texts]
        out["imhi_dr"] = with_ratio(
            prf(gold, [S in rules(t) for t in texts]), prf(gold, [S in naive(t) for t in texts])
        )
    out["imhi_halves"] = imhi_halves(shared)
    return out


def half_of(text: str) -> str:
    """The fixed split of IMHI posts, decided before any result: "a" (may be looked at
    and tuned on) or "b" (held out; never used to change a rule), by a hash of the text."""
    return "a" if hashlib.sha256(text.encode("utf-8")).digest()[0] % 2 == 0 else "b"


def imhi_halves(shared: Path) -> dict[str, dict]:
    """Suicide/self-harm flag rate per IMHI slice and half.

    Positives (recall is the share flagged): Irf posts labeled perceived burdensomeness,
    DR posts labeled depression. No-disorder posts (the share flagged is the false-flag
    rate): dreaddit posts labeled "no stress", DR posts labeled "no depression", and all
    SAD posts (stress causes; no disorder label).
    """
    test = shared / "imhi" / "test"
    slices: dict[str, list[str]] = {}
    if (test / "Irf.csv").is_file():
        posts = imhi_posts(test / "Irf.csv")
        slices["irf_pbu_pos"] = [
            t for t, qs in posts.items() if any(v for q, v in qs.items() if "burden" in q)
        ]
    if (test / "DR.csv").is_file():
        posts = imhi_posts(test / "DR.csv")
        slices["dr_pos"] = [t for t, qs in posts.items() if any(qs.values())]
        slices["dr_no_depression"] = [t for t, qs in posts.items() if not any(qs.values())]
    if (test / "dreaddit.csv").is_file():
        posts = imhi_posts(test / "dreaddit.csv")
        slices["dreaddit_no_stress"] = [t for t, qs in posts.items() if not any(qs.values())]
    if (test / "SAD.csv").is_file():
        slices["sad_all"] = list(imhi_posts(test / "SAD.csv"))
    out: dict[str, dict] = {}
    for name, texts in slices.items():
        for half in ("a", "b"):
            part = [t for t in texts if half_of(t) == half]
            flagged = sum(S in rules(t) for t in part)
            out[f"{name}_{half}"] = {
                "posts": len(part),
                "flagged": flagged,
                "rate": round(flagged / len(part), 4) if part else None,
            }
    return out


def model_metrics(
    cases: list[dict], spec: str, limit: int, splits: tuple[str, ...], constrained: bool = True
) -> dict:
    """Rules, the model alone, and the two ways of combining them, on ``splits`` (slow: one
    short generation per case and category; every answer is cached, so the four columns
    come from the same answers).

    * ``rules+model``: the default policy of ``assess_with_model``: the model confirms or
      denies the rules' flags (a denial drops medium and low flags, never high ones);
    * ``rules+model_adds``: ``ask_unflagged=True``: the model may also add categories the
      rules missed;
    * ``model``: the model's own yes/no per category, no rules.
    """
    from engine.model.llm import load_model
    from engine.settings import load_settings

    cfg = load_settings()
    cfg.model.spec = spec
    loaded = load_model(cfg)
    tok, model = loaded.tokenizer, loaded.model
    answers: dict[str, str] = {}
    ask = yes_no_scorer(model, tok) if constrained else None

    def generate(prompt: str) -> str:
        if prompt in answers:
            return answers[prompt]
        if ask is not None:
            answers[prompt] = ask(prompt)
            return answers[prompt]
        import torch

        msgs = [{"role": "user", "content": prompt}]
        ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt")
        ids = ids.to(model.device)
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=3, do_sample=False)
        answers[prompt] = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        return answers[prompt]

    subset = [c for c in cases if c["split"] in splits] if splits else cases
    subset = subset[:limit] if limit else subset
    t0 = time.perf_counter()
    adds = fixture_metrics(
        subset, lambda t: {f.category for f in assess_with_model(t, generate, ask_unflagged=True)}
    )
    elapsed = time.perf_counter() - t0
    confirm = fixture_metrics(
        subset, lambda t: {f.category for f in assess_with_model(t, generate)}
    )
    alone = fixture_metrics(
        subset, lambda t: {c for c in CATEGORIES if model_verdict(t, c, generate) is True}
    )
    rules_only = fixture_metrics(subset, rules)
    return {
        "model_name": loaded.name,
        "splits": list(splits),
        "cases": len(subset),
        "answers": "yes/no scores (constrained)" if constrained else "free generation",
        "generations": len(answers),
        "unparseable": sum(model_verdict_of(a) is None for a in answers.values()),
        "seconds": round(elapsed, 2),
        "rules": rules_only["all"],
        "rules+model": confirm["all"],
        "rules+model_adds": adds["all"],
        "model_alone": alone["all"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    ap.add_argument("--fixtures", type=Path, default=FIXTURES)
    ap.add_argument("--model", default=None, help="also measure rules+model with this spec")
    ap.add_argument("--model-limit", type=int, default=0)
    ap.add_argument(
        "--model-splits",
        default=",".join(HELDOUT),
        help="fixture splits for the model check (comma-separated; empty = all)",
    )
    ap.add_argument(
        "--model-generate",
        action="store_true",
        help="let the model answer freely (default: compare its yes/no scores)",
    )
    ap.add_argument("--errors", action="store_true", help="list fixture cases the rules miss")
    args = ap.parse_args(argv)

    cases = load_fixtures(args.fixtures)
    t0 = time.perf_counter()
    ours = fixture_metrics(cases, rules)
    rules_s = time.perf_counter() - t0
    base = fixture_metrics(cases, naive)
    report: dict = {
        "fixtures": {
            "cases": len(cases),
            "rules": ours,
            "baseline": base,
            "ratio_f1_any": round(ours["all"]["any"]["f1"] / base["all"]["any"]["f1"], 3)
            if base["all"]["any"]["f1"]
            else None,
            "rules_ms_per_case": round(1000 * rules_s / len(cases), 3),
        }
    }
    if args.errors:
        report["fixtures"]["errors"] = fixture_errors(cases)
    if args.shared.is_dir():
        report.update(imhi_metrics(args.shared))
    else:
        report["imhi"] = f"skipped: {args.shared} not present"
    if args.model:
        splits = tuple(x for x in args.model_splits.split(",") if x)
        report["model_check"] = model_metrics(
            cases, args.model, args.model_limit, splits, constrained=not args.model_generate
        )
    print(json.dumps(report, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
