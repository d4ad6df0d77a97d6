"""A sentence-level suicide / self-harm classifier behind the risk rules.

Rules cannot reach paraphrase ("some mornings I'm disappointed that I woke up at all"), so each
sentence the rules did not flag is also scored by a logistic regression over two feature sets:

* the WordLlama ``l2_supercat`` static embedding (256 dims; weights and tokenizer ship inside
  the ``wordllama`` wheel, opened by :mod:`engine.knowledge.embedding`, nothing is fetched),
  which carries meaning across paraphrases in English;
* hashed word uni/bigrams (English) and character 1-3-grams (Chinese, which the WordLlama
  tokenizer mostly splits into bytes), which carry the exact wording.

The weights are data in the repository (``risk_classifier.npz`` beside this module), fitted by
``python -m bench.risk_classifier train`` on the written sentences in ``data/risk_sentences``
(split by author into train / dev / test before any fitting) plus no-disorder IMHI *train*
posts as negatives; the threshold was chosen on the dev split only. Scoring needs numpy alone.

A flag quotes the sentence that scored above the threshold, so the counselor sees the evidence.
Loading takes about a second (the embedding table): call :func:`warm_up` off the UI thread at
launch; :func:`score_sentences` loads on first use otherwise.
"""

from __future__ import annotations

import importlib.resources
import io
import re
import threading
import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from engine.trust.normalise import plain

__all__ = [
    "CLASSIFIER_FILE",
    "HASH_BITS",
    "SentenceClassifier",
    "classifier",
    "is_loaded",
    "ngram_ids",
    "override",
    "sentence_spans",
    "warm_up",
]

CLASSIFIER_FILE = "risk_classifier.npz"
HASH_BITS = 18
_MASK = (1 << HASH_BITS) - 1

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+")
_EN_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
# Sentence ends; ";" too, since forum posts run several thoughts together with it.
_SENTENCE_END = re.compile(r"[.!?。！？；;\n]+")
_CLAUSE_END = re.compile(r"[,，、:：]+")
MAX_CHARS = 220  # longer sentences are cut at clause breaks into windows of about this size


def _hash(token: str) -> int:
    return zlib.crc32(token.encode("utf-8")) & _MASK


def ngram_ids(text: str, zh_words: bool = False) -> np.ndarray:
    """Hashed ids of the sentence's n-grams (sorted, unique): English word unigrams and
    bigrams, Chinese character 1-, 2- and 3-grams and, with ``zh_words``, Chinese word
    unigrams and bigrams (jieba), which tell "没用的那个" (self-criticism) from "活着没用"."""
    low = plain(text).lower()
    ids: set[int] = set()
    words = _EN_WORD.findall(low)
    for i, w in enumerate(words):
        ids.add(_hash("w:" + w))
        if i:
            ids.add(_hash("b:" + words[i - 1] + " " + w))
    for run in _CJK.findall(text):
        for n in (1, 2, 3):
            for i in range(len(run) - n + 1):
                ids.add(_hash(f"c{n}:" + run[i : i + n]))
        if zh_words:
            seg = _zh_words(run)
            for i, w in enumerate(seg):
                ids.add(_hash("zw:" + w))
                if i:
                    ids.add(_hash("zb:" + seg[i - 1] + " " + w))
    return np.fromiter(sorted(ids), dtype=np.int64, count=len(ids))


def _zh_words(run: str) -> list[str]:
    from engine.knowledge.text import _jieba

    return _jieba().lcut(run, HMM=False)


def is_chinese(text: str) -> bool:
    """Mostly CJK characters (for per-language bookkeeping)."""
    cjk = sum(len(r) for r in _CJK.findall(text))
    return cjk * 2 >= len(re.sub(r"\s", "", text)) and cjk > 0


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each sentence in ``text``, blanks trimmed; a sentence longer than
    ``MAX_CHARS`` is cut at commas into windows so one long run-on post is not one unit."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for m in [*_SENTENCE_END.finditer(text), None]:
        end = m.end() if m else len(text)
        if m is None and pos >= len(text):
            break
        spans.extend(_windows(text, pos, end))
        pos = end
    return [(s, e) for s, e in spans if text[s:e].strip()]


