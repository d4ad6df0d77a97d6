"""Benchmark the knowledge query; prints one JSON object.

* ``quality_en``: CounselChat's own split, fixed before any result was looked at: the
  reference corpus is built from the ``train`` rows only, the queries are the ``val``
  questions (minus any whose text also appears in train). Relevance = the retrieved
  question shares a topic with the query. ``p_at_5`` = mean share of same-topic entries in
  the top 5; ``recall_at_10`` = mean share of all same-topic train questions found in the
  top 10; ``hit_at_10`` = share of queries with at least one same-topic entry in the top 10.
  Per mode (lexical = jieba/BM25, embedding = the wheel-shipped static model, hybrid =
  reciprocal-rank fusion) and for a seeded random ranking (the baseline; ``*_vs_random``).
* ``quality_zh``: the same metrics on bench/fixtures/knowledge_zh.json (hand-written Chinese
  notes and queries with topics: a smoke test, not a benchmark) over saved notes.
* ``scale``: a real vault with ``--patients`` x ``--notes`` notes (text sampled from the
  CounselChat and IMHI training rows) plus the whole reference corpus (CounselChat + IMHI):
  first index build (every record read, segmented, written as an encrypted shard), reopen
  from the shards, and query latency p50/p95, wall clock and this thread's CPU time, with
  the load average around them (each query includes the record-stamp check and leaves out
  one patient's notes, as the Similar pane does for the open patient), against a linear
  scan over the same terms (no index) as the baseline; the query right after a note is
  saved (the fresh segment is rebuilt) is reported separately.
* ``chrf`` (only with ``--chrf-limit N``; slow on CPU): chrF of the embedded model's advice
  against the therapist's answer on N held-out questions, with and without the top 3
  references in the prompt.

    python bench/retrieval.py [--patients 2000] [--notes 20] [--queries 200] [--chrf-limit 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

from bench.drafts import chrf as score_chrf  # one chrF for every bench

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from engine.dataprep.counselchat import build_prompt  # noqa: E402
from engine.knowledge.entries import Entry  # noqa: E402
from engine.knowledge.index import KnowledgeIndex  # noqa: E402
from engine.knowledge.reference import (  # noqa: E402
    build_reference,
    counselchat_entries,
    counselchat_rows,
)
from engine.knowledge.text import tokenize  # noqa: E402
from engine.records import AnalysisDraft, Item, Note, Patient  # noqa: E402
from engine.settings import Settings, StoreSettings  # noqa: E402
from engine.vault.store import Store  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
MODES = ("lexical", "embedding", "hybrid")
_MARKERS = re.compile(r"\s*\[\d{1,2}\]")


def _store(tmp: Path) -> Store:
    settings = Settings(store=StoreSettings(scrypt_log2_n=10), data_dir=tmp / "data")
    return Store.create(tmp / "vault", "bench passphrase", settings=settings)


def _metrics(ranked: list[list[str]], wanted: list[set[str]], pool: Counter) -> dict:
    p5, r10, h10 = [], [], []
    for labels, topics in zip(ranked, wanted, strict=True):
        same = [label in topics for label in labels]
        p5.append(sum(same[:5]) / 5)
        total = sum(pool[t] for t in topics)
        r10.append(sum(same[:10]) / total if total else 0.0)
        h10.append(1.0 if any(same[:10]) else 0.0)
    return {
        "p_at_5": round(statistics.fmean(p5), 4),
        "recall_at_10": round(statistics.fmean(r10), 4),
        "hit_at_10": round(statistics.fmean(h10), 4),
    }


def _evaluate(index, queries, topics, pool, sources, entries_labels) -> dict:
    out: dict = {}
    rng = random.Random(0)
    random_ranked = [rng.sample(entries_labels, 10) for _ in queries]
    out["random"] = _metrics(random_ranked, topics, pool)
    for mode in MODES:
        if mode != "lexical" and index.embedder is None:
            continue
        ranked = [
            [m.entry.label for m in index.query(q, k=10, sources=sources, mode=mode, sync=False)]
            for q in queries
        ]
        out[mode] = _metrics(ranked, topics, pool)
        for key in ("p_at_5", "recall_at_10"):
            base = out["random"][key]
            out[mode][f"{key}_vs_random"] = round(out[mode][key] / base, 2) if base else None
    return out


def quality_en(tmp: Path) -> dict:
    rows = counselchat_rows(DATA / "counsel_chat" / "counsel_chat.csv")
    reference = counselchat_entries(rows, {"train"})
    train_texts = {e.search for e in reference}
    val_topics: dict[str, set[str]] = defaultdict(set)
    for row in rows:  # every topic a held-out question is filed under
        if (row.get("split") or "").strip().lower() != "val":
            continue
        q = build_prompt(row.get("questionTitle") or "", row.get("questionText") or "")
        if q and q not in train_texts and (row.get("topic") or "").strip():
            val_topics[q].add(row["topic"].strip())
    queries = sorted(val_topics)
    store = _store(tmp)
    index = KnowledgeIndex(store).load()
    index.set_reference(reference)
    pool = Counter(e.label for e in reference)
    result = _evaluate(
        index,
        queries,
        [val_topics[q] for q in queries],
        pool,
        {"counselchat"},
        [e.label for e in reference],
    )
    store.close()
    return {"reference_questions": len(reference), "queries": len(queries), **result}


def quality_zh(tmp: Path) -> dict:
    fixture = json.loads((ROOT / "bench" / "fixtures" / "knowledge_zh.json").read_text("utf-8"))
    store = _store(tmp)
    for n, note in enumerate(fixture["notes"]):
        patient = store.create_patient(f"患者{n}")
        store.add_note(
            patient.id,
            Note(
                question=note["question"],
                analysis=AnalysisDraft(
                    symptom_type=Item(text=note["symptom"]),
                    advice=[Item(text=a) for a in note["advice"]],
                ),
            ),
        )
    index = KnowledgeIndex(store).load()
    topic_of = {n["question"].strip(): n["topic"] for n in fixture["notes"]}
    pool = Counter(topic_of.values())
    out: dict = {"notes": len(topic_of), "queries": len(fixture["queries"])}
    queries = [q["text"] for q in fixture["queries"]]
    wanted = [{q["topic"]} for q in fixture["queries"]]
    rng = random.Random(0)
    out["random"] = _metrics(
        [rng.sample(list(topic_of.values()), 10) for _ in queries], wanted, pool
    )
    for mode in MODES:
        ranked = [
            [topic_of[m.entry.text.splitlines()[0]] for m in index.query(q, k=10, mode=mode)]
            for q in queries
        ]
        out[mode] = _metrics(ranked, wanted, pool)
    store.close()
    return out


def _synthetic_patients(n_patients: int, n_notes: int, texts: list[Entry]) -> list[Patient]:
    rng = random.Random(1)
    patients = []
    for p in range(n_patients):
        notes = []
        for _ in range(n_notes):
            src = rng.choice(texts)
            advice = [s for s in src.advice.split(". ") if s][:3]
            notes.append(
                Note(
                    question=src.search[:1500],
                    analysis=AnalysisDraft(
                        symptom_type=Item(text=src.label[:80]),
                        reasons=[Item(text=src.label[:200])],
                        advice=[Item(text=a[:300]) for a in advice],
                    ),
                )
            )
        patients.append(Patient(name=f"Bench patient {p}", notes=notes))
    return patients


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return round(ordered[int(0.95 * (len(ordered) - 1))], 2)


def _linear_scan(entries: list[list[str]], terms: list[str], k: int) -> list[int]:
    wanted = set(terms)
    scored = [(len(wanted.intersection(doc)), n) for n, doc in enumerate(entries)]
    scored.sort(reverse=True)
    return [n for _s, n in scored[:k]]


def scale(tmp: Path, n_patients: int, n_notes: int, n_queries: int) -> dict:
    reference = build_reference(DATA)
    store = _store(tmp)
    start = time.perf_counter()
    store.import_patients(_synthetic_patients(n_patients, n_notes, reference))
    import_s = time.perf_counter() - start

    start = time.perf_counter()
    index = KnowledgeIndex(store).load()
    index.set_reference(reference)
    first_build_s = time.perf_counter() - start
    start = time.perf_counter()
    reopened = KnowledgeIndex(store).load()
    reopen_s = time.perf_counter() - start
    start = time.perf_counter()
    reopened._main.vectors()
    reopened._reference.vectors()
    embed_s = time.perf_counter() - start

    rows = counselchat_rows(DATA / "counsel_chat" / "counsel_chat.csv")
    queries = [e.search for e in counselchat_entries(rows, {"val"})][:n_queries]
    out: dict = {
        "patients": n_patients,
        "notes": reopened.note_count,
        "reference_entries": reopened.reference_count,
        "vault_import_s": round(import_s, 2),
        "index_first_build_s": round(first_build_s, 2),
        "index_reopen_s": round(reopen_s, 2),
        "embeddings_s": round(embed_s, 2),
        "queries": len(queries),
    }
    viewing = store.list_patients()[0].id  # the Similar pane leaves out the open patient
    out["load_avg_before_queries"] = [round(x, 2) for x in os.getloadavg()]
    for mode in ("lexical", "hybrid"):
        times, cpu = [], []
        for q in queries:
            t, c = time.perf_counter(), time.thread_time()
            reopened.query(q, k=8, mode=mode, exclude_patient=viewing)
            times.append((time.perf_counter() - t) * 1000)
            cpu.append((time.thread_time() - c) * 1000)  # this thread only: BLAS runs 1 thread
        out[f"query_{mode}_ms"] = {
            "p50": round(statistics.median(times), 2),
            "p95": _p95(times),
            "cpu_p50": round(statistics.median(cpu), 2),
            "cpu_p95": _p95(cpu),
        }
    out["load_avg_after_queries"] = [round(x, 2) for x in os.getloadavg()]
    all_terms = [e.terms for e in reopened._main.entries] + [e.terms for e in reference]
    times = []
    for q in queries[:20]:
        t = time.perf_counter()
        _linear_scan(all_terms, tokenize(q), 8)
        times.append((time.perf_counter() - t) * 1000)
    out["baseline_linear_scan_ms_p50"] = round(statistics.median(times), 2)
    out["lexical_p50_speedup_vs_scan"] = round(
        out["baseline_linear_scan_ms_p50"] / out["query_lexical_ms"]["p50"], 1
    )
    first = store.list_patients()[0].id
    after = []
    for q in queries[:5]:
        store.add_note(first, Note(question=q))
        t = time.perf_counter()
        reopened.query(q, k=8, mode="hybrid")
        after.append((time.perf_counter() - t) * 1000)
    out["query_after_save_ms_max"] = round(max(after), 1)
    store.close()
    return out


def _advice_text(draft) -> str:
    """The model's own advice items (not the engine's risk items), citation markers removed:
    both arms are scored on what the model wrote, and a marker is not advice."""
    items = [i.text for i in draft.live("advice") if not i.inserted_by]
    return " ".join(_MARKERS.sub("", t).strip() for t in items)


def chrf(tmp: Path, limit: int, max_new: int = 200) -> dict:
    """Advice chrF with vs without the top-k CounselChat train entries in the prompt, on
    ``limit`` held-out (val) questions (seeded sample; none whose text is also a train
    question). Greedy decoding (the settings' default), so both arms are deterministic."""
    from engine.inference.assistant import Assistant
    from engine.settings import load_settings

    rows = counselchat_rows(DATA / "counsel_chat" / "counsel_chat.csv")
    reference = counselchat_entries(rows, {"train"})
    train_texts = {e.search for e in reference}
    held = [e for e in counselchat_entries(rows, {"val"}) if e.search not in train_texts]
    held = [e for e in held if e.advice.strip()]
    if limit < len(held):  # a seeded spread: the file lists the held-out questions by topic
        held = sorted(random.Random(0).sample(held, limit), key=lambda e: int(e.key.split(":")[1]))
    store = _store(tmp)
    index = KnowledgeIndex(store).load()
    index.set_reference(reference)
    settings = load_settings(generation={"max_new_tokens": max_new})
    assert not settings.generation.do_sample, "the chrF arms must decode greedily"
    assistant = Assistant(settings)
    assistant.load()
    patient = store.create_patient("Held-out client")
    scores: dict[str, list[float]] = {"without": [], "with": []}
    per_question = []
    topics = Counter(e.label for e in held)
    reports = []
    cited = 0
    example: dict = {}
    start = time.perf_counter()
    for entry in held:
        row: dict = {"key": entry.key, "topic": entry.label}
        for arm in ("without", "with"):
            assistant.knowledge = index if arm == "with" else None
            stream = assistant.stream_analysis(
                patient, entry.search[:2000], cancel=threading.Event()
            )
            text = "".join(stream)
            draft = stream.draft_of(text) if stream.draft_of else None
            advice = _advice_text(draft) if draft is not None else ""
            score = score_chrf(advice, entry.advice)
            scores[arm].append(score)
            row[arm] = round(score, 2)
            if arm == "with":
                reports.append(stream.context_report)
                cited += bool(draft is not None and draft.citations)
                if not example and draft is not None:
                    example = {
                        "question": entry.search[:300],
                        "context_report": stream.context_report,
                        "advice": [i.text for i in draft.live("advice")],
                        "citations": [c.model_dump() for c in draft.citations],
                    }
        per_question.append(row)
    store.close()
    diffs = [w - wo for w, wo in zip(scores["with"], scores["without"], strict=True)]
    return {
        "questions": len(held),
        "topics": dict(topics.most_common()),
        "max_new_tokens": max_new,
        "top_k": settings.knowledge.top_k,
        "chrf_without": round(statistics.fmean(scores["without"]), 2),
        "chrf_with": round(statistics.fmean(scores["with"]), 2),
        "with_minus_without_mean": round(statistics.fmean(diffs), 2),
        "with_minus_without_stdev": round(statistics.stdev(diffs), 2) if len(diffs) > 1 else 0,
        "with_better": sum(d > 0 for d in diffs),
        "with_worse": sum(d < 0 for d in diffs),
        "drafts_with_a_citation": cited,
        "seconds": round(time.perf_counter() - start, 1),
        "context_report_example": reports[0] if reports else "",
        "example_with_retrieval": example,
        "per_question": per_question,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--notes", type=int, default=20)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--chrf-limit", type=int, default=0)
    parser.add_argument("--chrf-max-new-tokens", type=int, default=200)
    parser.add_argument("--skip", nargs="*", default=[], choices=["en", "zh", "scale"])
    args = parser.parse_args()
    if not DATA.is_dir():
        print(json.dumps({"skipped": f"{DATA} not found"}))
        return
    result: dict = {"cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        for name, run in (
            ("quality_en", lambda d: quality_en(d)),
            ("quality_zh", lambda d: quality_zh(d)),
            ("scale", lambda d: scale(d, args.patients, args.notes, args.queries)),
        ):
            if name.split("_")[-1] in args.skip:
                continue
            sub = Path(tmp) / name
            sub.mkdir()
            result[name] = run(sub)
        if args.chrf_limit:
            sub = Path(tmp) / "chrf"
            sub.mkdir()
            result["chrf"] = chrf(sub, args.chrf_limit, args.chrf_max_new_tokens)
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
