"""Parse the model's Analysis into an ``AnalysisDraft``, tolerantly and without losing text.

The prompt asks for a fixed layout (``Symptom type: …`` / ``Reasons:`` / ``Advice:`` or
``症状类型：`` / ``原因：`` / ``建议：`` with numbered items). Small models drift: other
numbering (``1)`` ``1、`` ``(1)`` ``①`` ``一、`` bullets), markdown headings and bold, missing
sections, chatty preambles. The parser works in two passes: split the text into blocks at
headings, then read the items of each block. Whatever it cannot place becomes an item of
``unplaced``; only markup (numbering, ``**``, ``#``, heading words) is dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from engine.records import AnalysisDraft, Item

SYMPTOM = "symptom_type"
REASONS = "reasons"
ADVICE = "advice"

HEADING_WORDS: dict[str, tuple[str, ...]] = {
    SYMPTOM: (
        "symptom types",
        "symptom type",
        "type of symptoms",
        "type of symptom",
        "symptom category",
        "main symptom",
        "main problem",
        "presenting problem",
        "problem type",
        "symptoms",
        "symptom",
        "diagnosis",
        "症状类型",
        "症状类别",
        "问题类型",
        "主要问题",
        "症状",
        "诊断",
        "类型",
    ),
    REASONS: (
        "possible reasons",
        "possible causes",
        "contributing factors",
        "reasons",
        "reason",
        "causes",
        "cause",
        "analysis",
        "原因分析",
        "成因分析",
        "问题分析",
        "可能原因",
        "原因",
        "成因",
        "分析",
    ),
    ADVICE: (
        "recommendations",
        "recommendation",
        "suggestions",
        "suggestion",
        "interventions",
        "treatment plan",
        "advice",
        "咨询建议",
        "干预建议",
        "治疗建议",
        "处理建议",
        "干预措施",
        "建议",
        "对策",
        "措施",
    ),
}

# (word, section), longest first so "symptom type" wins over "symptom".
_HEADINGS = sorted(
    ((w, s) for s, words in HEADING_WORDS.items() for w in words), key=lambda p: -len(p[0])
)

_CN_NUM = "一二三四五六七八九十"
_CIRCLED = "①②③④⑤⑥⑦⑧⑨⑩⑪⑫⑬⑭⑮⑯⑰⑱⑲⑳"

# A list-item marker at the start of a line. Arabic numbers need a separator and must not
# be a decimal ("1.5 hours"); dashes and asterisks need a following space (not "**bold**").
_MARKER = re.compile(
    r"""^\s*(?:\*\*|__)?\s*(?:
        (?P<num>\d{1,3})\s*[.)、．）](?!\d)
      | [(（]\s*(?P<pnum>\d{1,3})\s*[)）]
      | (?P<circ>[①-⑳])
      | [(（][一二三四五六七八九十]{1,3}[)）]
      | [一二三四五六七八九十]{1,3}\s*[、.．]
      | [-*+–—](?=\s)
      | [•·▪●○◦]
    )\s*(?:\*\*|__)?""",
    re.VERBOSE,
)
_HEADING_PREFIX = re.compile(
    r"^\s*(?:#{1,6}\s*|>\s*)*"  # markdown heading / quote
    r"(?:(?:\d{1,2}\s*[.)、．]|[一二三四五六七八九十]{1,3}\s*[、.．]|[(（][一二三四五六七八九十\d]{1,3}[)）]|[-*•])\s*)?"
)
_SEPARATOR = re.compile(r"^\s*(?:[:：]|[-–—](?=\s)|=)\s*")


def _strip_emphasis(text: str) -> str:
    return text.replace("**", "").replace("__", "").replace("`", "")


def _has_marker(line: str) -> bool:
    m = _MARKER.match(line)
    return m is not None and m.end() > 0 and bool(line[m.end() :].strip() or m.group(0).strip())


def _strip_marker(line: str) -> str:
    m = _MARKER.match(line)
    rest = line[m.end() :] if m else line
    return _clean(rest)


def _clean(text: str) -> str:
    text = _strip_emphasis(text).strip()
    return text.rstrip("；;").strip()


@dataclass
class _Heading:
    section: str
    inline: str  # text after the heading on the same line
    numbered: bool  # the heading line itself carried a list marker ("2. Reasons:")


def match_heading(line: str) -> _Heading | None:
    """Recognise ``Reasons:``, ``**Reasons**``, ``### 分析``, ``【建议】``, ``二、原因：`` …"""
    raw = _strip_emphasis(line).strip()
    prefix = _HEADING_PREFIX.match(raw)
    numbered = bool(prefix and re.search(r"[\d一二三四五六七八九十(（\-*•]", prefix.group(0)))
    body = raw[prefix.end() :] if prefix else raw
    body = body.strip()
    bracketed = re.match(r"^[【\[]([^】\]]{1,20})[】\]]\s*(.*)$", body)
    if bracketed:
        body = bracketed.group(1) + "：" + bracketed.group(2)
    lowered = body.lower()
    for word, section in _HEADINGS:
        if not lowered.startswith(word):
            continue
        rest = body[len(word) :]
        if rest and rest[0].isascii() and rest[0].isalnum() and word.isascii():
            continue  # "Reasonable", "Symptoms of ..." is prose, not a heading
        sep = _SEPARATOR.match(rest)
        if sep:
            return _Heading(section, rest[sep.end() :].strip(), numbered)
        if not rest.strip():
            return _Heading(section, "", numbered)
        if (
            rest.rstrip().endswith((":", "："))
            and len(body) <= 48
            and not re.search(r"[.。!?！？;；]", rest)
        ):
            return _Heading(section, "", numbered)  # "Reasons for her anxiety:"
        if rest.strip().startswith(("（", "(")) and rest.strip().endswith((")", "）", ":", "：")):
            # "Reasons (原因):" style bilingual headings
            inner_end = rest.find(")") if ")" in rest else rest.find("）")
            tail = rest[inner_end + 1 :]
            sep = _SEPARATOR.match(tail)
            if sep or not tail.strip():
                return _Heading(section, tail[sep.end() :].strip() if sep else "", numbered)
    return None


