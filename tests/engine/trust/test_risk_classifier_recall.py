"""Issue 18 item 8: recall and false-flag rate of the risk check (rules + sentence classifier)
on the held-out test split, which no fitting or threshold choice ever saw
(data/risk_sentences/README.md; bench/risk_classifier.py measures the same thing as JSON).

The issue's goal is recall >= 0.9 with <= 3 % of no-disorder posts flagged. It is asserted as
it stands in ``test_goal``, which is a strict xfail while the measured figures fall short (it
fails as soon as they meet it, so the marker has to go). ``test_floor`` guards what was
measured when the classifier was committed, so a change that loses recall or adds false
flags fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.risk_classifier import measure

SHARED = Path(__file__).resolve().parents[4] / "shared" / "data"
needs_imhi = pytest.mark.skipif(
    not (SHARED / "imhi" / "test" / "dreaddit.csv").is_file(), reason="../shared/data not present"
)
GOAL_RECALL = 0.9
GOAL_FALSE_FLAGS = 0.03
NO_DISORDER = (
    "imhi_dreaddit_no_stress_false_flags",
    "imhi_dr_no_depression_false_flags",
    "imhi_sad_false_flags",
    "imhi_loneliness_no_false_flags",
    "written_zh_everyday_posts_flagged",
    "fresh8_everyday_posts_all_flagged",
    "fresh10_everyday_posts_all_flagged",
    "fresh11_everyday_posts_all_flagged",
)


@pytest.fixture(scope="module")
def figures() -> dict:
    return measure("test", SHARED, with_latency=False, probe=False)  # the default check


def rate(block: dict, key: str) -> float:
    return block[key]["rate"]


@needs_imhi
@pytest.mark.xfail(strict=True, reason="recall goal not met: see SECURITY.md 'Risk flag quality'")
def test_goal(figures):
    ours = figures["rules+classifier"]
    assert rate(ours, "written_en_recall") >= GOAL_RECALL
    assert rate(ours, "written_zh_recall") >= GOAL_RECALL
    assert rate(ours, "fixtures_heldout_all_recall") >= GOAL_RECALL
    assert rate(ours, "fresh_all_recall") >= GOAL_RECALL
    assert rate(ours, "fresh4_posts_all_recall") >= GOAL_RECALL
    assert rate(ours, "fresh5_posts_all_recall") >= GOAL_RECALL
    assert rate(ours, "fresh6_posts_all_recall") >= GOAL_RECALL
    assert rate(ours, "fresh7_posts_all_recall") >= GOAL_RECALL
    assert rate(ours, "fresh8_posts_all_recall") >= GOAL_RECALL
    assert rate(ours, "fresh10_posts_all_recall") >= GOAL_RECALL
    assert rate(ours, "fresh11_posts_all_recall") >= GOAL_RECALL
    for key in NO_DISORDER:
        if key in ours:
            assert rate(ours, key) <= GOAL_FALSE_FLAGS, key


@needs_imhi
def test_floor(figures):
    """The figures measured on the test split when the weights were committed (bench/
    risk_classifier.py measure --split test; SECURITY.md): recall may not drop, false flags
    may not rise."""
    ours, rules = figures["rules+classifier"], figures["rules"]
    # the classifier adds recall over the rules on text neither was fitted or tuned on
    for key in ("written_en_recall", "written_zh_recall", "fixtures_heldout_all_recall"):
        assert rate(ours, key) >= rate(rules, key) + 0.10, key
    for key, floor in RECALL_FLOOR.items():
        assert rate(ours, key) >= floor, key
    for key, cap in FALSE_FLAG_CAP.items():
        assert rate(ours, key) <= cap, key


RECALL_FLOOR = {
    # Issue 18, ninth round: the weights were refitted with every training file added since
    # the first fit (rounds 4-7 posts, loneliness posts, Chinese everyday and distress
    # negatives zh_ba / zh_bb), gated in 9399feb's message and measured once
    # (bench/results/risk_round9_test_before.json -> _after.json). Summed over the test
    # split's rows: Chinese recall 166 -> 172, Chinese false flags 43 -> 39, English recall
    # 208 -> 222, English false flags (with IMHI no-disorder) 73 -> 64. Cells that moved the
    # wrong way are noted; the floors are the refit's figures.
    "written_en_recall": 0.56,  # 18 / 32 (was 16)
    "written_zh_recall": 0.81,  # 18 / 22 (was 17)
    "fixtures_heldout_all_recall": 0.84,  # 56 / 66 (was 58: EN 30 -> 28, ZH 28)
    # a proxy (burdensomeness, not suicide labels): 329 -> 323 of 582 in the ninth round
    "imhi_irf_burdensomeness_flagged": 0.55,  # 323 / 582
    "fresh_all_recall": 0.92,  # 46 / 50 (was 44)
    "fresh4_posts_all_recall": 0.78,  # 39 / 50 (EN 21 / 30, ZH 18 / 20; was 35)
    "fresh5_posts_all_recall": 0.83,  # 35 / 42 (EN 18 / 25, ZH 17 / 17; was 32)
    # sixth to eighth rounds: blind social-media posts, written before any change of a round
    "fresh6_posts_all_recall": 0.58,  # 56 / 95 (EN 32 / 60, ZH 24 / 35; was 50)
    "fresh7_posts_all_recall": 0.77,  # 54 / 70 (EN 34 / 45, ZH 20 / 25; was 51)
    "fresh8_posts_all_recall": 0.75,  # 72 / 95 (EN 44 / 60, ZH 28 / 35; was 71)
    # tenth round: blind posts measured with the ninth round's weights (its refit failed)
    "fresh10_posts_all_recall": 0.62,  # 50 / 80 (EN 27 / 50, ZH 23 / 30)
    # eleventh round: blind posts, the shipped check (the round's candidate rules failed)
    "fresh11_posts_all_recall": 0.6,  # 48 / 80 (EN 25 / 50, ZH 23 / 30)
}
FALSE_FLAG_CAP = {
    "imhi_dreaddit_no_stress_false_flags": 0.02,  # 4 / 203 (rules alone 3)
    "imhi_dr_no_depression_false_flags": 0.052,  # 5 / 98 (was 6; rules alone 4)
    "imhi_sad_false_flags": 0.0015,  # 1 / 684 (rules alone 1)
    "imhi_loneliness_no_false_flags": 0.096,  # 11 / 115 (was 12; rules alone 8)
    "written_zh_everyday_posts_flagged": 0.05,  # 2 / 40 (was 1: one more everyday post)
    "written_all_hard_negatives_flagged": 0.056,  # 3 / 54 (minimal pairs; was 5)
    "fixtures_heldout_all_false_flags": 0.115,  # 13 / 114 (EN 6 -> 4, ZH 7 -> 9)
    "fresh_all_hard_negatives_flagged": 0.06,  # 3 / 50 (was 2: ZH 1 -> 3, EN 1 -> 0)
    "fresh4_posts_all_hard_negatives_flagged": 0.18,  # 9 / 50
    "fresh5_posts_all_hard_negatives_flagged": 0.044,  # 2 / 46 (was 3)
    "fresh6_posts_all_hard_negatives_flagged": 0.264,  # 25 / 95 (EN 13 / 60, ZH 12 / 35)
    "fresh7_posts_all_hard_negatives_flagged": 0.172,  # 12 / 70 (EN 7 / 45, ZH 5 / 25)
    "fresh8_posts_all_hard_negatives_flagged": 0.127,  # 12 / 95 (EN 10 / 60, ZH 2 / 35)
    "fresh8_everyday_posts_all_flagged": 0.0125,  # 1 / 80 (EN 1 / 50, ZH 0 / 30; was 2)
    "fresh10_posts_all_hard_negatives_flagged": 0.138,  # 11 / 80 (EN 6 / 50, ZH 5 / 30)
    "fresh10_everyday_posts_all_flagged": 0.031,  # 2 / 65 (EN 1 / 40, ZH 1 / 25)
    "fresh11_posts_all_hard_negatives_flagged": 0.075,  # 6 / 80 (EN 3 / 50, ZH 3 / 30)
    "fresh11_everyday_posts_all_flagged": 0.0,  # 0 / 65 (EN 0 / 40, ZH 0 / 25)
}


@needs_imhi
def test_statement_probe_floor_on_the_blind_posts():
    """The statement probe (off by default, ``PHYASSIST_RISK_PROBE=1``) on the sixth round's
    blind posts, measured once after it was fitted (bench/results/risk_round6_test_after.json):
    rules + classifier 50 of 95 risk posts, + probe 69; hard negatives 27 -> 31 of 95. Only
    this set (the full test split with the probe takes minutes on two cores)."""
    from bench.risk_data import S, written
    from engine.trust.risk import assess

    posts = written("fresh6")

    def flagged(label: int) -> int:
        return sum(
            any(f.category == S for f in assess(r["text"], probe=True))
            for r in posts
            if r["label"] == label
        )

    assert flagged(1) >= 69
    assert flagged(0) <= 31


@needs_imhi
def test_dev_forum_posts_floor():
    """Real forum posts: the hand-labelled IMHI Irf *val* dev posts (data/risk_sentences/
    imhi_irf_val.labels; dev, so thresholds may be chosen on them, unlike the floors above).
    Measured with the shipped weights and issue 18's fourth-round rules: 81 of 85 risk posts
    flagged (rules alone 75; third round 74 and 68), 3 of the 110 without risk (was 4)."""
    dev = measure("dev", SHARED, with_latency=False, probe=False)
    ours, rules = dev["rules+classifier"], dev["rules"]
    assert ours["irf_dev_posts_recall"]["flagged"] >= 81
    assert rules["irf_dev_posts_recall"]["flagged"] >= 75
    assert ours["irf_dev_no_risk_posts_flagged"]["flagged"] <= 3
