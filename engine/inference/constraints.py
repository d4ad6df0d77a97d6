"""Token-level constraints for drafting: the output's language, and no empty items.

A 135M model asked for Chinese drifts into English or byte soup, and one asked for English
drifts into anything it has seen. The fix is cheap and model-agnostic: a vocabulary mask,
built once per tokenizer and language, that forbids every token that cannot be part of text
in that language (an additive bias of ``-inf``), plus a ban on ending the item (newline, EOS)
before it has started. The same bias is applied by ``generate`` (a ``LogitsProcessor``) and by
the GPU fast decoder (a static bias tensor read inside its CUDA graph), so both paths choose
the same tokens.

Tokens are classified by their raw bytes (byte-level BPE as in GPT-2/Llama-3/SmolLM, or
SentencePiece with ``<0xNN>`` byte fallback as in Llama-2/Mixtral), so a CJK character split
over several byte tokens is still allowed piece by piece.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from transformers import LogitsProcessor, RepetitionPenaltyLogitsProcessor

from engine.inference.prompts import Lang
from engine.inference.quotes import OPENING_QUOTES

# Lead bytes of UTF-8 sequences whose characters Chinese text uses: U+2000-2FFF (general
# punctuation “ ” — …), U+3000-9FFF (CJK punctuation, ideographs), U+FF00-FFEF (full width).
_ZH_LEADS = frozenset(range(0xE2, 0xEA)) | {0xEF}


# The punctuation of written Chinese; ASCII (other than a line break), digits and full-width
# letters are left out: a 135M model's "Chinese" otherwise turns into "千七．105798469".
_ZH_PUNCT = frozenset("，。、；：？！“”‘’（）《》「」『』【】—…·％\n")


def _zh_char(ch: str) -> bool:
    code = ord(ch)
    return (
        ch in _ZH_PUNCT
        or 0x4E00 <= code <= 0x9FFF  # unified ideographs
        or 0x3400 <= code <= 0x4DBF  # extension A
    )


def _en_char(ch: str) -> bool:
    return ord(ch) < 0x80 or 0x2010 <= ord(ch) <= 0x2027  # ASCII, plus ’ “ ” — …


def token_allowed(piece: bytes, lang: Lang) -> bool:
    """Whether a token with these raw bytes can appear in text written in ``lang``.

    Leading UTF-8 continuation bytes and a trailing incomplete sequence are judged by what they
    can belong to: in Chinese, only sequences that start with a CJK/punctuation lead byte."""
    if not piece:
        return False
    if lang == "en":
        try:
            text = piece.decode("utf-8")
        except UnicodeDecodeError:
            return False  # a piece of a multi-byte character: not English text
        return all(_en_char(c) for c in text)
    start = 0
    while start < len(piece) and 0x80 <= piece[start] <= 0xBF:
        start += 1  # the tail of a character started by an earlier (allowed) token
    end = len(piece)
    for back in range(1, min(4, end - start) + 1):
        b = piece[end - back]
        if b >= 0xC0:  # a lead byte: is its sequence complete?
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            if back < need:
                if b not in _ZH_LEADS:
                    return False
                end -= back
            break
        if b < 0x80:
            break
    try:
        text = piece[start:end].decode("utf-8")
    except UnicodeDecodeError:
        return False
    if start == end:
        return True  # only pieces of a character, with an allowed lead
    has_letter = any(c.isascii() and c.isalpha() for c in text)
    return not has_letter and all(_zh_char(c) for c in text)


_FULL_STOPS = tuple(m.encode() for m in ".!?。！？")


def _punct_only(piece: bytes) -> bool:
    text = piece.decode("utf-8", "ignore")
    return bool(text) and not any(c.isalnum() for c in text)


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

    return {v: k for k, v in bytes_to_unicode().items()}


def token_bytes(tokenizer: Any) -> list[bytes | None]:
    """Raw bytes of every token id (None for special tokens)."""
    size = len(tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(list(range(size)))
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    vocab_keys = tokenizer.get_vocab()
    byte_level = "Ġ" in vocab_keys or "Ċ" in vocab_keys
    decoder = _byte_decoder()
    out: list[bytes | None] = []
    for i, tok in enumerate(tokens):
        if tok is None or i in special:
            out.append(None)
            continue
        if byte_level:
            try:
                out.append(bytes(decoder[c] for c in tok))
            except KeyError:  # added tokens written as plain text
                out.append(tok.encode("utf-8"))
        elif len(tok) == 6 and tok.startswith("<0x") and tok.endswith(">"):
            out.append(bytes([int(tok[3:5], 16)]))
        else:
            try:
                out.append(tok.replace("▁", " ").encode("utf-8"))
            except UnicodeEncodeError:  # not text (a lone surrogate): never allowed
                out.append(b"\xff")
    return out


@dataclass(frozen=True)
class Vocabulary:
    """What the constraints need to know about a tokenizer, computed once."""

    pieces: tuple[bytes | None, ...]
    newline_ids: tuple[int, ...]  # tokens that contain a line break
    punct_ids: tuple[int, ...]  # tokens of nothing but punctuation and spaces
    full_stop_ids: tuple[int, ...]  # tokens that end a sentence (. ! ? 。 ！ ？)
    # tokens that open a quotation and nothing else (`"`, ` "`, `“`, `「`): an item may start
    # with one, as a reason quoting the client does
    opening_quote_ids: tuple[int, ...] = ()

    @classmethod
    def of(cls, tokenizer: Any) -> Vocabulary:
        pieces = tuple(token_bytes(tokenizer))
        newline = tuple(i for i, p in enumerate(pieces) if p is not None and b"\n" in p)
        punct = tuple(i for i, p in enumerate(pieces) if p is not None and _punct_only(p))
        full_stop = tuple(
            i
            for i, p in enumerate(pieces)
            if p is not None and any(mark in p for mark in _FULL_STOPS)
        )
        quotes = tuple(
            i
            for i, p in enumerate(pieces)
            if p is not None and p.decode("utf-8", "ignore").strip(" ") in OPENING_QUOTES
        )
        return cls(pieces, newline, punct, full_stop, quotes)

    def language_bias(self, lang: Lang) -> torch.Tensor:
        """0 for tokens allowed in ``lang`` (and special tokens), -inf for the rest."""
        bias = torch.zeros(len(self.pieces), dtype=torch.float32)
        banned = [
            i for i, p in enumerate(self.pieces) if p is not None and not token_allowed(p, lang)
        ]
        bias[banned] = float("-inf")
        return bias


_VOCABS: weakref.WeakKeyDictionary[Any, Vocabulary] = weakref.WeakKeyDictionary()
_BIASES: weakref.WeakKeyDictionary[Any, dict[Lang, torch.Tensor]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def vocabulary(tokenizer: Any) -> Vocabulary:
    with _LOCK:
        vocab = _VOCABS.get(tokenizer)
        if vocab is None:
            vocab = _VOCABS[tokenizer] = Vocabulary.of(tokenizer)
        return vocab


# A model whose vocabulary holds fewer whole Chinese characters than this spells Chinese byte
# by byte (SmolLM2-135M: 77, measured; not measured here for other tokenizers) and, small as such
# models are, writes characters that make no words. The counselor is told, not left guessing.
MIN_WHOLE_CHINESE_CHARACTERS = 200


_WHOLE_ZH: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def whole_chinese_characters(tokenizer: Any) -> int:
    """How many distinct CJK ideographs the vocabulary holds inside whole tokens (cached)."""
    count = _WHOLE_ZH.get(tokenizer)
    if count is None:
        seen: set[str] = set()
        for piece in vocabulary(tokenizer).pieces:
            if piece and any(0xE3 <= b <= 0xE9 for b in piece):  # lead bytes of ideographs
                text = piece.decode("utf-8", "ignore")
                seen.update(
                    c for c in text if 0x4E00 <= ord(c) <= 0x9FFF or 0x3400 <= ord(c) <= 0x4DBF
                )
        count = _WHOLE_ZH[tokenizer] = len(seen)
    return count


def language_caveat(tokenizer: Any, lang: Lang) -> str:
    """A warning for the counselor when this model cannot really write ``lang`` ("" if it can)."""
    if lang != "zh":
        return ""
    count = whole_chinese_characters(tokenizer)
    if count >= MIN_WHOLE_CHINESE_CHARACTERS:
        return ""
    return (
        f"This model knows only {count} Chinese characters as tokens and spells the rest byte "
        "by byte: its Chinese drafts are unreliable and often not real words. Read them as "
        "placeholders, or use a larger model for Chinese (model.spec, see the README)."
    )


def language_bias(tokenizer: Any, lang: Lang) -> torch.Tensor:
    """The cached language mask of ``tokenizer`` (about 0.3 s to build for a 50k vocabulary)."""
    vocab = vocabulary(tokenizer)
    with _LOCK:
        per = _BIASES.setdefault(tokenizer, {})
        if lang not in per:
            per[lang] = vocab.language_bias(lang)
        return per[lang]


NO_REPEAT_NGRAM = 3
# A run whose last COPY_HEAD tokens stand in the statement is copying it (a reason quoting the
# client): the statement's next token is then free of the anti-loop rules, see
# ``TokenConstraint.copy_source``.
COPY_HEAD = 1


def _count(seq: tuple[int, ...], gram: tuple[int, ...]) -> int:
    n = len(gram)
    return sum(seq[i : i + n] == gram for i in range(len(seq) - n + 1))


@dataclass(frozen=True)
class TokenConstraint:
    """What a drafting run may choose.

    ``bias``: static, over the vocabulary (``-inf`` = never), e.g. the language mask.
    ``first_banned``: never the first token (an item must not end or start with punctuation);
    on the ``generate`` path also banned as an end (newline/EOS: ``end_ids``) before
    ``min_tokens`` tokens. ``avoid``: token sequences already written (earlier items) whose
    ``NO_REPEAT_NGRAM``-grams this run must not repeat: a 135M model otherwise writes the same
    reason three times. ``min_tokens``, ``avoid`` and ``no_repeat`` need a host step per
    token and apply on the ``generate`` path only; the GPU fast decoder (a captured graph)
    takes ``bias`` and ``first_banned``.
    """

    bias: torch.Tensor | None = None
    first_banned: tuple[int, ...] = ()
    end_ids: tuple[int, ...] = ()
    min_tokens: int = 0
    avoid: tuple[tuple[int, ...], ...] = ()
    no_repeat: bool = False  # the n-gram rule also within the run's own tokens
    # Overrides the settings' repetition penalty for this run (None: keep it). Chinese drafts
    # use 1.0: a byte-level tokenizer spells CJK with a few hundred byte tokens that all occur
    # in a Chinese prompt, so a penalty over the prompt pushes the model to rare characters.
    repetition_penalty: float | None = None
    # The client's statement, tokenized (each form a separate sequence: the whole statement and
    # its sentences on their own, as a quote opens them without the leading space). A run that
    # is copying it (its last ``COPY_HEAD`` tokens stand in it) may take the statement's next
    # token free of the repetition penalty, and may repeat an n-gram as often as the statement
    # holds it. Without this a reason quoting the client came out with slips: the penalty over
    # the prompt turned "attempted" into "tried", the n-gram rule a sentence's second
    # "be intimate" into "be intime" (issue 17). Loops are still stopped: an n-gram the
    # statement holds once may be written once, in all the draft's items together.
    copy_source: tuple[tuple[int, ...], ...] = ()

    def copy_continuations(self, generated: list[int]) -> set[int]:
        """The statement's next tokens where ``generated`` ends in a stretch of it."""
        h = COPY_HEAD
        if not self.copy_source or len(generated) < h:
            return set()
        head = tuple(generated[-h:])
        return {
            seq[i + h]
            for seq in self.copy_source
            for i in range(len(seq) - h)
            if seq[i : i + h] == head
        }

    def _copy_allows(self, gram: tuple[int, ...], written: tuple[tuple[int, ...], ...]) -> bool:
        """Whether the statement holds ``gram`` more often than the draft has written it."""
        source = max(_count(seq, gram) for seq in self.copy_source)
        return source > sum(_count(seq, gram) for seq in written)

    def banned_continuations(self, generated: list[int]) -> list[int]:
        """Tokens that would complete an n-gram of ``avoid`` (or, with ``no_repeat``, of the
        run's own tokens) after ``generated``, except a copy of the statement's words."""
        n = NO_REPEAT_NGRAM
        if len(generated) < n - 1 or not (self.avoid or self.no_repeat):
            return []
        head = tuple(generated[-(n - 1) :])
        out = []
        own = (tuple(generated),) if self.no_repeat else ()
        written = (*self.avoid, *own)
        for seq in written:
            for i in range(len(seq) - n + 1):
                if seq[i : i + n - 1] == head:
                    out.append(seq[i + n - 1])
        if out and self.copy_source:
            out = [t for t in out if not self._copy_allows((*head, t), written)]
        return out

    def first_bias(self, size: int) -> torch.Tensor | None:
        if not self.first_banned:
            return None
        extra = torch.zeros(size, dtype=torch.float32)
        extra[[i for i in self.first_banned if i < size]] = float("-inf")
        return extra

    def processor(self, prompt_tokens: int, penalty: float = 1.0) -> ConstraintProcessor:
        return ConstraintProcessor(self, prompt_tokens, penalty)


