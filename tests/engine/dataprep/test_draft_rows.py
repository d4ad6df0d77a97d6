"""Draft-format training rows (engine.dataprep.drafts): the engine's own layout, the data's
items in it, held-out tasks kept out, and the portable rows file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.dataprep import prepare
from engine.dataprep.clean import Example
from engine.dataprep.drafts import (
    counselchat_case,
    draft_text,
    imhi_case,
    imhi_test_posts,
    seed_case,
    sentences,
    written_cases,
)
from engine.dataprep.pipeline import ROWS_FILE, load_prepared
from engine.inference.analysis import parse_analysis

REPO = Path(__file__).resolve().parents[3]
ZH_CASES = REPO / "data" / "training" / "drafts_zh.json"
BENCH_ZH = REPO / "data" / "fixtures" / "drafts_zh.json"

DR_QUERY = (
    "Consider this post: \"I can't get out of bed and nothing matters anymore. I quit my "
    'classes." Question: Does the poster suffer from depression?'
)
DR_ANSWER = (
    "Yes, the poster suffers from depression. Reasoning: The poster says that they cannot get "
    "out of bed. Nothing matters to the poster anymore, which shows a loss of interest. The post "
    "mentions quitting classes, a sign of withdrawal. Therefore, the label is depression."
)


def test_imhi_answer_becomes_label_and_reasons_about_the_client():
    case = imhi_case(Example("imhi", "DR", "train", DR_QUERY, DR_ANSWER))
    assert case is not None
    assert case.statement.startswith("I can't get out of bed")
    assert case.label == "Depression"
    assert case.reasons == (
        "The client says that they cannot get out of bed.",
        "Nothing matters to the client anymore, which shows a loss of interest.",
        "The statement mentions quitting classes, a sign of withdrawal.",
    )  # the "Therefore, the label ..." sentence restates the label: left out


def test_imhi_negative_and_sad_labels():
    no = DR_ANSWER.replace("Yes, the poster suffers", "No, the poster does not suffer")
    assert imhi_case(Example("imhi", "DR", "train", DR_QUERY, no)) is None
    sad_q = DR_QUERY.replace("Does the poster suffer from depression?", "What is the cause?")
    sad_a = DR_ANSWER.replace(
        "Yes, the poster suffers from depression.",
        "This post shows the stress cause related to financial problem.",
    )
    case = imhi_case(Example("imhi", "SAD", "train", sad_q, sad_a))
    assert case is not None and case.label == "Financial stress"
    # a post that is in an IMHI test set (under any question) gives no draft
    banned = imhi_test_posts([DR_QUERY.replace("depression?", "stress?")])
    assert imhi_case(Example("imhi", "DR", "train", DR_QUERY, DR_ANSWER), banned) is None


def test_counselchat_answer_splits_into_reasons_and_advice():
    answer = (
        "Hi there, thanks for writing.It sounds like you are carrying a lot of guilt from the "
        "breakup. Many people feel this way when a long relationship ends suddenly. "
        "I would suggest writing down what you miss and what you do not miss. "
        "It may also help to talk with a counselor about the patterns you notice. "
        "What do you think?"
    )
    ex = Example("counselchat", "depression", "train", "Title\n\nI feel so guilty.", answer)
    case = counselchat_case(ex)
    assert case is not None
    assert case.statement == "I feel so guilty."
    assert case.label == "Depression"
    assert case.reasons == (
        "It sounds like you are carrying a lot of guilt from the breakup.",
        "Many people feel this way when a long relationship ends suddenly.",
    )
    assert case.advice[0].startswith("I would suggest writing down")
    assert len(case.advice) == 2
    # a topic about counseling itself names no problem of the client
    assert (
        counselchat_case(Example("counselchat", "professional-ethics", "train", "q", answer))
        is None
    )


def test_sentences_split_where_a_scrape_lost_the_space():
    assert sentences("You are not worthless.The first step is this. Yes!") == [
        "You are not worthless.",
        "The first step is this.",
        "Yes!",
    ]


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_completion_is_the_engines_layout_and_parses_back(lang, seed_case_zh):
    if lang == "zh":
        case = seed_case(REPO / "../shared/data/cases/seed_case_zh.json")
        statement, label, reasons, advice = (
            case.statement,
            case.label,
            list(case.reasons),
            list(case.advice),
        )
    else:
        statement = "I can't sleep before exams and I worry all the time."
        label = "Exam anxiety"
        reasons = ["The client worries constantly about exams.", "Sleep suffers before exams."]
        advice = ["Teach a short relaxation routine for the night before.", "Plan study breaks."]
    text = draft_text(statement, lang, label, reasons, advice)
    draft = parse_analysis(text)
    assert draft.symptom_type.text == label
    assert [i.text for i in draft.reasons] == reasons
    assert [i.text for i in draft.advice] == advice
    if lang == "en":
        assert text.startswith("Symptom type: Exam anxiety\nReasons:\n1. The client")
    else:
        assert text.startswith("症状类型：学业焦虑\n原因：\n1.学业压力")


def test_flagged_statement_carries_the_engines_risk_item_first():
    statement = "Sometimes I think it would be easier if I just didn't wake up in the morning."
    text = draft_text(
        statement, "en", "Low mood", ["One reason here.", "Two reasons."], ["A b c d e."] * 2
    )
    advice = text.split("\nAdvice:\n", 1)[1].splitlines()
    assert advice[0].startswith("1. Safety first: the client said")
    assert advice[1] == "2. A b c d e."
    # no advice in the data (IMHI): the draft ends after the reasons, risk item and all
    short = draft_text(statement, "en", "Low mood", ["One reason here.", "Two reasons."], [])
    assert short.endswith("2. Two reasons.") and "Advice" not in short


def test_written_chinese_cases_are_chinese_and_not_the_bench_statements():
    cases = written_cases(ZH_CASES)
    assert len(cases) >= 12
    bench = {s["text"] for s in json.loads(BENCH_ZH.read_text(encoding="utf-8"))["statements"]}
    for case in cases:
        assert case.lang == "zh"
        assert case.statement not in bench
        assert len(case.label) <= 12 and len(case.reasons) == 3 and len(case.advice) == 3


def test_prepare_with_drafts_holds_tasks_out_and_writes_portable_rows(
    tmp_path, imhi_fixture, counselchat_fixture
):
    out = tmp_path / "ds"
    result = prepare(
        out,
        imhi_dir=imhi_fixture,
        counselchat_csv=counselchat_fixture,
        hold_out=("DR",),
        drafts=True,
        counselchat_qa=False,
        zh_cases=(ZH_CASES,),
        zh_repeat=2,
    )
    ds = load_prepared(out)
    rows = [r for split in ds.values() for r in split]
    assert not [r for r in rows if r["task"] == "DR"]  # neither instructions nor drafts
    drafts = [r for r in rows if r["prompt"][0]["role"] == "system"]
    assert len([r for r in drafts if r["source"] == "zh_cases"]) == 2 * len(written_cases(ZH_CASES))
    assert all(r["source"] != "counselchat" or r["prompt"][0]["role"] == "system" for r in rows)
    assert result.tasks["draft:zh_cases"] == 2 * len(written_cases(ZH_CASES))
    # the gzip'd rows alone load as the same dataset (what a GPU host is given)
    alone = load_prepared(out / ROWS_FILE)
    assert {k: len(v) for k, v in alone.items()} == {k: len(v) for k, v in ds.items()}
    assert alone["train"][0] == ds["train"][0]


def test_prepare_rejects_an_unknown_task_to_hold_out(tmp_path, imhi_fixture):
    from engine.errors import InputRejected

    with pytest.raises(InputRejected, match="Nope"):
        prepare(tmp_path / "ds", imhi_dir=imhi_fixture, hold_out=("Nope",))
