"""Risk flags: signs of suicide or self-harm, violence, or abuse in a statement or note.

The counselor must see these *before* any analysis, with the words that triggered them.
Rules come first and are tuned for recall (a missed flag costs more than a dismissed one);
for suicide / self-harm a sentence classifier (``engine.trust.risk_classifier``) then scores
every sentence the rules did not flag or find negated, to reach paraphrase the rules cannot;
an optional model check (:mod:`engine.trust.risk_model`), given any ``generate(prompt) ->
str`` callable, confirms or denies each flagged category. The model may drop a medium or
low flag it disagrees with but never a high one: a client's text can carry instructions
aimed at the model (prompt injection), so the model alone must not be able to silence an
explicit statement of intent.

English and Chinese phrase rules for ideation (C-SSRS: wish to be dead, thoughts, method,
intent, plan, preparation), means and rehearsal, farewell, perceived burdensomeness,
self-harm, threats and fantasies of violence, and abuse suffered or done (physical, sexual,
coercive control, hitting one's own child), plus counselor shorthand ("passive SI", "reports
HI"). Negation: a cue right before the phrase ("I would never kill myself", "他没有想过自杀")
or a clinical denial over a list ("denies SI, HI or self-harm", "否认自杀、自伤及伤人想法").
Idioms are excluded ("I'd kill for a coffee", "die of embarrassment", "想死你了",
"substance abuse"). Whose words a match is (someone else's, quoted, bereaved, past and
recovered) is :mod:`engine.trust.risk_whose`. Measured in bench/risk.py and SECURITY.md.
"""

from __future__ import annotations

import importlib.resources
import itertools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from engine.trust import risk_probe
from engine.trust import risk_whose as whose
from engine.trust.normalise import matching_view, plain

__all__ = [
    "CATEGORIES",
    "CATEGORY_LABELS",
    "SEVERITIES",
    "RiskFlag",
    "assess",
    "assess_rules",
    "classifier_error",
    "classifier_sentences",
    "flag_order",
    "found_by",
    "highest_severity",
    "risk_audit_detail",
]

Category = Literal["suicide_self_harm", "violence", "abuse"]
Severity = Literal["high", "medium", "low"]

CATEGORIES: tuple[Category, ...] = ("suicide_self_harm", "violence", "abuse")
SEVERITIES: tuple[Severity, ...] = ("high", "medium", "low")
_RANK = {"high": 2, "medium": 1, "low": 0}
CATEGORY_LABELS: dict[str, tuple[str, str]] = {
    "suicide_self_harm": ("Suicide / self-harm", "自杀 / 自伤"),
    "violence": ("Violence toward others", "暴力倾向"),
    "abuse": ("Abuse", "虐待 / 侵害"),
}


@dataclass(frozen=True)
class RiskFlag:
    """One flag: ``evidence`` is the sentence quoted from the text (``text[start:end]``).

    ``phrase_start``/``phrase_end`` locate the exact words that matched, for highlighting.
    ``source`` is ``"rules"``, ``"model"`` or ``"rules+model"``; ``model_verdict`` is the
    model's yes/no for the category (``None`` when no model was asked or it did not answer).
    """

    category: str
    severity: str
    evidence: str
    start: int
    end: int
    phrase_start: int = -1
    phrase_end: int = -1
    rule: str = ""
    source: str = "rules"
    model_verdict: bool | None = None


def flag_order(flag: RiskFlag) -> tuple[int, int, str]:
    """Sort key of flags as the counselor reads them: most severe first, then in text order."""
    return (-_RANK[flag.severity], flag.start, flag.category)


@dataclass(frozen=True)
class _Rule:
    id: str
    category: Category
    severity: Severity
    pattern: re.Pattern[str]
    lang: str  # "en" or "zh"
    negatable: bool = True


# --- the rule tables: data, in risk_rules.json beside this module -------------------------

RULES_FILE = "risk_rules.json"
_MACRO = re.compile(r"\{\{([A-Z_]+)\}\}")


def _expand(pattern: str, macros: dict[str, str]) -> str:
    return _MACRO.sub(lambda m: macros[m.group(1)], pattern)


