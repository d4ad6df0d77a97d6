"""``phyassist knowledge``: build the reference corpus into the vault, rebuild, query.

The reference corpus (CounselChat questions with a therapist's answer, IMHI posts with a
label and its reasoning) is read from the user's copy of the public data sets and written
encrypted into the vault; nothing is downloaded and nothing is read from it at run time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    knowledge = subparsers.add_parser(
        "knowledge", help="similar cases and reference answers: build, rebuild, query"
    )
    sub = knowledge.add_subparsers(dest="knowledge_command", metavar="ACTION")
    build = sub.add_parser(
        "build",
        help="read CounselChat and IMHI from DIR into the vault (encrypted) and index the notes",
    )
    build.add_argument(
        "--data",
        type=Path,
        required=True,
        help="folder with counsel_chat/counsel_chat.csv and/or imhi/train/ (e.g. ../shared/data)",
    )
    build.add_argument("--no-imhi", action="store_true", help="CounselChat only")
    build.set_defaults(handler=_cmd_build)
    rebuild = sub.add_parser("rebuild", help="re-read every saved note into the index")
    rebuild.set_defaults(handler=_cmd_rebuild)
    status = sub.add_parser("status", help="what the index holds")
    status.set_defaults(handler=_cmd_status)
    query = sub.add_parser("query", help="the entries most similar to TEXT")
    query.add_argument("text")
    query.add_argument("-k", type=int, default=5)
    query.add_argument("--json", action="store_true")
    query.set_defaults(handler=_cmd_query)
    knowledge.set_defaults(handler=lambda _args: (knowledge.print_help(), 2)[1])


def _index(writer: bool = True):
    from engine.knowledge.index import KnowledgeIndex
    from phyassist_tui.commands._common import open_store

    store = open_store(writer=writer)
    use_embedding = store.settings.knowledge.embedding
    return store, KnowledgeIndex(store, embedder="auto" if use_embedding else None)


def _cmd_build(args: argparse.Namespace) -> int:
    from engine.knowledge.reference import build_reference

    start = time.perf_counter()
    entries = build_reference(args.data, imhi=not args.no_imhi)
    store, index = _index()
    with store:
        index.load()
        counts: dict[str, int] = {}
        for entry in entries:
            counts[entry.source] = counts.get(entry.source, 0) + 1
        info = {"built": time.strftime("%Y-%m-%d"), "counts": counts}
        index.set_reference(entries, info)
        print(
            f"Reference corpus: {len(entries)} entries "
            f"({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}), encrypted in the vault."
        )
        print(f"Own notes indexed: {index.note_count}. Took {time.perf_counter() - start:.1f} s.")
    return 0


def _cmd_rebuild(_args: argparse.Namespace) -> int:
    store, index = _index()
    with store:
        notes = index.rebuild()
        print(f"Re-indexed {notes} notes; reference corpus: {index.reference_count} entries.")
    return 0


def _cmd_status(_args: argparse.Namespace) -> int:
    store, index = _index(writer=False)
    with store:
        index.load()
        print(f"Own notes: {index.note_count}")
        print(f"Reference entries: {index.reference_count} {index.reference_info or ''}".rstrip())
        model = "off" if index.embedder is None else "wordllama l2_supercat 256 (from its wheel)"
        print(f"Embedding: {model}")
    return 0


def _cmd_query(args: argparse.Namespace) -> int:
    store, index = _index(writer=False)
    with store:
        index.load()
        matches = index.query(args.text, k=args.k, mode=store.settings.knowledge.mode)
        if args.json:
            rows = [
                {"source": m.entry.citation_label, "key": m.entry.key, "passage": m.passage}
                for m in matches
            ]
            print(json.dumps(rows, ensure_ascii=False, indent=2))
            return 0
        for n, match in enumerate(matches, 1):
            print(f"[{n}] {match.entry.citation_label}\n    {match.passage}")
        if not matches:
            print("Nothing similar found.")
    return 0
