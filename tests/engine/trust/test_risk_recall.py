"""Issue 18 item 8: passive ideation and method research flag, with quoted evidence;
the rule tables are data shipped with the package (risk_rules.json)."""

from __future__ import annotations

import importlib.resources
import json

import pytest

from engine.trust import risk
from engine.trust.risk import assess

QUOTED = [
    "it would be easier if I just didn't wake up in the morning",
    "I wish I could just not wake up",
    "I wish I could just disappear",
    "last week I looked up how many of my wife's sleeping pills it would take",
    "要是明天早上醒不过来就好了。",
    "真希望睡着了就再也不要醒来。",
    "我真想就这么消失，谁也找不到我。",
    "上周我查了一下要吃多少片我妻子的安眠药才够。",
]

NOT_RISK = [
    "I didn't wake up in time for my exam and I'm furious with myself.",
    "I wish I could just disappear to a beach for a week and forget about work emails.",
    "I looked up how many calories are in a bagel, it would take an hour to burn off.",
    "I never wish I could just not wake up; mornings are my favourite time.",
    "我今天早上没醒过来，迟到了。",
    "我查了一下这个药要吃多少片，医生说一次两片。",
]


@pytest.mark.parametrize("text", QUOTED)
def test_quoted_phrasings_flag_with_evidence(text):
    flags = [f for f in assess(f"Client said: {text} Then we talked about work.") if True]
    flags = [f for f in flags if f.category == "suicide_self_harm"]
    assert flags, f"no flag for {text!r}"
    flag = flags[0]
    assert text.strip("。").strip() in flag.evidence or flag.evidence in f"Client said: {text}"
    assert flag.phrase_start >= 0 and flag.phrase_end > flag.phrase_start


@pytest.mark.parametrize("text", NOT_RISK)
def test_near_misses_do_not_flag(text):
    assert not [f for f in assess(text) if f.category == "suicide_self_harm"], text


def test_rules_are_data_shipped_with_the_package():
    text = importlib.resources.files("engine.trust").joinpath(risk.RULES_FILE).read_text("utf-8")
    doc = json.loads(text)
    assert {r["id"] for r in doc["rules"]} == {r.id for r in risk._RULES}
    # a rule table built from data behaves as the shipped one
    extra = dict(
        doc,
        rules=[
            *doc["rules"],
            {
                "id": "en.test_only",
                "lang": "en",
                "category": "violence",
                "severity": "low",
                "negatable": False,
                "pattern": r"\bzebra\s+{{PEOPLE}}",
            },
        ],
    )
    rules = risk.load_rules(extra)
    assert rules[-1].pattern.search("I will zebra my boss")
