"""The risk classifier's data and its splits, fixed before any fitting.

Written sentences and posts (data/risk_sentences, one file per author, ``SPLIT_OF_FILE``),
the risk fixtures, hand-labelled IMHI posts and sentences, and IMHI no-disorder posts as the
false-flag sets; data/risk_sentences/README.md says what each file is and why it is on its
side. Read by bench/risk_classifier.py (train, measure) and bench/risk_probe.py.
"""

from __future__ import annotations

from pathlib import Path

from bench import REPO
from bench.risk import FIXTURES, imhi_posts, load_fixtures

SENTENCES = REPO / "data" / "risk_sentences"
S = "suicide_self_harm"
SPLIT_OF_FILE = {
    **dict.fromkeys(("en_a", "en_b", "en_c", "en_f", "en_g", "en_h"), "train"),
    **dict.fromkeys(("zh_a", "zh_b", "zh_c", "zh_f", "zh_g", "zh_j", "en_i"), "train"),
    **dict.fromkeys(("en_l", "zh_l"), "train"),
    **dict.fromkeys(("en_d", "zh_d", "zh_h", "zh_m", "zh_n", "en_q", "zh_q"), "dev"),
    **dict.fromkeys(("en_e", "zh_e", "zh_i"), "test"),
    # written before any change of the session that added them, measured with --split test
    **dict.fromkeys(("en_k", "zh_k"), "fresh"),
    # fourth round: social-media-style posts, written before any change of that round
    **dict.fromkeys(("en_p", "zh_p"), "fresh4"),
    # fifth round: posts written before any change of that round (test) and its dev posts
    **dict.fromkeys(("en_r", "zh_r"), "fresh5"),
    **dict.fromkeys(("en_t", "zh_t"), "fresh6"),
    # seventh round: blind posts written before any change of that round
    **dict.fromkeys(("en_x", "zh_x"), "fresh7"),
    # eighth round: blind posts (risk vs hard negatives) and everyday posts with no disorder
    **dict.fromkeys(("en_z", "zh_z", "en_ze", "zh_ze"), "fresh8"),
    # ninth round: Chinese everyday sentences and distress without risk (training negatives)
    **dict.fromkeys(("zh_ba", "zh_bb"), "train"),
    # tenth round: blind posts and everyday posts (test), and training posts in both languages
    **dict.fromkeys(("en_zz", "zh_zz", "en_zze", "zh_zze"), "fresh10"),
    **dict.fromkeys(("zh_ca",), "train"),
    # eleventh round: blind posts and everyday posts, written before any change of that round
    **dict.fromkeys(("en_fa", "zh_fa", "en_fae", "zh_fae"), "fresh11"),
    **dict.fromkeys(("en_ca",), "spare"),
    **dict.fromkeys(("en_s", "zh_s"), "dev"),
    # sixth round: social-media-style training posts and dev posts in another voice
    **dict.fromkeys(("en_u", "zh_u"), "train"),
    **dict.fromkeys(("en_v", "zh_v"), "dev"),
    # seventh round: loneliness posts (lonely without risk vs lonely with risk)
    **dict.fromkeys(("en_w", "zh_w"), "train"),
    **dict.fromkeys(("en_y", "zh_y"), "dev"),
}
# dev posts of a round, also reported on their own by ``measure --split dev``
DEV_POSTS = {
    "dev5_posts": ("en_s", "zh_s"),
    "dev6_posts": ("en_v", "zh_v"),
    "dev7_lonely_posts": ("en_y", "zh_y"),
}


# all-negative posts: everyday Chinese (zh_h dev, zh_i test) and self-critical or anxious
# Chinese posts (zh_m dev): false-flag sets like IMHI's no-disorder posts, not hard negatives
EVERYDAY = {"zh_h", "zh_i", "zh_m"}
# everyday posts of a fresh split: its no-disorder false-flag set, apart from hard negatives
FRESH_EVERYDAY = {"en_ze", "zh_ze", "en_zze", "zh_zze", "en_fae", "zh_fae"}


def written(split: str) -> list[dict]:
    """Written sentences of ``split``: ``{"text", "label", "lang", "author"}``."""
    out = []
    for path in sorted(SENTENCES.glob("*.tsv")):
        lang = path.stem.split("_")[0]
        if SPLIT_OF_FILE[path.stem] != split:
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            label, text = line.split("\t", 1)
            out.append({"text": text, "label": int(label), "lang": lang, "author": path.stem})
    return out


IRF_LABELS = SENTENCES / "imhi_irf_val.labels"


def irf_labelled(shared: Path, split: str) -> list[dict]:
    """IMHI Irf *val* posts labelled by hand for suicide / self-harm (``IRF_LABELS``; its split
    is fixed by the post id): ``{"id", "text", "label", "read", "evidence"}``, ``read`` being
    how many characters of the post were read when labelling (ambiguous posts left out)."""
    import hashlib

    path = shared / "imhi" / "train" / "Irf" / "val.csv"
    if not path.is_file() or split not in ("train", "dev"):
        return []
    by_id = {hashlib.sha1(t.encode()).hexdigest()[:8]: t for t in imhi_posts(path)}
    out = []
    for line in IRF_LABELS.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        pid, part, label, read, evidence = line.split("\t")
        if part != split or label not in "01" or pid not in by_id:
            continue
        text = by_id[pid]
        out.append(
            {"id": pid, "text": text, "label": int(label), "read": int(read), "evidence": evidence}
        )
    return out


