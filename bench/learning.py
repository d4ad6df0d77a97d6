"""Do patient adapters move drafts toward the counselor's own writing? Prints one JSON object.

A simulated counselor with a fixed, recognisable style (``CounselorPolicy``, written before any
figure was seen and not tuned to the evaluation sessions) works through the sessions of
synthetic patients. Each patient is one CounselChat topic; its sessions are that topic's real
questions in ``questionID`` order. The policy:

- writes the symptom type as a short label of its own (one per topic);
- rewrites the reasons in the first person of the client's words: the reasons become the
  client's first-person sentences from the statement, quoted (at most two);
- deletes generic reassurance from the advice (``GENERIC``: "you are not alone", "seek
  professional help", "be kind to yourself", ...);
- always ends the advice with one concrete homework task (one per topic).

A model item that already says what the policy would write is kept as the model wrote it, as a
counselor leaves a line alone that needs no edit. "Already says" is decided in the policy's own
canonical form (``canonical``: Unicode NFKC, case folded, whitespace collapsed, quotation marks
and a closing full stop dropped), so ``Low mood.`` for the label ``Low mood`` or an unquoted
client sentence for a quoted one is no edit. This rule was fixed before any run with it; the
style itself (label, quotes, deletions, homework) is unchanged. A reason that quotes a client
sentence is kept wherever it stands among the reasons.

Each session: the model drafts on the real product path (``Assistant.stream_analysis`` with the
patient's record in the prompt, greedy decoding), the policy edits the draft, the result is
saved as the note (model text in ``draft``, the policy's text in ``text``). Sessions 1..K are
drafted by the domain adapter. For each k in ``--k`` a patient holding the first k notes is
trained through ``TrainingRun`` (the real subprocess, over the domain adapter, SFT + DPO), then
on the held-out later sessions K+1..K+E (the same ones for every k) drafts are made by the
domain adapter alone and by domain + patient adapter, with that patient's record in the prompt
for both. Measured per condition: the character-level edit distance between the draft and the
policy's final answer, and the share of items the policy changes (edited + deleted + added,
over draft items + added). Plus training wall time and the workers' peak RSS, and per eval
session two teacher-forced margins on the domain model's draft (``style_margins``: does the
model lean toward ending Reasons after two, toward the homework line), which show how far an
adapter moved where the greedy text does not change.

    python bench/learning.py [--topics depression] [--k 3,5,10] [--eval-sessions 3]
        [--max-new-tokens 160] [--export-adapter DIR] [--train-overrides JSON] [--out FILE]

Goals (issue 17): after 10 sessions the policy changes >= 30 % fewer items with the patient
adapter than with the domain adapter alone; 10-note training <= 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import re
import resource
import sys
import tempfile
import threading
import time
import unicodedata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from engine.records import AnalysisDraft, Item  # noqa: E402

PASSPHRASE = "learning bench passphrase, not a secret"
COUNSEL_CHAT = ROOT.parent / "shared" / "data" / "counsel_chat" / "counsel_chat.csv"

LABELS = {
    "depression": "Low mood",
    "anxiety": "Worry and tension",
    "relationships": "Relationship strain",
    "intimacy": "Intimacy concerns",
    "family-conflict": "Family conflict",
    "parenting": "Parenting stress",
    "self-esteem": "Low self-worth",
}
HOMEWORK = {
    "depression": (
        "Homework: each evening this week, write down one thing you did and how your mood "
        "was before and after it."
    ),
    "anxiety": (
        "Homework: three times this week, when the worry starts, write down the thought and "
        "rate it from 0 to 10."
    ),
}
DEFAULT_HOMEWORK = (
    "Homework: before our next session, write down three moments when this came up and what "
    "you did next."
)
GENERIC = re.compile(
    r"you are not alone|you're not alone|it'?s (?:okay|ok|normal)|it is (?:okay|ok|normal)|"
    r"be (?:kind|gentle|patient) (?:to|with) yourself|take care of yourself|remember that|"
    r"don'?t hesitate|reach out|seek (?:out )?(?:professional )?(?:help|support)|"
    r"(?:talk|speak)(?:ing)? (?:to|with) a (?:therapist|counsel+or|professional|mental health)|"
    r"self-care|you deserve|stay positive|things will get better",
    re.IGNORECASE,
)
FIRST_PERSON = re.compile(r"\b(?:I|I'm|I've|I'd|I'll|my|me|myself)\b")


_QUOTES = "\"'“”‘’「」"


def canonical(text: str) -> str:
    """The policy's canonical form of a line, for "does this line need an edit?"."""
    body = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    body = body.strip(_QUOTES + " ").rstrip(".。!！ ").strip(_QUOTES + " ")
    return body