def load_rules(doc: dict[str, Any] | None = None) -> tuple[_Rule, ...]:
    """Compile the rule table (``risk_rules.json`` shipped with the package, or ``doc``)."""
    doc = doc if doc is not None else _rules_doc()
    macros = doc["macros"]
    out = []
    for row in doc["rules"]:
        flags = re.IGNORECASE if row["lang"] == "en" else 0
        out.append(
            _Rule(
                row["id"],
                row["category"],
                row["severity"],
                re.compile(_expand(row["pattern"], macros), flags),
                row["lang"],
                bool(row["negatable"]),
            )
        )
    return tuple(out)


def _rules_doc() -> dict[str, Any]:
    text = importlib.resources.files("engine.trust").joinpath(RULES_FILE).read_text("utf-8")
    return json.loads(text)


_DOC = _rules_doc()
_RULES: tuple[_Rule, ...] = load_rules(_DOC)

# --- negation ------------------------------------------------------------------------------

# A negation cue followed only by "filler" words right before the match negates it:
# "never (thought about) killing myself", "denies suicidal ideation", "not suicidal".
# "can't"/"couldn't" are not cues: "I can't stop thinking about killing myself" is a positive.
# A clinical denial covers the list that follows it, up to the end of the sentence or a
# contrast: "denies suicidal ideation, homicidal ideation or self-harm", "否认自杀、自伤及伤人想法".
_NEG = _DOC["negation"]
_EN_NEG = re.compile(_NEG["en_cue"], re.IGNORECASE)
_ZH_NEG = re.compile(_NEG["zh_cue"])
_CLAUSE_BREAK = re.compile(_NEG["clause_break"], re.IGNORECASE)
_EN_LIST_NEG = re.compile(_NEG["en_list"], re.IGNORECASE)
_ZH_LIST_NEG = re.compile(_NEG["zh_list"])


def _clause_prefix(text: str, start: int) -> str:
    window = text[max(0, start - 120) : start]
    cut = 0
    for m in _CLAUSE_BREAK.finditer(window):
        cut = m.end()
    return window[cut:]


def _negated(rule: _Rule, text: str, start: int, end: int) -> bool:
    if not rule.negatable:
        return False
    prefix = _clause_prefix(text, start)
    sentence = text[max(0, start - 160) : start]
    if rule.lang == "zh":
        return _ZH_NEG.search(prefix) is not None or _ZH_LIST_NEG.search(sentence) is not None
    if _EN_NOT_NEG_BEFORE.search(prefix) or _EN_NOT_NEG_AFTER.match(text, end, end + 80):
        return False  # "trying not to hurt myself", "never wanted to die more", "... but I want to"
    return _EN_NEG.search(prefix) is not None or _EN_LIST_NEG.search(sentence) is not None


_EN_NOT_NEG_BEFORE = re.compile(_NEG["en_not_negation_before"], re.I)
_EN_NOT_NEG_AFTER = re.compile(_NEG["en_not_negation_after"], re.I)


def assess(text: str, *, classifier: bool = True, probe: bool | None = None) -> list[RiskFlag]:
    """Flags for ``text``, most severe first: the rules (:func:`assess_rules`) and, for
    suicide / self-harm, the sentence classifier (:mod:`engine.trust.risk_classifier`) on
    every sentence the rules did not flag or find negated. A classifier flag is ``medium``,
    quotes its sentence (``phrase_start``/``phrase_end`` span all of it) and has
    ``source="classifier"``.
    When neither found suicide / self-harm, the whole-statement probe
    (:mod:`engine.trust.risk_probe`; ``probe=None``: as ``risk_probe.enabled()`` says, off by
    default) reads the statement in context; its flag is ``medium``, ``source="probe"``, and
    quotes the sentence that carries its score most. It loads the embedded model (seconds,
    once) and takes tens of milliseconds: call ``assess`` from a worker.
    If the classifier or the probe cannot load, the other flags are returned and
    :func:`classifier_error` / :func:`probe_error` say why."""
    flags, denied = _rule_pass(text)
    if not classifier or not text or not text.strip():
        return flags
    extra = _classifier_flags(text, flags, denied)
    use_probe = risk_probe.enabled() if probe is None else probe
    if use_probe and not any(f.category == "suicide_self_harm" for f in [*flags, *extra]):
        extra += _probe_flags(text, flags, denied)
    if not extra:
        return flags
    return sorted([*flags, *extra], key=flag_order)


