"""Fit the whole-statement risk probe (engine/trust/risk_probe.py) and choose its thresholds.

Data, the sentence classifier's split (bench/risk_classifier.py, data/risk_sentences/README.md):

* train: the written *train* files (sentences and posts), the tuning fixtures, the
  hand-labelled Irf *train* posts, and no-disorder IMHI *train* posts as everyday
  background (dreaddit "no stress", DR "no depression", the first 1,500 SAD posts);
* dev (thresholds and the regularisation): the written *dev* files, the hand-labelled Irf dev
  posts, the IMHI *val* no-disorder posts;
* test is never read here (``python -m bench.risk_classifier measure --split test``, once).

The threshold rule is the sentence classifier's: per language, the lowest threshold at which
the probe adds flags (beyond rules + sentence classifier) to at most 1 % of the dev
no-disorder posts pooled and 2 % of any one source's (English: IMHI val; Chinese: the
everyday and self-critical posts ``zh_h``, ``zh_m``), at least one post allowed, and rules +
classifier + probe flag at most 20 % of the written dev hard negatives of that language.
The C giving the highest summed dev recall (English, Chinese, Irf dev posts) is kept.

    python -m bench.risk_probe train            # writes bench/results/risk_probe_candidate.npz
    python -m bench.risk_probe train --out engine/trust/risk_probe.npz
    python -m bench.risk_probe train --encoder minilm   # round 8's MiniLM candidate (bench only)

Features are cached by text in the model cache directory (a few minutes on two cores the
first time).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from bench import REPO
from bench.risk import DEFAULT_SHARED, TUNING
from bench.risk_data import (
    EVERYDAY,
    S,
    fixture_cases,
    imhi_no_disorder,
    irf_labelled,
    written,
)

CANDIDATE = REPO / "bench" / "results" / "risk_probe_candidate.npz"
LAYERS = (8, 16, 24, 30)
SCALE = 10.0
SAD_LIMIT = 1500


def rows_of(shared: Path, split: str) -> list[dict]:
    """``{"text", "label", "src"}`` of ``split`` ("train" or "dev")."""
    rows = [
        {"text": r["text"], "label": r["label"], "src": "w_" + r["author"], "lang": r["lang"]}
        for r in written(split)
    ]
    for r in irf_labelled(shared, split):
        text = r["text"] if r["label"] else r["text"][: r["read"]]
        rows.append({"text": text, "label": r["label"], "src": "irf", "lang": "en"})
    for name, posts in imhi_no_disorder(shared, split).items():
        if split == "train" and name == "sad":
            posts = posts[:SAD_LIMIT]
        rows += [{"text": t, "label": 0, "src": "imhi_" + name, "lang": "en"} for t in posts]
    if split == "train":
        for case in fixture_cases(TUNING):
            label = int(S in case["labels"])
            rows.append({"text": case["text"], "label": label, "src": "fix", "lang": case["lang"]})
    return rows


def dummy_weights(encoder: str):
    """Weights that only name the encoder (and the LLM's layers): to compute features."""
    from engine.trust.risk_probe import ProbeWeights

    layers = LAYERS if encoder == "smollm2" else (6,)
    return ProbeWeights(layers, np.zeros(1), np.zeros(1), 0.0, 1.0, 0.5, 0.5, "", encoder)


def features(texts: list[str], cache: Path, encoder: str = "smollm2") -> np.ndarray:
    """The probe's features of ``texts`` (first window), cached by text digest."""
    from bench.risk_classifier import load_candidate

    known: dict[str, np.ndarray] = {}
    if cache.is_file():
        with np.load(cache) as z:
            known = dict(zip(z["keys"].tolist(), z["feats"], strict=True))
    keys = [hashlib.sha256(t.encode("utf-8")).hexdigest()[:24] for t in texts]
    missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in known}.items())
    if missing:
        probe = load_candidate(dummy_weights(encoder))
        t0 = time.perf_counter()
        for b in range(0, len(missing), 256):
            part = missing[b : b + 256]
            for (k, _), f in zip(part, probe.features([t for _, t in part]), strict=True):
                known[k] = f
            print(f"features {b + len(part)}/{len(missing)} {time.perf_counter() - t0:.0f} s")
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, keys=np.array(list(known)), feats=np.stack(list(known.values())))
    return np.stack([known[k] for k in keys])


def _current_flags(texts: list[str]) -> np.ndarray:
    """Rules + sentence classifier (the probe off): what the probe adds to."""
    from engine.trust.risk import assess

    return np.array([any(f.category == S for f in assess(t, probe=False)) for t in texts])