class CounselorPolicy:
    """The simulated counselor: a deterministic edit of a draft, in one fixed style."""

    def __init__(self, topic: str) -> None:
        self.label = LABELS.get(topic, topic.replace("-", " ").capitalize())
        self.homework = HOMEWORK.get(topic, DEFAULT_HOMEWORK)

    @staticmethod
    def client_sentences(statement: str, at_most: int = 2) -> list[str]:
        """The client's own first-person sentences, quoted (reasons in the client's words)."""
        out: list[str] = []
        for raw in re.split(r"(?<=[.!?])\s+|\n+", statement):
            sentence = " ".join(raw.split()).strip()
            if len(sentence) < 12 or not FIRST_PERSON.search(sentence) or sentence.endswith("?"):
                continue
            if len(sentence) > 160:
                sentence = sentence[:160].rsplit(" ", 1)[0] + "…"
            out.append(f'"{sentence}"')
            if len(out) == at_most:
                break
        return out

    def edit(self, draft: AnalysisDraft, statement: str) -> AnalysisDraft:
        """The note as the counselor saves it: model text in ``draft``, theirs in ``text``."""
        st = draft.symptom_type
        label = st.text if canonical(st.text) == canonical(self.label) else self.label
        symptom = Item(text=label, draft=st.text if st.text.strip() else None)
        model_reasons = [i.text for i in draft.reasons if i.text.strip()]
        quoted = self.client_sentences(statement)
        reasons: list[Item] = []
        if quoted:
            # A reason that already quotes one of the sentences stays as written; the others
            # are rewritten to the sentences not yet quoted, in order; the rest go.
            wanted = {canonical(q): q for q in quoted}
            kept = {canonical(t) for t in model_reasons if canonical(t) in wanted}
            todo = [q for q in quoted if canonical(q) not in kept]
            seen: set[str] = set()
            for text in model_reasons:
                key = canonical(text)
                if key in wanted and key not in seen:
                    seen.add(key)
                    reasons.append(Item(text=text, draft=text))
                elif todo:
                    reasons.append(Item(text=todo.pop(0), draft=text))
                else:
                    reasons.append(Item(text=text, draft=text, deleted=True))
            reasons += [Item(text=q) for q in todo]
        else:
            reasons = [Item(text=t, draft=t) for t in model_reasons]
        advice: list[Item] = []
        model_advice = [i.text for i in [*draft.advice, *draft.unplaced] if i.text.strip()]
        for text in model_advice:
            generic = bool(GENERIC.search(text))
            advice.append(Item(text=text, draft=text, deleted=generic))
        kept = [i for i in advice if not i.deleted]
        homework = canonical(self.homework)
        if kept and canonical(kept[-1].text) == homework:
            pass  # the draft already ends with the homework task
        else:
            for item in advice:  # a homework line elsewhere moves to the end: drop it here
                if canonical(item.text) == homework and not item.deleted:
                    item.deleted = True
            advice.append(Item(text=self.homework))
        return AnalysisDraft(
            symptom_type=symptom, reasons=reasons, advice=advice, raw_output=draft.raw_output
        )


def item_changes(note: AnalysisDraft) -> tuple[int, int]:
    """(items the policy changed: edited + deleted + added, items in draft + added)."""
    items = [note.symptom_type, *note.reasons, *note.advice]
    changed = total = 0
    for item in items:
        if item.draft is None:
            if item.text.strip():
                changed += 1
                total += 1
            continue
        total += 1
        if item.deleted or item.draft.strip() != item.text.strip():
            changed += 1
    return changed, total


