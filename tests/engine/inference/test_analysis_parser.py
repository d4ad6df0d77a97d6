"""The Analysis parser on a corpus of messy model outputs (English and Chinese).

Each case states the exact structure expected; every case also checks that no text is lost:
each word (Latin) and each ideograph of the input is either in a parsed item or part of the
markup (heading words, numbering).
"""

from __future__ import annotations

import re

import pytest

from engine.inference.analysis import (
    HEADING_WORDS,
    match_heading,
    parse_analysis,
    parse_item_text,
    strip_leading_marker,
)

# (name, text, symptom, reasons, advice, unplaced)
CORPUS: list[tuple[str, str, str, list[str], list[str], list[str]]] = [
    (
        "exact-en",
        "Symptom type: Exam anxiety\nReasons:\n1. High parental expectations\n"
        "2. Failed the exam last year\nAdvice:\n1. Cognitive behavioural therapy\n2. Sleep hygiene",
        "Exam anxiety",
        ["High parental expectations", "Failed the exam last year"],
        ["Cognitive behavioural therapy", "Sleep hygiene"],
        [],
    ),
    (
        "exact-zh",
        "症状类型：学业焦虑\n原因：\n1. 学业压力大\n2. 父母期望高\n"
        "建议：\n1. 认知行为疗法\n2. 调整作息",
        "学业焦虑",
        ["学业压力大", "父母期望高"],
        ["认知行为疗法", "调整作息"],
        [],
    ),
    (
        "paren-and-dun-numbering",
        "Symptom type: Insomnia\nReasons:\n1) Work stress\n2) Caffeine late at night\n"
        "Advice:\n1、Stop coffee after noon\n2、Keep a sleep diary",
        "Insomnia",
        ["Work stress", "Caffeine late at night"],
        ["Stop coffee after noon", "Keep a sleep diary"],
        [],
    ),
    (
        "bracketed-and-circled-zh",
        "症状类型：抑郁情绪\n原因：\n(1) 失业\n（2）人际关系紧张\n"
        "建议：\n① 规律运动\n② 寻求社会支持\n③ 心理治疗",
        "抑郁情绪",
        ["失业", "人际关系紧张"],
        ["规律运动", "寻求社会支持", "心理治疗"],
        [],
    ),
    (
        "markdown-bold-headings",
        "**Symptom type:** Generalised anxiety\n\n**Reasons:**\n- Constant worry about money\n"
        "- Poor sleep\n\n**Advice:**\n* Relaxation training\n* Budget planning with a counselor",
        "Generalised anxiety",
        ["Constant worry about money", "Poor sleep"],
        ["Relaxation training", "Budget planning with a counselor"],
        [],
    ),
    (
        "markdown-hash-headings-zh",
        "### 症状类型\n社交焦虑\n### 分析\n• 性格内向\n• 缺乏社交经验\n"
        "### 建议\n• 社交技能训练\n• 逐步暴露",
        "社交焦虑",
        ["性格内向", "缺乏社交经验"],
        ["社交技能训练", "逐步暴露"],
        [],
    ),
    (
        "preamble-and-closing-prose",
        "Sure! Here is my analysis of the client.\n\nSymptom type: Grief\nReasons:\n"
        "1. Recent loss of her mother\n2. Isolation\nAdvice:\n1. Grief counseling\n\n"
        "I hope this helps the counselor.",
        "Grief",
        ["Recent loss of her mother", "Isolation"],
        ["Grief counseling"],
        ["Sure! Here is my analysis of the client.", "I hope this helps the counselor."],
    ),
    (
        "missing-symptom",
        "Reasons:\n1. Conflict with partner\n2. Long working hours\nAdvice:\n1. Couples session",
        "",
        ["Conflict with partner", "Long working hours"],
        ["Couples session"],
        [],
    ),
    (
        "missing-advice-zh",
        "症状类型：强迫症状\n原因：\n1、完美主义\n2、焦虑的应对方式",
        "强迫症状",
        ["完美主义", "焦虑的应对方式"],
        [],
        [],
    ),
    (
        "no-structure-at-all",
        "The client seems tired and sad. She should talk to someone she trusts.",
        "",
        [],
        [],
        ["The client seems tired and sad. She should talk to someone she trusts."],
    ),
    (
        "inline-numbered-zh",
        "症状类型：学业焦虑\n原因：1、学业压力；2、家庭期望；3、自我要求过高\n建议：1、放松训练；2、家庭会谈",
        "学业焦虑",
        ["学业压力", "家庭期望", "自我要求过高"],
        ["放松训练", "家庭会谈"],
        [],
    ),
    (
        "wrapped-item-lines",
        "Symptom type: Panic attacks\nReasons:\n1. Sudden heart racing in crowded places,\n"
        "   which she reads as a heart attack\n2. Avoidance keeps the fear alive\n"
        "Advice:\n1. Psychoeducation about panic",
        "Panic attacks",
        [
            "Sudden heart racing in crowded places, which she reads as a heart attack",
            "Avoidance keeps the fear alive",
        ],
        ["Psychoeducation about panic"],
        [],
    ),
    (
        "prose-inside-section",
        "Symptom type: Burnout\nReasons:\nThere are several reasons.\n"
        "1. Overwork\n2. No holidays\n\n"
        "These reasons interact.\nAdvice:\n1. Take leave",
        "Burnout",
        ["Overwork", "No holidays"],
        ["Take leave"],
        ["There are several reasons.", "These reasons interact."],
    ),
    (
        "plain-lines-no-numbers",
        "Symptom type: Loneliness\nReasons:\nMoved to a new city\nNo friends at work\n"
        "Advice:\nJoin a club\nCall family weekly",
        "Loneliness",
        ["Moved to a new city", "No friends at work"],
        ["Join a club", "Call family weekly"],
        [],
    ),
    (
        "numbered-sections-zh",
        "一、症状类型：睡眠障碍\n二、原因分析\n1. 工作压力\n2. 作息不规律\n"
        "三、咨询建议\n1. 睡眠卫生教育",
        "睡眠障碍",
        ["工作压力", "作息不规律"],
        ["睡眠卫生教育"],
        [],
    ),
    (
        "bracket-headings-zh",
        "【症状类型】人际关系困扰\n【原因】\n1. 沟通方式不当\n【建议】\n1. 沟通技巧训练",
        "人际关系困扰",
        ["沟通方式不当"],
        ["沟通技巧训练"],
        [],
    ),
    (
        "synonym-headings-en",
        "Diagnosis - Adjustment disorder\nPossible causes:\n1. Divorce\n2. New school\n"
        "Recommendations:\n1. Supportive therapy\n2. Parent guidance",
        "Adjustment disorder",
        ["Divorce", "New school"],
        ["Supportive therapy", "Parent guidance"],
        [],
    ),
    (
        "mixed-language-and-extra-symptom",
        "Symptom type: 学业焦虑\nSymptom type: exam stress\n"
        "Reasons:\n1. 复读压力\nAdvice:\n1. 放松训练",
        "学业焦虑",
        ["复读压力"],
        ["放松训练"],
        ["exam stress"],
    ),
    (
        "decimal-is-not-numbering",
        "Symptom type: Insomnia\nReasons:\n1. Sleeps only 4.5 hours\n2. Screens in bed\n"
        "Advice:\n1. 7.5 hours in bed, fixed wake time",
        "Insomnia",
        ["Sleeps only 4.5 hours", "Screens in bed"],
        ["7.5 hours in bed, fixed wake time"],
        [],
    ),
    (
        "qualified-headings",
        "Symptom type: Test anxiety\nReasons for her anxiety:\n1. Perfectionism\n"
        "Advice for the counselor:\n1. Explore her beliefs about failure",
        "Test anxiety",
        ["Perfectionism"],
        ["Explore her beliefs about failure"],
        [],
    ),
    (
        "empty-output",
        "",
        "",
        [],
        [],
        [],
    ),
]

