"""A segment's filters (sources, the open patient, a forgotten patient, the query's language)
and how its entries are stored in a shard."""

from __future__ import annotations

import numpy as np

from engine.knowledge.entries import Entry
from engine.knowledge.segment import SEARCH_DIMS, Segment, search_view
from engine.knowledge.text import tokenize


def _entry(key: str, text: str, source: str = "note", patient: str = "", lang: str = "en"):
    return Entry(key, source, text[:20], text, text, patient_id=patient, lang=lang,
                 terms=tokenize(text))  # fmt: skip


ENTRIES = [
    _entry("note:a:1", "exam anxiety, cannot sleep before exams", patient="a"),
    _entry("note:b:1", "exam stress and sleepless nights", patient="b"),
    _entry("note:a:2", "grief after my dog died", patient="a"),
    _entry("counselchat:0", "sleep problems before an exam", source="counselchat"),
    _entry("note:c:1", "考试前焦虑，睡不着", patient="c", lang="zh"),
]


def _keys(segment: Segment, hits) -> list[str]:
    return [segment.entries[i].key for i, _score in hits]


def test_excluding_the_open_patient_drops_only_their_entries():
    seg = Segment(ENTRIES)
    hits = seg.lexical(tokenize("exam sleep"), 10, seg.allowed(None, "a"))
    assert set(_keys(seg, hits)) == {"note:b:1", "counselchat:0"}
    hits = seg.lexical(tokenize("exam sleep"), 10, seg.allowed({"counselchat"}, None))
    assert _keys(seg, hits) == ["counselchat:0"]


def test_a_killed_patient_stays_masked_and_others_do_not():
    seg = Segment(ENTRIES)
    assert seg.kill_patient("a") == 2
    assert seg.kill_patient("a") == 0
    assert seg.kill_patient("nobody") == 0
    hits = seg.lexical(tokenize("exam sleep dog"), 10, seg.allowed(None, None))
    assert "note:a:1" not in _keys(seg, hits) and "note:a:2" not in _keys(seg, hits)
    assert "note:b:1" in _keys(seg, hits)


def test_dense_keeps_to_the_query_language_and_uses_the_normalised_prefix():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(ENTRIES), 256)).astype(np.float32)
    seg = Segment(ENTRIES, vectors=vectors)
    query = vectors[4] + 0.01  # closest to the Chinese note
    assert _keys(seg, seg.dense(query, 5, -1.0, seg.allowed(None, None), "zh")) == ["note:c:1"]
    en = seg.dense(query, 5, -1.0, seg.allowed(None, None), "en")
    assert "note:c:1" not in _keys(seg, en) and len(en) == 4
    view = search_view(vectors)
    assert view.shape == (len(ENTRIES), SEARCH_DIMS)
    np.testing.assert_allclose(np.linalg.norm(view, axis=1), 1.0, rtol=1e-5)
    prefix = vectors[:, :SEARCH_DIMS] / np.linalg.norm(vectors[:, :SEARCH_DIMS], axis=1)[:, None]
    q = query[:SEARCH_DIMS] / np.linalg.norm(query[:SEARCH_DIMS])
    expected = sorted(range(4), key=lambda n: -float(prefix[n] @ q))
    assert [i for i, _s in en] == expected


def test_entries_keep_their_terms_through_a_shard_and_unknown_keys_are_ignored():
    entry = _entry("note:c:1", "考试前焦虑，睡不着 and exams", patient="c", lang="zh")
    stored = entry.to_dict()
    assert Entry.from_dict(stored) == entry
    assert Entry.from_dict({**stored, "added_later": 1}) == entry