def levenshtein(a: str, b: str) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def draft_text(note: AnalysisDraft) -> str:
    """The model's draft in the answer layout (what the counselor started from)."""
    from engine.training.data import render_answer

    def drafts(items: list[Item]) -> list[str]:
        return [i.draft for i in items if i.draft is not None and i.draft.strip()]

    return render_answer(
        note.symptom_type.draft or "", drafts(note.reasons), drafts(note.advice), "en"
    )


def final_text(note: AnalysisDraft) -> str:
    from engine.training.data import final_answer

    return final_answer(note, "en")


def sessions_for(topic: str, n: int, max_chars: int) -> list[str]:
    """The topic's real CounselChat questions, one per questionID, in questionID order."""
    seen: dict[int, str] = {}
    with open(COUNSEL_CHAT, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            if row["topic"] != topic:
                continue
            qid = int(row["questionID"])
            text = " ".join((row["questionText"] or row["questionTitle"] or "").split())
            if qid not in seen and len(text) >= 40:
                seen[qid] = text[:max_chars]
    texts = [seen[k] for k in sorted(seen)]
    if len(texts) < n:
        raise SystemExit(f"topic {topic!r} has {len(texts)} usable questions, {n} needed")
    return texts[:n]


def generate(assistant: Any, patient: Any, question: str) -> tuple[AnalysisDraft, float]:
    """The draft the counselor sees: the stream's own structured draft (``draft_of``, with the
    engine's risk items), else the tolerant parser's reading of the text."""
    from engine.inference.analysis import parse_analysis

    started = time.perf_counter()
    cancel = threading.Event()
    stream = assistant.stream_analysis(patient, question, cancel=cancel)
    text = "".join(stream)
    draft_of = getattr(stream, "draft_of", None)
    draft = draft_of(text) if draft_of is not None else parse_analysis(text)
    if not draft.raw_output:
        draft.raw_output = text
    return draft, time.perf_counter() - started


def measure(notes: list[AnalysisDraft]) -> dict[str, Any]:
    distances = [levenshtein(draft_text(n), final_text(n)) for n in notes]
    changes = [item_changes(n) for n in notes]
    changed = sum(c for c, _ in changes)
    total = sum(t for _, t in changes)
    return {
        "edit_distance_mean": round(sum(distances) / len(distances), 1),
        "edit_distance": distances,
        "items_changed": changed,
        "items_total": total,
        "changed_share": round(changed / total, 4) if total else None,
        "per_session_changed": [c for c, _ in changes],
        # where the changes come from: did the model write the policy's label, how many
        # reasons did it draft (the policy keeps two), did its advice end with the homework
        "label_kept": sum(n.symptom_type.draft == n.symptom_type.text for n in notes),
        "reasons_drafted": [sum(i.draft is not None for i in n.reasons) for n in notes],
        "reasons_kept": [
            sum(i.draft is not None and i.draft == i.text and not i.deleted for i in n.reasons)
            for n in notes
        ],
        "homework_drafted": sum(
            bool(n.advice) and n.advice[-1].draft is not None and not n.advice[-1].deleted
            for n in notes
        ),
    }


def patient_logit_effect(assistant: Any, patient: Any, store: Any) -> float:
    """Largest |logit| change the patient adapter makes on the last eval prompt (a check that
    the stacked adapter is live: 0 would mean the two conditions are one model)."""
    import torch

    device = next(assistant.adapters.model.parameters()).device
    ids = torch.tensor([assistant.last_prompt_ids], device=device)
    with torch.no_grad():
        assistant.use_patient(None)
        domain = assistant.adapters.model(ids).logits[0, -1]
        assistant.use_patient(patient, store)
        stacked = assistant.adapters.model(ids).logits[0, -1]
    assistant.use_patient(None)
    return round(float((stacked - domain).abs().max()), 4)


def style_margins(assistant: Any, patient: Any, question: str, draft: AnalysisDraft, homework: str):
    """How far the active model leans toward the policy's style where greedy text hides it:
    (log P(Advice heading) - log P("3") after the draft's first two reasons; mean log-prob per
    token of the policy's homework line as the next advice item). Teacher-forced on the
    product's own prompt (``Assistant._build``) and layout."""
    import torch

    from engine.inference.prompts import SECTION_TITLES, analysis_request

    titles = SECTION_TITLES["en"]
    request = analysis_request(question, "en")
    ids, _ = assistant._build(patient, [{"role": "user", "content": request}], 16)
    reasons = [i.text for i in draft.reasons if i.text.strip()][:2]
    advice = [i.text for i in draft.advice if i.text.strip()]
    if len(reasons) < 2:
        return None, None
    head = f"{titles['symptom_type']}: {draft.symptom_type.text}\n{titles['reasons']}:\n"
    head += "".join(f"{n}. {t}\n" for n, t in enumerate(reasons, 1))
    tok = assistant.model.tokenizer
    model = assistant.adapters.model

    def logprobs(text: str, tail: str) -> list[float]:
        prefix = ids + tok.encode(text, add_special_tokens=False)
        full = ids + tok.encode(text + tail, add_special_tokens=False)
        with torch.no_grad():
            tokens = torch.tensor([full], device=next(model.parameters()).device)
            out = model(tokens).logits[0].float().log_softmax(-1).cpu()
        return [float(out[i - 1, full[i]]) for i in range(len(prefix), len(full))]

    stop = logprobs(head, f"{titles['advice']}:")[0]
    more = logprobs(head, "3.")[0]
    body = head + f"{titles['advice']}:\n" + "".join(f"{n}. {t}\n" for n, t in enumerate(advice, 1))
    home = logprobs(body + f"{len(advice) + 1}.", f" {homework}")
    return round(stop - more, 3), round(sum(home) / len(home), 3)


def children_peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)


