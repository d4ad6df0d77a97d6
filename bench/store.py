"""Benchmark the encrypted store at clinic scale and print one JSON object.

Builds a vault of 2,000 patients x 20 notes (realistic sizes, half of the text Chinese) in
a temporary directory, then times: unlock, list, search by name, open one patient, save
one note (fsync included). Next to each figure it measures a baseline in the same run on
the same data, so the numbers read as a ratio rather than as absolutes:

* open / save: the same patients as plain JSON files (read, ``json.loads``, validate;
  append a note, ``json.dump`` + ``fsync``), with no encryption, no atomic rename and no
  index -- the cheapest way to persist a record at all;
* list / search / index write: tinydb's stock ``JSONStorage`` holding the same 2,000
  summary rows (in place, not crash safe, not encrypted), results built into the same
  ``PatientSummary`` models; its one-row update is fsynced for a like-for-like comparison;
* unlock: scrypt alone at the same cost.

Each pair is timed alternately in the same loop, so machine load hits both sides alike.

Usage: ``python -m bench.store [--patients 2000] [--notes 20] [--reps 200] [--dir DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tinydb import TinyDB, where
from tinydb.storages import JSONStorage

from engine.records import (
    AnalysisDraft,
    BasicInfo,
    Item,
    Note,
    Patient,
    PatientSummary,
)
from engine.settings import Settings, StoreSettings
from engine.vault import crypto
from engine.vault.index import PatientIndex, search_key
from engine.vault.store import Store

TARGETS_MS = {"open_patient": 50.0, "save_note": 30.0, "search_name": 100.0}
PASSPHRASE = "benchmark passphrase"

SURNAMES = list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘")
GIVEN = list("伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红梅鹏辉")
LATIN = ["Anna", "Ben", "Chloe", "David", "Emma", "Felix", "Grace", "Henry", "Iris", "Jack"]
ZH_SENTENCES = [
    "自上次考试失利后，我学习时头总是昏沉沉的，书看不下去，又舍不得休息。",
    "上课很容易开小差，注意力无法集中，经常担心考不上大学怎么办。",
    "考试时心慌，手发抖，全身绷紧，成绩越来越不理想，这令我更加焦虑。",
    "父母期望很高，我总觉得对不起他们，晚上经常失眠，食欲也不好。",
    "和同事关系紧张，回家后不想说话，周末只想一个人待着。",
    "最近总是做噩梦，醒来后心跳很快，白天感到疲劳和烦躁。",
]
EN_SENTENCES = [
    "Since the move I have trouble sleeping and wake up several times a night.",
    "At work I keep worrying that I will make a mistake and everyone will notice.",
    "My partner says I have become irritable and I withdraw when we argue.",
    "I used to enjoy running but now I cannot find the energy to go out.",
    "Before exams my hands shake and my mind goes blank even when I prepared.",
]


def _text(rng: random.Random, chars: int) -> str:
    parts: list[str] = []
    total = 0
    while total < chars:
        sentence = rng.choice(ZH_SENTENCES if rng.random() < 0.5 else EN_SENTENCES)
        parts.append(sentence)
        total += len(sentence)
    return "".join(parts)[:chars]


def _items(rng: random.Random, n: int, chars: int) -> list[Item]:
    items = []
    for _ in range(n):
        draft = _text(rng, chars)
        edited = rng.random() < 0.3
        items.append(
            Item(
                text=_text(rng, chars) if edited else draft,
                draft=draft,
                comments=[_text(rng, 30)] if rng.random() < 0.2 else [],
            )
        )
    return items


def make_note(rng: random.Random) -> Note:
    """A note sized like a real session: ~1,000-char statement, 5 reasons, 5 advice."""
    raw = _text(rng, 1500)
    return Note(
        question=_text(rng, rng.randint(400, 1600)),
        observed_state=_text(rng, rng.randint(100, 300)),
        analysis=AnalysisDraft(
            symptom_type=Item(text="学业焦虑", draft="学业焦虑"),
            reasons=_items(rng, 5, 60),
            advice=_items(rng, 5, 60),
            raw_output=raw,
            model_name="SmolLM2-135M-Instruct",
        ),
    )


def make_patient(rng: random.Random, notes: int) -> Patient:
    if rng.random() < 0.7:
        name = rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.randint(1, 2)))
    else:
        name = f"{rng.choice(LATIN)} {rng.choice(LATIN)}son"
    basic = BasicInfo(**{f: _text(rng, 120) for f in BasicInfo.model_fields})
    return Patient(name=name, basic=basic, notes=[make_note(rng) for _ in range(notes)])


def _times(fn: Callable[[], object], reps: int, setup: Callable[[], object] | None = None):
    samples = []
    for _ in range(reps):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "p50_ms": round(statistics.median(ordered), 3),
        "p95_ms": round(p95, 3),
        "n": len(ordered),
    }


def _fsync_json(path: Path, doc: object) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, ensure_ascii=False)
        fh.flush()
        os.fsync(fh.fileno())


def _paired(
    ours: Callable[[int], object],
    base: Callable[[int], object],
    reps: int,
    rng: random.Random,
    before_ours: Callable[[], object] | None = None,
) -> tuple[list[float], list[float]]:
    """Time ``ours`` and ``base`` alternately (random order per rep), so load hits both."""
    a: list[float] = []
    b: list[float] = []
    for i in range(reps):
        pair = [(ours, a, before_ours), (base, b, None)]
        rng.shuffle(pair)
        for fn, out, before in pair:
            if before is not None:
                before()
            start = time.perf_counter()
            fn(i)
            out.append((time.perf_counter() - start) * 1000)
    return a, b


def _summaries_from(docs: list[dict]) -> list[PatientSummary]:
    rows = [PatientSummary.model_validate(d) for d in docs]
    return sorted(rows, key=lambda r: (r.updated, r.id), reverse=True)


def run(patients: int, notes: int, reps: int, base_dir: str | None, log2_n: int) -> dict:
    rng = random.Random(20261124)
    settings = Settings(store=StoreSettings(scrypt_log2_n=log2_n))
    work = Path(tempfile.mkdtemp(prefix="phyassist-bench-", dir=base_dir))
    load_before = os.getloadavg()
    try:
        vault_dir = work / "vault"
        t0 = time.perf_counter()
        store = Store.create(vault_dir, PASSPHRASE, settings=settings)
        batch: list[Patient] = []
        for _ in range(patients):
            batch.append(make_patient(rng, notes))
            if len(batch) == 100:
                store.import_patients(batch)
                batch = []
        store.import_patients(batch)
        store.close()
        build_s = time.perf_counter() - t0
        record_sizes = [
            (p / "record.bin").stat().st_size for p in (vault_dir / "patients").iterdir()
        ]

        # -- unlock: scrypt + index decrypt; the KDF alone for scale ----------------------------
        unlock_reps = max(5, reps // 20)
        unlock = _times(
            lambda: Store.open(vault_dir, PASSPHRASE, settings=settings).close(), unlock_reps
        )
        # unlock after a crash: index.pending present, so every record's nonce is checked
        pending = vault_dir / "index.pending"
        unlock_crash = _times(
            lambda: Store.open(vault_dir, PASSPHRASE, settings=settings).close(),
            unlock_reps,
            setup=lambda: pending.write_bytes(b""),
        )
        params = crypto.KdfParams.fresh(log2_n, 8, 1)
        kdf_only = _times(lambda: crypto.derive_key(PASSPHRASE, params), unlock_reps)

        store = Store.open(vault_dir, PASSPHRASE, settings=settings)
        summaries = store.list_patients()
        ids = [s.id for s in summaries]
        names = [s.name for s in summaries]

        # -- baselines on the same data: plain JSON files, tinydb's stock JSONStorage ----------
        plain_dir = work / "plain"
        plain_dir.mkdir()
        sample = [rng.choice(ids) for _ in range(50)]
        for pid in set(sample):
            _fsync_json(plain_dir / f"{pid}.json", store.load_patient(pid).model_dump(mode="json"))
        stock = TinyDB(work / "stock-index.json", storage=JSONStorage, ensure_ascii=False)
        table = stock.table("patients", cache_size=0)
        table.insert_multiple(PatientIndex.make_row(s) for s in summaries)

        # list
        list_ours, list_base = _paired(
            lambda i: store.list_patients(), lambda i: _summaries_from(table.all()), reps, rng
        )

        # search by name: 1-3 characters out of a real name (Chinese or Latin)
        def query() -> str:
            name = rng.choice(names)
            start = rng.randrange(len(name))
            return name[start : start + rng.randint(1, 3)]

        queries = [query() for _ in range(reps)]
        search_ours, search_base = _paired(
            lambda i: store.search(queries[i]),
            lambda i: _summaries_from(
                table.search(where("key").test(lambda v, n: n in v, search_key(queries[i])))
            ),
            reps,
            rng,
        )

        # open one patient (data-key cache cleared, so unwrapping the key counts)
        picks = [rng.choice(sample) for _ in range(reps)]
        open_ours, open_base = _paired(
            lambda i: store.load_patient(picks[i]),
            lambda i: Patient.model_validate(
                json.loads((plain_dir / f"{picks[i]}.json").read_bytes())
            ),
            reps,
            rng,
            before_ours=store._data_keys.clear,
        )

        # save one note: read, append, encrypt, atomic write + fsync (+ index in memory,
        # written by the deferred flush, which lands inside some samples)
        new_notes = [make_note(rng) for _ in range(reps)]
        plain_notes = [n.model_dump(mode="json") for n in new_notes]
        targets = [rng.choice(sample) for _ in range(reps)]

        def plain_save(i: int) -> None:
            path = plain_dir / f"{targets[i]}.json"
            doc = json.loads(path.read_bytes())
            doc["notes"].append(plain_notes[i])
            _fsync_json(path, doc)

        writes_before_saves = store._index.storage.writes
        save_ours, save_base = _paired(
            lambda i: store.add_note(targets[i], new_notes[i]), plain_save, reps, rng
        )

        deferred_flushes = store._index.storage.writes - writes_before_saves

        # the whole-index write that note saves defer (what a save costs without deferral)
        def index_write(i: int) -> None:
            store._index.storage.dirty = True
            store._index.storage.flush()

        def stock_update(i: int) -> None:
            table.update({"note_count": i}, doc_ids=[1 + i % patients])
            os.fsync(stock.storage._handle.fileno())  # JSONStorage never fsyncs by itself

        index_ours, index_base = _paired(index_write, stock_update, max(20, reps // 4), rng)
        store.close()
        index_bytes = (vault_dir / "index.bin").stat().st_size
        stock.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    results = {
        "unlock": _stats(unlock),
        "unlock_after_crash": _stats(unlock_crash),
        "list": _stats(list_ours),
        "search_name": _stats(search_ours),
        "open_patient": _stats(open_ours),
        "save_note": _stats(save_ours),
        "index_write_all_rows": _stats(index_ours),
    }
    baseline = {
        "scrypt_only": _stats(kdf_only),
        "plain_json_open": _stats(open_base),
        "plain_json_fsync_save": _stats(save_base),
        "tinydb_jsonstorage_list": _stats(list_base),
        "tinydb_jsonstorage_search": _stats(search_base),
        "tinydb_jsonstorage_update_fsync": _stats(index_base),
    }

    def ratio(ours: str, base: str) -> float:
        return round(results[ours]["p50_ms"] / max(baseline[base]["p50_ms"], 1e-6), 2)

    return {
        "benchmark": "store",
        "config": {
            "patients": patients,
            "notes_per_patient": notes,
            "reps": reps,
            "scrypt_log2_n": log2_n,
            "record_file_kb_median": round(statistics.median(record_sizes) / 1024, 1),
            "index_file_kb": round(index_bytes / 1024, 1),
            "index_flushes_during_note_saves": deferred_flushes,
            "build_s": round(build_s, 1),
            "cpus": os.cpu_count(),
            "loadavg_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        },
        "results": results,
        "targets_ms": TARGETS_MS,
        "meets_targets_p50": {k: results[k]["p50_ms"] <= v for k, v in TARGETS_MS.items()},
        "meets_targets_p95": {k: results[k]["p95_ms"] <= v for k, v in TARGETS_MS.items()},
        "baseline": baseline,
        "ratio_p50_vs_baseline": {
            "unlock/scrypt_only": ratio("unlock", "scrypt_only"),
            "open_patient/plain_json_open": ratio("open_patient", "plain_json_open"),
            "save_note/plain_json_fsync_save": ratio("save_note", "plain_json_fsync_save"),
            "list/tinydb_jsonstorage_list": ratio("list", "tinydb_jsonstorage_list"),
            "search_name/tinydb_jsonstorage_search": ratio(
                "search_name", "tinydb_jsonstorage_search"
            ),
            "index_write/tinydb_jsonstorage_update_fsync": ratio(
                "index_write_all_rows", "tinydb_jsonstorage_update_fsync"
            ),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--notes", type=int, default=20)
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--dir", default=None, help="where to build the temporary vault")
    parser.add_argument(
        "--scrypt-log2-n", type=int, default=StoreSettings().scrypt_log2_n, dest="log2_n"
    )
    args = parser.parse_args(argv)
    report = run(args.patients, args.notes, args.reps, args.dir, args.log2_n)
    print(json.dumps(report, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