@dataclass
class _Block:
    section: str | None
    inline: str = ""
    lines: list[str] = field(default_factory=list)


def _split_inline_numbering(text: str) -> list[str]:
    """'1、学业压力；2、家庭期望' -> two items; only for consecutive numbers 1, 2, 3 …"""
    m = _MARKER.match(text)
    if not m or m.group("num") != "1":
        return [text]
    pieces = []
    start = 0
    expected = 2
    pattern_for = lambda n: re.compile(rf"(?:(?<=[\s；;。，,.])|(?<=\A)){n}\s*[.)、．](?!\d)")  # noqa: E731
    while True:
        nxt = pattern_for(expected).search(text, m.end() if start == 0 else start + 1)
        if not nxt:
            break
        pieces.append(text[start : nxt.start()])
        start = nxt.start()
        expected += 1
    pieces.append(text[start:])
    return pieces if len(pieces) > 1 else [text]


class AnalysisParser:
    """Stateless; ``parse`` is the entry point."""

    def parse(self, text: str) -> AnalysisDraft:
        blocks = self._blocks(text)
        draft = AnalysisDraft(raw_output=text)
        symptom_set = False
        for block in blocks:
            if block.section == SYMPTOM:
                symptom, rest = self._symptom(block)
                if symptom and not symptom_set:
                    draft.symptom_type = Item(text=symptom, draft=symptom)
                    symptom_set = True
                elif symptom:
                    rest.insert(0, symptom)
                draft.unplaced.extend(_items(rest))
            elif block.section in (REASONS, ADVICE):
                placed, stray = self._list(block)
                getattr(draft, block.section).extend(_items(placed))
                draft.unplaced.extend(_items(stray))
            else:
                draft.unplaced.extend(_items(self._paragraphs(block.lines)))
        return draft

    # pass 1 -------------------------------------------------------------------------------

    def _blocks(self, text: str) -> list[_Block]:
        blocks = [_Block(None)]
        symptom_done = False
        for line in text.splitlines():
            heading = match_heading(line) if line.strip() else None
            # "2. Analysis: the client…" inside a list is an item, unless it gives the
            # symptom type the draft still lacks.
            if (
                heading is not None
                and heading.numbered
                and heading.inline
                and not (heading.section == SYMPTOM and not symptom_done)
            ):
                heading = None
            if heading is None:
                blocks[-1].lines.append(line)
                continue
            if heading.section == SYMPTOM:
                symptom_done = True
            blocks.append(_Block(heading.section, heading.inline))
        return [b for b in blocks if b.section is not None or any(s.strip() for s in b.lines)]

    # pass 2 -------------------------------------------------------------------------------

    def _symptom(self, block: _Block) -> tuple[str, list[str]]:
        """The symptom type, and leftover paragraphs of its block."""
        lines = list(block.lines)
        symptom = _clean(block.inline)
        if not symptom:
            while lines and not lines[0].strip():
                lines.pop(0)
            if lines:
                symptom = _strip_marker(lines.pop(0))
        return symptom, self._paragraphs(lines)

    def _list(self, block: _Block) -> tuple[list[str], list[str]]:
        """(items of the section, stray paragraphs) of a Reasons/Advice block."""
        lines = ([block.inline] if block.inline else []) + block.lines
        if not any(_has_marker(line) for line in lines if line.strip()):
            # The model wrote plain lines: each is an item.
            return [_clean(line) for line in lines if _clean(line)], []
        placed: list[str] = []
        stray_lines: list[str] = []  # "" separates paragraphs
        has_current = False
        after_blank = False
        for index, line in enumerate(lines):
            if not line.strip():
                after_blank = True
                stray_lines.append("")
                continue
            if _has_marker(line) or (index == 0 and block.inline):
                placed.extend(_strip_marker(p) for p in _split_inline_numbering(line.strip()))
                has_current = True
                after_blank = False
                stray_lines.append("")
                continue
            if has_current and (not after_blank or line[:1].isspace()):
                placed[-1] = _join(placed[-1], _clean(line))  # a wrapped item line
                after_blank = False
                continue
            stray_lines.append(line)
            has_current = False
            after_blank = False
        return [p for p in placed if p], self._paragraphs(stray_lines)

    @staticmethod
    def _paragraphs(lines: list[str]) -> list[str]:
        """Blank-line separated paragraphs; list markers inside start a new piece."""
        out: list[str] = []
        current: list[str] = []

        def flush() -> None:
            text = " ".join(current).strip() if current else ""
            if text:
                out.append(text)
            current.clear()

        for line in lines:
            if not line.strip():
                flush()
                continue
            if _has_marker(line):
                flush()
                current.append(_strip_marker(line))
                continue
            cleaned = _clean(line)
            if current and _cjk_edge(current[-1], cleaned):
                current[-1] = current[-1] + cleaned
            else:
                current.append(cleaned)
        flush()
        return out


