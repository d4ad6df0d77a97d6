"""Benchmark per-patient adapter training; prints one JSON object.

CPU (default), on the embedded model: a patient with 10 notes -> a stored adapter through
``TrainingRun``. That covers the subprocess start, the imports, the model load from the
dequantized cache, building the data, training, sealing and encrypted storage. Next to it, in
the same run, a plain TRL ``SFTTrainer`` does the same recipe (the hyperparameters our run
resolved) on the same examples. It also runs in a fresh subprocess that imports, loads the same
cached model, trains and saves the adapter, with no store and no sealing. Both report phases
(startup, load, train, save), tokens/s and CPU seconds; ``wall_ratio`` = ours / plain
(< 1 = faster). It also scores the answer loss of the base model and of both adapters on the
notes, outside the timings, to show that the faster recipe still learns. Target: ours <= 60 s
wall. On a shared machine the wall time grows with the load, so the load average is printed too.

    python -m bench.train [--notes 10] [--repeats 1] [--preference none|dpo]

GPU, ``--mixtral-random``: a model with Mixtral-8x7B's shape and random weights, built
directly in 4-bit NF4 on the GPU, so nothing is downloaded and no 90 GB checkpoint is needed.
About 20k tokens of examples x 3 epochs go through ``engine.training.worker.train_adapter``
(our recipe: QLoRA, paged AdamW, LoRA on attention + router). Next to it runs a plain
``SFTTrainer`` with stock TRL defaults plus the brief's recipe, on the same model and data.
Both report wall time after the model is loaded and peak GPU memory. Targets: <= 120 s,
<= 40 GB. ``--tiny --device cpu --no-4bit`` runs the same code path on a tiny Mixtral in full
precision, a quick check that works without a GPU. ``--layers N`` builds only N of the 32
layers; the output then says it is an extrapolation.

    python -m bench.train --mixtral-random [--tokens 20000] [--epochs 3] [--tokenizer DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import REPO

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The training worker runs with passive OpenMP waits (see engine.training.runner); the plain
# baseline child inherits the same setting so both see the same machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PASSPHRASE = "bench passphrase, not a secret"
LORA_TARGETS_MIXTRAL = ["q_proj", "k_proj", "v_proj", "o_proj", "block_sparse_moe.gate"]


def load_average() -> str:
    """The 1/5/15-minute load averages, as ``/proc/loadavg`` prints them."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _cpu_seconds() -> float:
    """CPU seconds used so far by this process and its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


TOPICS = [
    ("exam anxiety", "my hands shake before every test and I think I will fail"),
    ("sleep", "I lie awake until three and then cannot get up for class"),
    ("parents", "my parents call every evening to ask about my marks"),
    ("friends", "I stopped eating lunch with my friends because I feel ashamed"),
    ("maths", "I cry when I open the maths book and cannot ask anyone for help"),
    ("future", "I keep picturing the village talking about my failure"),
    ("body", "I get headaches and my stomach hurts on Sunday nights"),
    ("study habits", "I study under the street lamp after lights out"),
    ("self-worth", "I feel worthless whenever a classmate scores higher"),
    ("progress", "this week I slept better after the breathing exercise"),
]


def bench_notes(n: int, *, edits: bool = True) -> list[Any]:
    """``n`` distinct session notes; every other note carries counselor edits."""
    from engine.records import AnalysisDraft, Item, Note

    notes = []
    for i in range(n):
        topic, statement = TOPICS[i % len(TOPICS)]
        edit = edits and i % 2 == 0
        notes.append(
            Note(
                question=f"Session {i + 1}: about {topic}, {statement}. "
                "I do not know how to change this and I am tired all the time.",
                observed_state="Tense posture, speaks quickly, good insight, asks for help.",
                analysis=AnalysisDraft(
                    symptom_type=Item(text=f"Anxiety about {topic}", draft="Anxiety"),
                    reasons=[
                        Item(
                            text=f"High expectations turn {topic} into a test of worth",
                            draft="Stress" if edit else None,
                        ),
                        Item(text="Avoidance keeps the fear from being disconfirmed"),
                        Item(text="Poor sleep lowers tolerance for worry"),
                    ],
                    advice=[
                        Item(
                            text=f"Write down the worst-case thought about {topic} and test it",
                            draft="Relax more" if edit else None,
                        ),
                        Item(text="Keep a fixed bedtime and no study after 23:00"),
                        Item(text="Agree one small step with the client for next week"),
                    ],
                ),
            )
        )
    return notes


# -- CPU: ours (TrainingRun) vs plain TRL, each in a fresh process -----------------------------


def _plain_child() -> None:
    """Plain TRL: read {model_dir, sft, hyperparameters, started_at} on stdin; print JSON."""
    job = json.loads(sys.stdin.read())
    timings = {"startup_s": max(0.0, time.time() - job["started_at"])}
    t = time.perf_counter()
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    timings["imports_s"] = time.perf_counter() - t
    t = time.perf_counter()
    hp = job["hyperparameters"]
    torch.manual_seed(hp["seed"])
    tokenizer = AutoTokenizer.from_pretrained(job["model_dir"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(job["model_dir"], dtype=torch.float32)
    timings["load_s"] = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(
                output_dir=out,
                save_strategy="no",
                report_to=[],
                logging_steps=1,
                disable_tqdm=True,
                use_cpu=True,
                bf16=False,
                learning_rate=hp["learning_rate"],
                num_train_epochs=hp["num_train_epochs"],
                max_steps=hp["max_steps"],
                per_device_train_batch_size=hp["per_device_train_batch_size"],
                gradient_accumulation_steps=hp["gradient_accumulation_steps"],
                max_grad_norm=hp["max_grad_norm"],
                warmup_ratio=hp["warmup_ratio"],
                lr_scheduler_type=hp["lr_scheduler_type"],
                optim=hp["optim"],
                gradient_checkpointing=hp["gradient_checkpointing"],
                max_length=hp["max_length"],
                seed=hp["seed"],
                include_num_input_tokens_seen="non_padding",
            ),
            train_dataset=datasets.Dataset.from_list(job["sft"]),
            processing_class=tokenizer,
            peft_config=LoraConfig(
                r=hp["lora_r"],
                lora_alpha=hp["lora_alpha"],
                lora_dropout=hp["lora_dropout"],
                target_modules=hp["target_modules"],
                task_type="CAUSAL_LM",
            ),
        )
        timings["setup_s"] = time.perf_counter() - t
        t = time.perf_counter()
        trainer.train()
        timings["fit_s"] = time.perf_counter() - t
        t = time.perf_counter()
        trainer.save_model(str(Path(out) / "adapter"))  # plain TRL's way out: a PEFT folder
        timings["save_s"] = time.perf_counter() - t
    result: dict[str, Any] = {
        "timings": timings,
        "cpu_s": time.process_time(),  # this process's CPU seconds, all threads, until here
        "steps": trainer.state.global_step,
        "tokens_seen": int(trainer.state.num_input_tokens_seen),
        "final_loss": next(
            (h["loss"] for h in reversed(trainer.state.log_history) if "loss" in h), None
        ),
    }
    if job.get("score"):  # after the timings: the answer loss this adapter reaches
        from engine.training.metrics import completion_loss

        result["answer_loss"] = completion_loss(trainer.model, tokenizer, job["sft"])
    print(json.dumps(result))


def _phases(timings: dict[str, float], wall: float, store_s: float = 0.0) -> dict[str, float]:
    """startup (process + imports), load, train (prepare + trainer setup + steps), save."""
    phases = {
        "startup_s": timings.get("startup_s", 0.0) + timings["imports_s"],
        "load_s": timings["load_s"],
        "train_s": timings.get("prepare_s", 0.0) + timings["setup_s"] + timings["fit_s"],
        "save_s": timings["save_s"] + store_s,
    }
    phases["other_s"] = wall - sum(phases.values())  # pipes, process exit
    return {k: round(v, 2) for k, v in phases.items()}


def _run_plain(model_dir: Path, sft: list, hp: dict, *, score: bool) -> dict[str, Any]:
    start = time.perf_counter()
    job = {"model_dir": str(model_dir), "sft": sft, "hyperparameters": hp, "score": score}
    job["started_at"] = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "bench.train", "--plain-child"],
        input=json.dumps(job),
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"plain TRL run failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    timings = result.pop("timings")
    scoring_s = 0.0
    if score:  # the child scored after its timings; keep that out of the wall time
        scoring_s = time.perf_counter() - start - sum(timings.values())
    wall = time.perf_counter() - start - max(0.0, scoring_s)
    result.update(
        wall_s=round(wall, 2),
        cpu_s=round(result["cpu_s"], 1),
        phases=_phases(timings, wall),
        fit_s=round(timings["fit_s"], 2),
        tokens_per_s=round(result["tokens_seen"] / timings["fit_s"], 1),
        load_avg_after=load_average(),
    )
    return result


def _run_ours(store: Any, patient_id: str, settings: Any, overrides: dict) -> dict[str, Any]:
    from engine.training.runner import TrainingRun

    run = TrainingRun(store, patient_id, settings, overrides=overrides)
    cpu0 = _cpu_seconds()
    start = time.perf_counter()
    seen: dict[str, float] = {}
    for event in run.events():
        seen.setdefault(event.phase, time.perf_counter() - start)
    wall = time.perf_counter() - start
    done = run.summary
    timings = done["timings"]
    store_s = seen["stored"] - seen["done"]  # open the sealed adapter, encrypt, store
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(_cpu_seconds() - cpu0, 1),
        "phases": _phases(timings, wall, store_s),
        "worker_timings": timings,
        "fit_s": round(timings["fit_s"], 2),
        "steps": done["steps"],
        "tokens_per_epoch": done["tokens"],
        "tokens_seen": done["tokens_seen"],
        "tokens_per_s": round(done["tokens_seen"] / timings["fit_s"], 1),
        "final_loss": done["final_loss"],
        "preference_steps": done["preference_steps"],
        "torch_threads": done.get("cpu_threads"),
        "version": run.result.version if run.result else None,
        "hyperparameters": done["hyperparameters"],
        "load_avg_after": load_average(),
    }


def _answer_losses(model_dir: Path, sft: list, adapter: tuple[dict, dict]) -> dict[str, float]:
    """Answer-only loss on the notes: base model, and base + our stored adapter."""
    import torch
    from peft import get_peft_config, get_peft_model, set_peft_model_state_dict
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.training.metrics import completion_loss

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    losses = {"base": completion_loss(model, tokenizer, sft)}
    config, state = adapter
    peft_model = get_peft_model(model, get_peft_config(dict(config)))
    loaded = set_peft_model_state_dict(peft_model, {k: v.float() for k, v in state.items()})
    if loaded.unexpected_keys:
        raise SystemExit(f"adapter keys do not fit the model: {loaded.unexpected_keys[:3]}")
    losses["ours"] = completion_loss(peft_model, tokenizer, sft)
    return losses


def bench_cpu(args: argparse.Namespace) -> dict[str, Any]:
    import engine.model.llm as llm
    from engine.model.adapters import AdapterRegistry
    from engine.settings import ModelSettings, StoreSettings, load_settings
    from engine.training.data import build_training_data
    from engine.vault.store import Store

    load_start = load_average()
    # The user's model cache (dequantized weights), so only the first run ever builds it; the
    # vault, the adapters and everything else live in a throw-away home.
    cache = Path(args.cache_dir).expanduser() if args.cache_dir else load_settings().cache_dir
    home = Path(tempfile.mkdtemp(prefix="phyassist-bench-train-"))
    os.environ["PHYASSIST_HOME"] = str(home)
    os.environ["PHYASSIST_CACHE_DIR"] = str(cache)
    try:
        settings = load_settings(
            store=StoreSettings(scrypt_log2_n=12),
            model=ModelSettings(spec=args.model, device="cpu"),
        )
        t = time.perf_counter()
        llm.load_model(settings)  # builds the dequantized cache once; not part of the timing
        prepare_s = time.perf_counter() - t
        llm.forget_loaded_models()
        source = llm.resolve_spec(settings)
        model_dir = llm.gguf_cache_dir(settings, source) if source.kind == "gguf" else source.path

        store = Store.create(settings.vault_dir, PASSPHRASE, settings=settings)
        patient = store.create_patient("Bench Patient")
        for note in bench_notes(args.notes):
            store.add_note(patient.id, note)
        data = build_training_data(store.load_patient(patient.id))
        overrides: dict[str, Any] = {"preference_method": args.preference}
        if args.epochs:
            overrides["num_train_epochs"] = args.epochs

        ours_runs: list[dict[str, Any]] = []
        plain_runs: list[dict[str, Any]] = []
        # Alternate the order (ours first, then plain first, ...) so a change in the
        # machine's background load does not always favour the same side.
        for i in range(args.repeats):
            score = i == args.repeats - 1 and not args.no_score
            if i % 2 == 0 or not ours_runs:
                ours_runs.append(_run_ours(store, patient.id, settings, overrides))
                hp = ours_runs[-1]["hyperparameters"]
                plain_runs.append(_run_plain(Path(model_dir), data.sft, hp, score=score))
            else:
                plain_runs.append(_run_plain(Path(model_dir), data.sft, hp, score=score))
                ours_runs.append(_run_ours(store, patient.id, settings, overrides))
        answer_loss: dict[str, float] = {}
        if not args.no_score:
            registry = AdapterRegistry(store)
            adapter = registry.read(patient.id, ours_runs[-1]["version"])
            answer_loss = _answer_losses(Path(model_dir), data.sft, adapter)
            answer_loss["plain_trl"] = plain_runs[-1]["answer_loss"]
        store.close()
    finally:
        shutil.rmtree(home, ignore_errors=True)

    def median(runs: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    hp = ours_runs[-1]["hyperparameters"]
    ours_wall, plain_wall = median(ours_runs, "wall_s"), median(plain_runs, "wall_s")
    ours_cpu, plain_cpu = median(ours_runs, "cpu_s"), median(plain_runs, "cpu_s")
    ours_tps = median(ours_runs, "tokens_per_s")
    plain_tps = median(plain_runs, "tokens_per_s")
    for run in ours_runs:
        run.pop("hyperparameters")
    return {
        "bench": "train-cpu",
        "model": args.model,
        "notes": args.notes,
        "examples": len(data.sft),
        "preference_pairs": len(data.pairs),
        "preference": args.preference,
        "tokens_per_epoch": ours_runs[-1]["tokens_per_epoch"],
        "recipe": {
            k: hp[k]
            for k in (
                "num_train_epochs",
                "per_device_train_batch_size",
                "gradient_accumulation_steps",
                "learning_rate",
                "lora_r",
                "lora_alpha",
                "lora_dropout",
                "target_modules",
                "optim",
                "max_length",
                "bf16",
            )
        },
        "cpu_count": os.cpu_count(),
        "load_avg_start": load_start,
        "load_avg_end": load_average(),
        "model_cache_build_s": round(prepare_s, 2),
        "ours": ours_runs,
        "plain_trl": plain_runs,
        "ours_wall_s": ours_wall,
        "plain_wall_s": plain_wall,
        "wall_ratio": round(ours_wall / plain_wall, 3),
        "ours_cpu_s": ours_cpu,
        "plain_cpu_s": plain_cpu,
        "cpu_ratio": round(ours_cpu / plain_cpu, 3),
        "ours_tokens_per_s": ours_tps,
        "plain_tokens_per_s": plain_tps,
        "tokens_per_s_ratio": round(ours_tps / plain_tps, 3),
        "answer_loss": {k: round(v, 4) for k, v in answer_loss.items()},
        "target_wall_s": 60,
        "meets_target": ours_wall <= 60,
    }


# -- GPU: Mixtral-8x7B-shaped random weights in 4-bit --------------------------------------------


def _mixtral_config(tiny: bool, vocab: int, layers: int) -> Any:
    from transformers import MixtralConfig

    if tiny:
        config = MixtralConfig(
            vocab_size=vocab,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            num_local_experts=4,
            num_experts_per_tok=2,
            max_position_embeddings=4096,
        )
    else:
        config = MixtralConfig(  # Mixtral-8x7B-Instruct-v0.1's shape (the vocab: our tokenizer's)
            vocab_size=vocab,
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=layers,
            num_attention_heads=32,
            num_key_value_heads=8,
            num_local_experts=8,
            num_experts_per_tok=2,
            max_position_embeddings=32768,
            rope_theta=1e6,
            sliding_window=None,
            rms_norm_eps=1e-5,
        )
    config._attn_implementation = "sdpa"
    return config


def random_mixtral(config: Any, device: str, four_bit: bool) -> Any:
    """Random weights; with ``four_bit`` every Linear but ``lm_head`` is NF4, quantized on the GPU.

    Built on the meta device first, so the 47B parameters never exist in bf16 all at once: each
    weight is drawn on the GPU and quantized at once, as ``from_pretrained`` with a
    ``BitsAndBytesConfig`` would do it (the same steps as ``bench/gpu.py``).
    """
    import torch
    from transformers import MixtralForCausalLM

    if not four_bit:
        torch.manual_seed(0)
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        return MixtralForCausalLM(config).to(device=device, dtype=dtype)

    import bitsandbytes as bnb
    from accelerate import init_empty_weights
    from transformers.quantizers import AutoHfQuantizer

    from engine.gpu.quant import QuantSpec

    quant_config = QuantSpec().to_bnb_config()
    cuda = torch.device("cuda", torch.cuda.current_device())
    quantizer = AutoHfQuantizer.from_config(quant_config, pre_quantized=False)
    with init_empty_weights():
        model = MixtralForCausalLM(config)
    quantizer.preprocess_model(model=model, device_map={"": cuda.index}, keep_in_fp32_modules=[])
    gen = torch.Generator(cuda).manual_seed(0)
    std = config.initializer_range
    with torch.no_grad():
        for mod_name, module in model.named_modules():
            for pname, param in list(module.named_parameters(recurse=False)):
                if isinstance(module, bnb.nn.Linear4bit) and pname == "weight":
                    w = torch.randn(param.shape, generator=gen, device=cuda, dtype=torch.bfloat16)
                    kwargs = dict(param.__dict__)
                    kwargs.pop("_is_hf_initialized", None)
                    module._parameters[pname] = bnb.nn.Params4bit(
                        w.mul_(std), requires_grad=False, **kwargs
                    ).to(cuda)
                    del w
                elif "norm" in mod_name:
                    module._parameters[pname] = torch.nn.Parameter(
                        torch.ones(param.shape, device=cuda, dtype=torch.bfloat16),
                        requires_grad=False,
                    )
                else:
                    t = torch.randn(param.shape, generator=gen, device=cuda, dtype=torch.bfloat16)
                    module._parameters[pname] = torch.nn.Parameter(t.mul_(std), requires_grad=False)
            for bname, buf in list(module.named_buffers(recurse=False)):
                module._buffers[bname] = buf.to(cuda)
    config._pre_quantization_dtype = torch.bfloat16
    config.quantization_config = quant_config
    model.config.dtype = torch.bfloat16
    model.hf_quantizer = quantizer
    quantizer.postprocess_model(model)
    torch.cuda.empty_cache()
    return model


def _examples_for_tokens(tokenizer: Any, target_tokens: int) -> tuple[list, int]:
    from engine.records import BasicInfo, Patient
    from engine.training.data import build_training_data
    from engine.training.metrics import count_tokens

    sft: list = []
    total = 0
    block = 0
    while total < target_tokens:
        patient = Patient(
            name="Bench",
            basic=BasicInfo(demographics=f"Bench client {block}"),
            notes=bench_notes(10, edits=False),
        )
        for example in build_training_data(patient).sft:
            if total >= target_tokens:
                break
            sft.append(example)
            total += count_tokens(tokenizer, [example])
        block += 1
    return sft, total


def _tokenizer_for_mixtral(args: argparse.Namespace) -> Any:
    """``--tokenizer DIR`` (any local HF tokenizer), else the embedded model's (local cache)."""
    from transformers import AutoTokenizer

    if args.tokenizer:
        path = Path(args.tokenizer)
    else:
        import engine.model.llm as llm
        from engine.settings import load_settings

        settings = load_settings()
        source = llm.resolve_spec(settings)
        path = llm.gguf_cache_dir(settings, source) if source.kind == "gguf" else source.path
        if not (path / "tokenizer_config.json").is_file():
            llm.load_model(settings)  # writes the dequantized cache, tokenizer included
            llm.forget_loaded_models()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def bench_mixtral(args: argparse.Namespace) -> dict[str, Any]:
    import gc

    import torch

    from engine.training.config import recipe_for
    from engine.training.worker import train_adapter

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = device == "cuda"
    four_bit = on_gpu and not args.no_4bit
    layers = 2 if args.tiny else args.layers
    tokenizer = _tokenizer_for_mixtral(args)
    sft, n_tokens = _examples_for_tokens(tokenizer, args.tokens)
    t = time.perf_counter()
    model = random_mixtral(_mixtral_config(args.tiny, len(tokenizer), layers), device, four_bit)
    build_s = time.perf_counter() - t
    hp = recipe_for(
        n_examples=len(sft),
        n_tokens=n_tokens,
        device=device,
        model_type="mixtral",
        overrides={"num_train_epochs": args.epochs, "load_in_4bit": four_bit, "bf16": on_gpu},
    )
    mem_after_load = torch.cuda.memory_allocated() / 2**30 if on_gpu else None
    with torch.no_grad():  # first-call costs (CUDA context, kernels) outside both timings
        model(input_ids=torch.ones(1, 256, dtype=torch.long, device=device))
    results: dict[str, dict[str, Any]] = {}

    def measure(name: str, fn) -> Any:
        if on_gpu:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        value = fn()
        if on_gpu:
            torch.cuda.synchronize()
        results[name] = {
            "wall_s": round(time.perf_counter() - start, 2),
            "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if on_gpu else None,
            "peak_gpu_reserved_gib": (
                round(torch.cuda.max_memory_reserved() / 2**30, 2) if on_gpu else None
            ),
            "load_avg_after": load_average(),
        }
        return value

    events: list[dict] = []
    with tempfile.TemporaryDirectory() as out:
        # One untimed optimizer step first (Triton kernels of TRL's LM head, bitsandbytes'
        # backward, the paged optimizer), so neither timed run pays the first-call costs.
        warm_hp = hp.model_copy(update={"max_steps": 1})
        warm = train_adapter(model, tokenizer, sft[:8], [], warm_hp, lambda _e: None, Path(out))
        model = warm.peft_model.unload()
        del warm
        gc.collect()
        ours = measure(
            "ours",
            lambda: train_adapter(model, tokenizer, sft, [], hp, events.append, Path(out)),
        )
        results["ours"].update(
            setup_s=round(ours.setup_s, 2),
            fit_s=round(ours.fit_s, 2),
            steps=ours.steps,
            tokens_seen=ours.tokens_seen,
            tokens_per_s=round(ours.tokens_seen / ours.fit_s, 1),
            final_loss=ours.final_loss,
            first_loss=ours.losses[0] if ours.losses else None,
            adapter_tensors=len(ours.state_dict),
            router_lora=any("block_sparse_moe.gate" in k for k in ours.state_dict),
        )
        if args.out:  # a partial result survives a run cut short by a time limit
            partial = {"partial": True, "model_build_s": build_s, "ours": results["ours"]}
            Path(args.out).write_text(json.dumps(partial, indent=2, default=str) + "\n")
        # Remove our LoRA layers so the plain run starts from the same bare base.
        base = ours.peft_model.unload()
        del ours
        gc.collect()
        if on_gpu:
            torch.cuda.empty_cache()
        plain = measure(
            "plain_trl", lambda: _plain_sft(base, tokenizer, sft, args.epochs, Path(out))
        )
        results["plain_trl"].update(plain)

    ratio = results["ours"]["wall_s"] / results["plain_trl"]["wall_s"]
    result: dict[str, Any] = {
        "bench": "train-mixtral-random",
        "device": torch.cuda.get_device_name() if on_gpu else "cpu",
        "versions": _versions(),
        "tiny": args.tiny,
        "layers": layers,
        "four_bit": four_bit,
        "vocab": len(tokenizer),
        "examples": len(sft),
        "tokens_per_epoch": n_tokens,
        "epochs": args.epochs,
        "model_build_s": round(build_s, 1),
        "gpu_gib_after_load": None if mem_after_load is None else round(mem_after_load, 2),
        "hyperparameters": hp.model_dump(),
        "ours": results["ours"],
        "plain_trl": results["plain_trl"],
        "wall_ratio": round(ratio, 3),
        "targets": {"wall_s": 120, "peak_gpu_gib": 40},
        "load_avg": load_average(),
    }
    if on_gpu and not args.tiny:
        result["meets_targets"] = {
            "wall": results["ours"]["wall_s"] <= 120,
            "peak_gpu": results["ours"]["peak_gpu_gib"] * 2**30 / 1e9 <= 40,
        }
        if layers < 32:
            result["extrapolated_to_32_layers"] = _extrapolate(results, mem_after_load, layers)
    return result


