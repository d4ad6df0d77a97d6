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
    # retrained with the hard negatives en_i/zh_j (distress, crying, exam pressure without risk)
    # after the classifier flagged the seed case's "每次想到都能落泪" sentence: written ZH recall
    # 17 -> 16 of 22, held-out fixtures 56 -> 57 of 66 (ZH 26 -> 27 of 30)
    # issue 18, fourth round (rules): written EN 14 -> 16 of 32, ZH 16 -> 17 of 22
    "written_en_recall": 0.50,  # 16 / 32
    "written_zh_recall": 0.77,  # 17 / 22
    # fifth round: 57 -> 58 (a Chinese held-out fixture found by the new rules)
    "fixtures_heldout_all_recall": 0.87,  # 58 / 66
    # 333 -> 328 of 582 in the fourth round: posts about a sister's or girlfriend's wish to die
    # no longer flag the writer (a proxy label, not suicide labels; see test_risk_round4.py)
    "imhi_irf_burdensomeness_flagged": 0.56,  # 328 / 582
    # issue 18, third round: written before any change of that round (en_k, zh_k)
    "fresh_all_recall": 0.88,  # 44 / 50
    # issue 18, fourth round: social-media posts written before any change (en_p, zh_p)
    "fresh4_posts_all_recall": 0.70,  # 35 / 50 (EN 18 / 30, ZH 17 / 20; before the round 35)
    # issue 18, fifth round: social-media posts written before any change (en_r, zh_r)
    "fresh5_posts_all_recall": 0.76,  # 32 / 42 (EN 16 / 25, ZH 16 / 17; before the round 32)
    # issue 18, sixth round: blind social-media posts (en_t, zh_t), written before any change
    "fresh6_posts_all_recall": 0.52,  # 50 / 95 (EN 28 / 60, ZH 22 / 35)
    # issue 18, seventh round: blind posts, a third of the negatives about loneliness (en_x, zh_x)
    "fresh7_posts_all_recall": 0.72,  # 51 / 70 (EN 31 / 45, ZH 20 / 25)
    # issue 18, eighth round: blind posts by a writer who opened nothing in the repository
    "fresh8_posts_all_recall": 0.74,  # 71 / 95 (EN 43 / 60, ZH 28 / 35)
}
FALSE_FLAG_CAP = {
    "imhi_dreaddit_no_stress_false_flags": 0.02,  # 4 / 203 (rules alone 3)
    "imhi_dr_no_depression_false_flags": 0.062,  # 6 / 98 (rules alone 4)
    "imhi_sad_false_flags": 0.0015,  # 1 / 684 (was 2; rules alone 1)
    "imhi_loneliness_no_false_flags": 0.105,  # 12 / 115 (was 14; rules alone 8, was 10)
    "written_zh_everyday_posts_flagged": 0.025,  # 1 / 40
    # 5 -> 6 of 54 in the fourth round (one more English minimal-pair negative flagged by the
    # new rules; raised, reported in SECURITY.md, the sentence not looked at)
    # fifth round: 6 -> 5 (Chinese self-criticism no longer a classifier flag)
    "written_all_hard_negatives_flagged": 0.093,  # 5 / 54 (minimal pairs)
    # issue 18, third round: someone else's suicide is no longer the client's flag
    "fixtures_heldout_all_false_flags": 0.115,  # 13 / 114 (was 15, then 14)
    "fresh_all_hard_negatives_flagged": 0.04,  # 2 / 50 (was 8, then 5, then 3)
    # issue 18, fourth round: 13 -> 9 of 50 (pronouns for a relation, bereavement, quotes)
    "fresh4_posts_all_hard_negatives_flagged": 0.18,  # 9 / 50
    # issue 18, fifth round: 4 -> 3 of 46 (a Chinese self-critical post)
    "fresh5_posts_all_hard_negatives_flagged": 0.066,  # 3 / 46
    "fresh6_posts_all_hard_negatives_flagged": 0.285,  # 27 / 95 (EN 14 / 60, ZH 13 / 35)
    "fresh7_posts_all_hard_negatives_flagged": 0.215,  # 15 / 70 (EN 7 / 45, ZH 8 / 25)
    "fresh8_posts_all_hard_negatives_flagged": 0.17,  # 16 / 95 (EN 12 / 60, ZH 4 / 35)
    "fresh8_everyday_posts_all_flagged": 0.025,  # 2 / 80 (EN 1 / 50, ZH 1 / 30)
}


@needs_imhi
def test_statement_probe_floor_on_the_blind_posts():
    """The statement probe (off by default, ``PHYASSIST_RISK_PROBE=1``) on the sixth round's
    blind posts, measured once after it was fitted (bench/results/risk_round6_test_after.json):
    rules + classifier 50 of 95 risk posts, + probe 69; hard negatives 27 -> 31 of 95. Only
    this set (the full test split with the probe takes minutes on two cores)."""
    from bench.risk_classifier import S, written
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