_CLASSIFIER_ERROR: str | None = None
_PROBE_ERROR: str | None = None


def probe_error() -> str | None:
    """Why the last :func:`assess` that asked for the probe ran without it (``None``: it ran)."""
    return _PROBE_ERROR


def _probe_flags(text: str, flags: list[RiskFlag], denied: list[tuple[int, int]]) -> list[RiskFlag]:
    """The probe's flag for the whole statement, quoting its highest-scoring sentence among
    those no rule flagged or found negated (none left: no flag)."""
    global _PROBE_ERROR
    spans = _unflagged_sentences(text, flags, denied)
    if not spans:
        return []
    try:
        probe = risk_probe.probe()
        score = float(probe.scores([text])[0])
        if score < probe.weights.threshold_for(text):
            _PROBE_ERROR = None
            return []
        weight = _evidence_weights(probe, text, spans, score) if len(spans) > 1 else [1.0]
    except Exception as exc:  # no embedded model or weights: the other checks still stand
        _PROBE_ERROR = f"statement probe unavailable: {exc}"
        return []
    _PROBE_ERROR = None
    s, e = spans[int(np.argmax(weight))]
    return [_sentence_flag(text, s, e, rule="statement_probe", source="probe")]


def _sentence_flag(text: str, start: int, end: int, *, rule: str, source: str) -> RiskFlag:
    """A medium suicide / self-harm flag quoting (and highlighting) a whole sentence."""
    return RiskFlag(
        category="suicide_self_harm",
        severity="medium",
        evidence=text[start:end],
        start=start,
        end=end,
        phrase_start=start,
        phrase_end=end,
        rule=rule,
        source=source,
    )


def classifier_error() -> str | None:
    """Why the last :func:`assess` ran on rules only (``None``: the classifier ran)."""
    return _CLASSIFIER_ERROR


def found_by(model: str | None = None, *, model_not_asked: str | None = None) -> str:
    """The counselor's line naming the checks behind the last :func:`assess`: the rules, the
    sentence classifier and the statement probe unless they could not load (then why), the
    model where it was asked, and why it was not (``model_not_asked``), e.g. "rules, the
    sentence classifier and the statement probe; no model check: the model is still
    loading"."""
    checks = ["rules"]
    if _CLASSIFIER_ERROR is None:
        checks.append("the sentence classifier")
    probe_on = risk_probe.enabled()
    if probe_on and _PROBE_ERROR is None:
        checks.append("the statement probe")
    if model:
        checks.append(model)
    line = "rules only" if len(checks) == 1 else ", ".join(checks[:-1]) + " and " + checks[-1]
    errors = [e for e in (_CLASSIFIER_ERROR, _PROBE_ERROR if probe_on else None) if e]
    if errors:
        line += f" ({'; '.join(errors)})"
    if model_not_asked:
        line += f"; no model check: {model_not_asked}"
    return line


def classifier_sentences(text: str) -> list[tuple[int, int]]:
    """The sentences of ``text`` that :func:`assess` gives the classifier: those where no
    suicide / self-harm rule matched, negated or not (for choosing its threshold on exactly
    what it will see)."""
    flags, denied = _rule_pass(text)
    return _unflagged_sentences(text, flags, denied)


