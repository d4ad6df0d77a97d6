"""Fuzz the analysis parser: any model output parses without an exception, the raw output
is kept verbatim, and no word of it is lost (only markup: numbering, emphasis, headings)."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.inference.analysis import HEADING_WORDS, parse_analysis, parse_item_text

_TOKEN = re.compile(r"[A-Za-z]+|[0-9]+|[\u4e00-\u9fff]+")
_HEADING_TOKENS = {
    t.lower() for words in HEADING_WORDS.values() for w in words for t in _TOKEN.findall(w)
}
_CN_NUMERALS = set("一二三四五六七八九十")

_headings = st.sampled_from(sorted({w for words in HEADING_WORDS.values() for w in words}))
_markers = st.sampled_from(
    [
        "1. ",
        "2) ",
        "3、",
        "(4) ",
        "（5）",
        "① ",
        "一、",
        "(二)",
        "- ",
        "* ",
        "• ",
        "**1.** ",
        "10. ",
    ]
)
_words = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8", categories=("L", "N")), min_size=1, max_size=12),
    st.sampled_from(["学业压力", "家庭期望过高", "sleep", "anxiety", "1.5 hours", "3", "五"]),
)
_seps = st.sampled_from([": ", "：", " - ", "", "\n", " "])


@st.composite
def _model_output(draw) -> str:
    lines = []
    for _ in range(draw(st.integers(0, 14))):
        kind = draw(st.sampled_from(["heading", "item", "prose", "blank", "md", "bracket"]))
        if kind == "heading":
            lines.append(draw(_headings) + draw(_seps) + draw(_words))
        elif kind == "md":
            lines.append("#" * draw(st.integers(1, 4)) + " **" + draw(_headings) + "**")
        elif kind == "bracket":
            lines.append("【" + draw(_headings) + "】" + draw(_words))
        elif kind == "item":
            lines.append(draw(_markers) + " ".join(draw(st.lists(_words, min_size=1, max_size=4))))
        elif kind == "prose":
            lines.append(" ".join(draw(st.lists(_words, min_size=1, max_size=6))))
        else:
            lines.append("")
    return "\n".join(lines)


def _all_text(draft) -> str:
    items = [draft.symptom_type, *draft.reasons, *draft.advice, *draft.unplaced]
    return "\n".join(i.text for i in items)


def _lost_tokens(text: str, out: str) -> list[str]:
    lost = []
    for token in _TOKEN.findall(text.replace("**", "").replace("__", "").replace("`", "")):
        if token.lower() in _HEADING_TOKENS or token in out:
            continue
        if token.isdigit() and len(token) <= 3:  # list numbering
            continue
        if set(token) <= _CN_NUMERALS:  # 一、二、 numbering
            continue
        lost.append(token)
    return lost


@given(text=st.one_of(_model_output(), st.text(max_size=400)))
@settings(max_examples=300, deadline=None)
def test_parser_never_crashes_and_keeps_every_word(text: str) -> None:
    draft = parse_analysis(text, model_name="fuzz")
    assert draft.raw_output == text
    assert draft.model_name == "fuzz"
    for item in [*draft.reasons, *draft.advice, *draft.unplaced]:
        assert item.text.strip(), "empty items must not be produced"
        assert item.draft == item.text
    assert _lost_tokens(text, _all_text(draft)) == []


@given(text=st.text(max_size=300))
@settings(max_examples=200, deadline=None)
def test_item_parser_never_crashes(text: str) -> None:
    out = parse_item_text(text)
    assert isinstance(out, str)
    if text.strip():
        assert out.strip()


def test_enormous_output_is_parsed() -> None:
    """A 200 kB model output (runaway generation) parses and keeps its text (linear time)."""
    block = "原因：\n1. 学业压力大\n2. 家庭期望过高\n建议：\n1. 规律作息\n"
    text = block * (200_000 // len(block))
    draft = parse_analysis(text)
    assert draft.raw_output == text
    assert len(draft.reasons) + len(draft.unplaced) >= 1
    assert "学业压力大" in _all_text(draft) and "规律作息" in _all_text(draft)