_MARKUP_WORDS = {w for words in HEADING_WORDS.values() for w in words}


def _latin_words(text: str) -> list[str]:
    return [w.lower() for w in re.findall(r"[A-Za-z]{3,}", text)]


def _ideographs(text: str) -> list[str]:
    return re.findall(r"[\u4e00-\u9fff]", text)


def assert_nothing_lost(text: str, draft) -> None:
    parsed = " ".join(
        [draft.symptom_type.text] + [i.text for i in draft.reasons + draft.advice + draft.unplaced]
    )
    parsed_words = set(_latin_words(parsed))
    markup_latin = {w for phrase in _MARKUP_WORDS for w in _latin_words(phrase)}
    # A line that is only a heading ("Reasons for her anxiety:") is markup as a whole.
    text = "\n".join(
        line
        for line in text.splitlines()
        if (h := match_heading(line)) is None or h.inline or len(line) > 48
    )
    for word in _latin_words(text):
        assert word in parsed_words or word in markup_latin, f"lost {word!r}"
    parsed_chars = set(_ideographs(parsed))
    markup_chars = {c for phrase in _MARKUP_WORDS for c in _ideographs(phrase)}
    markup_chars |= set("一二三四五六七八九十")  # Chinese ordinals of numbered headings
    for ch in _ideographs(text):
        assert ch in parsed_chars or ch in markup_chars, f"lost {ch!r}"


