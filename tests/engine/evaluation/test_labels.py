"""Label extraction on tricky answers: negations, labels inside the reasoning, Chinese."""

from __future__ import annotations

import pytest

from engine.evaluation.labels import SAD_CAUSES, extract_label, split_answer, target_from_question

DRQ = 'Consider this post: "..." Question: Does the poster suffer from depression?'
TB = 'Consider this post: "..." Question: Does the post show risk of thwarted belongingness?'
PB = 'Consider this post: "..." Question: Does the post show risk of perceived burdensomeness?'


def mwd(dim: str) -> str:
    return f'Consider this post: "I pray." Question: Does the {dim} wellness dimension exist in the post?'  # noqa: E501


@pytest.mark.parametrize(
    ("task", "answer", "question", "expected"),
    [
        # negations
        ("DR", "No, the poster does not suffer from depression.", DRQ, "no"),
        ("DR", "The poster does not suffer from depression.", DRQ, "no"),
        ("DR", "The poster shows no signs of depression at all.", DRQ, "no"),
        ("DR", "Based on the post, the poster isn't depressed.", DRQ, "no"),
        ("DR", "The poster is anxious, not depressed.", DRQ, "no"),
        ("DR", "Depression is absent from this post.", DRQ, "no"),
        ("dreaddit", "The poster seems to be under a lot of stress.", "", "yes"),
        ("dreaddit", "Without a doubt... no stress here, the poster is relaxed.", "", "no"),
        ("loneliness", "Yes. The poster feels lonely since moving.", "", "yes"),
        ("loneliness", "The poster is not lonely; they have many friends.", "", "no"),
        # the opening decides even when the reasoning mentions the opposite
        (
            "DR",
            "Yes, the poster suffers from depression. Reasoning: although the poster does not "
            "mention a diagnosis, there is no sign of joy.",
            DRQ,
            "yes",
        ),
        (
            "dreaddit",
            "No, the poster does not suffer from stress. Reasoning: The poster suffers from "
            "boredom, and stress is mentioned only as a past memory.",
            "",
            "no",
        ),
        # label only in the reasoning
        (
            "DR",
            "Let me look at this post carefully. Reasoning: The poster suffers from depression "
            "as shown by hopelessness.",
            DRQ,
            "yes",
        ),
        (
            "loneliness",
            "Here is my analysis. Reasoning: Overall, the poster does not experience loneliness.",
            "",
            "no",
        ),
        # hedges and rambling: no recognisable label
        ("DR", "It is not possible to determine whether the poster has depression.", DRQ, None),
        ("DR", "The poster talks about a trip to Spain and a new car.", DRQ, None),
        ("DR", "", DRQ, None),
        # Chinese answers
        ("DR", "是的，发帖者患有抑郁症。理由：他说自己很绝望。", DRQ, "yes"),
        ("DR", "不，发帖者没有抑郁症。", DRQ, "no"),
        ("DR", "发帖者没有表现出抑郁的迹象。", DRQ, "no"),
        ("dreaddit", "发帖者承受着很大的压力。", "", "yes"),
        ("loneliness", "该发帖者并不孤独。", "", "no"),
        ("DR", "无法判断发帖者是否患有抑郁症。", DRQ, None),
        # Irf: the risk named in the question decides
        ("Irf", "Yes, the post shows this risk.", TB, "yes"),
        ("Irf", "No, the post does not show this risk.", PB, "no"),
        ("Irf", "The post shows perceived burdensomeness.", PB, "yes"),
        ("Irf", "The post shows thwarted belongingness, not perceived burdensomeness.", PB, "no"),
        ("Irf", "The post shows thwarted belongingness, not perceived burdensomeness.", TB, "yes"),
        ("Irf", "The post shows perceived burdensomeness.", TB, None),
        # MultiWD: the dimension named in the question decides
        ("MultiWD", "Yes, this wellness dimension exists in the post.", mwd("spiritual"), "yes"),
        ("MultiWD", "No, this wellness dimension does not exist in the post.", mwd("social"), "no"),
        (
            "MultiWD",
            "The spiritual dimension is present: the poster prays.",
            mwd("spiritual"),
            "yes",
        ),
        ("MultiWD", "The social wellness dimension exists in the post.", mwd("spiritual"), None),
        ("MultiWD", "The post shows emotional wellness but not physical.", mwd("physical"), "no"),
        ("MultiWD", "The post shows emotional wellness but not physical.", mwd("emotional"), "yes"),
        ("MultiWD", "该帖子中不存在精神维度。", mwd("spiritual"), "no"),
    ],
)
def test_binary_extraction(task, answer, question, expected):
    assert extract_label(task, answer, question) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("This post shows the stress cause related to work.", "work"),
        ("This post shows other stress causes.", "other causes"),
        (
            "This post shows the stress cause related to emotion turmoil. Reasoning: ...",
            "emotion turmoil",
        ),
        ("The stress comes from financial problems: the rent went up.", "financial problem"),
        ("The stress is not related to school but to family issues.", "family issues"),
        ("The poster worries about her exams and grades.", "school"),
        (
            "I think the cause is unclear. Reasoning: Overall this post shows the stress cause "
            "related to health issues.",
            "health issues",
        ),
        ("I think the cause is unclear. Reasoning: her family and work are fine.", None),
        ("这篇帖子显示了与工作有关的压力原因。", "work"),
        ("压力来源于家庭问题。", "family issues"),
        ("The poster must make a hard decision about moving.", "everyday decision making"),
        ("Hello! How can I help you today?", None),
        # whole words only: "example" is not an exam, "current" has no rent in it
        ("This post is a classic example of a logical fallacy.", None),
        ("The current situation is frustrating.", None),
    ],
)
def test_sad_extraction(answer, expected):
    assert extract_label("SAD", answer) == expected


def test_every_sad_cause_round_trips():
    for cause in SAD_CAUSES:
        gold = (
            "This post shows other stress causes."
            if cause == "other causes"
            else f"This post shows the stress cause related to {cause}."
        )
        assert extract_label("SAD", gold) == cause


def test_targets_from_questions():
    assert target_from_question("Irf", TB).aspect == "thwarted belongingness"
    assert target_from_question("Irf", PB).aspect == "perceived burdensomeness"
    # the post itself mentioning "social" must not win over the question's dimension
    q = (
        'Consider this post: "my social life is fine" '
        "Question: Does the physical wellness dimension exist in the post?"
    )
    assert target_from_question("MultiWD", q).aspect == "physical"


def test_split_answer_and_unknown_task():
    assert split_answer("Yes. Reasoning: because.") == ("Yes.", "because.")
    assert split_answer("是的。理由：因为。") == ("是的。", "因为。")
    with pytest.raises(ValueError):
        extract_label("nope", "Yes")
