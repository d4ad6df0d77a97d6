"""Issue 18 item 8: someone else's suicide or self-harm is not the client's risk flag, and the
rules reach preparation, method research and passive-ideation phrasings they used to miss.

The false flags came from real forum posts (IMHI *val*, no-disorder): a relative's attempt or
death ("my mother tried to commit suicide") flagged the poster. A counselor's third-person note
about the client ("she says she doesn't want to live") must still flag, so only a relation with a
possessor (my mother, 我表哥) or a generic "people" makes it someone else's, never a pronoun.
"""

from __future__ import annotations

import pytest

from engine.trust.risk import assess, assess_rules

S = "suicide_self_harm"


def suicide_rule_flags(text: str):
    return [f for f in assess_rules(text) if f.category == S]


SOMEONE_ELSE = [
    "My brother overdosed at a party two years ago.",
    "Last spring my best friend's dad killed himself.",
    "Their son was cutting again, the school told them.",
    "That forum encourages people to harm themselves.",
    "我同学的哥哥去年跳楼了。",
    "我姑姑年轻时自杀过一次。",
]

STILL_THE_CLIENT = [
    "She says her ex hit her and now she doesn't want to live.",
    "He told his sister he has been cutting again.",
    "My brother found me after I overdosed.",
    "My friend says I talk about wanting to die a lot.",
    "她说她上个月试过自杀，被室友发现送去了医院。",
    "我妈妈知道我割腕了。",
]


@pytest.mark.parametrize("text", SOMEONE_ELSE)
def test_someone_elses_suicide_is_not_flagged(text):
    assert not [f for f in assess(text) if f.category == S], text


@pytest.mark.parametrize("text", STILL_THE_CLIENT)
def test_the_clients_own_risk_still_flags(text):
    assert suicide_rule_flags(text), text


# Phrasings of the kinds the rules missed on the dev sentences and IMHI Irf dev posts
# (preparation, method research, passive ideation, urges), written anew for this test.
NEW_REACH = [
    ("I've been getting my affairs in order so nobody has to sort anything out.", "my affairs"),
    ("Yesterday I looked at the quickest ways to die.", "quickest ways to die"),
    ("From the balcony I caught myself working out how far the drop is.", "how far the drop"),
    ("Every night I ask God to take me.", "ask God to take me"),
    ("I've lost the will to live.", "will to live"),
    ("Two years ago I made an attempt on my life.", "attempt on my life"),
    ("Tonight I felt like cutting.", "felt like cutting"),
    ("I've decided this is my last Christmas.", "my last Christmas"),
    ("I looked up how much it would take to never wake up.", "never wake up"),
    ("我最近一直在网上查各种死法。", "死法"),
    ("要是心跳就这么停了，我倒觉得是种解脱。", "解脱"),
    ("想拿小刀的冲动越来越强。", "的冲动"),
]


@pytest.mark.parametrize(("text", "words"), NEW_REACH)
def test_new_phrasings_flag_with_the_words_quoted(text, words):
    flags = suicide_rule_flags(text)
    assert flags, text
    flag = flags[0]
    assert flag.evidence == text.strip()
    assert words in text[flag.phrase_start : flag.phrase_end]


@pytest.mark.parametrize(
    "text",
    [
        "This is my last Christmas in London before we move.",
        "I'm getting my affairs in order before the surgery.",
        "I feel like cutting back on coffee.",
        "想抽烟的冲动越来越强。",
    ],
)
def test_their_everyday_lookalikes_do_not_flag(text):
    assert not suicide_rule_flags(text), text


# Chinese self-criticism and social anxiety are not suicide risk: the drafts bench's zh06 and
# the sentence noted in issue 18 were flagged by the shipped sentence classifier (scores 0.91 and
# 0.80 at its Chinese threshold 0.62). Refits that fixed them lost Chinese test recall (SECURITY.md
# "Risk flag quality"); since issue 18's fifth round a gate on the classifier's Chinese flags
# (risk_rules.json classifier_gate zh_self_critical: self-criticism with no word of death,
# living, means, harm, ending, absence or burden) drops them, and risk beside them still flags.
KNOWN_CHINESE_FALSE_FLAGS = [
    "每次要在会上发言我就心跳加速、手心出汗，说话结结巴巴，事后会反复回想自己哪里说得不好。",
    "每次要在会上发言我就心跳加速、手心出汗……事后会反复回想自己哪里说得不好。",
    "我觉得自己什么都做不好",
    "我觉得自己什么都做不好。",
]


@pytest.mark.parametrize("text", KNOWN_CHINESE_FALSE_FLAGS)
def test_chinese_self_criticism_is_not_flagged(text):
    assert not [f for f in assess(text) if f.category == S], text


def test_chinese_risk_next_to_self_criticism_still_flags():
    text = "我觉得自己什么都做不好。有时候真想一睡不醒。"
    flags = [f for f in assess(text) if f.category == S]
    assert [f.evidence for f in flags] == ["有时候真想一睡不醒。"]


def test_chinese_risk_next_to_self_criticism_is_quoted():
    text = "我觉得自己什么都做不好。有时候真想一睡不醒。"
    flags = [f for f in assess(text) if f.category == S]
    assert "有时候真想一睡不醒。" in [f.evidence for f in flags]
