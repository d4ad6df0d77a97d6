"""Train and measure the sentence-level suicide / self-harm risk classifier.

Data, split before any fitting (data/risk_sentences/README.md):

* written sentences, one file per author (data/risk_sentences: train ``*_a``, ``*_b``, ``*_c``,
  ``*_f``, ``*_g``, ``en_h``, ``en_i``, ``zh_j``, ``*_l``; dev ``*_d``, ``zh_h``, ``zh_m``,
  ``zh_n``, ``*_q``; test ``*_e``, ``zh_i``, and the "fresh" test sets ``*_k`` and ``*_p``
  (social-media posts, reported as ``fresh4_posts_*``) and ``*_r`` (fifth round's posts,
  ``fresh5_posts_*``; its dev posts ``*_s`` are also reported as ``dev5_posts_*``), each
  written before any change of the round that added it and reported with ``--split test``);
* data/fixtures/risk_cases.jsonl: its *tuning* splits (dev..dev4, already used to tune the rules)
  are training data here; its held-out splits (heldout, heldout2, heldout3) are never trained on
  and are measured as a second test set;
* IMHI no-disorder posts (../shared/data/imhi), negatives for the false-flag rate: sentences of
  the *train* CSVs (dreaddit "no stress", DR "no depression", all SAD) are training negatives;
  the *val* CSVs' posts are the dev false-flag set; the *test* CSVs' posts (never trained on; any
  test post whose text also occurs in a train or val CSV is dropped) are the test false-flag set.

* hand-labelled IMHI posts and sentences (data/risk_sentences/*.labels): Irf *val* posts split
  train / dev by post id, and sentences of DR / dreaddit / SAD *train* posts (training only).

``train`` fits on train, picks the regularisation and the threshold on dev only (highest dev
recall with the classifier adding flags to at most ``--max-added`` of the dev no-disorder posts
pooled and ``--max-source-added`` of any one source's, at least one post), and writes ``--out``
(by default ``CANDIDATE``, beside the shipped weights rather than over them). The shipped
weights (engine/trust/risk_classifier.npz) are the ninth round's refit (``train
--zh-match-shipped`` on the whole train split; SECURITY.md, "Ninth round"); refits that were
better on dev but failed their test gates are in data/risk_sentences/README.md and
SECURITY.md. The data and its splits are bench/risk_data.py.

``measure --split dev|test`` prints JSON: recall and false-flag rate of the rules alone and
of rules + classifier (``engine.trust.risk.assess``), per source, plus the check's latency.
``--split test`` is the once-at-the-end figure.

    python -m bench.risk_classifier train
    python -m bench.risk_classifier measure --split dev
    python -m bench.risk_classifier measure --split test
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench import REPO
from bench.risk import DEFAULT_SHARED, HELDOUT, TUNING, imhi_posts
from bench.risk_data import (
    DEV_POSTS,
    EVERYDAY,
    FRESH_EVERYDAY,
    S,
    fixture_cases,
    imhi_labelled_sentences,
    imhi_no_disorder,
    imhi_positive_proxies,
    irf_dev_posts,
    irf_labelled,
    irf_sentences,
    written,
)

WEIGHTS = REPO / "engine" / "trust" / "risk_classifier.npz"
CANDIDATE = REPO / "bench" / "results" / "risk_classifier_candidate.npz"

# --- training -----------------------------------------------------------------------------


def _featurize(texts: list[str], zh_words: bool = False):
    """``(embedding, n-grams)`` of ``texts`` as the shipped classifier computes them; the
    fit's features are ``[embedding * dense_scale, n-grams]``."""
    import scipy.sparse as sp

    from engine.knowledge.embedding import shared_embedder
    from engine.trust.normalise import plain
    from engine.trust.risk_classifier import HASH_BITS, ngram_ids

    emb = shared_embedder().embed([plain(t) for t in texts])
    rows, cols, vals = [], [], []
    for i, t in enumerate(texts):
        ids = ngram_ids(t, zh_words)
        if not len(ids):
            continue
        rows.extend([i] * len(ids))
        cols.extend(ids.tolist())
        vals.extend([1.0 / np.sqrt(len(ids))] * len(ids))
    grams = sp.csr_matrix((vals, (rows, cols)), shape=(len(texts), 1 << HASH_BITS))
    return emb, grams


