"""One immutable slice of the index: BM25 over the entries' terms, plus their embeddings.

bm25s builds a segment in one go (no incremental adds), so the knowledge index keeps a big
segment for notes, a small one for notes changed since, and one for the reference corpus;
entries of a changed or deleted patient are masked out of the big one until it is rebuilt.
"""

from __future__ import annotations

import threading

import bm25s
import numpy as np
from threadpoolctl import ThreadpoolController

from engine.inference.prompts import detect_language
from engine.knowledge.embedding import Embedder
from engine.knowledge.entries import Entry

EMBED_CHARS = 2_000  # the start of a long post is enough for a static embedding
_ONE_BLAS_THREAD = ThreadpoolController()


def embed_entries(embedder: Embedder, entries: list[Entry]) -> np.ndarray:
    return embedder.embed([e.search[:EMBED_CHARS] for e in entries])


class Segment:
    def __init__(
        self,
        entries: list[Entry],
        embedder: Embedder | None = None,
        vectors: np.ndarray | None = None,
    ) -> None:
        self.entries = entries
        self.alive = np.ones(len(entries), dtype=bool)
        self.sources = np.array([e.source for e in entries], dtype=object)
        self.patients = np.array([e.patient_id for e in entries], dtype=object)
        self.langs = np.array([e.lang or detect_language(e.search) for e in entries], dtype=object)
        self._embedder = embedder
        self._bm25: bm25s.BM25 | None = None
        self._vectors = vectors if vectors is not None and len(vectors) == len(entries) else None
        self._lock = threading.Lock()
        if entries:
            self._bm25 = bm25s.BM25()
            # An entry without terms still needs a row: a placeholder term keeps ids aligned.
            self._bm25.index([e.terms or ["\x00"] for e in entries], show_progress=False)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def live_count(self) -> int:
        return int(self.alive.sum())

    def kill(self, predicate) -> int:
        killed = 0
        for n, entry in enumerate(self.entries):
            if self.alive[n] and predicate(entry):
                self.alive[n] = False
                killed += 1
        return killed

    def allowed(self, sources: set[str] | None, exclude_patient: str | None) -> np.ndarray:
        """Live entries of the wanted sources, without the excluded patient's."""
        mask = self.alive.copy()
        if sources is not None and len(self.entries):
            mask &= np.isin(self.sources, list(sources))
        if exclude_patient and len(self.entries):
            mask &= self.patients != exclude_patient
        return mask

    def lexical(self, terms: list[str], n: int, allowed: np.ndarray) -> list[tuple[int, float]]:
        """Top ``n`` live entries by BM25 (only those sharing a term with the query)."""
        if self._bm25 is None or not terms:
            return []
        vocab = self._bm25.vocab_dict
        known = [t for t in terms if t in vocab]
        if not known:
            return []
        scores = np.asarray(self._bm25.get_scores(known), dtype=np.float32)
        scores[~allowed] = 0.0
        return _top(scores, n, floor=0.0)

    def vectors(self) -> np.ndarray | None:
        """The entries' embeddings, computed on first use (about 1 s per 40,000 notes)."""
        if self._embedder is None or not self.entries:
            return None
        with self._lock:
            if self._vectors is None:
                self._vectors = embed_entries(self._embedder, self.entries)
            return self._vectors

    def dense(
        self, query_vector: np.ndarray, n: int, floor: float, allowed: np.ndarray, lang: str
    ) -> list[tuple[int, float]]:
        """Top ``n`` live entries by cosine, in the query's language only: the static model's
        Chinese vectors sit close to any English text (a Chinese query matched random posts)."""
        vectors = self.vectors()
        if vectors is None:
            return []
        allowed = allowed & (self.langs == lang)
        with _ONE_BLAS_THREAD.limit(limits=1, user_api="blas"):
            # On two busy cores a threaded mat-vec took 4 ms where one thread takes 0.2 ms.
            sims = vectors @ query_vector
        sims[~allowed] = -1.0
        return _top(sims, n, floor=floor)


def _top(scores: np.ndarray, n: int, floor: float) -> list[tuple[int, float]]:
    if scores.size == 0:
        return []
    n = min(n, scores.size)
    idx = np.argpartition(-scores, n - 1)[:n]
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    return [(int(i), float(scores[i])) for i in idx if scores[i] > floor]
