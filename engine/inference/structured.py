"""Drafts whose layout the engine owns: section by section, item by item.

A small model asked for "Symptom type / Reasons / Advice" writes whatever it likes. Here the
engine writes the headings and the numbers and the model only fills in the blanks: each blank
is one generation that continues the same prompt (the record prefix and everything drafted so
far stay in the KV cache), under a token constraint that keeps it in the statement's language
(``engine.inference.constraints``) and a stop rule that ends it after one sentence (an item) or
a few words (the symptom type). The text streamed to the caller is the layout the tolerant
parser reads, so the analysis pane fills in live and ``parse_analysis`` of the concatenation
gives the same draft; the structured draft is also handed back directly.

When the risk rules flag the statement, the engine adds a safety-assessment item of its own
(first advice item, ``Item.inserted_by = "risk:<category>"``) quoting the evidence, whatever
the model wrote (:func:`ensure_risk_items`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from engine.inference.constraints import TokenConstraint, language_bias, vocabulary
from engine.inference.generation import GenerationRun
from engine.inference.prompts import SECTION_TITLES, Lang
from engine.inference.quotes import CLOSING
from engine.inference.stream import GenerationStats
from engine.records import AnalysisDraft, Item
from engine.trust.risk import RiskFlag, assess

# (prompt token ids, max new tokens, constraint, stop rule) -> a run continuing that prompt
RunSegment = Callable[
    [list[int], int, TokenConstraint | None, Callable[[str], bool]], GenerationRun
]

LABEL_MAX_WORDS = 6  # "a short label"
SHORT_LABEL_WORDS = 3  # when the counselor asked for a short one
LABEL_MAX_TOKENS = 16
LABEL_ATTEMPTS = 3
ITEM_MAX_TOKENS = {"en": 48, "zh": 72}  # one sentence; CJK takes ~1.5 tokens a character
ITEMS_PER_SECTION = 3
# no line break, EOS or full stop before this many tokens (generate path); a CJK character
# is often two or three byte tokens in a small model's vocabulary
MIN_ITEM_TOKENS = {"en": 4, "zh": 8}
# A section holds at least this many model items; after that the model decides whether the
# next is another item or the section's end (``StructuredDraft._more``), as it would continue
# the layout it was trained on: a counselor who keeps two reasons teaches that. One (it was
# two): a patient adapter that writes the counselor's closing line (a homework task) as the
# first advice item was made to write a second, and the counselor deleted and re-added the
# line (issue 17). The domain model, trained on the three-item layout, still writes more.
MIN_ITEMS = 1
# Sections whose items may open with a quotation mark: a reason can be the client's own words,
# quoted, as evidence (a counselor's style a patient adapter learns, issue 17). Advice speaks
# to the client, and the label is a few words: there the mark stays banned as a first token,
# as every other punctuation mark is everywhere (an item must not start with "(" or ".").
QUOTING_SECTIONS = ("reasons",)

_END = {"en": ".!?", "zh": "。！？"}
_CLAUSE_CUT = re.compile(r"[,;:(\[，；：（、。.!?！？]")


def _words(text: str, lang: Lang) -> int:
    """Words for the label limit: whitespace words, or two CJK characters a word."""
    if lang == "zh":
        return (len(re.sub(r"\s", "", text)) + 1) // 2
    return len(text.split())


def label_done(lang: Lang, max_words: int) -> Callable[[str], bool]:
    def done(text: str) -> bool:
        body = text.strip()
        return (
            "\n" in text.lstrip()
            or bool(body and _CLAUSE_CUT.search(body))
            or _words(body, lang) > max_words
        )

    return done


# What a byte-level tokenizer decodes an invalid UTF-8 sequence to (seen with the embedded
# model in Chinese: "社会关系和\ufffd貌"). The local and remote streamers already drop it; this
# is the drafter's own guarantee for any RunSegment, since an item is what the note keeps.
BAD_BYTES = "\ufffd"


def clean_label(text: str, lang: Lang, max_words: int) -> str:
    """The label: first line, up to the first clause mark, at most ``max_words`` words."""
    body = text.replace(BAD_BYTES, "").strip().split("\n", 1)[0]
    body = _CLAUSE_CUT.split(body, 1)[0].strip().strip("\"'“”*「」 ")
    if lang == "zh":
        body = re.sub(r"\s", "", body)[: max_words * 2]
    else:
        body = " ".join(body.split()[:max_words])
    return body


def item_done(lang: Lang) -> Callable[[str], bool]:
    """An item ends at a line break or after its first complete sentence."""
    ends = _END[lang]

    def done(text: str) -> bool:
        if "\n" in text.lstrip():
            return True
        body = text.strip().rstrip("\"'”’)）」")
        if not body or body[-1] not in ends:
            return False
        return _words(body, lang) >= 4

    return done


def cut_item(text: str) -> str:
    """The item's text up to its line break (what follows belongs to no item)."""
    lead = len(text) - len(text.lstrip())
    head, sep, _ = text[lead:].partition("\n")
    return text[:lead] + head if sep else text


