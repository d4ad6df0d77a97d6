"""A note's rank does not depend on when it was saved: notes saved since the index was opened
sit in a small segment of their own, and their BM25 must use the whole index's statistics
(seen in tmux: re-saving one patient dropped their exam-anxiety note out of the seed case's
top five)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from engine.knowledge.bm25 import Bm25
from engine.knowledge.index import KnowledgeIndex
from engine.knowledge.text import tokenize
from engine.records import AnalysisDraft, Item, Note
from engine.settings import Settings, StoreSettings
from engine.vault.store import Store

NOTES = [
    ("期末考试快到了，我每天复习到很晚，总担心考不好让父母失望，头经常疼。", "考试焦虑"),
    ("我是高三学生，一想到高考就心慌，晚上睡不着，白天上课注意力不集中。", "考试焦虑"),
    ("复读这一年压力特别大，书看不进去，成绩一直上不去，觉得自己很没用。", "学业压力"),
    ("领导总是当众批评我，每天上班前都胃疼，想辞职又怕找不到工作。", "职场压力"),
    ("男朋友提出分手以后，我每天都哭，吃不下饭，总是翻看以前的聊天记录。", "失恋"),
    ("我躺在床上脑子停不下来，一直想白天的事，要两三个小时才能入睡。", "入睡困难"),
    ("父母天天吵架，还总让我评理，我夹在中间非常难受。", "家庭冲突"),
    ("最近三个月每天凌晨三点就醒，再也睡不着，白天昏昏沉沉。", "失眠"),
]
STATEMENT = (
    "我是一名复读生，父母很关心我，希望我能好好学习考上大学。自上次高考失利后，我学习时头总是"
    "昏沉沉的，书看不下去。考试前很紧张，总担心比其他人考得差，晚上睡不着。"
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    settings = Settings(store=StoreSettings(scrypt_log2_n=10), data_dir=tmp_path / "data")
    with Store.create(tmp_path / "vault", "correct horse battery", settings=settings) as opened:
        yield opened


def test_a_re_saved_note_keeps_its_rank(store):
    ids = []
    for n, (question, symptom) in enumerate(NOTES):
        patient = store.create_patient(f"来访者{n}")
        note = Note(question=question, analysis=AnalysisDraft(symptom_type=Item(text=symptom)))
        store.add_note(patient.id, note)
        ids.append(patient.id)
    index = KnowledgeIndex(store, embedder=None).load()
    before = [m.entry.key for m in index.query(STATEMENT, k=5, mode="lexical")]
    exam = {f"note:{pid}:" for pid in ids[:2]}
    assert {key[: key.rindex(":") + 1] for key in before} >= exam  # both exam notes found
    for pid in ids[:2]:  # the two exam notes, saved again (into the small fresh segment)
        index.update_patient(store.load_patient(pid))
    after = [m.entry.key for m in index.query(STATEMENT, k=5, mode="lexical")]
    assert after == before


def test_a_small_segment_scores_like_the_big_one_it_sits_next_to():
    docs = [tokenize(q) for q, _ in NOTES]
    whole = Bm25(docs)
    big, small = Bm25(docs[2:]), Bm25(docs[:2], background=Bm25(docs[2:]))
    terms = tokenize(STATEMENT)
    alone = Bm25(docs[:2]).scores(terms)
    shared = small.scores(terms)
    assert shared is not None and alone is not None and big.scores(terms) is not None
    np.testing.assert_allclose(shared, whole.scores(terms)[:2], rtol=1e-5)
    assert not np.allclose(alone, shared)  # on its own statistics it scored differently
