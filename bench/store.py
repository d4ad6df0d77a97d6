"""Benchmark the encrypted store at clinic scale and print one JSON object.

Builds a vault of 2,000 patients x 20 notes (realistic sizes, half of the text Chinese) in
a temporary directory, then times: unlock, list, search by name, open one patient, save
one note (fsync included). Next to each figure it measures a baseline in the same run on
the same data, so the numbers read as a ratio rather than as absolutes:

* open / save: the same patient as plain JSON (``json.dump`` + ``fsync``, no encryption,
  no atomic rename) -- the cheapest way to persist it at all;
* index: tinydb's stock ``JSONStorage`` with the same 2,000 summary rows (in place, not
  crash safe, not encrypted) for list, search and a one-row update.

Usage: ``python bench/store.py [--patients 2000] [--notes 20] [--reps 200] [--dir DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tinydb import TinyDB, where  # noqa: E402
from tinydb.storages import JSONStorage  # noqa: E402

from engine.index import PatientIndex, search_key  # noqa: E402
from engine.records import AnalysisDraft, BasicInfo, Item, Note, Patient  # noqa: E402
from engine.settings import Settings, StoreSettings  # noqa: E402
from engine.store import Store  # noqa: E402

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


def run(patients: int, notes: int, reps: int, base_dir: str | None, log2_n: int) -> dict:
    rng = random.Random(20261124)
    settings = Settings(store=StoreSettings(scrypt_log2_n=log2_n))
    work = Path(tempfile.mkdtemp(prefix="phyassist-bench-", dir=base_dir))
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

        # -- unlock: scrypt + index decrypt + index/record consistency check ----------------
        unlock = _times(
            lambda: Store.open(vault_dir, PASSPHRASE, settings=settings).close(),
            max(5, reps // 20),
        )

        store = Store.open(vault_dir, PASSPHRASE, settings=settings)
        summaries = store.list_patients()
        ids = [s.id for s in summaries]
        names = [s.name for s in summaries]

        list_samples = _times(store.list_patients, reps)

        def query() -> str:
            name = rng.choice(names)
            start = rng.randrange(len(name))
            return name[start : start + rng.randint(1, 3)]

        queries = [query() for _ in range(reps)]
        qi = iter(queries * 2)
        search_samples = _times(lambda: store.search(next(qi)), reps)

        # open one patient, with the data-key cache cleared (so unwrapping the key counts)
        pick = iter([rng.choice(ids) for _ in range(reps)])
        open_samples = _times(
            lambda: store.load_patient(next(pick)), reps, setup=store._data_keys.clear
        )

        # save one note: read, append, encrypt, atomic write + fsync, index update + fsync
        targets = [rng.choice(ids) for _ in range(reps)]
        new_notes = [make_note(rng) for _ in range(reps)]
        ti = iter(zip(targets, new_notes, strict=True))

        def save_note() -> None:
            pid, note = next(ti)
            store.add_note(pid, note)

        save_samples = _times(save_note, reps)

        # save_patient on an already-loaded patient (the TUI's path after editing a draft)
        loaded = store.load_patient(ids[0])

        def save_loaded() -> None:
            loaded.notes[-1].analysis.reasons[0].text = _text(rng, 60)
            store.save_patient(loaded)

        save_patient_samples = _times(save_loaded, reps)
        index_bytes = (vault_dir / "index.bin").stat().st_size
        index_rows = [PatientIndex.make_row(s) for s in store.list_patients()]
        store.close()

        # -- baselines -------------------------------------------------------------------------
        plain_dir = work / "plain"
        plain_dir.mkdir()
        sample_patients = [make_patient(rng, notes) for _ in range(20)]
        docs = [p.model_dump(mode="json") for p in sample_patients]
        for i, doc in enumerate(docs):
            _fsync_json(plain_dir / f"{i}.json", doc)
        bi = iter(range(reps * 4))
        plain_open = _times(
            lambda: Patient.model_validate(
                json.loads((plain_dir / f"{next(bi) % len(docs)}.json").read_bytes())
            ),
            reps,
        )
        extra = make_note(rng).model_dump(mode="json")

        def plain_save() -> None:
            i = next(bi) % len(docs)
            doc = docs[i]
            doc["notes"].append(extra)
            _fsync_json(plain_dir / f"{i}.json", doc)
            doc["notes"].pop()

        plain_save_samples = _times(plain_save, reps)

        stock_path = work / "stock-index.json"
        stock = TinyDB(stock_path, storage=JSONStorage, ensure_ascii=False)
        table = stock.table("patients", cache_size=0)
        table.insert_multiple(index_rows)
        stock_list = _times(table.all, reps)
        qi = iter(queries * 2)
        stock_search = _times(
            lambda: table.search(where("key").test(lambda v, n: n in v, search_key(next(qi)))),
            reps,
        )

        def stock_update() -> None:
            table.update({"note_count": rng.randint(0, 50)}, doc_ids=[rng.randint(1, patients)])
            # JSONStorage never fsyncs; give it the same durability for a fair comparison
            os.fsync(stock.storage._handle.fileno())

        stock_update_samples = _times(stock_update, reps)
        stock.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    results = {
        "unlock": _stats(unlock),
        "list": _stats(list_samples),
        "search_name": _stats(search_samples),
        "open_patient": _stats(open_samples),
        "save_note": _stats(save_samples),
        "save_patient": _stats(save_patient_samples),
    }
    baseline = {
        "plain_json_open": _stats(plain_open),
        "plain_json_fsync_save": _stats(plain_save_samples),
        "tinydb_jsonstorage_list": _stats(stock_list),
        "tinydb_jsonstorage_search": _stats(stock_search),
        "tinydb_jsonstorage_update_plus_sync": _stats(stock_update_samples),
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
            "build_s": round(build_s, 1),
            "cpus": os.cpu_count(),
        },
        "results": results,
        "targets_ms": TARGETS_MS,
        "meets_targets": {k: results[k]["p50_ms"] <= v for k, v in TARGETS_MS.items()},
        "meets_targets_p95": {k: results[k]["p95_ms"] <= v for k, v in TARGETS_MS.items()},
        "baseline": baseline,
        "ratio_p50_vs_baseline": {
            "open_patient/plain_json_open": ratio("open_patient", "plain_json_open"),
            "save_note/plain_json_fsync_save": ratio("save_note", "plain_json_fsync_save"),
            "list/tinydb_jsonstorage_list": ratio("list", "tinydb_jsonstorage_list"),
            "search_name/tinydb_jsonstorage_search": ratio(
                "search_name", "tinydb_jsonstorage_search"
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