def finish_sentence(text: str, lang: Lang) -> str:
    """What to append so the item ends as a sentence ("" when it already does), and closes
    the quotation it opened (an item that quotes the client stops after the quoted
    sentence's full stop, before the closing mark)."""
    body = text.rstrip()
    if not body:
        return ""
    tail = ""
    if body[-1] not in _END[lang] and not body.endswith(("”", '"', "’", "」", "』")):
        tail = "。" if lang == "zh" else "."
    close = CLOSING.get(body[0])
    if close and (body.count(close) < 2 if close == '"' else close not in body):
        tail += close
    return tail


_SENTENCE_SPLIT = re.compile(r"(?<=[.!?。！？])\s*|\n+")


@lru_cache(maxsize=32)
def _statement_tokens(tokenizer: Any, statement: str) -> tuple[tuple[int, ...], ...]:
    sentences = [s.strip() for s in _SENTENCE_SPLIT.split(statement) if s.strip()]
    forms = [statement, *sentences]
    forms += [f"{space}{mark}{s}" for s in sentences for mark in CLOSING for space in ("", " ")]
    return tuple(tuple(tokenizer.encode(f, add_special_tokens=False)) for f in forms)


def statement_tokens(tokenizer: Any, statement: str) -> tuple[tuple[int, ...], ...]:
    """The statement as the anti-loop rules' copy source (``TokenConstraint.copy_source``):
    the whole statement, each sentence on its own (a quote opens a sentence without the space
    it has inside the statement, which a byte-level tokenizer spells differently), and each
    sentence after an opening quotation mark (so a quote's first word is a copy too: the
    penalty turned '"I consistently tell myself' into '" consistently tell myself')."""
    if not statement.strip():
        return ()
    return _statement_tokens(tokenizer, statement)


def requested_language(comments: Iterable[str]) -> Lang | None:
    """The language a counselor's comment asks for ("in Chinese", "用中文"), if any."""
    text = " ".join(comments).lower()
    if re.search(r"\b(in|into) chinese\b|用中文|中文写|写成中文|改成中文", text):
        return "zh"
    if re.search(r"\b(in|into) english\b|用英文|英文写|写成英文|改成英文", text):
        return "en"
    return None


def wants_short_label(comments: Iterable[str]) -> bool:
    text = " ".join(comments).lower()
    return bool(re.search(r"\bshort(er)?\b|\bbrief\b|\bconcise\b|简短|简洁|短一点|几个字", text))


# Risk ---------------------------------------------------------------------------------------

