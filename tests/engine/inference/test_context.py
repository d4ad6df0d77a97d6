"""Context budget: newest notes first, reported honestly; prompt text in both languages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from engine.inference.context import CountingCache, PrefixCache, common_prefix_len, fit_record
from engine.inference.prompts import (
    analysis_request,
    detect_language,
    record_language,
    regenerate_item_request,
    render_note,
    system_prompt,
)
from engine.records import AnalysisDraft, BasicInfo, Item, Note, Patient


def words(text: str) -> int:
    """A tiny fake tokenizer: one token per whitespace-separated word or ideograph."""
    return sum(len(w) if any("\u4e00" <= c <= "\u9fff" for c in w) else 1 for w in text.split())


def long_patient(n: int = 40) -> Patient:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    notes = [
        Note(
            question=f"Session {i}: " + "the client talks about work and sleep " * 5,
            created=start + timedelta(days=7 * i),
            analysis=AnalysisDraft(
                symptom_type=Item(text="Insomnia"),
                reasons=[Item(text=f"reason {i}")],
                advice=[Item(text=f"advice {i}"), Item(text="deleted one", deleted=True)],
            ),
        )
        for i in range(n)
    ]
    return Patient(
        name="Anna",
        basic=BasicInfo(demographics="F, 34, teacher", mental_state="low mood, tired"),
        notes=notes,
    )


def test_newest_notes_fit_first_and_the_rest_is_reported() -> None:
    patient = long_patient(40)
    one_note = words(render_note(patient.notes[0], "en")) + 1
    fitted = fit_record(patient, "en", budget=40 + 12 * one_note, count=words)
    assert 0 < fitted.notes_included < 40
    assert fitted.tokens <= 40 + 12 * one_note
    left_out = 40 - fitted.notes_included
    assert (
        fitted.report()
        == f"{fitted.notes_included} of 40 notes fit; {left_out} older notes left out"
    )
    # The newest sessions are in, oldest first; the oldest sessions are out.
    included = [n for n in range(40) if f"Session {n}:" in fitted.text]
    assert included == list(range(40 - fitted.notes_included, 40))
    assert fitted.text.index("Session 39:") > fitted.text.index(f"Session {included[0]}:")
    assert "Demographics: F, 34, teacher" in fitted.text
    assert "deleted one" not in fitted.text  # rejected items are not history


def test_everything_fits_when_budget_allows() -> None:
    patient = long_patient(5)
    fitted = fit_record(patient, "en", budget=10_000, count=words)
    assert fitted.notes_included == 5
    assert fitted.report() == "5 of 5 notes fit"


def test_enormous_basic_info_is_trimmed_not_dropped() -> None:
    patient = Patient(name="X", basic=BasicInfo(developmental_history="word " * 5000))
    fitted = fit_record(patient, "en", budget=300, count=words)
    assert fitted.basic_trimmed
    assert fitted.tokens <= 300
    assert "Developmental history: word" in fitted.text
    assert "basic information trimmed" in fitted.report()


def test_new_note_keeps_the_old_record_text_as_prefix() -> None:
    patient = long_patient(3)
    before = fit_record(patient, "en", budget=10_000, count=words).text
    assert render_note(patient.notes[2], "en") in before
    patient.notes.append(Note(question="A new session", created=datetime(2030, 1, 1, tzinfo=UTC)))
    after = fit_record(patient, "en", budget=10_000, count=words).text
    # Only the header line mentions counts; the notes themselves are appended.
    assert after.endswith("A new session")
    assert render_note(patient.notes[2], "en") in after


def test_counting_cache_counts_once() -> None:
    calls = []

    def count(text: str) -> int:
        calls.append(text)
        return len(text)

    cached = CountingCache(count)
    assert cached("abc") == 3 and cached("abc") == 3
    assert calls == ["abc"]


def test_language_detection() -> None:
    assert detect_language("我最近总是失眠，担心考试。") == "zh"
    assert detect_language("I can't sleep before exams.") == "en"
    assert detect_language("我用 iPhone 记录睡眠，但是还是睡不着") == "zh"
    assert detect_language("12345 !!!") == "en"


def test_chinese_patient_prompts_render(seed_case_zh: dict) -> None:
    info = seed_case_zh["basic_info"]
    patient = Patient(name="孙某", basic=BasicInfo(**info))
    assert record_language(patient) == "zh"
    fitted = fit_record(patient, "zh", budget=4000, count=words)
    system = system_prompt("zh", fitted.text)
    assert "心理咨询师的助手" in system
    assert "人口学资料：" + info["demographics"] in system
    assert "精神状态：" + info["mental_state"] in system
    statement = seed_case_zh["counseling_question"]["statement"]
    assert detect_language(statement) == "zh"
    user = analysis_request(
        statement, "zh", observed=seed_case_zh["counseling_question"]["observed_state"]
    )
    assert statement in user
    for heading in ("症状类型：", "原因：", "建议："):
        assert heading in user
    assert fitted.report("zh") == "纳入 0/0 条记录"


def test_guidance_and_regenerate_prompts_carry_comments() -> None:
    draft = AnalysisDraft(
        symptom_type=Item(text="Exam anxiety", draft="Anxiety"),
        reasons=[
            Item(text="Parents expect a lot", draft="Parents", comments=["mention the village"]),
            Item(text="Bad at maths", draft="Bad at maths", deleted=True),
        ],
        advice=[Item(text="CBT", draft="CBT")],
    )
    full = analysis_request("I fail every exam.", "en", guidance=draft)
    assert "Parents expect a lot" in full and "mention the village" in full
    assert "do not repeat them:\n- Bad at maths" in full
    one = regenerate_item_request("I fail every exam.", draft, "reasons", draft.reasons[0], "en")
    assert "Rewrite only reason 1" in one
    assert "mention the village" in one
    assert "CBT" in one  # the rest of the draft is guidance
    zh = regenerate_item_request("我每次都考不好", draft, "advice", draft.advice[0], "zh")
    assert "只重写建议第 1 条" in zh
    symptom = regenerate_item_request("x", draft, "symptom_type", draft.symptom_type, "en")
    assert "Rewrite only the symptom type (now: Exam anxiety)" in symptom
    draft.unplaced.append(Item(text="stray prose", draft="stray prose"))
    other = regenerate_item_request("x", draft, "unplaced", draft.unplaced[0], "en")
    assert "Rewrite only other note 1 (now: stray prose)" in other


def test_prefix_cache_bookkeeping() -> None:
    class FakeKV:
        def __init__(self, n: int) -> None:
            self.n = n

        def get_seq_length(self) -> int:
            return self.n

        def crop(self, n: int) -> None:
            self.n = min(self.n, n)

    cache = PrefixCache(max_entries=2, min_reuse=4)
    assert common_prefix_len([1, 2, 3, 4], [1, 2, 9]) == 2
    cache.checkin(("p1", "base"), list(range(20)), FakeKV(30))
    kv, reused = cache.checkout(("p1", "base"), [*range(12), 99, 98], model=None)
    assert reused == 12 and kv.n == 12
    kv.n = 14 + 5  # generate appended the rest of the prompt and 5 new tokens
    cache.checkin(("p1", "base"), [*range(12), 99, 98], kv)
    assert kv.n == 14  # kept: the prompt only
    # A whole-prompt repeat reuses all but the last token (generate needs one to compute).
    kv, reused = cache.checkout(("p1", "base"), [*range(12), 99, 98], model=None)
    assert reused == 13
    # A cache that never reached the prompt's end (failed run) is not kept.
    cache.checkin(("p1", "base"), list(range(40)), kv)
    assert len(cache) == 0
    # Another adapter never sees this cache.
    cache.checkin(("p1", "base"), list(range(14)), FakeKV(20))
    _, reused = cache.checkout(("p1", "adapter"), list(range(14)), model=None)
    assert reused == 0
    # LRU: three patients, two entries.
    for pid in ("a", "b", "c"):
        cache.checkin((pid, "base"), list(range(10)), FakeKV(10))
    assert len(cache) == 2
    _, reused = cache.checkout(("a", "base"), list(range(10)), model=None)
    assert reused == 0
    # A token budget bounds memory too: a long prompt pushes older entries out.
    cache = PrefixCache(max_entries=4, min_reuse=4, max_total_tokens=100)
    cache.checkin(("a", "base"), list(range(60)), FakeKV(60))
    cache.checkin(("b", "base"), list(range(60)), FakeKV(60))
    assert len(cache) == 1 and cache.total_tokens() == 60
