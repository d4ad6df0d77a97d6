"""One immutable slice of the index: BM25 over the entries' terms, plus their embeddings.

BM25 builds a segment in one go (no incremental adds), so the knowledge index keeps a big
segment for notes, a small one for notes changed since, and one for the reference corpus;
entries of a changed or deleted patient are masked out of the big one until it is rebuilt.

A query must stay cheap on two shared cores (bench/retrieval.py, target p95 <= 100 ms at
40,000 notes + the reference corpus), so everything a query filters on is precomputed as
small integer arrays (source, language, each patient's rows); BM25 is engine.knowledge.bm25.
"""

from __future__ import annotations

import threading

import numpy as np
from threadpoolctl import ThreadpoolController

from engine.inference.prompts import detect_language
from engine.knowledge.bm25 import Bm25
from engine.knowledge.embedding import Embedder
from engine.knowledge.entries import Entry

EMBED_CHARS = 2_000  # the start of a long post is enough for a static embedding
# The cosine is taken over the first SEARCH_DIMS of the model's 256 (WordLlama is trained
# Matryoshka-style, so a prefix is a smaller embedding of its own): the mat-vec over every
# entry is the largest part of a query and is bound by memory bandwidth, which the shared
# box's other jobs eat. On the held-out CounselChat split 128 dims gave hybrid P@5 0.337
# vs 0.334 at 256 (recall@10 0.064 vs 0.068; 64 dims lost P@5: 0.320). Stored vectors keep
# all 256.
SEARCH_DIMS = 128
_ONE_BLAS_THREAD = ThreadpoolController()


def embed_entries(embedder: Embedder, entries: list[Entry]) -> np.ndarray:
    return embedder.embed([e.search[:EMBED_CHARS] for e in entries])


class Segment:
    def __init__(
        self,
        entries: list[Entry],
        embedder: Embedder | None = None,
        vectors: np.ndarray | None = None,
        background: Segment | None = None,
    ) -> None:
        """``background``: the segment this one is searched next to (its BM25 statistics
        are shared, see :class:`engine.knowledge.bm25.Bm25`)."""
        self.entries = entries
        self.alive = np.ones(len(entries), dtype=bool)
        self._source_codes, self._source_names = _codes([e.source for e in entries])
        self._lang_codes, self._lang_names = _codes(
            [e.lang or detect_language(e.search) for e in entries]
        )
        self._patient_rows: dict[str, list[int]] = {}
        for n, entry in enumerate(entries):
            if entry.patient_id:
                self._patient_rows.setdefault(entry.patient_id, []).append(n)
        self._embedder = embedder
        self._bm25: Bm25 | None = None
        self._vectors = (
            search_view(vectors) if vectors is not None and len(vectors) == len(entries) else None
        )
        self._lock = threading.Lock()
        if entries:
            # An entry without terms still needs a row: a placeholder term keeps ids aligned.
            self._bm25 = Bm25(
                [e.terms or ["\x00"] for e in entries],
                background._bm25 if background is not None else None,
            )

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def live_count(self) -> int:
        return int(self.alive.sum())

    def kill_patient(self, patient_id: str) -> int:
        """Mask out every entry of ``patient_id``; returns how many were live."""
        rows = self._patient_rows.get(patient_id)
        if not rows:
            return 0
        killed = int(self.alive[rows].sum())
        self.alive[rows] = False
        return killed

    def allowed(self, sources: set[str] | None, exclude_patient: str | None) -> np.ndarray:
        """Live entries of the wanted sources, without the excluded patient's."""
        mask = self.alive.copy()
        if sources is not None and len(self.entries):
            wanted = [n for n, name in enumerate(self._source_names) if name in sources]
            mask &= np.isin(self._source_codes, wanted)
        if exclude_patient:
            rows = self._patient_rows.get(exclude_patient)
            if rows:
                mask[rows] = False
        return mask

    def in_language(self, lang: str) -> np.ndarray:
        if lang not in self._lang_names:
            return np.zeros(len(self.entries), dtype=bool)
        return self._lang_codes == self._lang_names.index(lang)

    def lexical(self, terms: list[str], n: int, allowed: np.ndarray) -> list[tuple[int, float]]:
        """Top ``n`` live entries by BM25 (only those sharing a term with the query)."""
        if self._bm25 is None or not terms:
            return []
        scores = self._bm25.scores(terms)
        if scores is None:
            return []
        scores[~allowed] = 0.0
        return _top(scores, n, floor=0.0)

    def vectors(self) -> np.ndarray | None:
        """The entries' search vectors (:func:`search_view`), computed on first use (about
        1 s per 40,000 notes)."""
        if self._vectors is not None:
            return self._vectors
        if self._embedder is None or not self.entries:
            return None
        with self._lock:
            if self._vectors is None:
                self._vectors = search_view(embed_entries(self._embedder, self.entries))
            return self._vectors

    def dense(
        self, query_vector: np.ndarray, n: int, floor: float, allowed: np.ndarray, lang: str
    ) -> list[tuple[int, float]]:
        """Top ``n`` live entries by cosine, in the query's language only: the static model's
        Chinese vectors sit close to any English text (a Chinese query matched random posts)."""
        vectors = self.vectors()
        if vectors is None:
            return []
        allowed = allowed & self.in_language(lang)
        if not allowed.any():
            return []
        with _ONE_BLAS_THREAD.limit(limits=1, user_api="blas"):
            # On two busy cores a threaded mat-vec took 4 ms where one thread takes 0.2 ms.
            sims = vectors @ search_view(query_vector[None, :])[0]
        sims[~allowed] = -1.0
        return _top(sims, n, floor=floor)


def _top(scores: np.ndarray, n: int, floor: float) -> list[tuple[int, float]]:
    if scores.size == 0:
        return []
    n = min(n, scores.size)
    idx = np.argpartition(-scores, n - 1)[:n]
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    return [(int(i), float(scores[i])) for i in idx if scores[i] > floor]


def _codes(values: list[str]) -> tuple[np.ndarray, list[str]]:
    """``values`` as small integer codes plus the names they stand for."""
    names: list[str] = []
    lookup: dict[str, int] = {}
    codes = np.empty(len(values), dtype=np.int16)
    for n, value in enumerate(values):
        code = lookup.get(value)
        if code is None:
            code = lookup[value] = len(names)
            names.append(value)
        codes[n] = code
    return codes, names


def search_view(vectors: np.ndarray) -> np.ndarray:
    """The first SEARCH_DIMS of each row, L2-normalised again, as one contiguous float32
    block (what :meth:`Segment.dense` multiplies)."""
    view = np.array(vectors[:, :SEARCH_DIMS], dtype=np.float32, order="C")
    norms = np.linalg.norm(view, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    view /= norms
    return view
