"""Where a patient training's time goes, step by step, in CPU seconds; prints one JSON object.

On a shared box wall time says more about the neighbours than about the training (issue 17:
31 s per step at load 6-12, where one step costs about 3 CPU seconds). This trains in process,
on the embedded model with the domain adapter merged (as the worker does), a patient of
``--notes`` synthetic notes (real CounselChat questions, a fixed draft edited by the learning
bench's counselor policy), and reports for each SFT and preference step its wall and CPU
seconds, plus the sequence lengths, the recipe and the peak RSS. ``--max-steps`` and
``--pairs`` keep it short; ``--all-layers`` puts the LoRA on every layer (the recipe before
issue 17's CPU change) for a comparison in the same run conditions.

    OMP_WAIT_POLICY=PASSIVE python -m bench.train_steps [--notes 10] [--threads 1]
        [--max-steps 3] [--pairs 2] [--all-layers]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--notes", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=3, help="SFT steps (-1: the recipe's)")
    parser.add_argument("--pairs", type=int, default=2, help="preference pairs (0: none)")
    parser.add_argument("--all-layers", action="store_true")
    args = parser.parse_args()

    import torch

    from bench.learning import CounselorPolicy, sessions_for
    from engine.model.adapters import resolve_domain_adapter
    from engine.model.llm import load_model
    from engine.records import AnalysisDraft, Item, Note, Patient
    from engine.settings import ModelSettings, load_settings
    from engine.training.config import recipe_for
    from engine.training.data import build_training_data
    from engine.training.metrics import count_tokens, encode_example
    from engine.training.worker import merge_domain_adapter, train_adapter

    torch.set_num_threads(args.threads)
    settings = load_settings(model=ModelSettings(device="cpu"))
    policy = CounselorPolicy("depression")
    draft = AnalysisDraft(
        symptom_type=Item(text="Lack of motivation"),
        reasons=[
            Item(text="Lack of motivation (no energy or interest)."),
            Item(text="Lack of motivation due to lack of work or responsibilities."),
        ],
        advice=[
            Item(text="Help find purpose in life by finding something meaningful to do."),
            Item(text="Seek professional help from a mental health counselor."),
        ],
    )
    patient = Patient(name="train steps")
    for question in sessions_for("depression", args.notes, settings.limits.max_statement_chars):
        patient.notes.append(
            Note(question=question, analysis=policy.edit(draft.model_copy(deep=True), question))
        )
    data = build_training_data(patient)
    started = time.perf_counter()
    loaded = load_model(settings)
    domain = resolve_domain_adapter("auto", settings.model.spec)
    model = merge_domain_adapter(loaded.model, domain) if domain else loaded.model
    load_s = time.perf_counter() - started
    tokenizer = loaded.tokenizer
    encoded = [encode_example(tokenizer, ex) for ex in data.sft]
    overrides: dict = {"max_steps": args.max_steps}
    if args.pairs:
        overrides["max_preference_pairs"] = args.pairs
    else:
        overrides["preference_method"] = "none"
    if args.all_layers:
        overrides["lora_layers"] = None
    hp = recipe_for(
        n_examples=len(data.sft),
        n_tokens=count_tokens(tokenizer, data.sft),
        device="cpu",
        model_type=model.config.model_type,
        overrides=overrides,
        n_layers=model.config.num_hidden_layers,
    )
    steps: list[dict] = []
    mark = [time.perf_counter(), time.process_time()]

    def emit(event: dict) -> None:
        now = [time.perf_counter(), time.process_time()]
        if event.get("step"):
            steps.append(
                {
                    "phase": event["phase"],
                    "step": event["step"],
                    "loss": event["loss"],
                    "wall_s": round(now[0] - mark[0], 2),
                    "cpu_s": round(now[1] - mark[1], 2),
                }
            )
        mark[:] = now

    wall, cpu = time.perf_counter(), time.process_time()
    result = train_adapter(
        model, tokenizer, data.sft, data.pairs, hp, emit, Path(tempfile.mkdtemp())
    )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu

    def mean(phase: str, key: str) -> float | None:
        values = [s[key] for s in steps if s["phase"] == phase]
        return round(sum(values) / len(values), 2) if values else None

    b_norms = [float(v.norm()) for k, v in result.state_dict.items() if "lora_B" in k]
    print(
        json.dumps(
            {
                "bench": "train_steps",
                "command": " ".join(["python -m bench.train_steps", *sys.argv[1:]]),
                "notes": args.notes,
                "torch_threads": torch.get_num_threads(),
                "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                "load_average": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
                "sequence_tokens": [len(ids) for ids, _ in encoded],
                "answer_tokens": [sum(1 for x in labels if x != -100) for _, labels in encoded],
                "preference_pairs_available": len(data.pairs),
                "lora_layers": hp.lora_layers,
                "recipe": hp.model_dump(exclude={"target_modules"}),
                "load_and_merge_s": round(load_s, 2),
                "train_wall_s": round(wall, 2),
                "train_cpu_s": round(cpu, 2),
                "setup_s": round(result.setup_s, 2),
                "sft_step_cpu_s_mean": mean("sft", "cpu_s"),
                "preference_step_cpu_s_mean": mean(hp.preference_method, "cpu_s"),
                "steps": steps,
                "lora_B_norm_mean": round(sum(b_norms) / len(b_norms), 4) if b_norms else None,
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
