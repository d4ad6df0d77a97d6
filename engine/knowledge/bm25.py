"""BM25 (Lucene variant, k1=1.5, b=0.75: bm25s' defaults and scores) built and queried with
whole-array numpy operations.

bm25s builds its matrix with Python loops over every document and token (about 2 s of the
~4 s it took to reopen a 40,000-note vault on two cores) and scores a query with one
``np.add.at`` per term. Here the build is a vocabulary lookup per token plus a few sorts,
and a query gathers the terms' postings and sums them per entry in one ``np.bincount``.
tests/engine/knowledge/test_bm25.py checks the scores against bm25s itself.
"""

from __future__ import annotations

from itertools import chain

import numpy as np

K1 = 1.5
B = 0.75


class Bm25:
    """Precomputed BM25 term weights of ``docs`` (lists of terms), one column per term.

    ``background``: the big index these few docs are searched next to (the notes saved since
    it was built). Their idf and average length then come from both together, so their
    scores compare with the big one's: on its own statistics a re-saved note scored far
    lower (idf of a 20-doc corpus) and dropped out of the top matches."""

    def __init__(self, docs: list[list[str]], background: Bm25 | None = None) -> None:
        self.num_docs = len(docs)
        lengths = np.fromiter(map(len, docs), dtype=np.int64, count=len(docs))
        tokens = list(chain.from_iterable(docs))
        # first-seen order, built by C loops (dict.fromkeys, map): no Python code per token
        self.vocab: dict[str, int] = {t: n for n, t in enumerate(dict.fromkeys(tokens))}
        flat = np.fromiter(map(self.vocab.__getitem__, tokens), dtype=np.int64, count=len(tokens))
        n_terms = max(len(self.vocab), 1)
        doc_of = np.repeat(np.arange(self.num_docs, dtype=np.int64), lengths)
        # one key per (term, doc): np.unique sorts them term-major, which is CSC order
        keys, tf = np.unique(flat * max(self.num_docs, 1) + doc_of, return_counts=True)
        term, doc = np.divmod(keys, max(self.num_docs, 1))
        df = np.bincount(term, minlength=n_terms)
        self.df = df
        self.total_len = int(lengths.sum())
        n_stats, df_stats, len_stats = self.num_docs, df, self.total_len
        if background is not None and background.num_docs:
            known = np.fromiter(
                (background.vocab.get(t, -1) for t in self.vocab), dtype=np.int64, count=len(df)
            )
            df_stats = df + np.where(known >= 0, background.df[known], 0)
            n_stats += background.num_docs
            len_stats += background.total_len
        idf = np.log(1.0 + (n_stats - df_stats + 0.5) / (df_stats + 0.5))
        avg_len = len_stats / n_stats if n_stats else 1.0
        norm = K1 * ((1.0 - B) + B * lengths[doc] / (avg_len or 1.0))
        self.data = (idf[term] * tf / (norm + tf)).astype(np.float32)
        self.indices = doc.astype(np.int32)
        self.indptr = np.concatenate(([0], np.cumsum(df))).astype(np.int64)

    def scores(self, terms: list[str]) -> np.ndarray | None:
        """BM25 of every document for ``terms`` (a repeated term counts again, as in bm25s);
        None when no term is in the vocabulary."""
        counts: dict[int, int] = {}
        for t in terms:
            tid = self.vocab.get(t)
            if tid is not None:
                counts[tid] = counts.get(tid, 0) + 1
        if not counts:
            return None
        ids = np.fromiter(counts, dtype=np.int64, count=len(counts))
        starts = self.indptr[ids]
        lengths = self.indptr[ids + 1] - starts
        total = int(lengths.sum())
        if total == 0:
            return None
        # every posting of every term, located without a Python loop over postings
        positions = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(total)
        weights = self.data[positions]
        repeats = np.fromiter(counts.values(), dtype=np.float32, count=len(counts))
        if (repeats != 1).any():
            weights = weights * np.repeat(repeats, lengths)
        summed = np.bincount(self.indices[positions], weights=weights, minlength=self.num_docs)
        return summed.astype(np.float32)