@pytest.mark.parametrize(
    ("name", "text", "symptom", "reasons", "advice", "unplaced"),
    CORPUS,
    ids=[c[0] for c in CORPUS],
)
def test_corpus(name, text, symptom, reasons, advice, unplaced) -> None:
    draft = parse_analysis(text)
    assert draft.symptom_type.text == symptom
    assert [i.text for i in draft.reasons] == reasons
    assert [i.text for i in draft.advice] == advice
    assert [i.text for i in draft.unplaced] == unplaced
    assert draft.raw_output == text
    assert_nothing_lost(text, draft)


def test_corpus_is_big_enough() -> None:
    assert len(CORPUS) >= 15
    assert sum(1 for c in CORPUS if _ideographs(c[1])) >= 6


def test_items_keep_the_model_original() -> None:
    draft = parse_analysis("Symptom type: Anxiety\nReasons:\n1. Exams\nAdvice:\n1. Rest")
    for item in [draft.symptom_type, *draft.reasons, *draft.advice]:
        assert item.draft == item.text
        assert not item.edited
    assert len({i.id for i in draft.reasons + draft.advice}) == 2


def test_model_name_is_recorded() -> None:
    assert parse_analysis("Symptom type: x", model_name="m · base").model_name == "m · base"


def test_prose_that_starts_like_a_heading_is_not_one() -> None:
    text = "Reasonable people differ.\nSymptoms of stress are common."
    draft = parse_analysis(text)
    assert draft.reasons == []
    assert draft.symptom_type.text == ""
    assert [i.text for i in draft.unplaced] == [
        "Reasonable people differ. Symptoms of stress are common."
    ]


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("2. Academic pressure from her parents", "Academic pressure from her parents"),
        ("Reason 2: Academic pressure", "Reason 2: Academic pressure"),
        ("Reasons: Academic pressure", "Academic pressure"),
        ("原因：学业压力过大", "学业压力过大"),
        ("① 放松训练\n每天两次", "放松训练每天两次"),
        ('"Use a sleep diary."', "Use a sleep diary."),
        ("", ""),
    ],
)
def test_parse_item_text(raw: str, clean: str) -> None:
    assert parse_item_text(raw) == clean


def test_strip_leading_marker_keeps_trailing_space() -> None:
    # Streaming: the held-back head must keep its trailing space for the next chunk.
    assert strip_leading_marker("2. Academic pressure from ") == "Academic pressure from "
    assert strip_leading_marker("原因：学业") == "学业"
    assert strip_leading_marker("No marker here ") == "No marker here "


def test_loss_check_itself_catches_a_dropped_item() -> None:
    text = CORPUS[1][1]
    draft = parse_analysis(text)
    draft.reasons.pop()
    with pytest.raises(AssertionError, match="lost"):
        assert_nothing_lost(text, draft)