def irf_sentences(rows: list[dict]) -> tuple[list[str], list[int]]:
    """Training sentences of labelled posts: of a risk post the sentence(s) holding its quoted
    evidence (positives), of a no-risk post every sentence inside the part that was read
    (in-register negatives: distress, depression, loneliness without a wish to die)."""
    from engine.trust.risk_classifier import sentence_spans

    texts, labels = [], []
    for row in rows:
        text = row["text"]
        if row["label"]:
            at = text.find(row["evidence"])
            hit = (at, at + len(row["evidence"]))
            for a, b in sentence_spans(text):
                if a < hit[1] and hit[0] < b:
                    texts.append(text[a:b])
                    labels.append(1)
        else:
            for a, b in sentence_spans(text):
                if b <= row["read"]:
                    texts.append(text[a:b])
                    labels.append(0)
    return texts, labels


IMHI_SENTENCE_LABELS = SENTENCES / "imhi_train_sentences.labels"


def imhi_labelled_sentences() -> list[tuple[str, int]]:
    """``(sentence, label)`` of ``IMHI_SENTENCE_LABELS`` (IMHI train posts, training only)."""
    out = []
    for line in IMHI_SENTENCE_LABELS.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        label, _task, text = line.split("\t", 2)
        out.append((text, int(label)))
    return out


def irf_dev_posts(shared: Path) -> tuple[list[str], list[str]]:
    """Dev posts of ``IRF_LABELS``: risk posts whole, no-risk posts cut to the part read."""
    rows = irf_labelled(shared, "dev")
    pos = [r["text"] for r in rows if r["label"]]
    neg = [r["text"][: r["read"]] for r in rows if not r["label"]]
    return pos, neg


def fixture_cases(splits: tuple[str, ...]) -> list[dict]:
    return [c for c in load_fixtures(FIXTURES) if c["split"] in splits]


# IMHI no-disorder posts: (csv under imhi/, which posts count as "no disorder")
_NO_DISORDER = {
    "dreaddit_no_stress": ("dreaddit", lambda qs: not any(qs.values())),
    "dr_no_depression": ("DR", lambda qs: not any(qs.values())),
    "sad": ("SAD", lambda qs: True),
    "loneliness_no": ("loneliness", lambda qs: not any(qs.values())),
}
_IMHI_FILES = {
    "train": {
        "dreaddit": "train/dreaddit/train.csv",
        "DR": "train/DR/train.csv",
        "SAD": "train/SAD/train.csv",
    },
    "dev": {
        "dreaddit": "train/dreaddit/val.csv",
        "DR": "train/DR/val.csv",
        "SAD": "train/SAD/val.csv",
    },
    "test": {
        "dreaddit": "test/dreaddit.csv",
        "DR": "test/DR.csv",
        "SAD": "test/SAD.csv",
        "loneliness": "test/loneliness.csv",
    },
}


def _all_posts(shared: Path, split: str) -> dict[str, dict[str, dict[str, bool]]]:
    out = {}
    for task, rel in _IMHI_FILES[split].items():
        path = shared / "imhi" / rel
        if path.is_file():
            out[task] = imhi_posts(path)
    return out


def imhi_no_disorder(shared: Path, split: str) -> dict[str, list[str]]:
    """No-disorder posts per source for ``split``; test posts also seen in train/val are dropped."""
    posts = _all_posts(shared, split)
    seen: set[str] = set()
    if split != "train":
        for other in ("train", "dev"):
            if other != split:
                for task in _all_posts(shared, other).values():
                    seen.update(task)
    out: dict[str, list[str]] = {}
    for name, (task, keep) in _NO_DISORDER.items():
        if task in posts:
            out[name] = [t for t, qs in posts[task].items() if keep(qs) and t not in seen]
    return out


def imhi_positive_proxies(shared: Path) -> dict[str, list[str]]:
    """IMHI test posts that are related to, not the same as, suicide risk (recall proxies);
    posts whose text also occurs in a train or val CSV are dropped."""
    seen: set[str] = set()
    for rel in ("train/DR/train.csv", "train/DR/val.csv", "train/Irf/val.csv"):
        if (shared / "imhi" / rel).is_file():
            seen.update(imhi_posts(shared / "imhi" / rel))
    out: dict[str, list[str]] = {}
    irf = shared / "imhi" / "test" / "Irf.csv"
    if irf.is_file():
        posts = imhi_posts(irf)
        out["irf_burdensomeness"] = [
            t
            for t, qs in posts.items()
            if any(v for q, v in qs.items() if "burden" in q) and t not in seen
        ]
    dr = shared / "imhi" / "test" / "DR.csv"
    if dr.is_file():
        out["dr_depression"] = [
            t for t, qs in imhi_posts(dr).items() if any(qs.values()) and t not in seen
        ]
    return out