def _cjk_edge(left: str, right: str) -> bool:
    """Join without a space between two CJK line halves."""
    return bool(left and right) and ord(left[-1]) > 0x2E7F and ord(right[0]) > 0x2E7F


def _join(left: str, right: str) -> str:
    if not right:
        return left
    return left + right if _cjk_edge(left, right) else f"{left} {right}"


def _items(texts: list[str]) -> list[Item]:
    return [Item(text=t, draft=t) for t in texts if t.strip()]


_PARSER = AnalysisParser()


def parse_analysis(text: str, model_name: str = "") -> AnalysisDraft:
    draft = _PARSER.parse(text)
    draft.model_name = model_name
    return draft


def parse_item_text(text: str) -> str:
    """The new text of one regenerated item: drop a heading, numbering and quotes."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    heading = match_heading(lines[0])
    if heading is not None:
        lines[0] = heading.inline
    pieces = [_strip_marker(line) for line in lines]
    joined = ""
    for piece in pieces:
        joined = _join(joined, piece) if joined else piece
    joined = joined.strip().strip('"“”「」').strip()
    return joined or text.strip()


def strip_leading_marker(text: str) -> str:
    """Drop a leading "2." / "Reason:" from streamed text, keeping the rest byte for byte."""
    body = text.lstrip()
    heading = match_heading(body.partition("\n")[0])
    if heading is not None and heading.inline:
        start = body.find(heading.inline)
        if start >= 0:
            body = body[start:]
    m = _MARKER.match(body)
    return body[m.end() :] if m else body
