"""Issue 18 item 8, sixth round: the whole-statement probe (engine/trust/risk_probe.py) on
the real embedded model.

The posts are dev posts (data/risk_sentences/en_v.tsv, zh_v.tsv): risk told without a word
the rules or the sentence classifier react to. The probe's figures on the held-out test
split are in SECURITY.md ("Sixth round") and guarded by test_risk_classifier_recall.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.trust import risk_probe
from engine.trust.risk import assess, found_by, probe_error

S = "suicide_self_harm"
GARAGE = (
    "ok real talk. since the layoff i've been sitting in the garage with the car running for a "
    "few minutes at a time, door closed. just to see. i turn it off before anything happens. "
    "i don't know what i'm doing"
)
SHOTGUN = (
    "my grandfather's old shotgun is in my parents' attic and i know where he kept the shells. "
    "went up there yesterday and held it for a long time"
)
PHARMACY = (
    "today i spent an hour at the pharmacy reading the labels on sleeping pills. i bought three "
    "boxes from three different stores so no one would notice. i'm keeping them in my "
    "glovebox. i'm not sure when. soon"
)
BRIDGE_ZH = (
    "半夜两点在桥上坐着，风挺大的。刚才跟我妈打了个电话，她问我怎么这么晚还没睡，我说马上就睡了。"
    "应该是最后一次跟她说话了。"
)
EVERYDAY = [
    "discord pls help me decide. i got into two colleges, one is close to home and cheap, the "
    "other is across the country and has the program i actually want. my parents are split.",
    "is it safe to drink on prozac? one glass of wine at a wedding? my doc said moderation but "
    "i wanted other people's experiences",
    "rip to my sleep schedule. this game is killing me, been grinding ranked until 4am all week",
    "周末去爬山了，山顶的风景特别好，下山的时候腿都软了，晚上吃了顿火锅犒劳自己。",
]


def suicide_flags(text: str, **kw) -> list:
    return [f for f in assess(text, **kw) if f.category == S]


@pytest.mark.parametrize("text", [PHARMACY, SHOTGUN], ids=["pharmacy", "shotgun"])
def test_probe_finds_risk_the_rules_and_classifier_miss(text):
    assert suicide_flags(text, probe=False) == []
    [flag] = suicide_flags(text, probe=True)
    assert (flag.source, flag.rule, flag.severity) == ("probe", "statement_probe", "medium")
    assert flag.evidence == text[flag.start : flag.end]  # a sentence of the statement
    assert flag.evidence.strip()


def test_the_quote_is_the_sentence_that_carries_the_score():
    [flag] = suicide_flags(SHOTGUN, probe=True)
    assert "held it for a long time" in flag.evidence


@pytest.mark.parametrize("text", [GARAGE, BRIDGE_ZH], ids=["garage", "bridge"])
def test_posts_only_the_probe_found_before_round_9_are_found_by_default(text):
    """The ninth round's refitted sentence classifier finds these without the probe."""
    [flag] = suicide_flags(text, probe=False)
    assert flag.source == "classifier"


@pytest.mark.parametrize("text", EVERYDAY)
def test_everyday_posts_are_not_flagged_by_the_probe(text):
    # (the sentence classifier flags the Chinese hiking post on its own; SECURITY.md)
    assert risk_probe.probe().flagged([text]) == [False]
    assert [f for f in suicide_flags(text, probe=True) if f.source == "probe"] == []


def test_off_by_default_on_by_environment(monkeypatch):
    assert suicide_flags(SHOTGUN) == []  # the default: the ship gate failed (SECURITY.md)
    assert "statement probe" not in found_by()
    monkeypatch.setenv("PHYASSIST_RISK_PROBE", "1")
    assert len(suicide_flags(SHOTGUN)) == 1
    assert found_by() == "rules, the sentence classifier and the statement probe"
    monkeypatch.setenv("PHYASSIST_RISK_PROBE", "0")
    assert suicide_flags(SHOTGUN) == []


def test_on_in_the_settings_the_session_check_uses_it(tmp_path, settings_for):
    from engine.session import Session

    settings = settings_for(tmp_path)
    assert Session(settings).check_risk(SHOTGUN).flags == []
    settings.risk_probe = True
    check = Session(settings).check_risk(SHOTGUN)
    assert [f.source for f in check.flags] == ["probe"]
    assert check.found_by == (
        "rules, the sentence classifier and the statement probe; no model check: the model is "
        "still loading"
    )


