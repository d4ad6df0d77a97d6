"""Patient notes -> training data, in memory only.

Each saved note becomes one supervised example in the conversational prompt-completion form
TRL's ``SFTTrainer`` understands (the chat template is applied there, and the loss falls on the
completion, i.e. the answer, only): the prompt holds the basic information, the counselor's
observation and the client's statement; the completion is the counselor's final Analysis and
Advice. Every counselor signal becomes one preference pair: an edited or deleted model line,
an item the counselor added, an item regenerated under the counselor's comments (the text the
comments were about is rejected), and a draft taken over another in Compare. The final answer
is ``chosen``; ``rejected`` is the same answer with that one change undone. Pairs that differ
in one item keep the preference signal on the change itself.
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


# Earlier notes in each training prompt (the most recent ones before the note). Drafting puts
# every earlier note that fits into the prompt, so with 0 an adapter meets that record only at
# inference (issue 17). Measured with 2 (bench/RESULTS.md, "Issue 17, second pass"): no fewer
# changed items than with 0, 58 % more worker CPU at ten notes (140.8 vs 89.3 CPU-s: longer
# examples, and the CPU token budget cannot go below one pass), and the CLI test's adapter
# learned less (answer loss 2.45 -> 2.06 instead of -> 1.54). So 0 until the CPU recipe has
# signal to spare; ``build_training_data(patient, record_notes=2)`` gives the matched prompts.
# Third pass, one earlier note (``TrainingRun(overrides={"record_notes": 1})``, bench/learning.py
# lgbtq, a dev topic, same notes): items the counselor changes 12 -> 7 against 12 -> 6 with 0;
# 5,377 tokens a pass against 3,523 (the CPU budget then allows two passes, not three); the
# adapter still quoted the record's last note in one of three drafts. Still 0.
TRAIN_RECORD_NOTES = 0


def prompt_messages(
    patient: Patient, note: Note, record_notes: int = TRAIN_RECORD_NOTES
) -> list[Message]:
    """The messages the engine sends when it drafts this note's Analysis.

    Built with ``engine.inference.prompts`` as drafting builds them: the record as it stood
    when the note was drafted, i.e. the basic information and the notes saved before it
    (the newest ``record_notes`` of them, rendered as ``fit_record`` renders a record where
    only those fit). The note itself and later notes never appear: they would leak the answer.
    """
    earlier = sorted(
        (n for n in patient.notes if n.created < note.created and n.id != note.id),
        key=lambda n: n.created,
    )
    then = patient.model_copy(update={"notes": earlier})
    lang_then = record_language(then)
    shown = earlier[-record_notes:] if record_notes > 0 else []
    record = render_record(then, shown, lang_then)
    lang = detect_language(note.question)
    return [
        {"role": "system", "content": system_prompt(lang_then, record)},
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
    """The counselor's saved Analysis + Advice (deleted items left out).

    Lines the parser could not place (``unplaced``) but the counselor kept are part of what
    was saved, so they follow the advice: leaving them out dropped whole notes whose draft
    had not been placed (the ``adapter list`` "notes 1 edits 0" undercount)."""
    return render_answer(
        analysis.symptom_type.text,
        _final_lines(analysis.reasons),
        [*_final_lines(analysis.advice), *_final_lines(analysis.unplaced)],
        lang,
    )


SIGNALS = ("edits", "deletions", "added", "regenerations", "choices")


def _counselor_made(item: Item, drafted: bool) -> bool:
    """Whether the counselor's hand shows in this kept item: edited, regenerated under their
    comments, or written by them in a note the model drafted."""
    if item.deleted or not item.text.strip():
        return False
    if item.draft is None:
        return drafted
    return item.edited or bool(item.regenerations)


def edited_lines(analysis: AnalysisDraft) -> list[bool]:
    """Per line of ``final_answer(analysis)``: does the counselor's edit show on it?

    True for the label and every kept item the counselor edited, regenerated or added, and
    for the line that now stands where they deleted a model item (the next item, the next
    heading, or the last line when the deletion ended the answer): the model learns there to
    stop or go on. Untouched model lines are False. In a note the counselor wrote by hand
    (nothing drafted) nothing is marked: every line is theirs and none stands out."""
    drafted = bool(analysis.raw_output.strip()) or any(
        i.draft is not None
        for i in [analysis.symptom_type, *analysis.reasons, *analysis.advice, *analysis.unplaced]
    )
    if not drafted:
        return [False] * len(final_answer(analysis, "en").split("\n"))
    flags = [_counselor_made(analysis.symptom_type, drafted)]
    pending = False  # a deletion waiting for the line that takes its place
    for section in (list(analysis.reasons), [*analysis.advice, *analysis.unplaced]):
        kept = [i for i in section if not i.deleted and i.text.strip()]
        if not kept:
            pending = pending or any(i.deleted and (i.draft or "").strip() for i in section)
            continue
        flags.append(pending)  # the heading
        pending = False
        for item in section:
            if item.deleted:
                pending = pending or bool((item.draft or "").strip())
                continue
            if not item.text.strip():
                continue
            flags.append(pending or _counselor_made(item, drafted))
            pending = False
    if pending:
        flags[-1] = True
    return flags


def _rejected_texts(item: Item) -> list[tuple[str, str | None]]:
    """``(signal, text)`` for each counselor signal on one item; text None = the item is absent
    from the rejected answer (a counselor-added item: the model's answer lacked it)."""
    final = item.text.strip()
    out: list[tuple[str, str | None]] = []
    draft = (item.draft or "").strip()
    if item.deleted:
        if draft:
            out.append(("deletions", item.draft))
        return out
    if item.draft is None:
        if final and not item.regenerations:
            out.append(("added", None))
    elif draft and draft != final:
        out.append(("edits", item.draft))
    seen = {final, draft} if item.draft is not None and draft != final else {final}
    for regen in item.regenerations:
        previous = regen.previous.strip()
        if previous and previous not in seen:
            seen.add(previous)
            out.append(("regenerations", regen.previous))
    return out


def _variants(analysis: AnalysisDraft, lang: Lang) -> list[tuple[str, str]]:
    """``(signal, rejected answer)`` per counselor signal, each with only that one change
    undone: pairs that differ in one item keep the preference on the change itself.

    An item the counselor added counts only where the model drafted this note: in a note the
    counselor wrote by hand there is no model answer that lacked it."""
    drafted = bool(analysis.raw_output.strip()) or any(
        i.draft is not None
        for i in [analysis.symptom_type, *analysis.reasons, *analysis.advice, *analysis.unplaced]
    )
    sections: dict[str, list[Item]] = {
        "reasons": list(analysis.reasons),
        "advice": [*analysis.advice, *analysis.unplaced],
    }
    finals = {name: _final_lines(items) for name, items in sections.items()}
    out: list[tuple[str, str]] = []
    st = analysis.symptom_type
    for signal, text in _rejected_texts(st):
        if signal in ("edits", "regenerations") and text and text.strip():
            out.append((signal, render_answer(text, finals["reasons"], finals["advice"], lang)))
    for name, items in sections.items():
        for index, item in enumerate(items):
            for signal, text in _rejected_texts(item):
                if signal == "added" and not drafted:
                    continue
                lines: list[str] = []
                for j, other in enumerate(items):
                    if j == index:
                        if text is not None:
                            lines.append(text)
                    elif not other.deleted and other.text.strip():
                        lines.append(other.text)
                changed = {**finals, name: lines}
                out.append(
                    (
                        signal,
                        render_answer(st.text, changed["reasons"], changed["advice"], lang),
                    )
                )
    return out


def _reverted_variants(analysis: AnalysisDraft, lang: Lang) -> list[str]:
    """One answer per counselor change, with only that change undone (draft put back)."""
    return [text for _signal, text in _variants(analysis, lang)]


@dataclass
class TrainingData:
    """What the worker trains on: SFT examples and preference pairs, plain dicts.

    ``signals`` counts what went in, per signal and per note (for the adapter card and
    ``phyassist adapter list``); it holds counts, dates and ids, never patient text."""

    sft: list[dict[str, Any]] = field(default_factory=list)
    pairs: list[dict[str, Any]] = field(default_factory=list)
    signals: dict[str, Any] = field(default_factory=dict)

    def to_job(self) -> dict[str, Any]:
        return {"sft": self.sft, "pairs": self.pairs}


def without_engine_items(analysis: AnalysisDraft) -> AnalysisDraft:
    """``analysis`` without the items the engine inserted (``Item.inserted_by``: the safety
    item that quotes the client's risk words). The engine adds that line to every flagged
    draft itself, so an adapter never has to write it; trained on it, a patient adapter wrote
    "thoughts of self-harm" and "suicidal ideation" as reasons for statements without a word
    of risk. Neither the item nor its deletion is a counselor signal for the model."""
    items = [*analysis.reasons, *analysis.advice, *analysis.unplaced]
    if not any(i.inserted_by for i in items):
        return analysis
    out = analysis.model_copy(deep=True)
    out.reasons = [i for i in out.reasons if not i.inserted_by]
    out.advice = [i for i in out.advice if not i.inserted_by]
    out.unplaced = [i for i in out.unplaced if not i.inserted_by]
    return out


def build_training_data(patient: Patient, record_notes: int = TRAIN_RECORD_NOTES) -> TrainingData:
    """Supervised examples from every note with a saved answer (the counselor's final text);
    a preference pair per counselor signal: edits, deletions, added items, comment-steered
    regenerations, and Compare choices. Prompts carry ``record_notes`` earlier notes."""
    data = TrainingData()
    totals = dict.fromkeys(SIGNALS, 0)
    per_note: list[dict[str, Any]] = []
    notes = [n for n in sorted(patient.notes, key=lambda n: n.created) if n.question.strip()]
    for note in notes:
        prompt = prompt_messages(patient, note, record_notes)
        lang = detect_language(note.question)
        a = without_engine_items(note.analysis)
        counts = dict.fromkeys(SIGNALS, 0)
        row: dict[str, Any] = {
            "note": note.id[:8],
            "date": note.created.date().isoformat(),
            "trained": False,
            **counts,
        }
        per_note.append(row)
        if not (
            a.symptom_type.text.strip()
            or _final_lines(a.reasons)
            or _final_lines(a.advice)
            or _final_lines(a.unplaced)
        ):
            continue  # nothing saved yet: no answer to learn
        chosen = final_answer(a, lang)
        data.sft.append(
            {"prompt": prompt, "completion": [_assistant(chosen)], "edited_lines": edited_lines(a)}
        )
        row["trained"] = True
        for signal, rejected in _variants(a, lang):
            if rejected.strip() and rejected != chosen:
                data.pairs.append(_pair(prompt, chosen, rejected))
                row[signal] += 1
                totals[signal] += 1
    for choice in patient.preferences:
        if not (choice.question.strip() and choice.chosen.strip()):
            continue
        if choice.chosen.strip() == choice.rejected.strip():
            continue
        note = Note(
            question=choice.question, observed_state=choice.observed_state, created=choice.created
        )
        data.pairs.append(
            _pair(prompt_messages(patient, note, record_notes), choice.chosen, choice.rejected)
        )
        totals["choices"] += 1
    data.signals = {
        "notes": len(notes),
        "notes_trained": len(data.sft),
        "preference_pairs": len(data.pairs),
        **totals,
        "per_note": per_note,
    }
    return data


def _pair(prompt: list[Message], chosen: str, rejected: str) -> dict[str, Any]:
    return {"prompt": prompt, "chosen": [_assistant(chosen)], "rejected": [_assistant(rejected)]}


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
        a = without_engine_items(note.analysis)  # the safety item is no counselor signal
        for item in [a.symptom_type, *a.reasons, *a.advice, *a.unplaced]:
            if item.edited or item.deleted or (item.added_by_counselor and item.text.strip()):
                count += 1
    return count