def training_set(
    shared: Path,
    imhi_limit: int,
    rule_positives: bool = False,
    irf_weight: float = 1.0,
    sentence_weight: float = 1.0,
    split_negatives: bool = False,
) -> tuple[list[str], list[int], list[float]]:
    """Texts, labels and a curated marker (1.0: written sentences and fixture cases;
    ``irf_weight``: sentences of the labelled IMHI Irf train posts; ``sentence_weight``: the
    hand-labelled IMHI train sentences; 0.0: IMHI no-disorder
    sentences, a background of everyday text that outnumbers the rest). With
    ``split_negatives`` a written negative post is split into its sentences, as the
    classifier reads them (a risk post stays whole: which sentence carries it is unknown)."""
    from engine.trust.risk_classifier import sentence_spans

    texts, labels, weights = [], [], []
    for row in written("train"):
        spans = sentence_spans(row["text"]) if split_negatives and not row["label"] else []
        if len(spans) > 1:  # a negative post: each of its sentences is a negative
            for a, b in spans:
                texts.append(row["text"][a:b])
                labels.append(0)
                weights.append(1.0)
            continue
        texts.append(row["text"])
        labels.append(row["label"])
        weights.append(1.0)
    for case in fixture_cases(TUNING):
        if S in case["labels"]:
            texts.append(case["text"])
            labels.append(1)
            weights.append(1.0)
        else:
            for a, b in sentence_spans(case["text"]):
                texts.append(case["text"][a:b])
                labels.append(0)
                weights.append(1.0)
    if irf_weight:
        found, marks = irf_sentences(irf_labelled(shared, "train"))
        texts.extend(found)
        labels.extend(marks)
        weights.extend([irf_weight] * len(found))
    labelled = imhi_labelled_sentences() if sentence_weight else []
    for text, label in labelled:
        texts.append(text)
        labels.append(label)
        weights.append(sentence_weight)
    rng = np.random.default_rng(18)
    imhi_sents = []
    for posts in imhi_no_disorder(shared, "train").values():
        for post in posts:
            imhi_sents.extend(post[a:b] for a, b in sentence_spans(post))
    # a background sentence labelled by hand keeps its hand label only
    imhi_sents = sorted(set(imhi_sents) - {text for text, _ in labelled})
    if imhi_limit and len(imhi_sents) > imhi_limit:
        imhi_sents = [imhi_sents[i] for i in rng.choice(len(imhi_sents), imhi_limit, replace=False)]
    texts.extend(imhi_sents)
    labels.extend([0] * len(imhi_sents))
    weights.extend([0.0] * len(imhi_sents))
    if rule_positives:
        found = rule_flagged_sentences(shared)
        texts.extend(found)
        labels.extend([1] * len(found))
        weights.extend([1.0] * len(found))
    return texts, labels, weights


def rule_flagged_sentences(shared: Path) -> list[str]:
    """Real social-media sentences with a high-severity suicide/self-harm rule flag, from the
    IMHI *train/val* posts that may carry risk (DR depression, dreaddit stress, Irf val):
    positives in the register of forum posts (the rules are precise on high flags), so the
    classifier learns the words around what the rules match."""
    from engine.trust.risk import assess_rules

    out: set[str] = set()
    for rel in ("train/DR/train.csv", "train/dreaddit/train.csv", "train/Irf/val.csv"):
        path = shared / "imhi" / rel
        if not path.is_file():
            continue
        for post, qs in imhi_posts(path).items():
            if "Irf" not in rel and not any(qs.values()):
                continue
            for f in assess_rules(post):
                if f.category == S and f.severity == "high" and len(f.evidence) <= 300:
                    out.add(f.evidence)
    return sorted(out)