def _extrapolate(results: dict, mem_after_load: float, layers: int) -> dict[str, Any]:
    """Linear in the layer count (the per-layer work and weights dominate); an estimate."""
    scale = 32 / layers
    weights_32 = mem_after_load * scale  # embeddings/lm_head make this a slight over-estimate
    return {
        "method": f"measured with {layers} layers; time x{scale:.1f}, weights x{scale:.1f}",
        "ours_wall_s": round(results["ours"]["wall_s"] * scale, 1),
        "plain_wall_s": round(results["plain_trl"]["wall_s"] * scale, 1),
        "ours_peak_gpu_gib": round(
            weights_32 + (results["ours"]["peak_gpu_gib"] - mem_after_load) * scale, 1
        ),
    }


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("torch", "transformers", "trl", "peft", "bitsandbytes", "accelerate", "datasets"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "absent"
    return out


def _plain_sft(model: Any, tokenizer: Any, sft: list, epochs: float, out: Path) -> dict[str, Any]:
    """Stock TRL defaults plus the brief's recipe (QLoRA, r/alpha 32, dropout 0.05, attention
    + router, paged AdamW, lr 2e-4, clip 0.3, 3 % warm-up), with the classic QLoRA preparation."""
    import datasets
    from peft import LoraConfig, prepare_model_for_kbit_training
    from trl import SFTConfig, SFTTrainer

    on_gpu = next(model.parameters()).device.type == "cuda"
    if getattr(model, "is_loaded_in_4bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(
            output_dir=str(out / "plain"),
            save_strategy="no",
            report_to=[],
            logging_steps=1,  # as ours, so both report the final step's loss
            disable_tqdm=True,
            use_cpu=not on_gpu,
            bf16=on_gpu,
            learning_rate=2e-4,
            num_train_epochs=epochs,
            max_grad_norm=0.3,
            warmup_ratio=0.03,
            optim="paged_adamw_32bit" if on_gpu else "adamw_torch",
            include_num_input_tokens_seen="non_padding",
        ),
        train_dataset=datasets.Dataset.from_list(sft),
        processing_class=tokenizer,
        peft_config=LoraConfig(
            r=32,
            lora_alpha=32,
            lora_dropout=0.05,
            target_modules=LORA_TARGETS_MIXTRAL,
            task_type="CAUSAL_LM",
        ),
    )
    start = time.perf_counter()
    trainer.train()
    fit_s = time.perf_counter() - start
    tokens = int(trainer.state.num_input_tokens_seen)
    args = trainer.args
    return {
        "fit_s": round(fit_s, 2),
        "steps": trainer.state.global_step,
        "tokens_seen": tokens,
        "tokens_per_s": round(tokens / fit_s, 1),
        "final_loss": next(
            (h["loss"] for h in reversed(trainer.state.log_history) if "loss" in h), None
        ),
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "gradient_checkpointing": args.gradient_checkpointing,
        "max_length": args.max_length,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plain-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--notes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--preference", choices=("none", "dpo", "orpo"), default="none")
    parser.add_argument("--epochs", type=float, help="override the scaled number of epochs")
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--cache-dir", help="model cache (default: the settings' cache dir)")
    parser.add_argument("--no-score", action="store_true", help="skip the answer-loss check")
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--mixtral-random", action="store_true")
    parser.add_argument("--tokens", type=int, default=20_000)
    parser.add_argument("--layers", type=int, default=32, help="Mixtral layers to build")
    parser.add_argument("--tokenizer", help="local tokenizer dir for --mixtral-random")
    parser.add_argument("--tiny", action="store_true", help="tiny Mixtral (path check)")
    parser.add_argument("--device", choices=("cuda", "cpu"))
    parser.add_argument("--no-4bit", action="store_true")
    args = parser.parse_args()
    if args.plain_child:
        _plain_child()
        return
    if args.mixtral_random:
        if args.epochs is None:
            args.epochs = 3.0
        result = bench_mixtral(args)
    else:
        result = bench_cpu(args)
    text = json.dumps(result, indent=2, default=str)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