_RISK_TEXT: dict[Lang, dict[str, str]] = {
    "en": {
        "suicide_self_harm": (
            'Safety first: the client said "{evidence}" Assess suicide and self-harm risk '
            "(thoughts, plan, means, intent, protective factors) in this session."
        ),
        "violence": (
            'Safety first: the client said "{evidence}" Assess the risk of violence toward '
            "others (intent, target, plan, means) in this session."
        ),
        "abuse": (
            'Safety first: the client said "{evidence}" Assess the client\'s safety from abuse '
            "and any duty to report in this session."
        ),
    },
    "zh": {
        "suicide_self_harm": (
            "安全优先：来访者说“{evidence}”"
            "请在本次咨询中评估自杀和自伤风险（想法、计划、手段、意图、保护因素）。"
        ),
        "violence": (
            "安全优先：来访者说“{evidence}”"
            "请在本次咨询中评估对他人的暴力风险（意图、对象、计划、手段）。"
        ),
        "abuse": (
            "安全优先：来访者说“{evidence}”"
            "请在本次咨询中评估来访者遭受虐待的安全状况及是否需要报告。"
        ),
    },
}


MAX_QUOTES = 3  # flagged sentences quoted in one safety item


def risk_item_text(flags: list[RiskFlag], lang: Lang) -> str:
    """The safety item for one category, quoting each flagged sentence (up to
    ``MAX_QUOTES``, most severe first): a counselor judges the risk by all of its evidence,
    and the first sentence a flag found is not always the telling one."""
    quotes: list[str] = []
    for flag in flags:
        evidence = " ".join(flag.evidence.split())
        if evidence and evidence not in quotes:
            quotes.append(evidence)
    joiner = "”和“" if lang == "zh" else '" and "'
    return (
        _RISK_TEXT[lang]
        .get(flags[0].category, _RISK_TEXT[lang]["suicide_self_harm"])
        .format(evidence=joiner.join(quotes[:MAX_QUOTES]))
    )


def risk_items(statement: str, lang: Lang) -> list[Item]:
    """One engine item per flagged category (most severe category first), quoting its
    evidence."""
    by_category: dict[str, list[RiskFlag]] = {}
    for flag in assess(statement):  # most severe first, then in reading order
        by_category.setdefault(flag.category, []).append(flag)
    items: list[Item] = []
    for category, flags in by_category.items():
        text = risk_item_text(flags, lang)
        items.append(Item(text=text, draft=text, inserted_by=f"risk:{category}"))
    return items


def ensure_risk_items(
    draft: AnalysisDraft, statement: str, lang: Lang, previous: AnalysisDraft | None = None
) -> AnalysisDraft:
    """Put the engine's safety items first in Advice, whatever the model wrote.

    An item the parser already placed (same text) is marked as the engine's; one the counselor
    deleted in ``previous`` (the draft being regenerated) stays deleted, so a regenerate does
    not silently undo the counselor's decision, and the removal stays on record."""
    wanted = risk_items(statement, lang)
    removed = {
        i.inserted_by
        for i in (previous.advice + previous.reasons if previous is not None else [])
        if i.inserted_by and i.deleted
    }
    front: list[Item] = []
    rest = list(draft.advice)
    for item in wanted:
        existing = next((i for i in rest if i.inserted_by == item.inserted_by), None)
        if existing is None:
            existing = next((i for i in rest if i.text.strip() == item.text.strip()), None)
        if existing is not None:
            rest.remove(existing)
            existing.inserted_by = item.inserted_by
            item = existing
        elif item.inserted_by in removed:
            item.deleted = True
        front.append(item)
    draft.advice = front + rest
    return draft


# Drafting -----------------------------------------------------------------------------------