def _unflagged_sentences(
    text: str, flags: list[RiskFlag], denied: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    from engine.trust.risk_classifier import sentence_spans

    covered = [(f.start, f.end) for f in flags if f.category == "suicide_self_harm"] + denied
    return [
        (s, e) for s, e in sentence_spans(text) if not any(s < ce and cs < e for cs, ce in covered)
    ]


def _classifier_flags(
    text: str, flags: list[RiskFlag], denied: list[tuple[int, int]]
) -> list[RiskFlag]:
    global _CLASSIFIER_ERROR
    from engine.trust import risk_classifier

    spans = _unflagged_sentences(text, flags, denied)
    if not spans:
        return []
    try:
        clf = risk_classifier.classifier()
        hits = clf.flagged([text[s:e] for s, e in spans])
    except Exception as exc:  # missing weights or embedding: the rules still stand
        _CLASSIFIER_ERROR = f"risk classifier unavailable: {exc}"
        return []
    _CLASSIFIER_ERROR = None
    hits = [
        hit and _passes_gate(text[s:e]) and not _scored_about_someone_else(clf, text, s, e)
        for (s, e), hit in zip(spans, hits, strict=True)
    ]
    return [
        _sentence_flag(text, s, e, rule="classifier", source="classifier")
        for (s, e), hit in zip(spans, hits, strict=True)
        if hit
    ]


_LEAVE_ONE_OUT_MAX = 12


def _evidence_weights(
    probe: Any, text: str, spans: list[tuple[int, int]], whole: float
) -> np.ndarray:
    """How much each sentence carries the probe's score ``whole``: the drop when the
    statement is scored without it (up to ``_LEAVE_ONE_OUT_MAX`` sentences; the highest drop
    is the sentence the flag quotes), plus a little of its own score to break ties. Longer
    statements: its own score alone."""
    alone = probe.scores([text[s:e] for s, e in spans])
    if len(spans) > _LEAVE_ONE_OUT_MAX:
        return alone
    without = probe.scores([(text[:s] + text[e:]).strip() for s, e in spans])
    return (whole - without) + 0.1 * alone


_EN_HOPEFUL = re.compile(_DOC["classifier_gate"]["en_hopeful"], re.I)
_EN_HOPEFUL_BUT = re.compile(_DOC["classifier_gate"]["en_hopeful_but"], re.I)
_EN_TIME_AWAY = re.compile(_DOC["classifier_gate"]["en_time_away"], re.I)
_EN_TIME_AWAY_BUT = re.compile(_DOC["classifier_gate"]["en_time_away_but"], re.I)
_ZH_SELF_CRITICAL = re.compile(_DOC["classifier_gate"]["zh_self_critical"])
_ZH_SELF_CRITICAL_BUT = re.compile(_DOC["classifier_gate"]["zh_self_critical_but"])
_ZH_IDIOM = re.compile(_DOC["classifier_gate"]["zh_idiom"])


def _passes_gate(sentence: str) -> bool:
    """Whether a sentence the classifier scored over its threshold may become a flag
    (``risk_rules.json`` ``classifier_gate``): English in hopeful words ("I felt alive again",
    "she makes it all better") with no negation and no word of death or harm does not, since
    the English weights react to "alive" and "better" whatever the sense; nor does English
    about going away for a while ("disappear to a cabin for a month") with no word of death,
    harm or for ever, which the rules already read as no risk. Chinese self-criticism
    ("我觉得自己什么都做不好", "后悔自己说过的话") with no word of death, living, means, harm,
    ending, absence or burden does not either: the Chinese weights score it as high as risk.
    Nor does the idiom 想死你了 ("miss you so much") with no other such word. Other Chinese
    passes (a gate requiring such a word of every Chinese sentence lost held-out recall:
    SECURITY.md, round 4)."""
    from engine.trust.risk_classifier import is_chinese

    if is_chinese(sentence):
        if _ZH_IDIOM.search(sentence) and not _ZH_SELF_CRITICAL_BUT.search(
            _ZH_IDIOM.sub("", sentence)
        ):
            return False  # 想死你了: "miss you so much"
        return not (
            _ZH_SELF_CRITICAL.search(sentence) and not _ZH_SELF_CRITICAL_BUT.search(sentence)
        )
    view = plain(sentence)
    if _EN_TIME_AWAY.search(view) and not _EN_TIME_AWAY_BUT.search(view):
        return False
    return not (_EN_HOPEFUL.search(view) and not _EN_HOPEFUL_BUT.search(view))


_CLAUSE = re.compile(r"[,，、;；:：]+|\s+-+\s+")


def _scored_about_someone_else(clf: Any, text: str, start: int, end: int) -> bool:
    """Whether the part of a flagged sentence that the classifier reacts to is about someone
    else ("My little brother has been cutting his arms, what do I do?"): the clause scoring
    highest (the sentence itself when it has one) holds no first person, and its first person
    is a relation or a pronoun resolved to one (as for the rules)."""
    from engine.trust.risk_classifier import is_chinese

    cuts = [start, *(m.end() for m in _CLAUSE.finditer(text, start, end)), end]
    clauses = [(a, b) for a, b in itertools.pairwise(cuts) if text[a:b].strip()]
    if len(clauses) > 1:
        scores = clf.scores([text[a:b] for a, b in clauses])
        start, end = clauses[int(scores.argmax())]
    lang = "zh" if is_chinese(text[start:end]) else "en"
    if not whose.no_first_person(lang, text, start, end):  # "my" of "my brother" is not the writer
        return False
    first = whose.PERSON[lang].search(text, start, end)
    if first is None:
        return False
    if first.group("other") is not None:
        return True
    return first.group("pronoun") is not None and whose.refers_to_someone_else(lang, text, first)


def assess_rules(text: str) -> list[RiskFlag]:
    """Rule-based flags for ``text``, most severe first (one per category and sentence)."""
    return _rule_pass(text)[0]


def _rule_pass(text: str) -> tuple[list[RiskFlag], list[tuple[int, int]]]:
    """The rule flags, and the sentences where a suicide/self-harm rule matched but was
    negated ("I would never kill myself", "denies SI"): the classifier leaves those alone,
    since the words it would react to are the ones the client denied."""
    if not text or not text.strip():
        return [], []
    # rules match on one spelling of apostrophes ("don‚Äôt" -> "don't"); offsets map back
    view, back = matching_view(text)

    def at(i: int) -> int:
        return back[i] if back is not None else i

    best: dict[tuple[str, int, int], RiskFlag] = {}
    denied: list[tuple[int, int]] = []
    for rule in _RULES:
        for m in rule.pattern.finditer(view):
            if m.end() == m.start():
                continue
            suicide = rule.category == "suicide_self_harm"
            a, b = whose.sentence_span(view, m.start(), m.end())
            if _negated(rule, view, m.start(), m.end()):
                if suicide:
                    denied.append((at(a), at(b)))
                continue
            if suicide and (
                whose.quoted_from_someone_else(rule.lang, view, m.start(), m.end())
                or whose.past_and_recovered(rule.lang, view, m.start(), m.end())
            ):
                denied.append((at(a), at(b)))
                continue
            if suicide and whose.about_someone_else(rule.lang, view, m.start(), m.end()):
                # the classifier still reads the sentence unless it is about others only
                if whose.no_first_person(rule.lang, view, a, b):
                    denied.append((at(a), at(b)))
                continue
            s, e = at(a), at(b)
            flag = RiskFlag(
                category=rule.category,
                severity=rule.severity,
                evidence=text[s:e],
                start=s,
                end=e,
                phrase_start=at(m.start()),
                phrase_end=at(m.end()),
                rule=rule.id,
            )
            key = (rule.category, s, e)
            old = best.get(key)
            if old is None or _RANK[flag.severity] > _RANK[old.severity]:
                best[key] = flag
    flags = sorted(best.values(), key=flag_order)
    return flags, denied


def risk_audit_detail(flags: Iterable[RiskFlag]) -> str:
    """What the audit log may say about acknowledged flags: categories, severities and rule
    ids, never the quoted evidence (the log outlives a deleted patient)."""
    parts = [f"{f.category}:{f.severity}:{f.rule or f.source}" for f in flags]
    return "flags=" + ",".join(parts) if parts else "flags=none"


def highest_severity(flags: Iterable[RiskFlag]) -> str | None:
    ranks = [_RANK[f.severity] for f in flags]
    return SEVERITIES[2 - max(ranks)] if ranks else None
