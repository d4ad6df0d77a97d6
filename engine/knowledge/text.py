"""Words for the lexical index, in English and Chinese, and the passage a match shows.

English: lower-cased words without stop words. Chinese: jieba's search-mode segmentation
(words plus their shorter parts, so 焦虑症 also matches 焦虑) of every run of ideographs.
The same function tokenizes documents and queries, so both sides agree.
"""

from __future__ import annotations

import logging
import re
import threading
from functools import lru_cache

from bm25s.stopwords import STOPWORDS_EN_PLUS

_LATIN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_SPLIT = re.compile(r"([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+)")
# A sentence ends after . ! ? 。 ！ ？ ； ; or a line break, but not after the "1." of a numbered
# item: a saved note's advice reads "建议：1. 按时吃饭 2. ..." and its passage was "建议：1.".
_SENTENCE = re.compile(r"(?:(?<=[!?。！？；;\n])|(?<=\D\.))\s*")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


STOP_EN = frozenset(STOPWORDS_EN_PLUS) | _words(
    "i'm i've i'd i'll don't can't won't it's that's he's she's really just like get got "
    "know feel want would could also one even much"
)
# Function words and particles; content characters (累, 怕, 哭) stay.
STOP_ZH = _words(
    "的 了 是 我 你 他 她 它 们 在 和 与 及 就 都 也 很 又 还 吗 呢 吧 啊 呀 着 过 把 被 让 给 "
    "对 从 到 向 这 那 这个 那个 一个 一些 没有 什么 怎么 因为 所以 但是 而且 如果 可以 自己 "
    "我们 你们 他们 她们 一 有 不 会 要 说 上 下 去 来 个 之 其 或 等 所 而 以 于 为"
)

_jieba_lock = threading.Lock()


@lru_cache(maxsize=1)
def _jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)
    with _jieba_lock:
        jieba.initialize()  # loads the dictionary once (~1 s); later calls are cheap
    return jieba


def _latin_words(text: str) -> list[str]:
    return [term for word in _LATIN.findall(text) if (term := _latin_term(word))]


@lru_cache(maxsize=1 << 16)
def _latin_term(word: str) -> str:
    """The index term of one lower-cased word ("" for a stop word). Cached: a query
    tokenizes its text and the sentences of every match (best_passage), the same few
    thousand words again and again."""
    if word in STOP_EN or len(word) < 2:
        return ""
    return _stem(word)


def _stem(word: str) -> str:
    """A light English stem: plural and common verb endings, so 'worries' meets 'worry'."""
    if len(word) <= 4 or word.isdigit():
        return word
    endings = (("ies", "y"), ("ied", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", ""))
    for suffix, repl in endings:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            if suffix == "s" and word.endswith("ss"):
                return word
            return word[: -len(suffix)] + repl
    return word


def _chinese_words(run: str) -> list[str]:
    return [w for w in _jieba().cut_for_search(run) if w.strip() and w not in STOP_ZH]


def tokenize(text: str) -> list[str]:
    """Index terms of ``text`` (English and Chinese mixed freely)."""
    terms: list[str] = []
    for part in _SPLIT.split(text.lower()):
        if not part:
            continue
        if _CJK_RUN.fullmatch(part):
            terms.extend(_chinese_words(part))
        else:
            terms.extend(_latin_words(part))
    return terms


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if s and s.strip()]


def best_passage(text: str, query_terms: list[str], max_chars: int = 280) -> str:
    """The sentence (with its neighbour when short) sharing most terms with the query."""
    parts = (sentences(text) or [text])[:60]  # a match's passage is near its start
    wanted = set(query_terms)
    best, best_hits = 0, -1
    for n, sentence in enumerate(parts):
        hits = len(wanted.intersection(tokenize(sentence)))
        if hits > best_hits:
            best, best_hits = n, hits
    passage = parts[best]
    if len(passage) < max_chars // 2 and best + 1 < len(parts):
        passage = f"{passage} {parts[best + 1]}"
    if len(passage) > max_chars:
        passage = passage[: max_chars - 1].rstrip() + "…"
    return passage