def test_a_probe_that_cannot_load_keeps_the_other_flags_and_says_why(monkeypatch):
    def broken():
        raise FileNotFoundError("risk_probe.npz")

    monkeypatch.setattr(risk_probe, "probe", broken)
    monkeypatch.setenv("PHYASSIST_RISK_PROBE", "1")
    assert suicide_flags(SHOTGUN, probe=True) == []
    assert "risk_probe.npz" in (probe_error() or "")
    line = found_by(model_not_asked="the model is still loading")
    assert line.startswith("rules and the sentence classifier (statement probe unavailable: ")
    assert line.endswith("; no model check: the model is still loading")
    rule_hit = "I have been thinking about killing myself."
    assert [f.source for f in suicide_flags(rule_hit, probe=True)] == ["rules"]
    monkeypatch.undo()
    assert len(suicide_flags(SHOTGUN, probe=True)) == 1  # loads again: the error is cleared
    assert probe_error() is None


def test_a_long_statement_is_scored_in_windows():
    """Past MAX_TOKENS the statement is scored window by window (the highest counts), so
    risk after 800 tokens of everyday text is read. (One risk sentence in a long everyday
    post is diluted by the mean over a window: SECURITY.md, sixth round.)"""
    days = [
        f"on day {i} i walked the dog, answered emails, cooked rice and called my aunt."
        for i in range(1, 41)
    ]
    preamble = " ".join(days)
    tail = (
        f"{GARAGE}. {SHOTGUN}. i wrote letters to my mum and my sister and left them in the "
        "drawer. i gave my cat to the neighbour and paid off the card so nobody is stuck with "
        "it. i have been saving my sleeping pills for weeks and i know the number now. sunday "
        "night feels like the right time, everything is in order and nobody will have to clean "
        "up after me."
    )
    probe = risk_probe.probe()
    assert len(probe.encoder.tokenizer(preamble)["input_ids"]) > 3 * risk_probe.MAX_TOKENS
    threshold = probe.weights.threshold
    [first_window] = probe.scores([preamble])  # what a cut at MAX_TOKENS would have read
    [whole] = probe.scores([preamble + " " + tail])
    assert first_window < 0.05 < threshold <= whole


def test_weights_round_trip(tmp_path):
    w = risk_probe.ProbeWeights(
        layers=(8, 30),
        mean=np.arange(4, dtype=np.float32),
        coef=np.ones(4, dtype=np.float32),
        bias=-1.5,
        scale=10.0,
        threshold=0.6,
        threshold_zh=0.7,
        version="test",
    )
    path = tmp_path / "w.npz"
    risk_probe.save_weights(w, path)
    back = risk_probe.load_weights(path.read_bytes())
    assert (back.layers, back.bias, back.version) == ((8, 30), -1.5, "test")
    assert back.threshold_zh == pytest.approx(0.7)
    assert np.array_equal(back.mean, w.mean) and np.array_equal(back.coef, w.coef)


class _FixedFeatures:
    """An encoder giving every window the same features: a probe without a model."""

    def __init__(self, value: float) -> None:
        self.value = value

    def windows(self, texts, *, all_windows):
        return np.full((len(texts), 2), self.value, dtype=np.float32), np.arange(len(texts))


def test_a_candidate_probe_replaces_the_shipped_one_until_reset(monkeypatch):
    """``override`` is how bench.risk_classifier measures candidate weights: assess must
    score with the candidate, and the shipped probe must come back after."""
    w = risk_probe.ProbeWeights(
        layers=(0,),
        mean=np.zeros(2, dtype=np.float32),
        coef=np.ones(2, dtype=np.float32),
        bias=0.0,
        scale=1.0,
        threshold=0.7,
        threshold_zh=0.7,
        version="fixed",
        encoder="fixed",
    )
    text = "we went to the lake on sunday and grilled fish."
    risk_probe.override(risk_probe.Probe(w, _FixedFeatures(5.0)))  # p = sigmoid(10)
    try:
        assert [f.source for f in suicide_flags(text, probe=True)] == ["probe"]
        risk_probe.override(risk_probe.Probe(w, _FixedFeatures(-5.0)))
        assert suicide_flags(text, probe=True) == []
    finally:
        risk_probe.override(None)
    assert risk_probe.probe().weights.encoder == "smollm2"
    with pytest.raises(ValueError, match="not the embedded model"):
        risk_probe.load_embedded(w)
