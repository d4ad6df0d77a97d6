"""Training rows in the product's own draft format, built from IMHI and CounselChat answers.

The engine drafts an Analysis section by section (``engine.inference.structured``): it writes
the headings and the numbers, the model fills in the symptom type (a short label) and one
sentence per reason or advice item, all continuing one chat prompt (system: role + record;
user: ``analysis_request``). A domain adapter trained on IMHI and CounselChat in their own
formats answers "Yes, the poster suffers from..." or a letter to the client there. These rows
teach the layout the engine actually uses:

* IMHI answers (positive label or SAD cause -> symptom type; sentences of the ``Reasoning``
  -> numbered reasons). IMHI has no advice, so the draft ends after Reasons.
* CounselChat therapist answers (topic -> symptom type; explanatory sentences -> reasons,
  sentences that recommend something -> advice).
* Chinese cases written for the project (``data/training/drafts_zh.json``) and the seed case
  of ``../shared/data/cases``: no machine translation.

The prompt is built by the engine's own functions (``system_prompt``, ``render_record``,
``analysis_request``) and the completion by the engine's own ``StructuredDraft.stream`` fed
with the prepared items instead of a model (:class:`ScriptedModel`), so training and inference
cannot drift apart: headings, separators, numbering and the engine's risk item are the same
code path. Only the text of each blank comes from the data.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from engine.dataprep.clean import Example
from engine.inference.prompts import (
    Lang,
    analysis_request,
    detect_language,
    record_language,
    render_record,
    system_prompt,
)
from engine.records import BasicInfo, Patient

ITEMS = 3  # the engine drafts three reasons and three advice items (ITEMS_PER_SECTION)
MIN_ITEMS = 2
MIN_WORDS, MAX_WORDS = 5, 40  # one item: one sentence a counselor would keep

# Names for the record header; the statement's text is the data, the name is only there so
# the prompt looks like the product's ("Client: <name>").
_NAMES = {
    "en": ("Alex", "Sam", "Jordan", "Taylor", "Chris", "Morgan", "Jamie", "Riley", "Casey"),
    "zh": ("王某", "李某", "张某", "刘某", "陈某", "杨某", "赵某", "黄某", "周某"),
}


# The engine's layout, written by the engine ---------------------------------------------------


class _TextOnlyTokenizer:
    """The tokenizer interface ``StructuredDraft`` touches, for a run with no model: no
    vocabulary (so no constraint tokens), no ids. The layout does not depend on it."""

    eos_token_id = None
    all_special_ids: tuple[int, ...] = ()

    def __len__(self) -> int:
        return 0

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return []

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return []

    def get_vocab(self) -> dict[str, int]:
        return {}


class _Scripted:
    """One blank of the draft: yields the prepared text as a model run would."""

    stats = None

    def __init__(self, text: str) -> None:
        self.text = text

    def __iter__(self) -> Iterator[str]:
        yield self.text


@dataclass
class ScriptedModel:
    """A ``RunSegment`` that fills the blanks with prepared texts, in order."""

    blanks: list[str]
    used: int = 0

    def __call__(self, ids, max_new, constraint, stop):  # type: ignore[no-untyped-def]
        text = self.blanks[self.used] if self.used < len(self.blanks) else ""
        self.used += 1
        return _Scripted(text)


def draft_text(
    statement: str,
    lang: Lang,
    label: str,
    reasons: list[str],
    advice: list[str],
) -> str:
    """The assistant text the engine streams for this draft (with its risk item when the
    statement is flagged). With no ``advice`` the text ends after the reasons."""
    from engine.inference.structured import StructuredDraft

    blanks = [(" " if lang == "en" else "") + label, *reasons, *advice]
    model = ScriptedModel(blanks)
    drafter = StructuredDraft(
        _TextOnlyTokenizer(),
        model,
        [],
        lang,
        statement,
        constrain=False,
        reasons=len(reasons),
        advice=len(advice),
    )
    text = "".join(drafter.stream())
    if model.used != len(blanks):
        raise ValueError(f"the layout asked for {model.used} blanks, {len(blanks)} prepared")
    if not advice:  # no advice in the data: end after the reasons (and any risk item)
        text = text[: text.rfind("\n" + _advice_heading(lang))]
    return text


def _advice_heading(lang: Lang) -> str:
    from engine.inference.prompts import SECTION_TITLES

    return SECTION_TITLES[lang]["advice"]


def prompt_for(statement: str, lang: Lang, patient: Patient) -> tuple[str, str]:
    """(system, user) exactly as ``Assistant.stream_analysis`` builds them for a patient
    with no earlier notes, no observation and no guidance."""
    record_lang = record_language(patient)  # the system turn follows the record's language
    record = render_record(patient, [], record_lang)
    return system_prompt(record_lang, record), analysis_request(statement, lang)


@dataclass(frozen=True)
class DraftCase:
    """One statement and the draft a counselor would want for it."""

    source: str  # imhi / counselchat / zh_cases / seed_case
    task: str
    split: str
    statement: str
    label: str
    reasons: tuple[str, ...]
    advice: tuple[str, ...] = ()
    basic: tuple[tuple[str, str], ...] = ()  # basic-information fields, when the data has them

    @property
    def lang(self) -> Lang:
        return detect_language(self.statement)


def client_name(lang: Lang, n: int) -> str:
    names = _NAMES[lang]
    return names[n % len(names)]


def to_example(case: DraftCase, n: int = 0) -> Example:
    """The case as a training row: system + user prompt, the engine's draft as completion."""
    lang = case.lang
    patient = Patient(name=client_name(lang, n), basic=BasicInfo(**dict(case.basic)))
    system, user = prompt_for(case.statement, lang, patient)
    completion = draft_text(case.statement, lang, case.label, list(case.reasons), list(case.advice))
    return Example(case.source, case.task, case.split, user, completion, system=system)