@dataclass
class _Tally:
    """Timing over all segments of one draft."""

    start: float
    first_token: float | None = None
    tokens: int = 0
    decode_s: float = 0.0
    cancelled: bool = False
    prompt_tokens: int = 0
    cached: int = 0
    segments: int = 0
    decode_cpu_s: float = 0.0

    def add(self, stats: GenerationStats | None) -> None:
        if stats is None:
            return
        self.segments += 1
        if self.first_token is None and stats.tokens:
            self.first_token = stats.ttft_s
        self.tokens += stats.tokens
        if stats.tokens > 1 and stats.tokens_per_s > 0:
            self.decode_s += (stats.tokens - 1) / stats.tokens_per_s
        if stats.tokens > 1:
            self.decode_cpu_s += stats.decode_cpu_s
        self.cancelled = self.cancelled or stats.cancelled
        self.prompt_tokens = stats.prompt_tokens
        self.cached += stats.cached_prefix_tokens

    def stats(self, now: float) -> GenerationStats:
        rate = (self.tokens - self.segments) / self.decode_s if self.decode_s > 0 else 0.0
        return GenerationStats(
            ttft_s=self.first_token if self.first_token is not None else now - self.start,
            tokens=self.tokens,
            tokens_per_s=rate,
            total_s=now - self.start,
            cancelled=self.cancelled,
            prompt_tokens=self.prompt_tokens,
            cached_prefix_tokens=self.cached,
            decode_cpu_s=self.decode_cpu_s,
            cpu_tokens_per_s=(
                (self.tokens - self.segments) / self.decode_cpu_s if self.decode_cpu_s > 0 else 0.0
            ),
        )