def fit(
    x,
    labels,
    curated,
    c: float,
    dense_scale: float,
    pos_weight: float,
    neg_weight: float,
    background_weight: float = 1.0,
    zh_words: bool = False,
):
    """Logistic regression; curated positives weigh ``pos_weight``, curated (hard) negatives
    ``neg_weight`` (both times the curated marker), background IMHI sentences
    ``background_weight``."""
    from sklearn.linear_model import LogisticRegression

    from engine.trust.risk_classifier import HASH_BITS, SentenceClassifier

    y = np.asarray(labels)
    mark = np.asarray(curated, dtype=np.float64)
    w = np.where(mark > 0, np.where(y == 1, pos_weight, neg_weight) * mark, background_weight)
    model = LogisticRegression(C=c, max_iter=3000, solver="liblinear")
    model.fit(x, y, sample_weight=w)
    coef = model.coef_[0]
    from engine.knowledge.embedding import shared_embedder

    dim = shared_embedder().dim
    return SentenceClassifier(
        dense=(coef[:dim] * dense_scale).astype(np.float32),
        sparse=coef[dim : dim + (1 << HASH_BITS)].astype(np.float32),
        bias=float(model.intercept_[0]),
        threshold=0.5,
        version=f"C={c} dense_scale={dense_scale} pos_weight={pos_weight} "
        f"neg_weight={neg_weight} background_weight={background_weight} zh_words={zh_words}",
        zh_words=zh_words,
    )


def max_sentence_score(clf, text: str) -> float:
    """The classifier's highest score over the sentences ``assess`` gives it in ``text``
    (those no suicide / self-harm rule matched, negated or not)."""
    from engine.trust.risk import classifier_sentences

    spans = classifier_sentences(text)
    if not spans:
        return 0.0
    return float(clf.scores([text[a:b] for a, b in spans]).max())


def rules_flag(text: str) -> bool:
    from engine.trust.risk import assess_rules

    return any(f.category == S for f in assess_rules(text))


def dev_sets(shared: Path) -> tuple[list[dict], dict[str, list[str]]]:
    return written("dev"), imhi_no_disorder(shared, "dev")


def choose_thresholds(
    clf, shared: Path, max_added: float, max_written: float, max_source_added: float = 0.02
) -> tuple[dict[str, float], dict]:
    """Per language, the lowest threshold (highest dev recall) such that the classifier adds
    flags to at most ``max_added`` of the dev no-disorder posts pooled (the IMHI val posts of
    every source for English; the everyday and the self-critical Chinese posts ``zh_h``,
    ``zh_m`` for Chinese) and to at most
    ``max_source_added`` of any one source's, and rules + classifier flag at most
    ``max_written`` of the written hard negatives (minimal pairs of the positives, so some
    false alarms there are expected). Only flags the classifier adds count: the rules' own
    flags in those posts are mostly real mentions of suicide ("my mother tried to commit
    suicide"), and no threshold changes them. A limit allows at least one post: on the small
    Chinese sets (40 and 30 posts) a rate limit would otherwise mean none at all, so one
    borderline sentence ("我觉得自己在家里是最没用的那个") would decide the threshold alone."""
    rows, posts = dev_sets(shared)

    def pairs(texts):
        return [(rules_flag(t), max_sentence_score(clf, t)) for t in texts]

    irf_pos, irf_neg = (pairs(v) for v in irf_dev_posts(shared))
    everyday = {
        "en": {k: pairs(v) for k, v in posts.items()},
        "zh": {
            "zh_everyday": pairs([r["text"] for r in rows if r["author"] == "zh_h"]),
            "zh_self_critical": pairs([r["text"] for r in rows if r["author"] == "zh_m"]),
        },
    }

    def rate(ps, t):
        return sum(r or s >= t for r, s in ps) / len(ps) if ps else 0.0

    def added(ps, t):
        return sum((not r) and s >= t for r, s in ps) / len(ps) if ps else 0.0

    def over(ps, t, limit):
        n = sum((not r) and s >= t for r, s in ps)
        return n > max(int(limit * len(ps) + 1e-9), 1)

    thresholds: dict[str, float] = {}
    report: dict = {}
    for lang in ("en", "zh"):
        mine = [r for r in rows if r["lang"] == lang and r["author"] not in EVERYDAY]
        pos_s = pairs([r["text"] for r in mine if r["label"] == 1])
        neg_s = pairs([r["text"] for r in mine if r["label"] == 0])
        best: tuple[float, dict] = (1.0, {})
        for t in np.arange(0.99, 0.04, -0.01):
            add = {f"{k}_added": added(v, t) for k, v in everyday[lang].items()}
            pooled = added([p for v in everyday[lang].values() for p in v], t)
            if (
                over([p for v in everyday[lang].values() for p in v], t, max_added)
                or any(over(v, t, max_source_added) for v in everyday[lang].values())
                or rate(neg_s, t) > max_written
            ):
                break
            add["pooled_added"] = pooled
            tot = {f"{k}_total": rate(v, t) for k, v in everyday[lang].items()}
            irf = (
                {"irf_recall": rate(irf_pos, t), "irf_no_risk_flagged": rate(irf_neg, t)}
                if lang == "en" and irf_pos
                else {}
            )
            best = (
                round(float(t), 2),
                {"recall": rate(pos_s, t), "hard_neg": rate(neg_s, t), **irf, **add, **tot},
            )
        thresholds[lang] = best[0]
        report[lang] = {"threshold": best[0], **{k: round(v, 4) for k, v in best[1].items()}}
    return thresholds, report


