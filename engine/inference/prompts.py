"""Prompt text built from the patient record, in English or Chinese.

Layout matters for speed: the system message holds only the role and the patient record, and
is identical for Analysis, regenerate and Chat on one patient, so its KV cache can be reused.
Everything task-specific (the statement, the output layout, the counselor's guidance) goes
in the user message. The system message follows the record's language; the task follows the
statement's language ("the input in a language answers in that language").
"""

from __future__ import annotations

from typing import Literal

from engine.records import BASIC_FIELDS, AnalysisDraft, Item, Note, Patient

Lang = Literal["en", "zh"]

SECTION_TITLES: dict[Lang, dict[str, str]] = {
    "en": {
        "symptom_type": "Symptom type",
        "reasons": "Reasons",
        "advice": "Advice",
        "unplaced": "Other notes",
    },
    "zh": {"symptom_type": "症状类型", "reasons": "原因", "advice": "建议", "unplaced": "其他"},
}


def _is_cjk(ch: str) -> bool:
    code = ord(ch)
    return (
        0x4E00 <= code <= 0x9FFF  # unified ideographs
        or 0x3400 <= code <= 0x4DBF  # extension A
        or 0x20000 <= code <= 0x2A6DF  # extension B
        or 0xF900 <= code <= 0xFAFF  # compatibility ideographs
    )


def cjk_share(text: str) -> float:
    """Share of CJK ideographs among the letters and ideographs of ``text``."""
    cjk = letters = 0
    for ch in text:
        if _is_cjk(ch):
            cjk += 1
            letters += 1
        elif ch.isalnum():
            letters += 1
    return cjk / letters if letters else 0.0


def detect_language(text: str, default: Lang = "en") -> Lang:
    """Chinese when ideographs make up a fair share of the text (an English word or two in a
    Chinese statement does not flip it; Latin words weigh per letter, ideographs per word)."""
    if not any(ch.isalnum() for ch in text):
        return default
    return "zh" if cjk_share(text) >= 0.2 else "en"


def record_language(patient: Patient) -> Lang:
    parts = list(patient.basic.filled().values()) + [n.question for n in patient.notes[-5:]]
    return detect_language(" ".join(parts) or patient.name)


# The record ---------------------------------------------------------------------------------


def render_basic(patient: Patient, lang: Lang, fields: dict[str, str] | None = None) -> str:
    fields = patient.basic.filled() if fields is None else fields
    if lang == "zh":
        lines = [f"来访者：{patient.name}", "基本信息："]
        empty = "（未填写）"
    else:
        lines = [f"Client: {patient.name}", "Basic information:"]
        empty = "(none recorded)"
    if not fields:
        lines.append(empty)
    for key, value in fields.items():
        en, zh = BASIC_FIELDS.get(key, (key, key))
        label = zh if lang == "zh" else en
        sep = "：" if lang == "zh" else ": "
        lines.append(f"- {label}{sep}{value.strip()}")
    return "\n".join(lines)


def _live_texts(items: list[Item]) -> list[str]:
    return [i.text.strip() for i in items if not i.deleted and i.text.strip()]


def render_note(note: Note, lang: Lang) -> str:
    """One earlier session, with the counselor's final text (not the model's draft)."""
    t = SECTION_TITLES[lang]
    date = note.created.strftime("%Y-%m-%d")
    a = note.analysis
    if lang == "zh":
        lines = [f"[{date}] 咨询问题：{note.question.strip()}"]
        if note.observed_state.strip():
            lines.append(f"  观察：{note.observed_state.strip()}")
    else:
        lines = [f"[{date}] Question: {note.question.strip()}"]
        if note.observed_state.strip():
            lines.append(f"  Observed: {note.observed_state.strip()}")
    sep = "：" if lang == "zh" else ": "
    if a.symptom_type.text.strip() and not a.symptom_type.deleted:
        lines.append(f"  {t['symptom_type']}{sep}{a.symptom_type.text.strip()}")
    for section in ("reasons", "advice"):
        texts = _live_texts(getattr(a, section))
        if texts:
            joined = " ".join(f"{n}. {txt}" for n, txt in enumerate(texts, 1))
            lines.append(f"  {t[section]}{sep}{joined}")
    return "\n".join(lines)


def notes_header(lang: Lang, shown: int, total: int) -> str:
    if lang == "zh":
        if shown < total:
            return f"既往咨询记录（按时间顺序，显示最近 {shown} 次，共 {total} 次）："
        return "既往咨询记录（按时间顺序）："
    if shown < total:
        return f"Earlier sessions (oldest first; the {shown} most recent of {total}):"
    return "Earlier sessions (oldest first):"


def render_record(
    patient: Patient,
    notes: list[Note],
    lang: Lang,
    basic_fields: dict[str, str] | None = None,
) -> str:
    parts = [render_basic(patient, lang, basic_fields)]
    if notes:
        parts.append(notes_header(lang, len(notes), len(patient.notes)))
        parts.extend(render_note(n, lang) for n in notes)
    return "\n".join(parts)


SYSTEM_ROLE: dict[Lang, str] = {
    "en": (
        "You are PhyAssist, an assistant to a psychological counselor. You help the counselor "
        "understand their client and plan the counseling; you never address the client. "
        "Be specific, base what you say on the record, and be concise."
    ),
    "zh": (
        "你是 PhyAssist，心理咨询师的助手。你帮助咨询师理解来访者并规划咨询，"
        "不直接与来访者对话。请具体、以记录为依据、简明扼要。"
    ),
}

NO_RECORD: dict[Lang, str] = {
    "en": "No client is open; answer general questions about counseling.",
    "zh": "当前没有打开来访者记录；请回答关于心理咨询的一般问题。",
}