# Drafting rules a recipe may turn back to an earlier product's (not training settings):
# ``_item_opening_quotes`` False: an item may not open with a quotation mark (before issue 17's
# second pass); ``_copy_rules`` False: the anti-loop rules apply to a copy of the statement
# too (before the third pass); ``_min_items`` 2: a section holds at least two model items
# (before the third pass).
DRAFTING_RULES = {"_item_opening_quotes": True, "_copy_rules": True, "_min_items": None}


def drafting_rules_of(overrides: dict[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    """The drafting rules a recipe's overrides ask for (the product's where not given)."""
    overrides = overrides or {}
    return tuple((k, overrides.get(k, v)) for k, v in DRAFTING_RULES.items())


@contextlib.contextmanager
def drafting_rules(rules: tuple[tuple[str, Any], ...]):
    """Draft under these rules (``DRAFTING_RULES``); the product's rules where they say so."""
    from engine.inference import structured

    rule = dict(rules)
    saved = (structured.StructuredDraft._constraint, structured.statement_tokens)
    saved_min = structured.MIN_ITEMS
    if not rule["_item_opening_quotes"]:
        original = structured.StructuredDraft._constraint

        def banned(self, avoid=None, first_banned=None, min_tokens=None, quote_first=False):
            return original(self, avoid, first_banned, min_tokens, False)

        structured.StructuredDraft._constraint = banned
    if not rule["_copy_rules"]:
        structured.statement_tokens = lambda tokenizer, statement: ()
    if rule["_min_items"] is not None:
        structured.MIN_ITEMS = int(rule["_min_items"])
    try:
        yield
    finally:
        structured.StructuredDraft._constraint, structured.statement_tokens = saved
        structured.MIN_ITEMS = saved_min


def opening_quote_items(drafts: list[AnalysisDraft]) -> int:
    """Items of these drafts that open with a quotation mark: where none does, the same
    greedy drafts come out under the rule that banned it (a ban on tokens never chosen)."""
    items = [i for d in drafts for i in [*d.reasons, *d.advice, *d.unplaced]]
    return sum((i.draft or "").lstrip().startswith(('"', "“", "「", "『")) for i in items)


def train_and_compare(
    args: argparse.Namespace,
    assistant: Any,
    store: Any,
    settings: Any,
    policy: CounselorPolicy,
    eval_q: list[str],
    domain_drafts: list[AnalysisDraft],
    patient_id: str,
    k: int,
    overrides: dict[str, Any] | None,
    trained: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train the patient's next adapter version with ``overrides`` (the real worker), then
    draft the eval sessions with domain + that adapter.

    Overrides named in ``DRAFTING_RULES`` (not training settings) draft those sessions under
    an earlier product's drafting rules: the old product, measured in the same run."""
    from engine.training.runner import TrainingRun

    rules = drafting_rules_of(overrides)
    overrides = {k: v for k, v in (overrides or {}).items() if k not in DRAFTING_RULES}
    overrides = overrides or None
    if trained is not None:  # the previous recipe trained the same way: reuse its adapter
        row = {"k": k, "train_overrides": overrides, "training": trained, "training_reused": True}
        return _draft_with_patient(
            assistant, store, policy, eval_q, domain_drafts, patient_id, rules, row
        )
    run = TrainingRun(store, patient_id, settings, overrides=overrides)
    load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    started = time.perf_counter()
    for _event in run.events():
        pass
    wall = time.perf_counter() - started
    summary, card = run.summary, (run.result.card if run.result else {})
    row: dict[str, Any] = {
        "k": k,
        "train_overrides": overrides,
        "training": {
            "wall_s": round(wall, 1),
            "worker_train_s": summary.get("train_s"),
            "worker_cpu_s": summary.get("cpu_s"),
            "load_average_before": load_before,
            "load_average_after": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
            "timings": summary.get("timings"),
            "steps": summary.get("steps"),
            "tokens": summary.get("tokens"),
            "preference_steps": summary.get("preference_steps"),
            "preference_pairs": summary.get("preference_pairs"),
            "preference_pairs_used": summary.get("preference_pairs_used"),
            "final_loss": summary.get("final_loss"),
            "cpu_threads": summary.get("cpu_threads"),
            "hyperparameters": summary.get("hyperparameters"),
            "peak_rss_mb_max_over_workers_so_far": children_peak_rss_mb(),
            "signals": {
                s: card.get("signals", {}).get(s)
                for s in ("notes_trained", "edits", "deletions", "added", "regenerations")
            },
            "domain_adapter": (card.get("domain_adapter") or {}).get("name"),
        },
    }
    return _draft_with_patient(
        assistant, store, policy, eval_q, domain_drafts, patient_id, rules, row
    )


def _draft_with_patient(assistant, store, policy, eval_q, domain_drafts, patient_id, rules, row):
    """Draft the eval sessions with domain + the patient's active adapter, under ``rules``."""
    patient = store.load_patient(patient_id)
    label = assistant.use_patient(patient, store)
    notes, raw, margins = [], [], []
    for question, domain_draft in zip(eval_q, domain_drafts, strict=True):
        with drafting_rules(rules):
            draft, _ = generate(assistant, patient, question)
        raw.append(draft.raw_output)
        notes.append(policy.edit(draft, question))
        # teacher-forced on the domain model's draft, as for the domain condition
        margins.append(style_margins(assistant, patient, question, domain_draft, policy.homework))
    row["drafting_rules"] = dict(rules)
    row["domain+patient"] = {
        "model": label,
        **measure(notes),
        "style_margins": margins,
        "drafts": raw,
        "finals": [final_text(n) for n in notes],
    }
    row["patient_logit_effect"] = patient_logit_effect(assistant, patient, store)
    return row


def bench_topic(args: argparse.Namespace, assistant: Any, store: Any, settings: Any, topic: str):
    from engine.records import Note

    ks = sorted(args.k)
    max_k = ks[-1]
    sessions = sessions_for(topic, max_k + args.eval_sessions, settings.limits.max_statement_chars)
    train_q, eval_q = sessions[:max_k], sessions[max_k:]
    policy = CounselorPolicy(topic)
    out: dict[str, Any] = {"topic": topic, "label": policy.label, "homework": policy.homework}

    # The counselor works through sessions 1..K on the domain adapter.
    pid = store.create_patient(f"Learning bench {topic}").id
    saved: list[Note] = []
    gen_s: list[float] = []
    cache = Path(args.sessions_cache) / f"{topic}-{max_k}.json" if args.sessions_cache else None
    cached = json.loads(cache.read_text(encoding="utf-8")) if cache and cache.is_file() else None
    for n, question in enumerate(train_q):
        if cached is not None:  # a dev shortcut: the same greedy drafts as a fresh run
            note = Note.model_validate(cached[n])
            assert note.question == question
            store.add_note(pid, note)
            saved.append(note)
            continue
        patient = store.load_patient(pid)
        assistant.use_patient(None)
        draft, seconds = generate(assistant, patient, question)
        gen_s.append(seconds)
        note = Note(question=question, analysis=policy.edit(draft, question))
        store.add_note(pid, note)
        saved.append(note)
    if cache is not None and cached is None:
        cache.write_text(json.dumps([n.model_dump(mode="json") for n in saved]), encoding="utf-8")
    out["sessions_from_cache"] = cached is not None
    out["training_sessions"] = measure([n.analysis for n in saved])
    out["training_sessions"]["generation_s_mean"] = (
        round(sum(gen_s) / len(gen_s), 1) if gen_s else None
    )
    out["training_sessions"]["finals"] = [final_text(n.analysis) for n in saved]
    out["training_sessions"]["items_opening_with_a_quote"] = opening_quote_items(
        [n.analysis for n in saved]
    )

    recipes = args.recipes or {"": args.train_overrides}
    results = []
    for k in ks:
        patient_k = store.create_patient(f"Learning bench {topic} k={k}")
        for note in saved[:k]:
            store.add_note(patient_k.id, note.model_copy(deep=True))
        patient = store.load_patient(patient_k.id)
        # The domain adapter alone: one set of drafts per k and drafting rules, shared by
        # every recipe that drafts under those rules.
        domain_label = assistant.use_patient(None)
        by_rules: dict[tuple, tuple[list[AnalysisDraft], list]] = {}
        for overrides in recipes.values():
            rules = drafting_rules_of(overrides)
            if rules in by_rules:
                continue
            drafts_r: list[AnalysisDraft] = []
            with drafting_rules(rules):
                for question in eval_q:
                    draft, _ = generate(assistant, patient, question)
                    drafts_r.append(draft)
            margins_r = [
                style_margins(assistant, patient, q, d, policy.homework)
                for q, d in zip(eval_q, drafts_r, strict=True)
            ]
            by_rules[rules] = (drafts_r, margins_r)
        previous_training: tuple[str, dict[str, Any]] | None = None
        for recipe, overrides in recipes.items():
            domain_drafts, domain_margins = by_rules[drafting_rules_of(overrides)]
            training_key = json.dumps(
                {k: v for k, v in (overrides or {}).items() if k not in DRAFTING_RULES},
                sort_keys=True,
            )
            reuse = (
                previous_training[1]
                if previous_training and previous_training[0] == training_key
                else None
            )
            row = train_and_compare(
                args,
                assistant,
                store,
                settings,
                policy,
                eval_q,
                domain_drafts,
                patient_k.id,
                k,
                overrides,
                reuse,
            )
            previous_training = (training_key, row["training"])
            if recipe:
                row["recipe"] = recipe
            row["domain"] = {
                "model": domain_label,
                **measure([policy.edit(d, q) for d, q in zip(domain_drafts, eval_q, strict=True)]),
                "style_margins": domain_margins,
                "drafts": [d.raw_output for d in domain_drafts],
                "items_opening_with_a_quote": opening_quote_items(domain_drafts),
            }
            patient_row = row.pop("domain+patient")
            row["domain+patient"] = patient_row
            row["drafts_differ"] = [
                a != b for a, b in zip(row["domain"]["drafts"], patient_row["drafts"], strict=True)
            ]
            base, ours = row["domain"]["changed_share"], patient_row["changed_share"]
            if base:
                row["changed_share_reduction"] = round(1 - (ours or 0) / base, 4)
            if row["domain"]["items_changed"]:
                row["items_changed_reduction"] = round(
                    1 - patient_row["items_changed"] / row["domain"]["items_changed"], 4
                )
            base_d = row["domain"]["edit_distance_mean"]
            if base_d:
                row["edit_distance_reduction"] = round(
                    1 - patient_row["edit_distance_mean"] / base_d, 4
                )
            if args.export_adapter and k == max_k:
                from engine.training.versions import export_adapter

                target = Path(args.export_adapter) / (f"{topic}-{recipe}" if recipe else topic)
                export_adapter(store, patient_k.id, target)
                row["exported_to"] = str(target)
            results.append(row)
            assistant.use_patient(None)
            print(json.dumps({"progress": topic, "k": k, "row": row}), file=sys.stderr, flush=True)
    out["by_k"] = results
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--topics", default="depression", help="CounselChat topics, one each")
    parser.add_argument("--k", default="3,5,10", help="train on the first k sessions")
    parser.add_argument("--eval-sessions", "--limit", type=int, default=3, dest="eval_sessions")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--threads", type=int, default=0, help="torch threads here (0: default)")
    parser.add_argument("--export-adapter", help="write the largest-k adapter here (PEFT dir)")
    parser.add_argument(
        "--train-overrides",
        type=json.loads,
        default=None,
        help='recipe overrides, JSON (a diagnostic: {"num_train_epochs": 4})',
    )
    parser.add_argument(
        "--device", default="cpu", help="cpu (the 2-core goal) or cuda (the GPU recipe: SFT + DPO)"
    )
    parser.add_argument(
        "--recipes",
        type=json.loads,
        default=None,
        help="several recipes in one run, JSON {name: overrides}: each trains its own adapter "
        "version on the same notes and is compared with the same domain drafts",
    )
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument(
        "--sessions-cache",
        help="dev shortcut: keep the policy-edited training sessions (public CounselChat text "
        "and the domain model's greedy drafts) in this folder and reuse them in later runs",
    )
    args = parser.parse_args()
    args.k = [int(x) for x in args.k.split(",") if x.strip()]

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    with bench_vault("phyassist-learning-", args.max_new_tokens, args.device) as (
        settings,
        store,
        assistant,
    ):
        topics = [
            bench_topic(args, assistant, store, settings, t.strip())
            for t in args.topics.split(",")
            if t.strip()
        ]
    result = {
        "bench": "learning",
        "command": " ".join(["python", "bench/learning.py", *sys.argv[1:]]),
        "model": assistant.model.name,
        "domain_adapter": str(settings.model.domain_adapter),
        "k": args.k,
        "eval_sessions": args.eval_sessions,
        "max_new_tokens": args.max_new_tokens,
        "train_overrides": args.train_overrides,
        "device": args.device,
        "recipes": args.recipes,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_end": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "topics": topics,
        "wall_s": round(time.perf_counter() - started, 1),
        "goals": {
            "changed_share_reduction_at_k10": ">= 0.30",
            "training_wall_s_at_k10": "<= 60 on 2 cores",
        },
    }
    emit(result, args.out)


@contextlib.contextmanager
def bench_vault(prefix: str, max_new_tokens: int, device: str = "cpu"):
    """``(settings, store, assistant)`` in a throw-away home: a fresh vault and the loaded
    model (greedy, ``max_new_tokens``); the user's model cache (public dequantized weights)
    is kept, while vault, adapters and training runs go with the home."""
    from engine.inference.assistant import Assistant
    from engine.settings import GenerationSettings, ModelSettings, StoreSettings, load_settings
    from engine.vault.store import Store

    os.environ.setdefault("PHYASSIST_CACHE_DIR", str(load_settings().cache_dir))
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        os.environ["PHYASSIST_HOME"] = tmp
        settings = load_settings(
            model=ModelSettings(device=device, domain_adapter="auto"),
            generation=GenerationSettings(max_new_tokens=max_new_tokens, do_sample=False),
            store=StoreSettings(scrypt_log2_n=12),
        )
        store = Store.create(settings.vault_dir, PASSPHRASE, settings=settings)
        assistant = Assistant(settings)
        assistant.load()
        try:
            yield settings, store, assistant
        finally:
            store.close()


def emit(result: dict[str, Any], out: Path | None) -> None:
    """Print a bench's JSON, and write it to ``out`` too when given."""
    text = json.dumps(result, ensure_ascii=False, indent=2)
    print(text)
    if out:
        out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
