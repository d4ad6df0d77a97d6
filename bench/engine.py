"""Benchmark the engine on the embedded model; prints one JSON object.

Measured in one run, each next to its baseline:

* ``load``: cold start (dequantize the GGUF and write the safetensors cache, into an empty
  temporary cache dir) vs warm start (from that cache). In-process, after imports.
* ``analysis``: time to first token and decode tokens/s of an Analysis through the
  ``Assistant`` (prompt building, worker thread, streamer, cancel check; prefix cache off so
  both sides do the same work) vs a plain ``model.generate`` on the very same token ids with
  the same generation arguments. Runs alternate (ours first, then plain first, …) and medians
  are compared: ``ttft_ratio`` = ours / plain (lower is better), ``decode_ratio`` = ours /
  plain tokens/s (higher is better); ``*_best`` compare the best runs. The target is
  overhead within 5%.
* ``analysis_warm_prefix``: the same Analysis when the patient's prompt is already cached.
* ``regenerate``: time to first token of a regenerate-one-item on a patient with a long
  record, with the patient's cached prefix vs without (``speedup`` = without / with).
* ``first_analysis_after_open``: time to first token of the first Analysis of a patient with
  a long record, cold vs after ``Assistant.prefill_record`` (run by the TUI when a patient
  is opened, while the question is typed); ``speedup`` = cold / after.
* ``adapter_switch``: first activation of a patient's adapter (decrypt from the store, build
  LoRA layers, load weights), switch back to base, and a switch to an already resident one.

    python -m bench.engine [--repeats 5] [--max-new-tokens 64] [--threads N] [--skip-cold]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if "--threads" in sys.argv[:-1]:  # per-thread in OpenMP: must be set before torch starts
    _threads = sys.argv[sys.argv.index("--threads") + 1]
    if _threads != "0":
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = _threads

import torch

from bench.reference import ClockStreamer
from engine.inference.assistant import Assistant
from engine.inference.generation import TokenClock, generate_kwargs
from engine.model.adapters import AdapterRegistry
from engine.model.llm import _load_uncached, load_model
from engine.records import AnalysisDraft, BasicInfo, Item, Note, Patient
from engine.settings import GenerationSettings, ModelSettings, Settings, StoreSettings

QUESTION = (
    "I retook the exam this year. Whenever I study my head feels heavy, I cannot concentrate, "
    "and before every test my hands shake and I think I will do worse than everyone else. "
    "My parents visit often and hope I will bring honour to the family. I study under the "
    "street lamp after lights out because resting feels like wasting time."
)


def make_patient(notes: int) -> Patient:
    return Patient(
        name="Bench Patient",
        basic=BasicInfo(
            demographics="F, 19, repeating the final school year, rural, well-off family",
            developmental_history="Failed the entrance exam once; high parental expectations.",
            mental_state="Mild anxiety, insomnia, headache, fatigue, poor concentration.",
            physical_condition="No family history, no major illness.",
            social_functioning="Introverted, rarely asks classmates for help.",
        ),
        notes=[
            Note(
                question=f"Session {i}: she talks about the mock exam, sleep and her parents. " * 3,
                analysis=AnalysisDraft(
                    symptom_type=Item(text="Exam anxiety"),
                    reasons=[Item(text="High expectations"), Item(text="Past failure")],
                    advice=[Item(text="Relaxation training"), Item(text="Sleep hygiene")],
                ),
            )
            for i in range(notes)
        ],
    )


def settings_in(root: Path, cache_dir: Path, max_new: int) -> Settings:
    return Settings(
        data_dir=root / "data",
        config_dir=root / "config",
        cache_dir=cache_dir,
        model=ModelSettings(),
        generation=GenerationSettings(max_new_tokens=max_new, do_sample=False),
        store=StoreSettings(scrypt_log2_n=12),
    )


def bench_load(root: Path, max_new: int) -> dict:
    cache = root / "cold-cache"
    settings = settings_in(root, cache, max_new)
    start = time.perf_counter()
    cold = _load_uncached(settings, lambda _m: None, use_disk_cache=True)
    cold_s = time.perf_counter() - start
    assert cold.source == "gguf"
    del cold
    start = time.perf_counter()
    warm = _load_uncached(settings, lambda _m: None, use_disk_cache=True)
    warm_s = time.perf_counter() - start
    assert warm.source == "cache"
    return {
        "cold_s": round(cold_s, 2),
        "warm_s": round(warm_s, 2),
        "speedup": round(cold_s / warm_s, 1),
    }


def off_main(fn, *args, **kwargs):
    """Run ``fn`` in a fresh thread and return its result (or raise its exception).

    Every torch call of this benchmark runs off the main thread, as in the product (the TUI
    loads and generates in worker threads). Measured on the 2-core box: once the main thread
    has run torch ops, generation in *other* threads decodes ~40% slower (16 vs 27 tokens/s;
    cause not pinned down, most likely the CPU thread pools of two live threads competing for
    2 cores), which made the plain baseline (then on the main thread) look 1.7x faster than
    the product's worker-thread path. Both now run in threads.
    """
    result: list = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(fn(*args, **kwargs))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name=f"bench-{getattr(fn, '__name__', 'call')}")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def plain_generate(loaded, ids: list[int], gen: GenerationSettings, max_new: int) -> dict:
    """The baseline: model.generate on the same ids, timed by a bare streamer."""
    clock = TokenClock()
    tensor = torch.tensor([ids])
    kwargs = generate_kwargs(loaded.model, loaded.tokenizer, gen, max_new)
    start = time.perf_counter()
    with torch.inference_mode():
        loaded.model.generate(
            input_ids=tensor,
            attention_mask=torch.ones_like(tensor),
            streamer=ClockStreamer(clock),
            **kwargs,
        )
    end = time.perf_counter()
    return {
        "ttft_s": clock.first - start,
        "tokens": clock.tokens,
        "tokens_per_s": clock.decode_rate(),
        "total_s": end - start,
    }


def ours(stream, assistant: Assistant) -> dict:
    text = "".join(stream)
    stats = stream.stats  # per run (engine.inference.stream.TextStream)
    return {
        "ttft_s": stats.ttft_s,
        "tokens": stats.tokens,
        "tokens_per_s": stats.tokens_per_s,
        "total_s": stats.total_s,
        "cached_prefix_tokens": stats.cached_prefix_tokens,
        "prompt_tokens": stats.prompt_tokens,
        "chars": len(text),
    }


def med(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def summary(rows: list[dict]) -> dict:
    return {
        "ttft_s": round(med(rows, "ttft_s"), 4),
        "tokens_per_s": round(med(rows, "tokens_per_s"), 2),
        "tokens": int(med(rows, "tokens")),
        "runs": len(rows),
    }


def bench_analysis(assistant: Assistant, patient: Patient, repeats: int, max_new: int) -> dict:
    cancel = threading.Event()
    loaded = assistant.model
    gen = assistant.settings.generation
    # Warm-up (first-call allocations) for both paths.
    assistant.prefix_cache.enabled = False
    ours(assistant.stream_analysis(patient, QUESTION, cancel=cancel), assistant)
    ids = list(assistant.last_prompt_ids)
    off_main(plain_generate, loaded, ids, gen, max_new)
    mine, base = [], []
    for i in range(repeats):
        # Alternate which side goes first, so drift in the machine's load hits both alike.
        for side in ("ours", "plain") if i % 2 == 0 else ("plain", "ours"):
            if side == "ours":
                stream = assistant.stream_analysis(patient, QUESTION, cancel=cancel)
                mine.append(ours(stream, assistant))
                assert assistant.last_prompt_ids == ids
            else:
                base.append(off_main(plain_generate, loaded, ids, gen, max_new))
    assistant.prefix_cache.enabled = True
    assistant.prefix_cache.clear()
    ours(assistant.stream_analysis(patient, QUESTION, cancel=cancel), assistant)  # fill
    warm = [
        ours(assistant.stream_analysis(patient, QUESTION, cancel=cancel), assistant)
        for _ in range(repeats)
    ]
    build = []
    for _ in range(repeats):
        start = time.perf_counter()
        assistant._build(patient, [{"role": "user", "content": QUESTION}], max_new)
        build.append(time.perf_counter() - start)
    m, b = summary(mine), summary(base)
    return {
        "prompt_tokens": len(ids),
        "assistant": m,
        "plain_generate": b,
        "ttft_ratio": round(m["ttft_s"] / b["ttft_s"], 3),
        "decode_ratio": round(m["tokens_per_s"] / b["tokens_per_s"], 3),
        # Best-of-N: on a shared machine noise only adds time, so minima compare the code.
        "ttft_ratio_best": round(
            min(r["ttft_s"] for r in mine) / min(r["ttft_s"] for r in base), 3
        ),
        "decode_ratio_best": round(
            max(r["tokens_per_s"] for r in mine) / max(r["tokens_per_s"] for r in base), 3
        ),
        "same_token_count": m["tokens"] == b["tokens"],
        "prompt_build_ms": round(statistics.median(build) * 1000, 2),
        "warm_prefix": dict(summary(warm), cached_prefix_tokens=warm[-1]["cached_prefix_tokens"]),
    }


def bench_regenerate(assistant: Assistant, patient: Patient, repeats: int) -> dict:
    cancel = threading.Event()
    text = "".join(assistant.stream_analysis(patient, QUESTION, cancel=cancel))
    draft = assistant.parse_analysis(text + "\nReasons:\n1. Pressure from her parents")
    item = draft.reasons[-1]
    item.comments.append("Mention the village and the family's honour.")

    def regen() -> dict:
        stream = assistant.stream_regenerate_item(
            patient, QUESTION, draft, "reasons", item.id, cancel=cancel
        )
        return ours(stream, assistant)

    cold, warm = [], []
    report = assistant.stream_regenerate_item(
        patient, QUESTION, draft, "reasons", item.id, cancel=cancel
    ).context_report  # built with the prompt, before any token
    for _ in range(repeats):
        assistant.prefix_cache.enabled = False
        cold.append(regen())
        assistant.prefix_cache.enabled = True
        assistant.prefix_cache.clear()
        "".join(assistant.stream_analysis(patient, QUESTION, cancel=cancel))  # caches the prefix
        warm.append(regen())
    c, w = med(cold, "ttft_s"), med(warm, "ttft_s")
    return {
        "prompt_tokens": warm[-1]["prompt_tokens"],
        "cached_prefix_tokens": warm[-1]["cached_prefix_tokens"],
        "context_report": report,
        "ttft_without_cache_s": round(c, 4),
        "ttft_with_cache_s": round(w, 4),
        "speedup": round(c / w, 2),
        "runs": repeats,
    }


def random_lora(config, *, r: int = 4, seed: int = 0, scale: float = 0.5):
    """A LoRA on q_proj/v_proj of every layer with random non-zero weights."""
    gen = torch.Generator().manual_seed(seed)
    hidden = config.hidden_size
    kv = config.num_key_value_heads * (hidden // config.num_attention_heads)
    state = {}
    for layer in range(config.num_hidden_layers):
        for module, out in (("q_proj", hidden), ("v_proj", kv)):
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            state[f"{prefix}.lora_A.weight"] = torch.randn(r, hidden, generator=gen) * scale
            state[f"{prefix}.lora_B.weight"] = torch.randn(out, r, generator=gen) * scale
    cfg = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": r,
        "lora_alpha": 2 * r,
        "target_modules": ["q_proj", "v_proj"],
    }
    return cfg, state


def bench_adapter_switch(assistant: Assistant, root: Path, repeats: int) -> dict:
    from engine.vault.store import Store

    store = Store.create(root / "vault", "bench passphrase 1", settings=assistant.settings)
    try:
        registry = AdapterRegistry(store)
        config = assistant.model.model.config
        firsts, to_base, resident = [], [], []
        for n in range(repeats):
            patient = store.create_patient(f"Adapter {n}")
            registry.save(patient.id, *random_lora(config, seed=n))
            start = time.perf_counter()
            label = assistant.use_patient(patient, store)
            firsts.append(time.perf_counter() - start)
            assert label.endswith("adapter v1"), label
            start = time.perf_counter()
            assistant.use_patient(None)
            to_base.append(time.perf_counter() - start)
            start = time.perf_counter()
            assistant.use_patient(patient, store)
            resident.append(time.perf_counter() - start)
            assistant.use_patient(None)
        return {
            "first_activation_s": round(statistics.median(firsts), 4),
            "to_base_s": round(statistics.median(to_base), 4),
            "resident_switch_s": round(statistics.median(resident), 4),
            "lora": "r=4 on q_proj+v_proj of all 30 layers",
            "runs": repeats,
        }
    finally:
        store.close()


def bench_first_analysis(assistant: Assistant, patient: Patient, repeats: int) -> dict:
    """The first Analysis of a patient just opened: cold (the whole record is read before the
    first token) vs after ``prefill_record`` (what the TUI runs while the counselor types)."""
    cancel = threading.Event()
    cold, warm, prefill_s, read = [], [], [], 0
    for _ in range(repeats):
        assistant.prefix_cache.clear()
        cold.append(ours(assistant.stream_analysis(patient, QUESTION, cancel=cancel), assistant))
        assistant.prefix_cache.clear()
        start = time.perf_counter()
        read = off_main(assistant.prefill_record, patient, threading.Event())
        prefill_s.append(time.perf_counter() - start)
        warm.append(ours(assistant.stream_analysis(patient, QUESTION, cancel=cancel), assistant))
    c, w = med(cold, "ttft_s"), med(warm, "ttft_s")
    return {
        "prompt_tokens": cold[-1]["prompt_tokens"],
        "record_tokens_read_ahead": read,
        "prefill_s": round(statistics.median(prefill_s), 3),
        "ttft_cold_s": round(c, 4),
        "ttft_after_prefill_s": round(w, 4),
        "speedup": round(c / w, 2),
        "runs": repeats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--notes", type=int, default=20, help="notes in the long record")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--skip-cold", action="store_true", help="skip the cold load")
    args = parser.parse_args()

    out: dict = {
        "model": "embedded:smollm2-135m-instruct",
        "device": "cpu",
        "torch_threads": off_main(torch.get_num_threads),
        "cpu_count": os.cpu_count(),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "max_new_tokens": args.max_new_tokens,
    }
    with tempfile.TemporaryDirectory(prefix="phyassist-bench-") as tmp:
        root = Path(tmp)
        if not args.skip_cold:
            out["load"] = off_main(bench_load, root, args.max_new_tokens)
        # The cold run left a fresh cache; with --skip-cold use the user's (public weights).
        cache_dir = root / "cold-cache" if not args.skip_cold else Settings().cache_dir
        settings = settings_in(root, cache_dir, args.max_new_tokens)
        off_main(load_model, settings)
        assistant = Assistant(settings)
        off_main(assistant.load)
        short = make_patient(2)
        out["analysis"] = bench_analysis(assistant, short, args.repeats, args.max_new_tokens)
        out["regenerate"] = bench_regenerate(assistant, make_patient(args.notes), args.repeats)
        out["first_analysis_after_open"] = bench_first_analysis(
            assistant, make_patient(args.notes), max(1, args.repeats // 2)
        )
        out["adapter_switch"] = off_main(bench_adapter_switch, assistant, root, args.repeats)
    out["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