def system_prompt(lang: Lang, record: str | None) -> str:
    if record is None:
        return f"{SYSTEM_ROLE[lang]}\n\n{NO_RECORD[lang]}"
    heading = "来访者记录：" if lang == "zh" else "Client record:"
    return f"{SYSTEM_ROLE[lang]}\n\n{heading}\n{record}"


# The tasks ----------------------------------------------------------------------------------

LAYOUT: dict[Lang, str] = {
    "en": (
        "Symptom type: <the main problem, in a few words>\n"
        "Reasons:\n1. <reason>\n2. <reason>\n3. <reason>\n"
        "Advice:\n1. <advice>\n2. <advice>\n3. <advice>"
    ),
    "zh": (
        "症状类型：<主要问题，几个字>\n原因：\n1. <原因>\n2. <原因>\n3. <原因>\n"
        "建议：\n1. <建议>\n2. <建议>\n3. <建议>"
    ),
}


def render_draft(draft: AnalysisDraft, lang: Lang, *, with_comments: bool = True) -> str:
    """The draft as the counselor left it, in the same layout the model is asked for."""
    t = SECTION_TITLES[lang]
    sep = "：" if lang == "zh" else ": "
    note_word = "咨询师意见" if lang == "zh" else "counselor's comment"
    lines = [f"{t['symptom_type']}{sep}{draft.symptom_type.text.strip()}"]
    if with_comments:
        lines.extend(f"  ({note_word}{sep}{c})" for c in draft.symptom_type.comments)
    for section in ("reasons", "advice"):
        lines.append(f"{t[section]}{sep.strip()}")
        for n, item in enumerate(draft.live(section), 1):  # type: ignore[arg-type]
            lines.append(f"{n}. {item.text.strip()}")
            if with_comments:
                lines.extend(f"   ({note_word}{sep}{c})" for c in item.comments)
    return "\n".join(lines)


def _deleted_texts(draft: AnalysisDraft) -> list[str]:
    return [
        (i.draft or i.text).strip()
        for section in (draft.reasons, draft.advice)
        for i in section
        if i.deleted and (i.draft or i.text).strip()
    ]


def _statement_block(question: str, observed: str, lang: Lang) -> str:
    if lang == "zh":
        block = f"来访者的陈述：\n{question.strip()}"
        if observed.strip():
            block += f"\n\n咨询师的观察：\n{observed.strip()}"
        return block
    block = f"The client's statement:\n{question.strip()}"
    if observed.strip():
        block += f"\n\nThe counselor's observation:\n{observed.strip()}"
    return block


def analysis_request(
    question: str,
    lang: Lang,
    *,
    observed: str = "",
    guidance: AnalysisDraft | None = None,
) -> str:
    """The user message asking for a whole Analysis in the fixed layout."""
    parts = [_statement_block(question, observed, lang)]
    if guidance is not None:
        deleted = _deleted_texts(guidance)
        if lang == "zh":
            parts.append(
                "咨询师修改过上一版草稿，请据此重写（保留咨询师认可的内容，按意见修改）：\n"
                + render_draft(guidance, lang)
            )
            if deleted:
                parts.append(
                    "咨询师删除了以下内容，不要再写：\n" + "\n".join(f"- {d}" for d in deleted)
                )
        else:
            parts.append(
                "The counselor revised the previous draft. Rewrite it using their edits and "
                "comments (keep what they kept, change what they commented on):\n"
                + render_draft(guidance, lang)
            )
            if deleted:
                parts.append(
                    "The counselor deleted these; do not repeat them:\n"
                    + "\n".join(f"- {d}" for d in deleted)
                )
    if lang == "zh":
        parts.append("请用中文，严格按照下面的格式写出分析，不要写其他内容：\n" + LAYOUT["zh"])
    else:
        parts.append(
            "Write the analysis in English, in exactly this layout and nothing else:\n"
            + LAYOUT["en"]
        )
    return "\n\n".join(parts)


def regenerate_item_request(
    question: str,
    draft: AnalysisDraft,
    section: str,
    item: Item,
    lang: Lang,
    *,
    observed: str = "",
) -> str:
    """The user message asking for a new text for one item, with the rest as guidance."""
    t = SECTION_TITLES[lang]
    items = draft.live(section)  # type: ignore[arg-type]
    position = next((n for n, i in enumerate(items, 1) if i.id == item.id), None)
    if section == "symptom_type":
        position = None
    comments = "\n".join(f"- {c}" for c in item.comments)
    current = item.text.strip() or (item.draft or "").strip()
    parts = [_statement_block(question, observed, lang)]
    if lang == "zh":
        which = t[section] if position is None else f"{t[section]}第 {position} 条"
        parts.append("当前草稿：\n" + render_draft(draft, lang, with_comments=False))
        ask = f"只重写{which}（现在是：{current or '空'}）。"
        if comments:
            ask += f"\n咨询师对这一条的意见：\n{comments}"
        ask += "\n只输出这一条的新内容，一行，不要编号，不要重复其他条目。"
    else:
        label = t[section].lower().rstrip("s") if section != "symptom_type" else "the symptom type"
        which = label if position is None else f"{label} {position}"
        parts.append("The current draft:\n" + render_draft(draft, lang, with_comments=False))
        ask = f"Rewrite only {which} (now: {current or 'empty'})."
        if comments:
            ask += f"\nThe counselor's comments on it:\n{comments}"
        ask += "\nAnswer with the new text of that one item only, on one line, without numbering."
    parts.append(ask)
    return "\n\n".join(parts)