def _windows(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Greedy clause windows of at most about ``MAX_CHARS`` (hard cuts where no comma)."""
    pieces: list[tuple[int, int]] = []
    s = last = start
    for c in [*(m.end() for m in _CLAUSE_END.finditer(text, start, end)), end]:
        if c - s > MAX_CHARS and last > s:
            pieces.append((s, last))
            s = last
        while c - s > 2 * MAX_CHARS:
            pieces.append((s, s + MAX_CHARS))
            s += MAX_CHARS
        last = c
    if end > s:
        pieces.append((s, end))
    out = []
    for a, b in pieces:
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if b > a:
            out.append((a, b))
    return out


@dataclass(frozen=True)
class SentenceClassifier:
    """Weights of the logistic regression: ``p = sigmoid(dense · emb + sum(sparse[ids]) /
    sqrt(len(ids)) + bias)``; a sentence is flagged when ``p`` reaches its language's
    threshold (``threshold_zh`` for mostly-Chinese sentences, ``threshold`` otherwise)."""

    dense: np.ndarray  # (dim,) float32, on the L2-normalised mean embedding
    sparse: np.ndarray  # (2**HASH_BITS,) float32, on L2-normalised binary n-gram presence
    bias: float
    threshold: float  # English (and anything not mostly Chinese)
    version: str
    threshold_zh: float = 0.5  # Chinese: calibrated on its own dev sentences
    zh_words: bool = False  # n-grams include jieba's Chinese words (weights fitted so)

    def flagged(self, sentences: list[str]) -> list[bool]:
        """Per sentence: at or over its language's threshold."""
        scores = self.scores(sentences)
        return [
            bool(p >= (self.threshold_zh if is_chinese(s) else self.threshold))
            for s, p in zip(sentences, scores, strict=True)
        ]

    def scores(self, sentences: list[str]) -> np.ndarray:
        if not sentences:
            return np.zeros(0, dtype=np.float32)
        from engine.knowledge.embedding import shared_embedder

        emb = shared_embedder().embed([plain(s) for s in sentences])
        logits = emb @ self.dense + self.bias
        for i, s in enumerate(sentences):
            ids = ngram_ids(s, self.zh_words)
            if len(ids):
                logits[i] += float(self.sparse[ids].sum()) / np.sqrt(len(ids))
        return 1.0 / (1.0 + np.exp(-logits))


def save(clf: SentenceClassifier, path) -> None:
    """Write the weights (float16 sparse table, compressed: most buckets are zero)."""
    np.savez_compressed(
        path,
        dense=clf.dense.astype(np.float32),
        sparse=clf.sparse.astype(np.float16),
        bias=np.float32(clf.bias),
        threshold=np.float32(clf.threshold),
        threshold_zh=np.float32(clf.threshold_zh),
        version=np.array(clf.version),
        zh_words=np.bool_(clf.zh_words),
    )


def load(data: bytes) -> SentenceClassifier:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return SentenceClassifier(
            dense=z["dense"].astype(np.float32),
            sparse=z["sparse"].astype(np.float32),
            bias=float(z["bias"]),
            threshold=float(z["threshold"]),
            version=str(z["version"]),
            threshold_zh=float(z["threshold_zh"]),
            zh_words=bool(z["zh_words"]) if "zh_words" in z.files else False,
        )


_LOAD_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _shipped() -> SentenceClassifier:
    data = importlib.resources.files("engine.trust").joinpath(CLASSIFIER_FILE).read_bytes()
    return load(data)


_OVERRIDE: list[SentenceClassifier] = []


def override(candidate: SentenceClassifier | None) -> None:
    """Score with ``candidate`` instead of the shipped weights (``None``: back to them): for
    measuring candidate weights (``bench.risk_classifier measure --classifier-weights``)."""
    with _LOAD_LOCK:
        _OVERRIDE[:] = [candidate] if candidate is not None else []


def classifier() -> SentenceClassifier:
    """The shipped classifier (loaded once, thread-safe)."""
    with _LOAD_LOCK:
        return _OVERRIDE[0] if _OVERRIDE else _shipped()


def is_loaded() -> bool:
    """Whether a risk check will run without first loading the weights and embedding."""
    from engine.knowledge.embedding import shared_embedder

    return _shipped.cache_info().currsize > 0 and shared_embedder.cache_info().currsize > 0


def warm_up() -> None:
    """Load the weights and the embedding table now (about a second): call it from a
    background thread at launch so the first risk check does not pay for it."""
    from engine.knowledge.embedding import shared_embedder

    clf = classifier()
    shared_embedder().embed(["warm up"])
    if clf.zh_words:
        ngram_ids("热身", zh_words=True)  # jieba's dictionary (about a second)