def zh_threshold_matching_shipped(clf) -> tuple[float, dict]:
    """The highest Chinese threshold at which rules + ``clf`` find at least as many of the
    Chinese dev positives as rules + the shipped weights and flag no more of the Chinese dev
    negatives (everyday, self-critical and minimal-pair posts): no worse than what ships on
    either side, with fewer false flags where the scores allow. ``zh_n`` holds the positives
    no rule was written from (``zh_d``'s misses were, so rules catch them all)."""
    from engine.trust.risk_classifier import classifier, is_chinese

    rows = [r for r in written("dev") if r["lang"] == "zh"]
    shipped = classifier()

    def scored(model):
        return [
            (r["label"], rules_flag(r["text"]), max_sentence_score(model, r["text"])) for r in rows
        ]

    def counts(pairs, t):
        pos = sum(bool(lab and (rul or sc >= t)) for lab, rul, sc in pairs)
        neg = sum(bool((not lab) and (rul or sc >= t)) for lab, rul, sc in pairs)
        return pos, neg

    assert all(is_chinese(r["text"]) for r in rows)
    base_pos, base_neg = counts(scored(shipped), shipped.threshold_zh)
    mine = scored(clf)
    for t in np.arange(0.99, 0.04, -0.01):
        pos, neg = counts(mine, t)
        if pos >= base_pos and neg <= base_neg:
            report = {"shipped": [base_pos, base_neg], "candidate": [pos, neg], "n": len(rows)}
            return round(float(t), 2), report
    return shipped.threshold_zh, {"shipped": [base_pos, base_neg], "candidate": None}


def cmd_train(args) -> dict:
    from engine.trust.risk_classifier import save

    t0 = time.perf_counter()
    texts, labels, weights = training_set(
        args.shared,
        args.imhi_limit,
        args.rule_positives,
        args.irf_weight,
        args.sentence_weight,
        args.split_negatives,
    )
    report: dict = {
        "train_sentences": len(texts),
        "train_positive": int(sum(labels)),
        "written_train": len(written("train")),
        "written_dev": len(written("dev")),
        "written_test": len(written("test")),
        "grid": [],
    }
    best = None
    import scipy.sparse as sp

    emb, grams = _featurize(texts, args.zh_words)
    grid = itertools.product(
        args.dense_scale, args.c, args.pos_weight, args.neg_weight, args.background_weight
    )
    for ds, c, pw, nw, bw in grid:
        x = sp.hstack([sp.csr_matrix(emb * ds), grams]).tocsr()
        clf = fit(x, labels, weights, c, ds, pw, nw, bw, args.zh_words)
        t, dev = choose_thresholds(
            clf, args.shared, args.max_added, args.max_written, args.max_source_added
        )
        row = {"dense_scale": ds, "C": c, "pos_weight": pw, "neg_weight": nw, "bg": bw, **dev}
        report["grid"].append(row)
        print(json.dumps(row), flush=True)
        # the two languages alike; in English the written sentences and the labelled posts alike
        recall = sum(dev[lang].get("recall", 0.0) for lang in dev) + dev["en"].get("irf_recall", 0)
        if best is None or recall > best[0]:
            best = (recall, clf, t)
    assert best is not None, "no setting met the dev false-flag limit"
    _, clf, t = best
    from dataclasses import replace

    if args.zh_match_shipped:
        t["zh"], report["zh_match_shipped"] = zh_threshold_matching_shipped(clf)

    clf = replace(
        clf,
        threshold=t["en"],
        threshold_zh=t["zh"],
        version=clf.version + f" threshold en={t['en']} zh={t['zh']}",
    )
    save(clf, args.out)
    report["chosen"] = clf.version
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report


