"""The knowledge index of one vault: the counselor's saved notes across all patients plus the
reference corpus, searchable in English and Chinese.

At rest everything is in the vault's encrypted blobs: each patient's note entries (with
their index terms) in a blob under that patient's data key, so deleting the patient
crypto-erases them with the rest of the record; the reference corpus in a vault blob under
the master key. The BM25 matrices and embeddings are rebuilt in memory when the vault opens.

Freshness does not depend on callers remembering to tell the index: every query first
compares each patient's record stamp (a per-write nonce the store keeps in memory) with the
stamp the index read the notes at, re-reads the records that changed and drops the
patients that are gone. ``update_patient`` / ``remove_patient`` do the same eagerly.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from engine.errors import PhyAssistError
from engine.inference.prompts import detect_language
from engine.knowledge.embedding import (
    MODEL_NAME,
    Embedder,
    EmbeddingUnavailable,
    shared_embedder,
)
from engine.knowledge.entries import Entry, Match, patient_entries
from engine.knowledge.segment import Segment, embed_entries
from engine.knowledge.text import best_passage, tokenize
from engine.records import Patient

NOTES_BLOB = "knowledge/notes"  # per patient, under the patient's data key
REFERENCE_BLOB = "knowledge/reference"  # per vault, under the master key
FORMAT = 1
CANDIDATES = 50  # per list, before fusion
RRF_K = 60  # reciprocal-rank fusion constant (Cormack et al.)
DENSE_FLOOR = 0.35  # cosine below this is noise for the static embedding
COMPACT_AT = 2_000  # notes changed since the big segment was built, before rebuilding it

Mode = Literal["auto", "lexical", "embedding", "hybrid"]

logger = logging.getLogger("phyassist.knowledge")


@dataclass
class _Shard:
    stamp: str | None
    entries: list[Entry]
    vectors: np.ndarray | None = None  # one row per entry, from the embedding model


def _pack(vectors: np.ndarray | None) -> str | None:
    if vectors is None:
        return None
    return base64.b64encode(vectors.astype(np.float16).tobytes()).decode("ascii")


def _unpack(raw: str | None, rows: int) -> np.ndarray | None:
    if not raw or rows == 0:
        return None
    flat = np.frombuffer(base64.b64decode(raw), dtype=np.float16).astype(np.float32)
    if flat.size % rows:
        return None
    return flat.reshape(rows, -1)


class KnowledgeIndex:
    """Similar own cases and reference entries for a statement.

    ``store`` is an open :class:`engine.vault.store.Store` (a read-only one works, nothing
    is then written). ``embedder``: ``"auto"`` loads the wheel-shipped static embedding
    (falling back to lexical only if it cannot), ``None`` means lexical only.
    """

    def __init__(self, store: Any, *, embedder: Embedder | str | None = "auto") -> None:
        self.store = store
        self._embedder_choice = embedder  # resolved by load(): constructing stays cheap
        self.embedder: Embedder | None = embedder if isinstance(embedder, Embedder) else None
        self._lock = threading.RLock()
        self._shards: dict[str, _Shard] = {}
        self._main = Segment([], self.embedder)
        self._main_ids: set[str] = set()  # patients whose entries the big segment holds live
        self._fresh = Segment([], self.embedder)
        self._reference = Segment([], self.embedder)
        self.reference_info: dict[str, Any] = {}
        self.load_seconds = 0.0
        self.rebuilt_patients = 0  # shards rebuilt from records at the last open/sync
        # the record stamps the index last matched completely: a query whose stamps are the
        # same skips the per-patient comparison (the common case)
        self._synced_stamps: dict[str, str | None] | None = None
        self._loaded = False

    # -- opening ------------------------------------------------------------------------------

    def _resolve_embedder(self) -> None:
        if self._embedder_choice == "auto":
            self._embedder_choice = None
            try:
                self.embedder = shared_embedder()
            except (EmbeddingUnavailable, OSError) as exc:
                logger.warning("embedding model unavailable (%s); lexical only", exc)

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self) -> KnowledgeIndex:
        """Read the reference corpus and every patient's shard; rebuild stale shards."""
        start = time.perf_counter()
        with self._lock:
            self._resolve_embedder()
            self._load_reference()
            stamps = self.store.record_stamps()
            self.rebuilt_patients = 0
            for pid, stamp in stamps.items():
                shard = self._read_shard(pid)
                if shard is None or shard.stamp != stamp:
                    shard = self._reindex(pid, stamp)
                if shard is not None:
                    self._shards[pid] = shard
            self._build_main()
            self._loaded = True
        self.load_seconds = time.perf_counter() - start
        return self

    def _load_reference(self) -> None:
        raw = self.store.read_vault_blob(REFERENCE_BLOB)
        entries: list[Entry] = []
        vectors = None
        self.reference_info = {}
        if raw:
            try:
                doc = json.loads(raw)
                entries = [Entry.from_dict(e) for e in doc["entries"]]
                self.reference_info = doc.get("info", {})
                vectors = self._vectors_for(entries, doc.get("vectors"), doc.get("model"))
            except (ValueError, KeyError, TypeError) as exc:
                logger.warning("reference corpus unreadable (%s); rebuild it", exc)
        self._reference = Segment(entries, self.embedder, vectors)

    def _vectors_for(
        self, entries: list[Entry], packed: str | None, model: str | None
    ) -> np.ndarray | None:
        """Stored vectors if they were made by this embedding model, else fresh ones."""
        if self.embedder is None or not entries:
            return None
        if model == MODEL_NAME:
            vectors = _unpack(packed, len(entries))
            if vectors is not None and vectors.shape[1] == self.embedder.dim:
                return vectors
        return embed_entries(self.embedder, entries)

    def _read_shard(self, pid: str) -> _Shard | None:
        try:
            raw = self.store.read_blob(pid, NOTES_BLOB)
        except PhyAssistError:
            return None
        if not raw:
            return None
        try:
            doc = json.loads(raw)
            if doc.get("format") != FORMAT:
                return None
            entries = [Entry.from_dict(e) for e in doc["entries"]]
            vectors = self._vectors_for(entries, doc.get("vectors"), doc.get("model"))
            return _Shard(doc.get("stamp"), entries, vectors)
        except (ValueError, KeyError, TypeError):
            return None

    def _reindex(
        self, pid: str, stamp: str | None, patient: Patient | None = None
    ) -> _Shard | None:
        """Entries of ``pid`` from its record, written back as its shard."""
        try:
            patient = patient or self.store.load_patient(pid)
        except PhyAssistError as exc:
            logger.warning("patient %s unreadable for the knowledge index: %s", pid[:8], exc)
            return None
        entries = patient_entries(patient)
        for entry in entries:
            entry.terms = tokenize(entry.search)
        vectors = embed_entries(self.embedder, entries) if self.embedder and entries else None
        shard = _Shard(stamp, entries, vectors)
        self.rebuilt_patients += 1
        if getattr(self.store, "writer", False):
            doc = {
                "format": FORMAT,
                "stamp": stamp,
                "entries": [e.to_dict() for e in entries],
                "model": MODEL_NAME if vectors is not None else None,
                "vectors": _pack(vectors),
            }
            try:
                self.store.write_blob(pid, NOTES_BLOB, json.dumps(doc, ensure_ascii=False).encode())
            except PhyAssistError as exc:  # the in-memory index still serves this session
                logger.warning("could not write the knowledge shard of %s: %s", pid[:8], exc)
        return shard

    def _segment_of(self, shards: list[_Shard], background: Segment | None = None) -> Segment:
        entries = [e for shard in shards for e in shard.entries]
        vectors = None
        if self.embedder is not None and entries:
            parts = [s.vectors for s in shards if s.entries]
            if all(p is not None for p in parts):
                vectors = np.vstack(parts)  # type: ignore[arg-type]
        return Segment(entries, self.embedder, vectors, background)

    def _build_main(self) -> None:
        self._main = self._segment_of(list(self._shards.values()))
        self._main_ids = set(self._shards)
        self._fresh = Segment([], self.embedder)

    def _build_fresh(self) -> None:
        stale = [self._shards[pid] for pid in self._shards if pid not in self._main_ids]
        if sum(len(s.entries) for s in stale) > COMPACT_AT:
            self._build_main()
        else:
            self._fresh = self._segment_of(stale, background=self._main)

    # -- keeping up with the vault -------------------------------------------------------------

    def sync(self) -> int:
        """Bring the index in line with the vault's records; returns the patients changed."""
        with self._lock:
            if not self._loaded:
                self.load()
                return self.rebuilt_patients
            stamps = self.store.record_stamps()
            if stamps == self._synced_stamps:  # the common case: one dict compare, in C
                return 0
            gone = [pid for pid in self._shards if pid not in stamps]
            changed = [
                pid for pid, stamp in stamps.items()
                if pid not in self._shards or self._shards[pid].stamp != stamp
            ]  # fmt: skip
            if not gone and not changed:
                self._synced_stamps = stamps
                return 0
            for pid in gone:
                self._forget(pid)
            for pid in changed:
                shard = self._reindex(pid, stamps[pid])
                self._forget(pid)
                if shard is not None:
                    self._shards[pid] = shard
            self._build_fresh()
            self._synced_stamps = stamps
            return len(gone) + len(changed)

    def _forget(self, pid: str) -> None:
        self._synced_stamps = None
        self._shards.pop(pid, None)
        if pid in self._main_ids:
            self._main.kill_patient(pid)
            self._main_ids.discard(pid)

    def update_patient(self, patient: Patient) -> None:
        """A note of ``patient`` was saved, amended or deleted: index its notes now."""
        with self._lock:
            if not self._loaded:
                self.load()
                return
            stamp = self.store.record_stamps().get(patient.id)
            shard = self._reindex(patient.id, stamp, patient)
            self._forget(patient.id)
            if shard is not None:
                self._shards[patient.id] = shard
            self._build_fresh()

    def remove_patient(self, patient_id: str) -> None:
        """The patient was forgotten: none of their notes is returned again."""
        with self._lock:
            self._forget(patient_id)
            self._build_fresh()
            if getattr(self.store, "writer", False):
                with suppress(PhyAssistError):  # a deleted patient's blobs went with them
                    self.store.delete_blob(patient_id, NOTES_BLOB)

    def rebuild(self) -> int:
        """Re-read every record (and drop every shard); returns the notes indexed."""
        with self._lock:
            self._resolve_embedder()
            self._shards.clear()
            self._synced_stamps = None
            self._loaded = False
            stamps = self.store.record_stamps()
            for pid, stamp in stamps.items():
                shard = self._reindex(pid, stamp)
                if shard is not None:
                    self._shards[pid] = shard
            self._load_reference()
            self._build_main()
            self._loaded = True
            return sum(len(s.entries) for s in self._shards.values())

    def set_reference(self, entries: Iterable[Entry], info: dict[str, Any] | None = None) -> int:
        """Replace the reference corpus (encrypted into the vault); returns its size."""
        self._resolve_embedder()
        entries = list(entries)
        for entry in entries:
            if not entry.terms:
                entry.terms = tokenize(entry.search)
        vectors = embed_entries(self.embedder, entries) if self.embedder and entries else None
        doc = {
            "format": FORMAT,
            "info": info or {},
            "entries": [e.to_dict() for e in entries],
            "model": MODEL_NAME if vectors is not None else None,
            "vectors": _pack(vectors),
        }
        self.store.write_vault_blob(REFERENCE_BLOB, json.dumps(doc, ensure_ascii=False).encode())
        with self._lock:
            self._reference = Segment(entries, self.embedder, vectors)
            self.reference_info = info or {}
        return len(entries)

    # -- asking ------------------------------------------------------------------------------------

    @property
    def note_count(self) -> int:
        return sum(len(s.entries) for s in self._shards.values())

    @property
    def reference_count(self) -> int:
        return len(self._reference)

    def __len__(self) -> int:
        return self.note_count + self.reference_count

    def entry(self, key: str) -> Entry | None:
        with self._lock:
            for segment in (self._fresh, self._main, self._reference):
                for n, entry in enumerate(segment.entries):
                    if entry.key == key and segment.alive[n]:
                        if entry.source == "note" and entry.patient_id not in self._shards:
                            return None
                        return entry
        return None

    def query(
        self,
        text: str,
        k: int = 5,
        *,
        sources: set[str] | None = None,
        exclude_patient: str | None = None,
        mode: Mode = "auto",
        sync: bool = True,
    ) -> list[Match]:
        """The ``k`` best entries for ``text``: own notes and reference entries interleaved
        by reciprocal-rank fusion of each part's lexical and embedding ranking."""
        if not text or not text.strip() or k <= 0:
            return []
        if sync:
            self.sync()
        terms = tokenize(text)
        # auto = hybrid: fusion beat either part alone in both languages (bench/retrieval.py).
        use_lexical = mode != "embedding"
        use_dense = self.embedder is not None and mode != "lexical"
        query_vector = self.embedder.embed([text])[0] if use_dense else None
        lang = detect_language(text)
        fused: dict[str, list[Any]] = {}
        with self._lock:
            groups = ((self._main, self._fresh), (self._reference,))
            for group in groups:
                masks = [seg.allowed(sources, exclude_patient) for seg in group]
                lists: list[list[Entry]] = []
                if use_lexical:
                    hits = [
                        (score, seg.entries[i])
                        for seg, mask in zip(group, masks, strict=True)
                        for i, score in seg.lexical(terms, CANDIDATES, mask)
                    ]
                    lists.append([e for _s, e in sorted(hits, key=lambda h: -h[0])[:CANDIDATES]])
                if query_vector is not None:
                    hits = [
                        (score, seg.entries[i])
                        for seg, mask in zip(group, masks, strict=True)
                        for i, score in seg.dense(query_vector, CANDIDATES, DENSE_FLOOR, mask, lang)
                    ]
                    lists.append([e for _s, e in sorted(hits, key=lambda h: -h[0])[:CANDIDATES]])
                for which, ranked in enumerate(lists):
                    for rank, entry in enumerate(ranked, 1):
                        slot = fused.setdefault(entry.key, [entry, 0.0, None, None])
                        slot[1] += 1.0 / (RRF_K + rank)
                        kind = 2 if (use_lexical and which == 0) else 3
                        slot[kind] = rank
            best = sorted(fused.values(), key=lambda s: -s[1])
            out: list[Match] = []
            for entry, score, lex_rank, emb_rank in best:
                if entry.source == "note" and entry.patient_id not in self._shards:
                    continue  # belt and braces: a forgotten patient is never returned
                out.append(Match(entry, score, best_passage(entry.text, terms), lex_rank, emb_rank))
                if len(out) >= k:
                    break
        return out
