"""Patient notes -> training data, in memory only.

Each saved note becomes one supervised example in the conversational prompt-completion form
TRL's ``SFTTrainer`` understands (the chat template is applied there, and the loss falls on the
completion, i.e. the answer, only): the prompt holds the basic information, the counselor's
observation and the client's statement; the completion is the counselor's final Analysis and
Advice. Each item the counselor changed (edited or deleted a model line) becomes one preference
pair: the final answer is ``chosen``; ``rejected`` is the same answer with that one change
undone, i.e. with the model's draft back in place. Pairs that differ in one item keep the
preference signal on the edit itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.inference.prompts import (
    SECTION_TITLES,
    Lang,
    analysis_request,
    detect_language,
    record_language,
    render_record,
    system_prompt,
)
from engine.records import AnalysisDraft, Item, Note, Patient

Message = dict[str, str]


def prompt_messages(patient: Patient, note: Note) -> list[Message]:
    """The messages the engine sends when it drafts this note's Analysis.

    Built with ``engine.inference.prompts`` so the adapter learns the layout generation uses;
    the record holds the basic information only (other notes would leak answers and make
    every example long).
    """
    record = render_record(patient, [], record_language(patient))
    lang = detect_language(note.question)
    return [
        {"role": "system", "content": system_prompt(record_language(patient), record)},
        {
            "role": "user",
            "content": analysis_request(note.question, lang, observed=note.observed_state),
        },
    ]


def render_answer(symptom: str, reasons: Sequence[str], advice: Sequence[str], lang: Lang) -> str:
    """The Analysis + Advice in the layout ``engine.inference.prompts.LAYOUT`` asks for."""
    titles = SECTION_TITLES[lang]
    sep = "：" if lang == "zh" else ": "
    lines = [f"{titles['symptom_type']}{sep}{symptom.strip()}"]
    for section, texts in (("reasons", reasons), ("advice", advice)):
        kept = [t.strip() for t in texts if t.strip()]
        if kept:
            lines.append(f"{titles[section]}{sep.strip()}")
            lines.extend(f"{n}. {t}" for n, t in enumerate(kept, 1))
    return "\n".join(lines)


def _final_lines(items: Iterable[Item]) -> list[str]:
    return [i.text for i in items if not i.deleted and i.text.strip()]


def final_answer(analysis: AnalysisDraft, lang: Lang) -> str:
    """The counselor's saved Analysis + Advice (deleted items left out)."""
    return render_answer(
        analysis.symptom_type.text,
        _final_lines(analysis.reasons),
        _final_lines(analysis.advice),
        lang,
    )


def _reverted_variants(analysis: AnalysisDraft, lang: Lang) -> list[str]:
    """One answer per counselor change, with only that change undone (draft put back)."""
    symptom = analysis.symptom_type.text
    reasons = list(analysis.reasons)
    advice = list(analysis.advice)
    variants: list[str] = []

    def lines_with(items: list[Item], index: int) -> list[str]:
        out: list[str] = []
        for j, item in enumerate(items):
            if j == index:
                out.append(item.draft or "")
            elif not item.deleted:
                out.append(item.text)
        return out

    st = analysis.symptom_type
    if st.draft is not None and st.draft.strip() and st.draft.strip() != st.text.strip():
        variants.append(render_answer(st.draft, _final_lines(reasons), _final_lines(advice), lang))
    for section in ("reasons", "advice"):
        items = reasons if section == "reasons" else advice
        for index, item in enumerate(items):
            if item.draft is None or not item.draft.strip():
                continue  # written by the counselor: no model text to reject
            if not (item.deleted or item.draft.strip() != item.text.strip()):
                continue  # accepted unchanged
            changed = lines_with(items, index)
            variants.append(
                render_answer(
                    symptom,
                    changed if section == "reasons" else _final_lines(reasons),
                    changed if section == "advice" else _final_lines(advice),
                    lang,
                )
            )
    return variants


@dataclass
class TrainingData:
    """What the worker trains on: SFT examples and preference pairs, plain dicts."""

    sft: list[dict[str, Any]] = field(default_factory=list)
    pairs: list[dict[str, Any]] = field(default_factory=list)

    def to_job(self) -> dict[str, Any]:
        return {"sft": self.sft, "pairs": self.pairs}


def build_training_data(patient: Patient) -> TrainingData:
    """Supervised examples from every note with a saved answer; a pair per counselor change."""
    data = TrainingData()
    for note in sorted(patient.notes, key=lambda n: n.created):
        if not note.question.strip():
            continue
        prompt = prompt_messages(patient, note)
        lang = detect_language(note.question)
        a = note.analysis
        if not (a.symptom_type.text.strip() or _final_lines(a.reasons) or _final_lines(a.advice)):
            continue  # nothing saved yet: no answer to learn
        chosen = final_answer(a, lang)
        data.sft.append({"prompt": prompt, "completion": [_assistant(chosen)]})
        for rejected in _reverted_variants(note.analysis, lang):
            if rejected.strip() and rejected != chosen:
                data.pairs.append(
                    {
                        "prompt": prompt,
                        "chosen": [_assistant(chosen)],
                        "rejected": [_assistant(rejected)],
                    }
                )
    return data


def _assistant(text: str) -> Message:
    return {"role": "assistant", "content": text}


def example_text(example: dict[str, Any]) -> str:
    """All the text of one SFT example (for scans that plaintext never reached disk)."""
    return "\n".join(m["content"] for m in [*example["prompt"], *example["completion"]])


def count_edits(patient: Patient) -> int:
    """How many items the counselor changed in the live notes: edited, deleted or written.

    Every one shows the counselor's judgement; the edited and deleted model items also make
    preference pairs (``build_training_data``), the counselor's own items do not.
    """
    count = 0
    for note in patient.notes:
        a = note.analysis
        for item in [a.symptom_type, *a.reasons, *a.advice, *a.unplaced]:
            if item.edited or item.deleted or (item.added_by_counselor and item.text.strip()):
                count += 1
    return count