@dataclass
class StructuredDraft:
    """One section-by-section draft. Iterate :meth:`stream` for text; then ``draft`` holds
    the structured result, ``text`` the streamed text and ``stats`` the summed timing."""

    tokenizer: Any
    run_segment: RunSegment
    prompt_ids: list[int]
    lang: Lang
    statement: str
    constrain: bool = True
    short_label: bool = False
    reasons: int = ITEMS_PER_SECTION
    advice: int = ITEMS_PER_SECTION
    previous: AnalysisDraft | None = None
    start: float = 0.0
    cancelled: Callable[[], bool] = lambda: False
    text: str = ""
    draft: AnalysisDraft = field(default_factory=AnalysisDraft)
    stats: GenerationStats | None = None

    def _ids(self) -> list[int]:
        return self.prompt_ids + self.tokenizer.encode(self.text, add_special_tokens=False)

    def _constraint(
        self,
        avoid: list[str] | None = None,
        first_banned: list[int] | None = None,
        min_tokens: int | None = None,
        quote_first: bool = False,
    ) -> TokenConstraint:
        vocab = vocabulary(self.tokenizer)
        ends = (*vocab.newline_ids, *_eos(self.tokenizer))
        punct = vocab.punct_ids
        if quote_first:  # an item may open with a quotation mark (a reason quoting the client)
            quotes = set(vocab.opening_quote_ids)
            punct = tuple(i for i in punct if i not in quotes)
        return TokenConstraint(
            bias=language_bias(self.tokenizer, self.lang) if self.constrain else None,
            first_banned=(*ends, *punct, *(first_banned or [])),
            end_ids=(*ends, *vocab.full_stop_ids),
            min_tokens=MIN_ITEM_TOKENS[self.lang] if min_tokens is None else min_tokens,
            avoid=tuple(
                tuple(self.tokenizer.encode(t, add_special_tokens=False))
                for t in [*SECTION_TITLES[self.lang].values(), *(avoid or [])]
            ),
            no_repeat=True,
            repetition_penalty=1.0 if self.constrain and self.lang == "zh" else None,
            copy_source=statement_tokens(self.tokenizer, self.statement),
        )

    def _segment(
        self,
        max_new: int,
        stop: Callable[[str], bool],
        tally: _Tally,
        hold: bool,
        avoid: list[str] | None = None,
        first_banned: list[int] | None = None,
        quote_first: bool = False,
    ) -> Iterator[str]:
        """Generate one blank; yields its text (cut at the stop) unless ``hold`` (a label,
        which has no minimum length). ``quote_first``: the blank may open with a quotation
        mark (a reason quoting the client's words)."""
        constraint = self._constraint(avoid, first_banned, 0 if hold else None, quote_first)
        run = self.run_segment(self._ids(), max_new, constraint, stop)
        got = ""
        sent = 0
        for chunk in run:
            got += chunk
            if hold:
                continue
            part = cut_item(got)
            if len(part) > sent:
                yield part[sent:]
                sent = len(part)
        tally.add(run.stats)
        if hold:
            yield cut_item(got)

    def stream(self) -> Iterator[str]:
        tally = _Tally(self.start)
        lang = self.lang
        titles = SECTION_TITLES[lang]
        sep = "：" if lang == "zh" else ": "
        try:
            # Symptom type: a few words, held back until cut to a label.
            self.text = f"{titles['symptom_type']}{sep.rstrip()}"
            yield self.text
            label = self._label(tally)
            head = (" " if lang == "en" else "") + label
            self.text += head
            yield head
            self.draft.symptom_type = Item(text=label, draft=label)
            for section, count in (("reasons", self.reasons), ("advice", self.advice)):
                if self.cancelled():
                    break
                heading = f"\n{titles[section]}{sep.strip()}"
                self.text += heading
                yield heading
                items: list[Item] = []
                if section == "advice":
                    for risk in ensure_risk_items(
                        AnalysisDraft(), self.statement, lang, self.previous
                    ).advice:
                        items.append(risk)
                        if risk.deleted:
                            continue
                        space = " " if lang == "en" else ""
                        number = len([i for i in items if not i.deleted])
                        line = f"\n{number}.{space}{risk.text}"
                        self.text += line
                        yield line
                yield from self._items(section, items, count, tally)
                setattr(self.draft, section, items)
        finally:
            self.stats = tally.stats(_now())
            self.draft.raw_output = self.text

    def _label(self, tally: _Tally) -> str:
        """The symptom type; an attempt that cleans to nothing ("(", a lone mark) is tried
        again with its first token banned."""
        max_words = SHORT_LABEL_WORDS if self.short_label else LABEL_MAX_WORDS
        banned: list[int] = []
        label = ""
        for _ in range(LABEL_ATTEMPTS):
            raw = "".join(
                self._segment(
                    LABEL_MAX_TOKENS, label_done(self.lang, max_words), tally, True, None, banned
                )
            )
            label = clean_label(raw, self.lang, max_words)
            if label:
                break
            banned.extend(self.tokenizer.encode(raw.strip(), add_special_tokens=False)[:1])
        return label

    def _more(self, section: str, number: int, tally: _Tally) -> bool:
        """Whether the model writes item ``number`` or ends the section here.

        One greedy token, chosen between the two the layout allows next: the one that starts
        "\n{number}." and the one that starts what follows the section (the Advice heading
        after Reasons; the end of the answer after Advice). The layout stays the engine's;
        only the count is the model's (at least ``MIN_ITEMS``, at most the section's count)."""
        titles = SECTION_TITLES[self.lang]
        encode = self.tokenizer.encode
        more = encode(f"{self.text}\n{number}.", add_special_tokens=False)
        if section == "reasons":
            sep = "：" if self.lang == "zh" else ":"
            stop = encode(f"{self.text}\n{titles['advice']}{sep}", add_special_tokens=False)
        else:
            stop = encode(self.text, add_special_tokens=False) + end_of_turn(self.tokenizer)[:1]
        at = 0
        while at < min(len(more), len(stop)) and more[at] == stop[at]:
            at += 1
        if at >= min(len(more), len(stop)):
            return True  # the two cannot be told apart by one token: keep the layout's count
        constraint = TokenConstraint(
            bias=_choice_bias(len(self.tokenizer), (more[at], stop[at])), repetition_penalty=1.0
        )
        run = self.run_segment(self.prompt_ids + more[:at], 1, constraint, lambda _text: True)
        got = "".join(run)
        tally.add(run.stats)
        return got == self.tokenizer.decode([more[at]], skip_special_tokens=True)

    def _items(self, section: str, items: list[Item], count: int, tally: _Tally) -> Iterator[str]:
        """Up to ``count`` model items, numbered after those already in ``items``. A blank
        the model leaves empty is dropped before its number is shown and tried again. After
        ``MIN_ITEMS`` the model may end the section (``_more``)."""
        lang = self.lang
        written = attempts = 0
        while written < count and attempts < count + 2 and not self.cancelled():
            attempts += 1
            shown = len([i for i in items if not i.deleted]) + 1
            if written >= MIN_ITEMS and not self._more(section, shown, tally):
                break
            number = f"\n{shown}."
            before = self.text
            self.text += number
            body = ""
            earlier = [i.text for i in (self.draft.symptom_type, *self.draft.reasons, *items)]
            for piece in self._segment(
                ITEM_MAX_TOKENS[lang],
                item_done(lang),
                tally,
                hold=False,
                avoid=earlier,
                quote_first=section in QUOTING_SECTIONS,
            ):
                piece = piece.replace(BAD_BYTES, "")
                if not body:
                    piece = piece.lstrip()
                    if not piece:
                        continue
                    yield number
                    piece = (" " if lang == "en" else "") + piece
                body += piece
                self.text += piece
                yield piece
            text = body.strip()
            if not text:
                self.text = before
                continue
            tail = finish_sentence(text, lang)
            if tail:
                self.text += tail
                yield tail
            items.append(Item(text=text + tail, draft=text + tail))
            written += 1


