"""Do the drafting rules let a reason quote the client word for word? Prints one JSON object.

For CounselChat statements of the given topics (sessions 11-13 of each, as in
bench/learning.py), each of the simulated counselor's quoted sentences (the client's first
person sentences, ``CounselorPolicy.client_sentences``) is opened as a reason the way an
adapter that quotes the client opens it: ``1. "`` and the sentence's first ``--words`` words.
The engine's drafter (``StructuredDraft._segment``, the embedded model with the domain adapter,
greedy) writes the rest under the drafting rules. Counted: continuations that copy the sentence
word for word (its first 60 characters). Rules compared in one run:

- ``product``: the rules as they ship (a copy of the statement is exempt from the anti-loop
  rules, ``TokenConstraint.copy_source``);
- ``no_copy_exemption``: the same rules without the exemption (before issue 17's third pass);
- ``no_penalty`` / ``no_ngram`` / ``neither``: the repetition penalty or the no-repeat n-gram
  rule switched off, to show which rule broke the quotes.

    python bench/quote_copy.py [--topics depression,behavioral-change,lgbtq] [--words 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

RULES = ("product", "no_copy_exemption", "no_penalty", "no_ngram", "neither")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--topics", default="depression,behavioral-change,lgbtq")
    parser.add_argument("--words", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch
    from learning import CounselorPolicy, sessions_for

    from engine.inference import structured
    from engine.inference.assistant import Assistant
    from engine.inference.prompts import analysis_request
    from engine.records import Patient
    from engine.settings import GenerationSettings, ModelSettings, load_settings

    torch.set_num_threads(args.threads)
    settings = load_settings(
        model=ModelSettings(device="cpu", domain_adapter="auto"),
        generation=GenerationSettings(max_new_tokens=96, do_sample=False),
    )
    assistant = Assistant(settings)
    assistant.load()
    assistant.use_patient(None)
    tok = assistant.model.tokenizer
    product_constraint = structured.StructuredDraft._constraint
    product_tokens = structured.statement_tokens

    def set_rules(rule: str) -> None:
        structured.statement_tokens = (
            product_tokens if rule == "product" else (lambda tokenizer, statement: ())
        )

        def constraint(self, *a, **kw):
            c = product_constraint(self, *a, **kw)
            if rule in ("no_penalty", "neither"):
                c = dataclasses.replace(c, repetition_penalty=1.0)
            if rule in ("no_ngram", "neither"):
                c = dataclasses.replace(c, no_repeat=False, avoid=())
            return c

        structured.StructuredDraft._constraint = constraint

    cases = []
    for topic in args.topics.split(","):
        for statement in sessions_for(topic.strip(), 13, settings.limits.max_statement_chars)[10:]:
            for quoted in CounselorPolicy.client_sentences(statement):
                cases.append((topic, statement, quoted.strip('"')))
    patient = Patient(name="Quote bench")
    out: dict[str, dict] = {}
    started = time.perf_counter()
    for rule in RULES:
        set_rules(rule)
        exact, slips = 0, []
        for topic, statement, sentence in cases:
            request = analysis_request(statement, "en")
            ids, _ = assistant._build(patient, [{"role": "user", "content": request}], 96)
            segments = assistant._segments(patient, threading.Event(), time.perf_counter())
            drafter = structured.StructuredDraft(tok, segments, ids, "en", statement)
            head = " ".join(sentence.split()[: args.words])
            drafter.text = f'Symptom type: X\nReasons:\n1. "{head}'
            body = "".join(
                drafter._segment(
                    structured.ITEM_MAX_TOKENS["en"],
                    structured.item_done("en"),
                    structured._Tally(0.0),
                    hold=False,
                    quote_first=True,
                )
            )
            got = (head + body).strip().rstrip('"').strip()
            if got.startswith(sentence.rstrip('"')[:60]):
                exact += 1
            else:
                slips.append({"topic": topic, "want": sentence, "got": head + body})
        out[rule] = {"word_for_word": exact, "of": len(cases), "slips": slips}
    set_rules("product")
    print(
        json.dumps(
            {
                "bench": "quote_copy",
                "command": " ".join(["python", "bench/quote_copy.py", *sys.argv[1:]]),
                "words_given": args.words,
                "rules": out,
                "wall_s": round(time.perf_counter() - started, 1),
                "load_average_end": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
            },
            ensure_ascii=False,
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