# --- measurement --------------------------------------------------------------------------


def load_candidate(weights):
    """A probe on ``weights``' encoder: the embedded model's, or round 8's MiniLM (bench only)."""
    from engine.trust.risk_probe import load_embedded

    if weights.encoder == "minilm":
        from bench.risk_probe_minilm import load_probe

        return load_probe(weights)
    return load_embedded(weights)


def _rate(flags: list[bool]) -> dict:
    n = len(flags)
    return {"n": n, "flagged": int(sum(flags)), "rate": round(sum(flags) / n, 4) if n else None}


def measure(
    split: str,
    shared: Path,
    *,
    with_latency: bool = True,
    probe: bool = True,
    probe_weights: Path | None = None,
    classifier_weights: Path | None = None,
) -> dict:
    """Recall and false flags of the rules, rules + sentence classifier and, with ``probe``,
    rules + classifier + the statement probe (engine/trust/risk_probe.py; the weights in
    ``probe_weights`` instead of the shipped ones where given; likewise the sentence
    classifier's ``classifier_weights``), in one run."""
    from engine.trust import risk_classifier, risk_probe
    from engine.trust.risk import assess, assess_rules

    if classifier_weights is not None:
        risk_classifier.override(risk_classifier.load(classifier_weights.read_bytes()))
    if probe_weights is not None:
        risk_probe.override(load_candidate(risk_probe.load_weights(probe_weights.read_bytes())))

    def with_rules(text: str) -> bool:
        return any(f.category == S for f in assess_rules(text))

    def combined(text: str) -> bool:
        return any(f.category == S for f in assess(text, probe=False))

    def with_probe(text: str) -> bool:
        return any(f.category == S for f in assess(text, probe=True))

    predictors: dict[str, Callable[[str], bool]] = {
        "rules": with_rules,
        "rules+classifier": combined,
    }
    if probe:
        predictors["rules+classifier+probe"] = with_probe
    rows = written(split)
    out: dict = {"split": split}
    for name, predict in predictors.items():
        res: dict = {}
        for lang in ("en", "zh", "all"):
            part = [r for r in rows if lang in ("all", r["lang"]) and r["author"] not in EVERYDAY]
            res[f"written_{lang}_recall"] = _rate([predict(r["text"]) for r in part if r["label"]])
            res[f"written_{lang}_hard_negatives_flagged"] = _rate(
                [predict(r["text"]) for r in part if not r["label"]]
            )
        res["written_zh_everyday_posts_flagged"] = _rate(
            [predict(r["text"]) for r in rows if r["author"] in ("zh_h", "zh_i")]
        )
        if split == "dev":
            res["written_zh_self_critical_posts_flagged"] = _rate(
                [predict(r["text"]) for r in rows if r["author"] == "zh_m"]
            )
        if split == "dev":
            for posts_name, authors in DEV_POSTS.items():
                for lang in ("en", "zh", "all"):
                    part = [
                        r for r in rows if r["author"] in authors and lang in ("all", r["lang"])
                    ]
                    res[f"{posts_name}_{lang}_recall"] = _rate(
                        [predict(r["text"]) for r in part if r["label"]]
                    )
                    res[f"{posts_name}_{lang}_hard_negatives_flagged"] = _rate(
                        [predict(r["text"]) for r in part if not r["label"]]
                    )
        if split == "dev" and shared.is_dir():
            irf_pos, irf_neg = irf_dev_posts(shared)
            res["irf_dev_posts_recall"] = _rate([predict(t) for t in irf_pos])
            res["irf_dev_no_risk_posts_flagged"] = _rate([predict(t) for t in irf_neg])
        if split == "test":
            fresh = written("fresh")
            for lang in ("en", "zh", "all"):
                part = [r for r in fresh if lang in ("all", r["lang"])]
                res[f"fresh_{lang}_recall"] = _rate(
                    [predict(r["text"]) for r in part if r["label"]]
                )
                res[f"fresh_{lang}_hard_negatives_flagged"] = _rate(
                    [predict(r["text"]) for r in part if not r["label"]]
                )
            for fresh_split in (
                "fresh4",
                "fresh5",
                "fresh6",
                "fresh7",
                "fresh8",
                "fresh10",
                "fresh11",
            ):
                posts = written(fresh_split)
                for lang in ("en", "zh", "all"):
                    everyday = [
                        r
                        for r in posts
                        if r["author"] in FRESH_EVERYDAY and lang in ("all", r["lang"])
                    ]
                    if everyday:
                        res[f"{fresh_split}_everyday_posts_{lang}_flagged"] = _rate(
                            [predict(r["text"]) for r in everyday]
                        )
                    part = [
                        r
                        for r in posts
                        if lang in ("all", r["lang"]) and r["author"] not in FRESH_EVERYDAY
                    ]
                    res[f"{fresh_split}_posts_{lang}_recall"] = _rate(
                        [predict(r["text"]) for r in part if r["label"]]
                    )
                    res[f"{fresh_split}_posts_{lang}_hard_negatives_flagged"] = _rate(
                        [predict(r["text"]) for r in part if not r["label"]]
                    )
            cases = fixture_cases(HELDOUT)
            for lang in ("en", "zh", "all"):
                part = [c for c in cases if lang in ("all", c["lang"])]
                res[f"fixtures_heldout_{lang}_recall"] = _rate(
                    [predict(c["text"]) for c in part if S in c["labels"]]
                )
                res[f"fixtures_heldout_{lang}_false_flags"] = _rate(
                    [predict(c["text"]) for c in part if S not in c["labels"]]
                )
        if shared.is_dir():
            for src, posts in imhi_no_disorder(shared, split).items():
                res[f"imhi_{src}_false_flags"] = _rate([predict(t) for t in posts])
            if split == "test":
                for src, posts in imhi_positive_proxies(shared).items():
                    res[f"imhi_{src}_flagged"] = _rate([predict(t) for t in posts])
        out[name] = res
    if with_latency:
        out["latency"] = latency(shared, probe_weights=probe_weights)
    return out


