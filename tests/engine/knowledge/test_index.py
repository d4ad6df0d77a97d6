"""The knowledge index over saved notes: found across patients, forgotten when deleted,
encrypted at rest, Chinese segmented."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.knowledge.entries import Entry
from engine.knowledge.index import NOTES_BLOB, REFERENCE_BLOB, KnowledgeIndex
from engine.knowledge.text import tokenize
from engine.vault.store import Store
from tests.engine.knowledge.conftest import PASSPHRASE, make_note

EXAM = (
    "I failed my entrance exam last year and now I cannot sleep; my parents expect so much "
    "that I get headaches whenever I open a textbook."
)
OTHER = "My dog died last month and I keep crying at work."


@pytest.fixture(params=["lexical", "embedding"])
def index_kind(request):
    return request.param


def _index(store: Store, kind: str = "lexical") -> KnowledgeIndex:
    return KnowledgeIndex(store, embedder=None if kind == "lexical" else "auto").load()


def _keys(matches) -> list[str]:
    return [m.entry.key for m in matches]


def test_a_note_of_one_patient_is_found_from_another_patients_statement(store, index_kind):
    a = store.create_patient("Alice")
    b = store.create_patient("Bob")
    store.add_note(a.id, make_note(OTHER, "grief"))
    saved = store.add_note(
        a.id,
        make_note(EXAM, "exam anxiety", ["pressure from parents"], ["sleep hygiene plan"]),
    )
    index = _index(store, index_kind)
    exam_key = f"note:{a.id}:{saved.notes[-1].id}"
    matches = index.query(
        "Since failing the exam I can't sleep and my parents' expectations give me headaches",
        k=3,
        exclude_patient=b.id,
        mode="lexical" if index_kind == "lexical" else "embedding",
    )
    assert _keys(matches)[0] == exam_key
    top = matches[0]
    assert top.entry.pseudonym == f"Case {a.id[:6]}" and "Alice" not in top.entry.citation_label
    assert top.entry.date and "exam" in top.passage.lower()


def test_notes_saved_after_opening_are_found_without_a_rebuild(store):
    a = store.create_patient("Alice")
    index = _index(store)
    assert index.query(EXAM, k=3) == []
    store.add_note(a.id, make_note(EXAM, "exam anxiety"))
    assert len(index.query(EXAM, k=3)) == 1  # the query saw the record's new stamp


def test_an_amended_note_is_found_by_its_new_text_only(store):
    a = store.create_patient("Alice")
    patient = store.add_note(a.id, make_note(EXAM, "exam anxiety"))
    index = _index(store)
    patient.notes[0].question = "Panic attacks on the subway every morning."
    store.save_patient(patient)
    index.update_patient(patient)
    assert index.query("entrance textbook headaches", k=3) == []
    assert len(index.query("panic attacks subway", k=3)) == 1


def test_a_deleted_note_and_a_forgotten_patient_are_never_returned(store, index_kind):
    a = store.create_patient("Alice")
    b = store.create_patient("Bob")
    patient = store.add_note(a.id, make_note(EXAM, "exam anxiety"))
    store.add_note(a.id, make_note(OTHER, "grief"))
    store.add_note(b.id, make_note(EXAM + " Also nightmares.", "exam anxiety"))
    index = _index(store, index_kind)
    assert {m.entry.patient_id for m in index.query(EXAM, k=10)} == {a.id, b.id}

    patient = store.load_patient(a.id)
    patient.notes = [n for n in patient.notes if n.question != EXAM]
    store.save_patient(patient)  # no explicit hook: the next query notices the new stamp
    found = index.query(EXAM, k=10)
    assert EXAM not in [m.entry.text.splitlines()[0] for m in found if m.entry.patient_id == a.id]

    store.delete_patient(b.id)
    found = index.query(EXAM, k=10)
    assert b.id not in {m.entry.patient_id for m in found}
    assert all(index.entry(m.entry.key) is not None for m in found)
    # A reopened index does not bring them back either.
    again = _index(store, index_kind)
    assert b.id not in {m.entry.patient_id for m in again.query(EXAM, k=10)}
    assert EXAM not in [m.entry.text.splitlines()[0] for m in again.query(EXAM, k=10)]


def test_remove_patient_forgets_at_once_even_before_the_store_does(store):
    a = store.create_patient("Alice")
    store.add_note(a.id, make_note(EXAM, "exam anxiety"))
    index = _index(store)
    index.remove_patient(a.id)
    assert index.query(EXAM, k=5, sync=False) == []
    assert store.read_blob(a.id, NOTES_BLOB) is None


def test_no_plaintext_of_notes_or_reference_in_the_vault_files(store, tmp_path: Path):
    secret_en = "Zanzibarquux hides the marmalade"
    secret_zh = "我把秘密藏在外婆的樟木箱里"
    a = store.create_patient("Alice")
    store.add_note(a.id, make_note(f"{secret_en}. {secret_zh}", "secretive", ["reason"], ["plan"]))
    index = _index(store)
    index.set_reference(
        [Entry("counselchat:0", "counselchat", "t", "Quokkaflorp answer", "Quokkaflorp", "topic")]
    )
    assert store.read_blob(a.id, NOTES_BLOB)  # the shard exists, encrypted
    assert store.read_vault_blob(REFERENCE_BLOB)
    needles = [
        secret_en.encode(), b"zanzibarquux", b"marmalade", secret_zh.encode(),
        "樟木箱".encode(), "秘密".encode(), b"Quokkaflorp", b"quokkaflorp",
    ]  # fmt: skip
    for path in (tmp_path / "vault").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for needle in needles:
                assert needle not in data, (path, needle)


def test_the_index_reopens_from_its_encrypted_shards_without_reading_records(
    store, settings, tmp_path: Path
):
    a = store.create_patient("Alice")
    store.add_note(a.id, make_note(EXAM, "exam anxiety"))
    _index(store)
    store.close()
    with Store.open(tmp_path / "vault", PASSPHRASE, settings=settings) as reopened:
        index = _index(reopened)
        assert index.rebuilt_patients == 0  # shards were current
        assert len(index.query(EXAM, k=3)) == 1
        assert index.rebuild() == 1


def test_chinese_queries_find_chinese_notes(store):
    a = store.create_patient("孙某")
    b = store.create_patient("李某")
    store.add_note(
        a.id,
        make_note(
            "我是一名复读生，上次高考失利后学习时头昏沉沉的，注意力无法集中，晚上失眠。",
            "考试焦虑",
            ["父母期望高"],
            ["制定作息计划"],
        ),
    )
    store.add_note(a.id, make_note("我和男朋友分手了，每天都很难过，不想吃饭。", "情绪低落"))
    store.add_note(b.id, make_note("I failed the exam and cannot sleep.", "exam anxiety"))
    index = _index(store)
    matches = index.query("高考前我总是失眠，注意力不集中，担心考不上大学", k=3)
    assert matches and "复读生" in matches[0].entry.text
    assert "失眠" in matches[0].passage or "注意力" in matches[0].passage


def test_chinese_is_segmented_into_words():
    terms = tokenize("我最近总是失眠，注意力无法集中")
    assert "失眠" in terms and "注意力" in terms
    assert "我" not in terms  # a function word
    assert tokenize("worries worried") == ["worry", "worry"]


def test_reference_entries_are_returned_with_notes(store):
    a = store.create_patient("Alice")
    store.add_note(a.id, make_note(EXAM, "exam anxiety"))
    index = _index(store)
    index.set_reference(
        [
            Entry(
                "counselchat:0", "counselchat", "Exam stress",
                "How do I handle exam stress and insomnia?\n\nTherapist's answer:\nBreathe.",
                "How do I handle exam stress and insomnia before my entrance exam?",
                "anxiety", "Breathe.",
            ),
            Entry("counselchat:1", "counselchat", "Cats", "My cat", "My cat is orange", "pets"),
        ]
    )  # fmt: skip
    sources = {m.entry.source for m in index.query(EXAM, k=5)}
    assert sources == {"note", "counselchat"}
    only_ref = index.query(EXAM, k=5, sources={"counselchat"})
    assert [m.entry.key for m in only_ref] == ["counselchat:0"]