def write_item(
    tokenizer: Any,
    run_segment: RunSegment,
    prompt_ids: list[int],
    lang: Lang,
    section: str,
    *,
    constrain: bool = True,
    short_label: bool = False,
    stats_out: list[GenerationStats] | None = None,
) -> Iterator[str]:
    """Stream a new text for one item (a label for the symptom type), under the same rules.

    The engine starts the answer with the section's heading or a number (not shown), so the
    model writes the item itself rather than a preamble."""
    titles = SECTION_TITLES[lang]
    sep = "：" if lang == "zh" else ": "
    lead = f"{titles['symptom_type']}{sep.rstrip()}" if section == "symptom_type" else "1."
    drafter = StructuredDraft(tokenizer, run_segment, prompt_ids, lang, "", constrain=constrain)
    drafter.text = lead
    tally = _Tally(_now())
    if section == "symptom_type":
        drafter.short_label = short_label
        yield drafter._label(tally)
    else:
        body = ""
        for piece in drafter._segment(
            ITEM_MAX_TOKENS[lang],
            item_done(lang),
            tally,
            hold=False,
            quote_first=section in QUOTING_SECTIONS,
        ):
            if not body:
                piece = piece.lstrip()
            body += piece
            if piece:
                yield piece
        tail = finish_sentence(body, lang)
        if tail:
            yield tail
    if stats_out is not None:
        stats_out.append(tally.stats(_now()))


def end_of_turn(tokenizer: Any) -> list[int]:
    """The tokens the chat template puts right after an assistant answer (``<|im_end|>``,
    ``</s>``): what a model trained on answers in this layout writes after the last item."""
    marker = "\u2063PHYASSIST-END\u2063"
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "x"}, {"role": "assistant", "content": marker}],
            tokenize=False,
        )
    except Exception:  # no chat template: the tokenizer's EOS
        return _eos(tokenizer)
    tail = str(text).split(marker, 1)[-1] if marker in str(text) else ""
    ids = tokenizer.encode(tail, add_special_tokens=False) if tail.strip() else []
    return [int(i) for i in ids[:1]] or _eos(tokenizer)


@lru_cache(maxsize=64)
def _choice_bias(size: int, allowed: tuple[int, ...]) -> Any:
    """A vocabulary bias that allows only ``allowed`` (one tensor per choice, reused: the
    remote backend packs each bias tensor once)."""
    import torch

    bias = torch.full((size,), float("-inf"))
    bias[[i for i in allowed if i < size]] = 0.0
    return bias


def _eos(tokenizer: Any) -> list[int]:
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return [int(i) for i in ids]


def _now() -> float:
    import time

    return time.perf_counter()
