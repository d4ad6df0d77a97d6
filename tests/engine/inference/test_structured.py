"""The engine's layout, item rules, language masks and risk items, without a model.

A scripted ``run_segment`` stands in for the model: each blank gets the next scripted answer,
so the tests see exactly what the engine does with what a small model writes (a second line,
a missing full stop, an empty answer, a long label). tests/engine/inference/test_drafts_real.py
checks the same on the real embedded model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from engine.inference.analysis import parse_analysis
from engine.inference.constraints import TokenConstraint, token_allowed
from engine.inference.generation import GenerationStats
from engine.inference.structured import (
    StructuredDraft,
    clean_label,
    ensure_risk_items,
    requested_language,
    wants_short_label,
    write_item,
)
from engine.records import AnalysisDraft, Item

PASSIVE = (
    "Sometimes I think it would be easier if I just didn't wake up in the morning. "
    "I wouldn't do anything, but the thought is there."
)


class CharTokenizer:
    """One token per character (ids = code points): enough for prompts and constraints."""

    eos_token_id = 0
    all_special_ids = (0,)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return "".join(chr(i) for i in ids if i)

    def __len__(self) -> int:
        return 0x10000

    def convert_ids_to_tokens(self, ids):
        return [chr(i) if i else None for i in ids]

    def get_vocab(self):
        return {}


@dataclass
class ScriptedRun:
    chunks: list[str]
    stats: GenerationStats | None = None

    def __iter__(self):
        yield from self.chunks
        n = max(1, len("".join(self.chunks)))
        self.stats = GenerationStats(0.1, n, 10.0, 0.1 + n / 10, False, 5, 0)


@dataclass
class Script:
    answers: list[str]
    calls: list[tuple[list[int], int, TokenConstraint | None]] = field(default_factory=list)
    # The engine's one-token "another item or the section's end?" choices (max_new 1), in
    # order: True writes another item (the default), False ends the section.
    more: list[bool] = field(default_factory=list)
    choices: list[tuple[list[int], list[int]]] = field(default_factory=list)

    def __call__(self, ids, max_new, constraint, stop):
        self.calls.append((ids, max_new, constraint))
        if max_new == 1:
            allowed = (constraint.bias == 0).nonzero().flatten().tolist()
            self.choices.append((ids, allowed))
            more = next(i for i in allowed if chr(i).isdigit() or chr(i) == "\n")
            stop_id = next(i for i in allowed if i != more)
            chosen = more if (self.more.pop(0) if self.more else True) else stop_id
            return ScriptedRun([chr(chosen)] if chosen else [])
        text = self.answers.pop(0) if self.answers else ""
        # the run stops where the stop rule says (as GenerationRun's criteria do)
        out = ""
        for ch in text:
            out += ch
            if stop(out):
                break
        return ScriptedRun([out[i : i + 3] for i in range(0, len(out), 3)])


def draft(
    answers: list[str],
    statement: str = "I feel anxious at work.",
    lang="en",
    more: list[bool] | None = None,
    **kw,
):
    script = Script(list(answers), more=list(more or []))
    drafter = StructuredDraft(CharTokenizer(), script, [1, 2, 3], lang, statement, **kw)
    text = "".join(drafter.stream())
    return drafter, text, script


EN = [
    " Work-related anxiety disorder, with insomnia and more\n",
    " Her boss criticizes her work. Then more text",
    " She cannot sleep before meetings\n2. extra",  # no full stop: the engine ends it
    " Deadlines pile up.",
    " Explore her thoughts about criticism.",
    "",  # an empty blank is dropped before its number shows, and tried again
    " Practise relaxation before meetings.",
    " Plan the week with her.",
]


def test_the_engine_writes_the_layout_and_the_model_only_fills_blanks() -> None:
    drafter, text, script = draft(EN)
    assert text == (
        "Symptom type: Work-related anxiety disorder\n"
        "Reasons:\n1. Her boss criticizes her work.\n2. She cannot sleep before meetings.\n"
        "3. Deadlines pile up.\n"
        "Advice:\n1. Explore her thoughts about criticism.\n"
        "2. Practise relaxation before meetings.\n3. Plan the week with her."
    )
    d = drafter.draft
    assert d.symptom_type.text == "Work-related anxiety disorder"
    assert [i.text for i in d.reasons][1] == "She cannot sleep before meetings."
    assert len(d.advice) == 3 and d.raw_output == text
    # The tolerant parser reads the streamed text into the same draft.
    parsed = parse_analysis(text)
    assert parsed.symptom_type.text == d.symptom_type.text
    assert [i.text for i in parsed.reasons] == [i.text for i in d.reasons]
    assert [i.text for i in parsed.advice] == [i.text for i in d.advice]
    assert not parsed.unplaced
    # Every blank continues the same prompt: the prompt ids, then what was drafted so far.
    assert all(ids[:3] == [1, 2, 3] for ids, _, _ in script.calls)
    lengths = [len(ids) for ids, n, _ in script.calls if n != 1]  # blanks, not count choices
    assert lengths == sorted(lengths) and len(set(lengths)) == len(lengths) - 1  # retry: same
    # Later items must not repeat earlier ones (no-repeat n-grams), the first never may.
    blanks = [c for c in script.calls if c[1] != 1]
    assert blanks[1][2].avoid and blanks[2][2].avoid
    assert drafter.stats is not None and drafter.stats.tokens > 0


def test_the_model_may_end_a_section_after_two_items() -> None:
    """The count is the model's: after two items one token decides between the next number and
    what follows the section. A counselor who keeps two reasons can teach that (issue 17); a
    fixed three made one deletion per note that no adapter could learn away."""
    answers = [" Work stress", " Her boss criticizes her.", " She cannot sleep.", " Rest."]
    drafter, text, script = draft([*answers, " Plan the week."], more=[True, False, True, False])
    assert text == (
        "Symptom type: Work stress\n"
        "Reasons:\n1. Her boss criticizes her.\n2. She cannot sleep.\n"
        "Advice:\n1. Rest.\n2. Plan the week."
    )
    assert [len(drafter.draft.reasons), len(drafter.draft.advice)] == [2, 2]
    # Reasons: after "2. ...\n" the choice is "3" against the Advice heading's first token.
    (ids, allowed), (ids2, allowed2) = script.choices[1], script.choices[3]
    prefix = "Symptom type: Work stress\nReasons:\n1. Her boss criticizes her.\n"
    assert "".join(map(chr, ids[3:])) == prefix + "2. She cannot sleep.\n"
    assert sorted(allowed) == [ord("3"), ord("A")]
    # Advice: after its last item, a line break (another item) against the end of the answer.
    assert "".join(map(chr, ids2[3:])).endswith("Advice:\n1. Rest.\n2. Plan the week.")
    assert sorted(allowed2) == [0, ord("\n")]
    assert parse_analysis(text).reasons[1].text == "She cannot sleep."


def test_the_model_choosing_more_items_keeps_the_layouts_three() -> None:
    drafter, _text, script = draft(EN, more=[True, True])
    assert [len(drafter.draft.reasons), len(drafter.draft.advice)] == [3, 3]
    # after the first and second item of each section, and again before a blank left empty
    assert len(script.choices) == 5


def test_the_model_may_end_a_section_after_one_item() -> None:
    """Issue 17: a patient adapter wrote the counselor's closing homework line as advice 1 and
    was made to write a second item, so the counselor deleted the line and added it again at
    the end (two changes a note). After one item the model may now end the section."""
    answers = [" Low mood", " She cannot sleep.", " Homework: write down one thing a day."]
    drafter, text, script = draft(answers, more=[False, False])
    assert text == (
        "Symptom type: Low mood\nReasons:\n1. She cannot sleep.\n"
        "Advice:\n1. Homework: write down one thing a day."
    )
    assert [len(drafter.draft.reasons), len(drafter.draft.advice)] == [1, 1]
    assert sorted(script.choices[0][1]) == [ord("2"), ord("A")]
    assert sorted(script.choices[1][1]) == [0, ord("\n")]


def test_a_short_label_is_asked_for_by_comment_and_held() -> None:
    drafter, _, _ = draft(EN, short_label=True)
    assert drafter.draft.symptom_type.text == "Work-related anxiety disorder"  # 3 words
    long = [" Chronic severe generalized anxiety disorder at work", *EN[1:]]
    drafter, _, _ = draft(long, short_label=True)
    assert len(drafter.draft.symptom_type.text.split()) <= 3
    drafter, _, _ = draft(long)
    assert len(drafter.draft.symptom_type.text.split()) <= 6
    assert wants_short_label(["Use a short diagnostic label"])
    assert wants_short_label(["简短一点"]) and not wants_short_label(["mention sleep"])


def test_chinese_drafts_use_chinese_headings_and_full_stops() -> None:
    answers = [
        "学业焦虑，伴有失眠",
        "复读压力很大",
        "父母期望高。",
        "担心考不上大学。",
        "调整作息",
        "学习放松方法。",
        "与父母沟通。",
    ]
    _, text, _ = draft(answers, "我是一名复读生，考试前很紧张。", lang="zh")
    assert text.startswith("症状类型：学业焦虑\n原因：\n1.复读压力很大。\n2.父母期望高。")
    assert "\n建议：\n1.调整作息。" in text
    parsed = parse_analysis(text)
    assert parsed.symptom_type.text == "学业焦虑" and len(parsed.reasons) == 3


def test_a_flagged_statement_gets_the_engine_risk_item_first_in_advice() -> None:
    drafter, text, _ = draft(EN, PASSIVE)
    first = drafter.draft.advice[0]
    assert first.inserted_by == "risk:suicide_self_harm"
    assert "didn't wake up in the morning" in first.text and "Assess suicide" in first.text
    assert len(drafter.draft.advice) == 4  # the engine's item plus three of the model's
    assert "Advice:\n1. Safety first" in text
    # Chinese statement: the item is in Chinese and quotes the Chinese evidence.
    items = ensure_risk_items(
        AnalysisDraft(), "有时候我觉得活着没意思，不如死了算了。", "zh"
    ).advice
    assert items[0].text.startswith("安全优先") and "不如死了算了" in items[0].text


def test_invalid_utf8_from_the_model_is_neither_shown_nor_saved() -> None:
    """The embedded model sometimes emits a byte sequence that is not UTF-8 (seen in Chinese
    drafts as a replacement character inside a word)."""
    answers = [
        " 学业压\ufffd力\n",
        " 她担心社会关系和\ufffd外貌。\n",
        " 成绩下降。\n",
        " 睡眠变差。\n",
        " 与父母谈\ufffd谈。\n",
        " 规律作息。\n",
        " 和老师沟通。\n",
    ]
    drafter, text, _ = draft(answers, "最近压力很大。", "zh")
    items = [drafter.draft.symptom_type, *drafter.draft.reasons, *drafter.draft.advice]
    assert "\ufffd" not in text
    assert all("\ufffd" not in i.text for i in items)
    assert drafter.draft.symptom_type.text == "学业压力"
    assert any(i.text.startswith("她担心社会关系和外貌") for i in drafter.draft.reasons)


def test_the_risk_item_quotes_every_flagged_sentence_of_its_category() -> None:
    """Seen in a tmux run: a Chinese statement with two flagged sentences got a safety item
    quoting only the first (school avoidance), not the one about disappearing."""
    statement = (
        "I have been skipping classes a lot. It would be easier if I just didn't wake up in the "
        "morning. Last week I looked up how many of my wife's sleeping pills it would take."
    )
    from engine.trust.risk import assess

    evidence = [f.evidence for f in assess(statement) if f.category == "suicide_self_harm"]
    assert len(evidence) >= 2
    [item] = ensure_risk_items(AnalysisDraft(), statement, "en").advice
    for sentence in evidence[:3]:
        assert f'"{sentence}' in item.text or f'and "{sentence}' in item.text
    assert item.text.count("Safety first") == 1 and "Assess suicide" in item.text
    zh = "晚上躺在床上想，如果我消失了，爸妈是不是会轻松一点。我已经查了要吃多少片安眠药才够。"
    [item_zh] = ensure_risk_items(AnalysisDraft(), zh, "zh").advice
    assert "”和“" in item_zh.text and item_zh.text.startswith("安全优先：来访者说“")


def test_model_text_cannot_remove_the_risk_item_but_the_counselor_can() -> None:
    # Whatever the model wrote (here: nothing about risk), the parsed draft gets the item.
    parsed = parse_analysis("Symptom type: Low mood\nReasons:\n1. A\n2. B\nAdvice:\n1. C\n2. D")
    draft_ = ensure_risk_items(parsed, PASSIVE, "en")
    assert draft_.advice[0].inserted_by == "risk:suicide_self_harm"
    assert ensure_risk_items(draft_, PASSIVE, "en").advice == draft_.advice  # idempotent
    # The counselor deletes it: recorded on the draft and kept through a save (JSON).
    draft_.advice[0].deleted = True
    assert draft_.removed_engine_items == ["risk:suicide_self_harm"]
    saved = AnalysisDraft.model_validate_json(draft_.model_dump_json())
    assert saved.removed_engine_items == ["risk:suicide_self_harm"]
    # A regenerate of that draft does not bring it back silently: it stays deleted.
    again = ensure_risk_items(AnalysisDraft(), PASSIVE, "en", previous=saved)
    assert again.advice[0].deleted and again.removed_engine_items == ["risk:suicide_self_harm"]
    # An unflagged statement gets nothing.
    assert ensure_risk_items(AnalysisDraft(), "I feel anxious at work.", "en").advice == []


def test_a_deleted_risk_item_is_not_written_into_the_regenerated_text() -> None:
    previous = ensure_risk_items(AnalysisDraft(), PASSIVE, "en")
    previous.advice[0].deleted = True
    drafter, text, _ = draft(EN, PASSIVE, previous=previous)
    assert "Safety first" not in text
    assert drafter.draft.advice[0].deleted and drafter.draft.advice[1].text.startswith("Explore")


def test_regenerating_one_item_streams_only_its_text() -> None:
    script = Script([" Exam anxiety, mostly at night\n"])
    out = "".join(write_item(CharTokenizer(), script, [1], "en", "symptom_type"))
    assert out == "Exam anxiety"
    script = Script([" Ask about her sleep\nmore"])
    out = "".join(write_item(CharTokenizer(), script, [1], "en", "reasons"))
    assert out == "Ask about her sleep."


@pytest.mark.parametrize(
    ("comments", "lang"),
    [
        (["Please write this in Chinese"], "zh"),
        (["用中文"], "zh"),
        (["rewrite in English"], "en"),
        (["mention sleep"], None),
    ],
)
def test_a_comment_can_ask_for_a_language(comments, lang) -> None:
    assert requested_language(comments) == lang


def test_labels_are_cut_at_the_first_clause() -> None:
    assert clean_label(" Anxiety (work-related), insomnia", "en", 6) == "Anxiety"
    assert clean_label("学业焦虑，失眠", "zh", 6) == "学业焦虑"


@pytest.mark.parametrize(
    ("piece", "en", "zh"),
    [
        (b" anxiety", True, False),
        ("焦虑".encode(), False, True),
        ("焦".encode()[:2], False, True),  # the first two bytes of a CJK character
        ("焦".encode()[2:], False, True),  # its last byte
        ("，".encode(), False, True),
        (b"123", True, False),  # digit strings are how a 135M model's Chinese degenerates
        ("é".encode()[:1], False, False),  # the lead byte of a Latin letter
        ("’".encode(), True, True),
    ],
)
def test_tokens_are_judged_by_their_bytes(piece: bytes, en: bool, zh: bool) -> None:
    assert token_allowed(piece, "en") is en
    assert token_allowed(piece, "zh") is zh


def test_risk_item_marks_a_parsed_copy_of_its_own_text() -> None:
    item = ensure_risk_items(AnalysisDraft(), PASSIVE, "en").advice[0]
    parsed = AnalysisDraft(advice=[Item(text=item.text), Item(text="Other.")])
    out = ensure_risk_items(parsed, PASSIVE, "en")
    assert len(out.advice) == 2 and out.advice[0].inserted_by == "risk:suicide_self_harm"


def test_a_label_that_cleans_to_nothing_is_tried_again_with_its_start_banned() -> None:
    drafter, text, script = draft([" (", *EN])
    assert drafter.draft.symptom_type.text == "Work-related anxiety disorder"
    assert ord("(") in script.calls[1][2].first_banned
    assert text.startswith("Symptom type: Work-related anxiety disorder\n")


def test_a_reason_may_open_with_a_quotation_mark_and_the_engine_closes_it() -> None:
    """Issue 17: a counselor who writes reasons as the client's quoted words trains an adapter
    that opens a reason with a quotation mark; the item rule banned every punctuation token as
    an item's first token, so the adapter could never write the quote. Opening marks are now
    allowed for reasons (not for the label or advice, which speaks to the client), other
    punctuation stays banned, and an item that stops after the quoted sentence's full stop
    gets its closing mark."""
    answers = [" Low mood", ' "I feel empty most days. More', " Isolation.", " Walk.", " Rest."]
    drafter, _text, script = draft(answers, more=[True, False, True, False])
    assert [i.text for i in drafter.draft.reasons] == ['"I feel empty most days."', "Isolation."]
    blanks = [c[2] for c in script.calls if c[1] != 1]  # label, 2 reasons, 2 advice items
    label, reason, advice = blanks[0], blanks[1], blanks[3]
    assert ord('"') in label.first_banned  # a label still cannot start with one
    assert ord('"') not in reason.first_banned and ord("“") not in reason.first_banned
    assert ord("(") in reason.first_banned and ord(".") in reason.first_banned
    assert ord('"') in advice.first_banned and ord("“") in advice.first_banned