def choose_threshold(scores, current, rows, lang: str, max_written: float = 0.2) -> float:
    """The rule in the module docstring, for ``lang``'s dev rows."""
    if lang == "en":
        sources = {r["src"] for r in rows if r["src"].startswith("imhi_")}
    else:
        sources = {"w_" + a for a in EVERYDAY if a != "zh_i"}
    by_src = {s: [i for i, r in enumerate(rows) if r["src"] == s] for s in sources}
    hard = [
        i
        for i, r in enumerate(rows)
        if r["lang"] == lang
        and r["src"].startswith("w_")
        and r["src"][2:] not in EVERYDAY
        and not r["label"]
    ]
    pooled = [i for ix in by_src.values() for i in ix]
    best = 1.0
    for t in np.arange(0.99, 0.04, -0.01):

        def added(ix, t=t):
            return sum((not current[i]) and scores[i] >= t for i in ix)

        if added(pooled) > max(int(0.01 * len(pooled)), 1):
            break
        if any(added(ix) > max(int(0.02 * len(ix)), 1) for ix in by_src.values()):
            break
        if hard and sum(current[i] or scores[i] >= t for i in hard) / len(hard) > max_written:
            break
        best = round(float(t), 2)
    return best


def dev_report(scores, current, rows, t_en: float, t_zh: float) -> dict:
    out: dict = {}
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(r["src"], []).append(i)
    for src, ix in sorted(groups.items()):
        t = t_zh if rows[ix[0]]["lang"] == "zh" else t_en
        pos = [i for i in ix if rows[i]["label"]]
        neg = [i for i in ix if not rows[i]["label"]]

        def before_after(ix, t=t):
            after = sum(bool(current[i] or scores[i] >= t) for i in ix)
            return [int(sum(current[i] for i in ix)), after, len(ix)]

        out[src] = {"recall": before_after(pos), "negatives_flagged": before_after(neg)}
    return out


def cmd_train(args) -> dict:
    from sklearn.linear_model import LogisticRegression

    from engine.settings import load_settings
    from engine.trust.risk_probe import ProbeWeights, save_weights

    t0 = time.perf_counter()
    name = "risk_probe_features.npz" if args.encoder == "smollm2" else "risk_probe_minilm.npz"
    cache = args.cache or load_settings().model_cache_dir / name
    train, dev = rows_of(args.shared, "train"), rows_of(args.shared, "dev")
    x_train = features([r["text"] for r in train], cache, args.encoder)
    x_dev = features([r["text"] for r in dev], cache, args.encoder)
    mean = x_train.mean(0)
    y = np.array([r["label"] for r in train])
    w = np.array([1.0 if r["src"].startswith("imhi_") else args.curated_weight for r in train])
    current = _current_flags([r["text"] for r in dev])
    report: dict = {"train_rows": len(train), "train_positive": int(y.sum()), "dev_rows": len(dev)}
    best = None
    for c in args.c:
        model = LogisticRegression(C=c, max_iter=5000)
        model.fit((x_train - mean) * SCALE, y, sample_weight=w)
        scores = model.predict_proba((x_dev - mean) * SCALE)[:, 1]
        en = [i for i, r in enumerate(dev) if r["lang"] == "en"]
        zh = [i for i, r in enumerate(dev) if r["lang"] == "zh"]
        t_en = choose_threshold(scores[en], current[en], [dev[i] for i in en], "en")
        t_zh = choose_threshold(scores[zh], current[zh], [dev[i] for i in zh], "zh")
        per = dev_report(scores, current, dev, t_en, t_zh)
        recall = sum(v["recall"][1] for v in per.values())
        report[f"C={c}"] = {"threshold_en": t_en, "threshold_zh": t_zh, "recall_sum": recall, **per}
        print(json.dumps({"C": c, "t_en": t_en, "t_zh": t_zh, "recall_sum": recall}), flush=True)
        if best is None or recall > best[0]:
            best = (recall, c, model, t_en, t_zh)
    assert best is not None
    _, c, model, t_en, t_zh = best
    weights = ProbeWeights(
        layers=dummy_weights(args.encoder).layers,
        mean=mean.astype(np.float32),
        coef=model.coef_[0].astype(np.float32),
        bias=float(model.intercept_[0]),
        scale=SCALE,
        threshold=t_en,
        threshold_zh=t_zh,
        version=f"encoder={args.encoder} C={c} curated_weight={args.curated_weight} "
        f"threshold en={t_en} zh={t_zh}",
        encoder=args.encoder,
    )
    save_weights(weights, args.out)
    report["chosen"] = weights.version
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train")
    tr.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    tr.add_argument("--out", type=Path, default=CANDIDATE)
    tr.add_argument("--cache", type=Path, default=None)
    tr.add_argument("--c", type=float, nargs="+", default=[0.3, 1.0])
    tr.add_argument("--curated-weight", type=float, default=5.0)
    tr.add_argument("--encoder", choices=("smollm2", "minilm"), default="smollm2")
    args = ap.parse_args(argv)
    print(json.dumps(cmd_train(args), ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
