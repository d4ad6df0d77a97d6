"""The hand-labelled IMHI data of the risk classifier (data/risk_sentences/*.labels) stay
consistent: every Irf label names a post in ../shared, every risk label quotes that post, the
train / dev split is the one fixed by the post id, and no labelled sentence comes from an IMHI
test post (those are the held-out false-flag set)."""

from __future__ import annotations

import pytest

from bench.risk import DEFAULT_SHARED, imhi_posts
from bench.risk_data import (
    IRF_LABELS,
    imhi_labelled_sentences,
    irf_labelled,
    irf_sentences,
)

needs_imhi = pytest.mark.skipif(
    not (DEFAULT_SHARED / "imhi" / "train" / "Irf" / "val.csv").is_file(),
    reason="../shared/data not present",
)


def _label_rows() -> list[list[str]]:
    lines = IRF_LABELS.read_text(encoding="utf-8").splitlines()
    return [line.split("\t") for line in lines if line and not line.startswith("#")]


def test_irf_split_is_fixed_by_the_post_id():
    rows = _label_rows()
    assert len(rows) == len({r[0] for r in rows}) == 493
    for pid, split, label, read, evidence in rows:
        assert split == ("dev" if int(pid, 16) % 2 else "train")
        assert label in ("0", "1", "?") and int(read) > 0
        assert bool(evidence) == (label == "1")


@needs_imhi
def test_irf_labels_quote_their_posts():
    for split in ("train", "dev"):
        rows = irf_labelled(DEFAULT_SHARED, split)
        assert rows and all(r["evidence"] in r["text"] for r in rows if r["label"])
    train = irf_labelled(DEFAULT_SHARED, "train")
    texts, labels = irf_sentences(train)
    assert sum(labels) >= sum(r["label"] for r in train)  # each risk post gives its sentence
    dev_texts = {r["text"] for r in irf_labelled(DEFAULT_SHARED, "dev")}
    assert not any(t in d for t in texts for d in dev_texts if len(t) > 40)


@needs_imhi
def test_no_labelled_sentence_comes_from_a_test_post():
    test_posts = "\n".join(
        post for f in (DEFAULT_SHARED / "imhi" / "test").glob("*.csv") for post in imhi_posts(f)
    )
    labelled = imhi_labelled_sentences()
    assert len(labelled) > 700 and {label for _, label in labelled} == {0, 1}
    assert not [t for t, _ in labelled if t in test_posts]
