"""Knowledge-query latency of two source trees on one prepared vault, interleaved; one JSON line
per run.

bench/retrieval.py's ``scale`` builds a 2,000 x 20 vault from scratch (minutes) and times
only the tree it runs from. On a shared 2-core box whose load swings from 2 to 16 within
minutes, a before/after needs both trees measured in the same minutes on the same vault:

    python -m bench.retrieval_latency prepare /tmp/kq        # once: 2,000 x 20 + reference
    mkdir /tmp/before && git archive <before> | tar -x -C /tmp/before
    python -m bench.retrieval_latency compare /tmp/kq /tmp/before . --rounds 3

Each run is a fresh process (``PYTHONPATH`` = its tree) that opens the vault read-only,
reopens the index from its encrypted shards (wall and CPU seconds), then times ``query``
with k=8, leaving out one patient as the Similar pane does, for the held-out CounselChat
questions (hybrid and lexical) and the Chinese fixture queries (hybrid): wall-clock and
this thread's CPU milliseconds (BLAS runs one thread in a query), p50/p95, with the load
average before and after. The vault holds public text only (CounselChat/IMHI rows).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

PASSPHRASE = "bench passphrase"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _settings(vault: Path):
    from engine.settings import Settings, StoreSettings

    return Settings(store=StoreSettings(scrypt_log2_n=10), data_dir=vault / "data")


def prepare(vault: Path, patients: int, notes: int) -> None:
    from bench.retrieval import _synthetic_patients
    from engine.knowledge.index import KnowledgeIndex
    from engine.knowledge.reference import build_reference
    from engine.vault.store import Store

    reference = build_reference(DATA)
    store = Store.create(vault / "vault", PASSPHRASE, settings=_settings(vault))
    store.import_patients(_synthetic_patients(patients, notes, reference))
    index = KnowledgeIndex(store).load()
    index.set_reference(reference)
    store.close()
    print(json.dumps({"vault": str(vault), "notes": index.note_count}))


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return round(ordered[int(p * (len(ordered) - 1))], 2)


def measure(vault: Path, label: str) -> dict:
    """Run inside the tree being measured (``PYTHONPATH`` points at it)."""
    from engine.knowledge.index import KnowledgeIndex
    from engine.knowledge.reference import counselchat_entries, counselchat_rows
    from engine.vault.store import Store

    store = Store.open(vault / "vault", PASSPHRASE, settings=_settings(vault), writer=False)
    out: dict = {"tree": label, "load_before": [round(x, 2) for x in os.getloadavg()]}
    wall, cpu = time.perf_counter(), time.thread_time()
    index = KnowledgeIndex(store).load()
    index._main.vectors()
    index._reference.vectors()
    out["reopen_wall_s"] = round(time.perf_counter() - wall, 2)
    out["reopen_cpu_s"] = round(time.thread_time() - cpu, 2)
    rows = counselchat_rows(DATA / "counsel_chat" / "counsel_chat.csv")
    english = [e.search for e in counselchat_entries(rows, {"val"})]
    fixture = Path(__file__).with_name("fixtures") / "knowledge_zh.json"
    chinese = [q["text"] for q in json.loads(fixture.read_text("utf-8"))["queries"]]
    viewing = store.list_patients()[0].id
    runs = (("hybrid_en", english, "hybrid"), ("lexical_en", english, "lexical"))
    for name, queries, mode in (*runs, ("hybrid_zh", chinese * 3, "hybrid")):
        walls, cpus = [], []
        for q in queries:
            wall, cpu = time.perf_counter(), time.thread_time()
            index.query(q, k=8, mode=mode, exclude_patient=viewing)
            walls.append((time.perf_counter() - wall) * 1000)
            cpus.append((time.thread_time() - cpu) * 1000)
        out[f"{name}_ms"] = {
            "queries": len(queries),
            "wall_p50": _pct(walls, 0.5),
            "wall_p95": _pct(walls, 0.95),
            "cpu_p50": _pct(cpus, 0.5),
            "cpu_p95": _pct(cpus, 0.95),
        }
    out["load_after"] = [round(x, 2) for x in os.getloadavg()]
    store.close()
    return out


def compare(vault: Path, trees: list[Path], rounds: int) -> None:
    for _ in range(rounds):
        for tree in trees:
            env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
            # this file by path (-P: bench/engine.py must not shadow the tree's engine package)
            cmd = [sys.executable, "-P", str(Path(__file__).resolve()), "measure", str(vault)]
            cmd += ["--label", str(tree)]
            done = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(done.stderr)
            print(done.stdout.strip().splitlines()[-1], flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("vault", type=Path)
    p.add_argument("--patients", type=int, default=2000)
    p.add_argument("--notes", type=int, default=20)
    m = sub.add_parser("measure")
    m.add_argument("vault", type=Path)
    m.add_argument("--label", default=".")
    c = sub.add_parser("compare")
    c.add_argument("vault", type=Path)
    c.add_argument("trees", type=Path, nargs="+")
    c.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.vault, args.patients, args.notes)
    elif args.command == "measure":
        print(json.dumps(measure(args.vault, args.label)))
    else:
        compare(args.vault, args.trees, args.rounds)


if __name__ == "__main__":
    main()
