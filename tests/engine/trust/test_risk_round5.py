"""Issue 18 item 8, fifth round: concept rules read off the round's dev posts (``en_s`` /
``zh_s``) and checked for false flags on every IMHI *train* / *val* no-disorder post, and two
false-flag fixes that generalise.

* Method research as a concept: a verb of reading, searching or watching followed by what is
  lethal, the least painful way, how long it takes to lose consciousness, hanging oneself.
* Accepting death ("I wouldn't mind dying", "an excuse to die"); an object used on one's own
  body ("used the glass on my arm"), banging one's own head against a wall; forum shorthand
  "I attempted (in April)"; a conditional goodbye ("if I'm not here next week"); "just taking
  up space"; Chinese pills swallowed all at once or hoarded (攒了好几个月的药), a body part
  scratched or cut with a named object (用指甲把胳膊抓得全是血).
* Chinese everyday strain as hyperbole: "V得(我)想死" of tiredness, heat, work (累得想死,
  这个项目做得我想死) is not risk; pain or despair (难受得想死) still is.
* A stranger in the news is someone else: 一名大学生在宿舍自杀, 某明星自杀了 (not "我是一名学生").
* The classifier does not flag going away for a while ("disappear to a cabin for a month").

Every sentence here is written for the test: none is a test-split sentence and none is copied
from the dev posts (the same concepts, other words). Flags keep their quoted evidence.
"""

from __future__ import annotations

import pytest

from engine.trust.risk import assess, assess_rules

S = "suicide_self_harm"


def suicide_flags(text: str, rules_only: bool = False):
    flags = assess_rules(text) if rules_only else assess(text)
    return [f for f in flags if f.category == S]


# (text, words the flag must quote)
NEW_RISK = [
    ("i've been researching fatal doses of my antidepressants all week", "fatal doses"),
    ("found a forum thread last week about the least painful options and i saved it", "painful"),
    ("been looking up the least painful method for weeks now", "least painful method"),
    ("I watched a clip about hanging yourself and how quickly it works.", "hanging yourself"),
    ("honestly i wouldn't even mind dying in a car crash on the way home", "mind dying"),
    ("Part of me wants the flu to get worse, it would be an excuse to die.", "excuse to die"),
    ("I took my dad's razor to my thigh again after dinner.", "razor to my thigh"),
    ("used a broken glass on my forearm last night, nobody knows", "on my forearm"),
    ("When it gets loud in my head I keep banging my head against the wall.", "my head"),
    ("I've attempted twice since I turned 20 and nobody in my family knows.", "attempted"),
    ("If I'm not around tomorrow, please look after my dog.", "not around tomorrow"),
    ("I'm just taking up space in this house.", "taking up space"),
    ("安眠药我都藏在抽屉里，今晚想一口气全吃了。", "一口气全吃"),
    ("今晚打算把一整瓶药一次性全吃了。", "一次性全吃"),
    ("我又用指甲把手臂抓出血了。", "用指甲把手臂抓"),
    ("她说自己昨晚用剪刀划了大腿。", "用剪刀划"),
]


@pytest.mark.parametrize(("text", "quoted"), NEW_RISK)
def test_round5_concepts_flag_with_their_evidence(text, quoted):
    flags = suicide_flags(text, rules_only=True)
    assert flags, text
    f = flags[0]
    assert f.evidence == text[f.start : f.end] and f.evidence.strip()
    assert quoted in text[f.phrase_start : f.phrase_end] or quoted in f.evidence, (quoted, f)


NOT_RISK = [
    # the new rules' near misses
    "I attempted to fix the sink myself and flooded the kitchen.",
    "We attempted the hike twice before the weather let us finish.",
    "My pharmacology lecture was about lethal doses of paracetamol today.",
    "I wouldn't mind a nap after this shift.",
    "He kept slamming my head against the wall until the neighbours called the police.",
    "i finished the whole course of antibiotics, feeling better",
    "医生让我把药全部吃完，我今天终于吃完了一个疗程。",
    # Chinese hyperbole of everyday strain
    "今天搬家累得想死，腰都直不起来了。",
    "这篇论文写得我想死，导师又让重写。",
    "热得想死，空调还坏了。",
    # a stranger in the news is someone else
    "新闻说一名高中生在学校自杀了，好心疼他的家人。",
    "某歌手因抑郁症自杀了，我看到消息难过了一整天。",
]


@pytest.mark.parametrize("text", NOT_RISK)
def test_round5_near_misses_are_not_flagged(text):
    assert not suicide_flags(text, rules_only=True), text


STILL_RISK = [
    "难受得想死，每天晚上都睡不着。",
    "我是一名大学生，最近总想自杀。",
    "作为一个母亲我不该这么想，但我真的想死。",
    "i want to disappear forever",
    # going away, but with a word of death or not waking: the classifier's flag stands
    "sometimes i want to disappear for a while and not wake up",
    "I want to disappear into the woods for a few weeks and never come back.",
]


@pytest.mark.parametrize("text", STILL_RISK)
def test_round5_fixes_keep_the_writers_own_risk(text):
    assert suicide_flags(text), text


def test_going_away_for_a_while_is_not_a_classifier_flag():
    text = "some days i just want to disappear to a little cabin in the mountains for a month"
    assert not suicide_flags(text)


def test_chinese_self_criticism_is_not_a_classifier_flag():
    """The Chinese weights score self-criticism as high as risk; with no word of death,
    living, means, harm, ending, absence or burden it is not a flag (the shipped classifier
    flagged this sentence before the gate)."""
    text = "开会的时候我又说错话了，回家一直在想自己哪里做得不对。"
    assert not suicide_flags(text)


@pytest.mark.parametrize(
    "text",
    [
        # self-criticism with a word of living and burden: the classifier's flag stands
        "我觉得自己很没用，活着只会拖累家里人。",
        "我觉得自己什么都做不好。最近总想一个人去江边，从桥上跳下去。",
    ],
)
def test_chinese_self_criticism_beside_risk_still_flags(text):
    flags = suicide_flags(text)
    assert flags, text
    assert all(f.evidence == text[f.start : f.end] for f in flags)