def latency(shared: Path, n: int = 200, probe_weights: Path | None = None) -> dict:
    """Milliseconds per ``assess`` call (rules + classifier, warm) on IMHI test posts as
    statements, against the rules alone in the same run (``ratio_p95``), and the one-off load
    time in a fresh process."""
    import subprocess
    import sys

    from engine.trust.risk import assess, assess_rules
    from engine.trust.risk_classifier import warm_up

    texts = (
        [t for v in imhi_no_disorder(shared, "test").values() for t in v][:n]
        if shared.is_dir()
        else []
    )
    texts = texts or [row["text"] for row in written("test")]
    warm_up()

    def timed(fn) -> list[float]:
        out = []
        for t in texts:
            t0 = time.perf_counter()
            fn(t)
            out.append(1000 * (time.perf_counter() - t0))
        return out

    base = timed(assess_rules)  # the baseline, measured in the same run
    times = timed(lambda t: assess(t, probe=False))
    from engine.trust.risk_probe import warm_up as warm_probe

    t0 = time.perf_counter()
    warm_probe()
    probe_load_s = time.perf_counter() - t0
    with_probe = timed(lambda t: assess(t, probe=True))
    load = subprocess.run(
        [
            sys.executable,
            "-c",
            "import time;t=time.perf_counter();"
            "from engine.trust.risk_classifier import warm_up;warm_up();"
            "print(time.perf_counter()-t)",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    probe_load = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys,time;from pathlib import Path;from engine.trust import risk_probe as r;"
            "from bench.risk_classifier import load_candidate as c;t=time.perf_counter();"
            "p=sys.argv[1];p and r.override(c(r.load_weights(Path(p).read_bytes())));"
            "r.probe().scores(['warm up']);print(time.perf_counter()-t)",
            str(probe_weights or ""),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return {
        "statements": len(texts),
        "mean_chars": round(float(np.mean([len(t) for t in texts])), 1),
        "p50_ms": round(float(np.percentile(times, 50)), 2),
        "p95_ms": round(float(np.percentile(times, 95)), 2),
        "max_ms": round(float(np.max(times)), 2),
        "rules_only_p95_ms": round(float(np.percentile(base, 95)), 2),
        "ratio_p95": round(float(np.percentile(times, 95) / np.percentile(base, 95)), 2),
        "with_probe_p50_ms": round(float(np.percentile(with_probe, 50)), 2),
        "with_probe_p95_ms": round(float(np.percentile(with_probe, 95)), 2),
        "with_probe_ratio_p95": round(
            float(np.percentile(with_probe, 95) / np.percentile(base, 95)), 2
        ),
        "probe_load_s_in_process": round(probe_load_s, 2),
        "load_s": round(float(load.stdout.strip()), 3),
        "probe_load_s": round(float(probe_load.stdout.strip().splitlines()[-1]), 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train")
    tr.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    tr.add_argument("--out", type=Path, default=CANDIDATE)
    tr.add_argument("--c", type=float, nargs="+", default=[4.0, 16.0])
    tr.add_argument("--pos-weight", type=float, nargs="+", default=[20.0, 60.0])
    tr.add_argument("--neg-weight", type=float, nargs="+", default=[20.0, 60.0])
    tr.add_argument("--background-weight", type=float, nargs="+", default=[1.0])
    tr.add_argument("--rule-positives", action="store_true")
    tr.add_argument(
        "--zh-words",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="jieba word n-grams for Chinese",
    )
    tr.add_argument(
        "--zh-match-shipped",
        action="store_true",
        help="Chinese threshold: the highest no worse than the shipped weights on Chinese dev",
    )
    tr.add_argument("--irf-weight", type=float, default=0.0)
    tr.add_argument(
        "--split-negatives",
        action="store_true",
        help="written negative posts as their sentences (as the classifier reads them)",
    )
    tr.add_argument("--sentence-weight", type=float, default=0.0)
    tr.add_argument("--dense-scale", type=float, nargs="+", default=[1.0])
    tr.add_argument("--imhi-limit", type=int, default=30000)
    tr.add_argument("--max-added", type=float, default=0.01)
    tr.add_argument("--max-source-added", type=float, default=0.02)
    tr.add_argument("--max-written", type=float, default=0.2)
    me = sub.add_parser("measure")
    me.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    me.add_argument("--split", choices=("dev", "test"), default="dev")
    me.add_argument("--probe-weights", type=Path, default=None, help="candidate probe weights")
    me.add_argument("--classifier-weights", type=Path, default=None, help="candidate classifier")
    me.add_argument("--no-probe", action="store_true", help="skip the probe (minutes on 2 cores)")
    args = ap.parse_args(argv)
    if args.cmd == "train":
        report = cmd_train(args)
    else:
        report = measure(
            args.split,
            args.shared,
            probe=not args.no_probe,
            with_latency=not args.no_probe,
            probe_weights=args.probe_weights,
            classifier_weights=args.classifier_weights,
        )
        report["probe_weights"] = str(args.probe_weights or "shipped")
        report["classifier_weights"] = str(args.classifier_weights or "shipped")
    print(json.dumps(report, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