# Sentences -----------------------------------------------------------------------------------

_SENTENCE_EN = re.compile(r"(?<=[.!?])[\"')\]]*\s+|(?<=[a-z][.!?])(?=[A-Z])")
_SENTENCE_ZH = re.compile(r"(?<=[。！？])")


def sentences(text: str, lang: Lang = "en") -> list[str]:
    """Sentences of ``text`` (also where a scrape lost the space: "worthless.The first")."""
    text = " ".join(text.split())
    pattern = _SENTENCE_ZH if lang == "zh" else _SENTENCE_EN
    return [s.strip() for s in pattern.split(text) if s and s.strip()]


def _item_ok(sentence: str) -> bool:
    words = len(sentence.split())
    return (
        MIN_WORDS <= words <= MAX_WORDS
        and sentence[-1] in ".!"
        and not sentence.endswith("...")
        and '"' not in sentence[:1]
    )


# IMHI -----------------------------------------------------------------------------------------

_QUERY = re.compile(r'^Consider this post:\s*"(?P<post>.*)"\s*Question:\s*(?P<q>.*)$', re.S)

# The label sentence of each task (README of ../shared/data) -> the symptom type.
_SAD_CAUSES = {
    "school": "School stress",
    "financial problem": "Financial stress",
    "family issues": "Family stress",
    "social relationships": "Relationship stress",
    "work": "Work stress",
    "health issues": "Health-related stress",
    "emotion turmoil": "Emotional turmoil",
    "everyday decision making": "Stress over everyday decisions",
}
_IRF_RISKS = {
    "thwarted belongingness": "Thwarted belongingness",
    "perceived burdensomeness": "Perceived burdensomeness",
}
_YES_LABELS = {"DR": "Depression", "dreaddit": "Stress", "loneliness": "Loneliness"}

# IMHI reasoning is written about "the poster" and "the post"; a draft is about the client and
# the statement. Only these fixed phrases are rewritten.
_REWRITES = (
    (re.compile(r"\bthe poster's\b"), "the client's"),
    (re.compile(r"\bThe poster's\b"), "The client's"),
    (re.compile(r"\bthe poster\b"), "the client"),
    (re.compile(r"\bThe poster\b"), "The client"),
    (re.compile(r"\bthe post\b"), "the statement"),
    (re.compile(r"\bThe post\b"), "The statement"),
    (re.compile(r"\bthis post\b"), "this statement"),
    (re.compile(r"\bThis post\b"), "This statement"),
)
# Sentences that only restate the label or talk about the labelling itself.
_META = re.compile(
    r"^(therefore|thus|overall|in conclusion|in summary|based on|the reasoning|this falls under|"
    r"hence)\b|\b(label|category|the first example|classif)",
    re.I,
)


def split_query(query: str) -> tuple[str, str] | None:
    """(post, question) of an IMHI query; None when it is not in the usual form."""
    match = _QUERY.match(query.strip())
    if match is None:
        return None
    return match.group("post").strip(), match.group("q").strip()