class ConstraintProcessor(LogitsProcessor):
    """``TokenConstraint`` for ``model.generate``.

    ``penalty``: the repetition penalty, applied here (HF's ``RepetitionPenaltyLogitsProcessor``)
    instead of by ``generate``, so that a copy of the statement can be exempt from it; the
    caller then passes ``repetition_penalty=1.0`` to ``generate``."""

    def __init__(self, constraint: TokenConstraint, prompt_tokens: int, penalty: float = 1.0):
        self.constraint = constraint
        self.prompt_tokens = prompt_tokens
        self.penalty = penalty
        self._repetition = RepetitionPenaltyLogitsProcessor(penalty) if penalty != 1.0 else None
        self._bias: torch.Tensor | None = None

    def _penalize(self, input_ids: torch.LongTensor, scores: torch.FloatTensor):
        """HF's repetition penalty, but not on the statement's next token while copying it."""
        assert self._repetition is not None
        penalized = self._repetition(input_ids, scores.clone())
        generated = input_ids[0, self.prompt_tokens :].tolist()
        free = [t for t in self.constraint.copy_continuations(generated) if t < scores.shape[-1]]
        if free:
            penalized[:, free] = scores[:, free]
        return penalized

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.penalty != 1.0:
            scores = self._penalize(input_ids, scores)
        size = scores.shape[-1]
        bias = self.constraint.bias
        if bias is not None:
            if self._bias is None:
                self._bias = fit_bias(bias, size).to(scores.device, scores.dtype)
            scores = scores + self._bias
        c = self.constraint
        done = input_ids.shape[1] - self.prompt_tokens
        banned: list[int] = []
        if done == 0:
            banned.extend(c.first_banned)
        elif done < c.min_tokens:
            banned.extend(c.end_ids)
        generated = input_ids[0, self.prompt_tokens :].tolist()
        banned.extend(c.banned_continuations(generated))
        if banned:
            scores = scores.clone()
            scores[:, [i for i in banned if i < size]] = float("-inf")
        if banned and c.end_ids and bool(torch.isinf(scores).all()):  # nothing left: end
            scores[:, list(c.end_ids)] = 0.0
        return scores


def fit_bias(bias: torch.Tensor, size: int) -> torch.Tensor:
    """The bias cut or padded to the model's logit width (embeddings are often padded past the
    tokenizer; those ids are no text at all, so the padding is ``-inf``)."""
    if bias.shape[0] >= size:
        return bias[:size]
    pad = torch.full((size - bias.shape[0],), float("-inf"), dtype=bias.dtype)
    return torch.cat([bias, pad])
