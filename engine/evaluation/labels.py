"""Read the label out of a free-text IMHI answer, per task, or say there is none.

IMHI answers are "label sentence. Reasoning: ...". The label sentence decides; the reasoning
is only consulted when the opening has no label, and then only a sentence that restates the
label counts (a reasoning that merely *mentions* "no signs of stress" next to a "Yes" opening
must not flip it). Negations, hedges ("cannot determine") and Chinese answers are handled;
``None`` means no recognisable label, which metrics count as its own outcome.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

YES, NO = "yes", "no"
BINARY_TASKS = ("DR", "dreaddit", "loneliness", "Irf", "MultiWD")
SAD_CAUSES = (
    "school",
    "financial problem",
    "family issues",
    "social relationships",
    "work",
    "health issues",
    "emotion turmoil",
    "everyday decision making",
    "other causes",
)
WELLNESS_DIMENSIONS = ("spiritual", "physical", "intellectual", "social", "vocational", "emotional")
IRF_RISKS = ("thwarted belongingness", "perceived burdensomeness")

# What a sentence must be about to decide a binary task (English + Chinese).
_CONCEPTS = {
    "DR": r"depress\w*|抑郁|忧郁",
    "dreaddit": r"stress\w*|压力|紧张|焦虑",
    "loneliness": r"lonel\w*|孤独|寂寞|孤单",
}
_IRF_CONCEPTS = {
    "thwarted belongingness": r"thwarted\s+belong\w*|belongingness|归属",
    "perceived burdensomeness": r"perceived\s+burden\w*|burdensome\w*|负担|累赘",
}
_IRF_GENERIC = r"\brisk\b|风险"
_DIMENSION_ZH = {
    "spiritual": "精神|灵性",
    "physical": "身体|生理",
    "intellectual": "智力|智识|知识",
    "social": "社交|社会",
    "vocational": "职业|工作",
    "emotional": "情绪|情感",
}
_WELLNESS_GENERIC = r"wellness\s+dimension|this\s+dimension|(?:该|这个|此)?(?:健康)?维度"

_NEGATION = re.compile(
    r"(?i)\b(?:no|not|never|neither|nor|none|without|lacks?|lacking|absen(?:t|ce)|free\s+of)\b"
    r"|n't\b|\bdoes\s*n[o']t\b|(?:不|没有|没|无|未|并非|否)"
)
_HEDGE = re.compile(
    r"(?i)\b(?:cannot|can't|can\s+not|unable\s+to|not\s+possible\s+to|impossible\s+to|hard\s+to|"
    r"difficult\s+to)\s+(?:be\s+)?(?:determine|tell|say|conclude|assess|know)\w*"
    r"|\b(?:unclear|uncertain|insufficient\s+information|not\s+enough\s+information)\b"
    r"|无法(?:判断|确定)|不确定|难以判断|信息不足"
)
_LEAD_YES = re.compile(r"(?i)^\W*(?:yes\b|yeah\b|是的|是(?!否)|有的|对)")
_LEAD_NO = re.compile(r"(?i)^\W*(?:no\b|nope\b|不是|不|否|没有)")
_REASONING_SPLIT = re.compile(
    r"(?i)\breasoning\s*[:：]|推理\s*[:：]|理由\s*[:：]|原因\s*[:：]|解释\s*[:：]"
)
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?。！？；;])\s*|\n+")

# SAD: canonical phrase first, then looser words; Chinese after.
_SAD_PATTERNS: dict[str, str] = {
    "school": (
        r"\b(?:school\w*|academic\w*|exams?|examinations?|college|universit\w*|studies|"
        r"homework|grades?|classes)\b|学校|学业|考试|学习"
    ),
    "financial problem": (
        r"\b(?:financ\w*|money|debts?|rent|bills?|afford\w*)\b|经济|财务|金钱|钱|债"
    ),
    "family issues": r"\b(?:family|parents?|mother|father|mom|dad)\b|家庭|家人|父母",
    "social relationships": (
        r"\b(?:social\s+relationships?|relationships?|friends?|friendships?)\b|人际|社交|朋友|恋爱"
    ),
    "work": r"\b(?:work|job|career|boss|workplace|employ\w*)\b|工作|职场|上司",
    "health issues": r"\b(?:health|illness\w*|sick\w*|medical|disease\w*)\b|疾病|健康|生病",
    "emotion turmoil": r"\bemotion(?:al)?\s+turmoil\b|\bemotion\w*|情绪|情感",
    "everyday decision making": r"\bdecision[-\s]making\b|\bdecision\w*|决定|决策|抉择",
    "other causes": r"\bother\s+(?:stress\s+)?causes?\b|\bother\s+stress\b|其他",
}
_SAD_CANONICAL = re.compile(
    r"(?i)related\s+to\s+(school|financial\s+problems?|family\s+issues|social\s+relationships?|"
    r"work|health\s+issues|emotion(?:al)?\s+turmoil|everyday\s+decision\s+making)"
    r"|\b(other)\s+stress\s+causes?"
)
_CLAUSE_SPLIT = re.compile(r"(?i),|;|，|；|\bbut\b|\bwhereas\b|\binstead\b|\brather\b|而是|但是|但")


@dataclass(frozen=True)
class Target:
    """What the question asks about: the task, plus the named risk or wellness dimension."""

    task: str
    aspect: str | None = None


def target_from_question(task: str, question: str = "") -> Target:
    """Irf names a risk and MultiWD a wellness dimension in the question; find which."""
    q = question.lower()
    if task == "Irf":
        tail = q[q.rfind("question:") :] if "question:" in q else q
        for risk in IRF_RISKS:
            if risk in tail:
                return Target(task, risk)
    if task == "MultiWD":
        tail = q[q.rfind("question:") :] if "question:" in q else q
        for dim in WELLNESS_DIMENSIONS:
            if re.search(rf"\b{dim}\b", tail):
                return Target(task, dim)
    return Target(task)


def split_answer(answer: str) -> tuple[str, str]:
    """``(opening, reasoning)``: text before the "Reasoning:" marker and after it."""
    parts = _REASONING_SPLIT.split(answer, maxsplit=1)
    head = parts[0].strip()
    return head, (parts[1].strip() if len(parts) > 1 else "")


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_SPLIT.split(text) if s and s.strip()]


def _binary_concepts(target: Target) -> tuple[str, str, str | None]:
    """Patterns for (the named target, a generic reference, sibling aspects that do not count)."""
    if target.task == "Irf":
        if target.aspect:
            other = [p for r, p in _IRF_CONCEPTS.items() if r != target.aspect]
            return _IRF_CONCEPTS[target.aspect], _IRF_GENERIC, "|".join(other)
        return "|".join(_IRF_CONCEPTS.values()), _IRF_GENERIC, None
    if target.task == "MultiWD":
        if target.aspect:
            own = rf"\b{target.aspect}\b|{_DIMENSION_ZH[target.aspect]}"
            others = [d for d in WELLNESS_DIMENSIONS if d != target.aspect]
            other = "|".join([rf"\b{d}\b" for d in others] + [_DIMENSION_ZH[d] for d in others])
            return own, _WELLNESS_GENERIC, other
        return "|".join(rf"\b{d}\b" for d in WELLNESS_DIMENSIONS), _WELLNESS_GENERIC, None
    return _CONCEPTS[target.task], _CONCEPTS[target.task], None


def _binary_sentence(sentence: str, target: Target, *, allow_lead: bool) -> str | None:
    """yes/no when this sentence states a verdict about the target, else None."""
    if allow_lead:
        if _LEAD_NO.match(sentence):
            return NO
        if _LEAD_YES.match(sentence):
            return YES
    if _HEDGE.search(sentence):
        return None
    named, generic, other = _binary_concepts(target)
    named_re = re.compile(rf"(?i)(?:{named})")
    any_re = re.compile(rf"(?i)(?:{named}|{generic})")
    if not any_re.search(sentence):
        return None
    if other and re.search(rf"(?i)(?:{other})", sentence):
        # "shows social wellness, not spiritual": judge only a clause naming the target; a
        # generic "this dimension" next to another named dimension is about that one.
        clauses = [c for c in _CLAUSE_SPLIT.split(sentence) if named_re.search(c)]
        if not clauses:
            return None
        sentence = clauses[0]
        mention = named_re.search(sentence)
    else:
        mention = any_re.search(sentence)
    if mention is None:  # pragma: no cover - both branches checked a match above
        return None
    # A negation anywhere before the concept, or right after it ("stress is absent"), says no.
    before = sentence[: mention.start()]
    after = sentence[mention.end() : mention.end() + 25]
    if _NEGATION.search(before) or re.match(r"(?i)\W*(?:is|are)\s+(?:not|absent)\b", after):
        return NO
    return YES


def _extract_binary(answer: str, target: Target) -> str | None:
    head, reasoning = split_answer(answer)
    for i, sentence in enumerate(_sentences(head)):
        label = _binary_sentence(sentence, target, allow_lead=(i == 0))
        if label is not None:
            return label
    # Fallback: only reasoning sentences that restate a verdict about the poster/post.
    verdict = re.compile(
        r"(?i)\b(?:poster|post|user|author|individual|person)\b.*\b(?:suffer|show|exhibit|"
        r"experienc|exist|present|indicat)|(?:发帖者|帖子|作者).*(?:患有|存在|显示|表现)"
    )
    for sentence in _sentences(reasoning):
        if verdict.search(sentence):
            label = _binary_sentence(sentence, target, allow_lead=False)
            if label is not None:
                return label
    return None


def _sad_in(text: str, *, loose: bool) -> str | None:
    for clause in _CLAUSE_SPLIT.split(text):
        canonical = _SAD_CANONICAL.search(clause)
        if canonical and not _NEGATION.search(clause[: canonical.start()]):
            phrase = (canonical.group(1) or canonical.group(2)).lower()
            for cause in SAD_CAUSES:
                if phrase.startswith(cause.split()[0]):
                    return cause
    if not loose:
        return None
    best: tuple[int, str] | None = None
    for clause in _CLAUSE_SPLIT.split(text):
        for cause, pattern in _SAD_PATTERNS.items():
            m = re.search(rf"(?i)(?:{pattern})", clause)
            if not m or _NEGATION.search(clause[: m.start()]):
                continue
            pos = text.find(clause) + m.start()
            if best is None or pos < best[0]:
                best = (pos, cause)
    return best[1] if best else None


def _extract_sad(answer: str) -> str | None:
    head, reasoning = split_answer(answer)
    sentences = _sentences(head)
    for sentence in sentences[:2]:
        label = _sad_in(sentence, loose=True)
        if label:
            return label
    return _sad_in(reasoning, loose=False)


def extract_label(task: str, answer: str, question: str = "") -> str | None:
    """The label an answer gives for ``task`` (``yes``/``no`` or a SAD cause), else None."""
    if not answer or not answer.strip():
        return None
    if task == "SAD":
        return _extract_sad(answer)
    if task in BINARY_TASKS:
        return _extract_binary(answer, target_from_question(task, question))
    raise ValueError(f"unknown IMHI task {task!r}")


def label_set(task: str) -> tuple[str, ...]:
    return SAD_CAUSES if task == "SAD" else (YES, NO)