def imhi_label(task: str, question: str, answer_label: str) -> str | None:
    """The symptom type for an IMHI gold label sentence; None for a negative answer (no
    problem to name) or a label this mapping does not know."""
    head = answer_label.strip().lower()
    if task == "SAD":
        match = re.search(r"stress cause related to (.+?)\.?$", head)
        return _SAD_CAUSES.get(match.group(1).strip()) if match else None
    if not head.startswith("yes"):
        return None
    if task == "Irf":
        q = question.lower()
        return next((label for key, label in _IRF_RISKS.items() if key in q), None)
    if task == "MultiWD":
        match = re.search(r"does the (\w+) wellness dimension", question.lower())
        return f"{match.group(1).capitalize()} wellness concern" if match else None
    return _YES_LABELS.get(task)


def imhi_case(example: Example, banned_posts: set[str] = frozenset()) -> DraftCase | None:  # type: ignore[assignment]
    """A draft (symptom type + reasons) from one cleaned IMHI instruction row."""
    parts = split_query(example.prompt)
    if parts is None:
        return None
    post, question = parts
    if post in banned_posts:
        return None
    head, sep, reasoning = example.completion.partition("Reasoning:")
    if not sep:
        return None
    label = imhi_label(example.task, question, head)
    if label is None:
        return None
    reasons = []
    for sentence in sentences(reasoning):
        for pattern, repl in _REWRITES:
            sentence = pattern.sub(repl, sentence)
        if _item_ok(sentence) and not _META.search(sentence):
            reasons.append(sentence)
    if len(reasons) < MIN_ITEMS:
        return None
    return DraftCase("imhi", example.task, example.split, post, label, tuple(reasons[:ITEMS]), ())


def imhi_test_posts(test_queries: Iterable[str]) -> set[str]:
    """The posts of the IMHI test sets: one post is asked about under several questions, so
    a draft of it would leak the test set even when the question differs."""
    posts = set()
    for query in test_queries:
        parts = split_query(query)
        if parts is not None:
            posts.add(parts[0])
    return posts


# CounselChat ----------------------------------------------------------------------------------

# Topic -> symptom type; topics about counseling itself (fundamentals, ethics, legal,
# diagnosis questions) name no problem of the client and give no draft.
TOPIC_LABELS = {
    "depression": "Depression",
    "anxiety": "Anxiety",
    "intimacy": "Intimacy problems",
    "relationships": "Relationship problems",
    "parenting": "Parenting stress",
    "family-conflict": "Family conflict",
    "self-esteem": "Low self-esteem",
    "trauma": "Trauma",
    "relationship-dissolution": "Breakup distress",
    "behavioral-change": "Difficulty changing habits",
    "marriage": "Marital problems",
    "anger-management": "Anger problems",
    "lgbtq": "Identity and acceptance concerns",
    "spirituality": "Spiritual concerns",
    "substance-abuse": "Substance abuse",
    "workplace-relationships": "Workplace conflict",
    "social-relationships": "Social difficulties",
    "domestic-violence": "Domestic violence",
    "grief-and-loss": "Grief",
    "self-harm": "Self-harm",
    "sleep-improvement": "Sleep problems",
    "eating-disorders": "Disordered eating",
    "stress": "Stress",
    "children-adolescents": "Child behavior concerns",
    "addiction": "Addiction",
    "human-sexuality": "Sexuality concerns",
    "military-issues": "Military-related stress",
}

_ADVICE = re.compile(
    r"\b(try|trying|consider|recommend|suggest|encourage|may want|might want|could|can help|"
    r"helpful|seek|talk (to|with)|reach out|find a|practice|make sure|set aside|focus on|"
    r"allow yourself|it is important|it's important|working with|work with|therapy|therapist|"
    r"counselor|counseling|journal)\b",
    re.I,
)
_REASON = re.compile(
    r"\b(because|since|sounds like|seems|it is common|it's common|it is normal|it's normal|"
    r"often|usually|may be|might be|could be|due to|a sign|result of|caused|when we|"
    r"many people)\b",
    re.I,
)
_CHATTER = re.compile(
    r"\b(thank|thanks|hi|hello|hey|good luck|best wishes|wishing you|take care|i hope|"
    r"i'm sorry|i am sorry|great question|feel free|contact me|my name|call me)\b",
    re.I,
)


def counselchat_case(example: Example) -> DraftCase | None:
    """A draft from one CounselChat answer: explanatory sentences -> reasons, recommending
    sentences -> advice, the topic -> symptom type; None when the answer has too few of
    either (a short encouragement, a question back to the client)."""
    label = TOPIC_LABELS.get(example.task)
    if label is None:
        return None
    advice: list[str] = []
    other: list[str] = []
    for sentence in sentences(example.completion):
        if not _item_ok(sentence) or _CHATTER.search(sentence):
            continue
        (advice if _ADVICE.search(sentence) else other).append(sentence)
    # Reasons: the explaining sentences first ("it sounds like", "because"), then other
    # statements of the answer, in the answer's order.
    ranked = sorted(range(len(other)), key=lambda i: (not _REASON.search(other[i]), i))
    reasons = [other[i] for i in sorted(ranked[:ITEMS])]
    advice = advice[:ITEMS]
    if len(reasons) < MIN_ITEMS or len(advice) < MIN_ITEMS:
        return None
    statement = example.prompt.split("\n\n", 1)[-1].strip()  # the text without the title
    return DraftCase(
        "counselchat", example.task, example.split, statement, label, tuple(reasons), tuple(advice)
    )


# Chinese --------------------------------------------------------------------------------------

_BASIC_KEYS = tuple(BasicInfo.model_fields)


def seed_case(path: Path) -> DraftCase:
    """The worked example of the product brief, with its reference analysis."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    ref = data["reference_analysis"]
    basic = tuple((k, v) for k, v in data.get("basic_info", {}).items() if k in _BASIC_KEYS)
    return DraftCase(
        "seed_case",
        "zh",
        "train",
        data["counseling_question"]["statement"],
        ref["symptom_type"],
        tuple(_zh_item(r) for r in ref["reasons"][:ITEMS]),
        tuple(_zh_item(a) for a in ref["advice"][:ITEMS]),
        basic,
    )


def _zh_item(text: str) -> str:
    """A reference item as one sentence ("学业压力：..." keeps its lead, ends with 。)."""
    text = text.strip()
    return text if text[-1:] in "。！？" else text + "。"


def written_cases(path: Path) -> list[DraftCase]:
    """Chinese cases written for the project (``data/training/drafts_zh.json``)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return [
        DraftCase(
            "zh_cases",
            "zh",
            "train",
            c["statement"],
            c["symptom_type"],
            tuple(_zh_item(r) for r in c["reasons"]),
            tuple(_zh_item(a) for a in c["advice"]),
            tuple((k, v) for k, v in c.get("basic_info", {}).items() if k in _BASIC_KEYS),
        )
        for c in data["cases"]
    ]


# The set --------------------------------------------------------------------------------------


@dataclass
class DraftRows:
    examples: list[Example] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # cases per source (before repeats)


def build_draft_rows(
    imhi_rows: list[Example],
    counselchat_rows: list[Example],
    zh_cases: list[DraftCase],
    *,
    banned_posts: set[str] = frozenset(),  # type: ignore[assignment]
    hold_out: Iterable[str] = (),
    per_task_cap: int = 2000,
    zh_repeat: int = 10,
    seed: int = 0,
) -> DraftRows:
    """Draft-format rows from cleaned IMHI / CounselChat rows and written Chinese cases.

    ``per_task_cap`` keeps SAD (6k rows) from drowning the rest; ``zh_repeat`` repeats each
    Chinese case (with a different client name) since there are only a few."""
    held = set(hold_out)
    rng = random.Random(seed)
    out = DraftRows()
    by_task: dict[str, list[DraftCase]] = {}
    for ex in imhi_rows:
        if ex.task in held:
            continue
        case = imhi_case(ex, banned_posts)
        if case is not None:
            by_task.setdefault(case.task, []).append(case)
    cases: list[DraftCase] = []
    for task in sorted(by_task):
        pool = by_task[task]
        if len(pool) > per_task_cap:
            pool = rng.sample(pool, per_task_cap)
        out.counts[f"imhi:{task}"] = len(pool)
        cases.extend(pool)
    chat = [c for c in (counselchat_case(ex) for ex in counselchat_rows) if c is not None]
    out.counts["counselchat"] = len(chat)
    cases.extend(chat)
    for n, case in enumerate(cases):
        out.examples.append(to_example(case, n))
    out.counts["zh"] = len(zh_cases)
    for repeat in range(zh_repeat):
        for n, case in enumerate(zh_cases):
            out.examples.append(to_example(case, n + repeat))
    return out
