"""Benchmark per-patient adapter training; prints one JSON object.

CPU (default), on the embedded model: a patient with 10 notes -> a stored adapter through
``TrainingRun`` (subprocess start, imports, model load from the dequantized cache, data
building, training, sealing, encrypted storage), next to a plain TRL ``SFTTrainer`` run of the
same recipe (the hyperparameters our run resolved) on the same examples, also in a fresh
subprocess that imports, loads the same cached model and trains (no store, no sealing).
``ratio`` = ours / plain wall time (1.0 = no overhead). Target: ours <= 60 s.

    python bench/train.py [--notes 10] [--repeats 1] [--preference none|dpo]

GPU, ``--mixtral-random``: a Mixtral-8x7B-shaped model with random weights, built directly
in 4-bit NF4 on the GPU (no download, no 90 GB checkpoint), ~20k tokens of examples x 3
epochs through ``engine.training.worker.train_adapter`` (our recipe: QLoRA, paged AdamW,
attention + router LoRA) vs a plain ``SFTTrainer`` with the brief's recipe on the same model
and data; wall time after the model is loaded and peak GPU memory for each. Targets:
<= 120 s, <= 40 GB. ``--tiny --device cpu`` runs the same code path on a tiny Mixtral in
full precision (a quick check that the path works without a GPU).

    python bench/train.py --mixtral-random [--tokens 20000] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The training worker runs with passive OpenMP waits (see engine.training.runner); the plain
# baseline child inherits the same setting so both see the same machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PASSPHRASE = "bench passphrase, not a secret"

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
    """Plain TRL: read {model_dir, sft, hyperparameters} on stdin; print timings as JSON."""
    t0 = time.perf_counter()
    job = json.loads(sys.stdin.read())
    import datasets
    import torch
    from peft import LoraConfig, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    t_import = time.perf_counter()
    hp = job["hyperparameters"]
    torch.manual_seed(hp["seed"])
    tokenizer = AutoTokenizer.from_pretrained(job["model_dir"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(job["model_dir"], dtype=torch.float32)
    t_load = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
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
        t_ready = time.perf_counter()
        trainer.train()
        state = get_peft_model_state_dict(trainer.model)
    t_end = time.perf_counter()
    print(
        json.dumps(
            {
                "import_s": t_import - t0,
                "load_s": t_load - t_import,
                "prepare_s": t_ready - t_load,
                "train_s": t_end - t_ready,
                "steps": trainer.state.global_step,
                "tokens_seen": int(trainer.state.num_input_tokens_seen),
                "final_loss": next(
                    (h["loss"] for h in reversed(trainer.state.log_history) if "loss" in h), None
                ),
                "adapter_tensors": len(state),
            }
        )
    )


def _run_plain(model_dir: Path, sft: list, hp: dict) -> dict[str, Any]:
    job = json.dumps({"model_dir": str(model_dir), "sft": sft, "hyperparameters": hp})
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--plain-child"],
        input=job,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"plain TRL run failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = wall
    result["tokens_per_s"] = result["tokens_seen"] / result["train_s"]
    return result


def bench_cpu(args: argparse.Namespace) -> dict[str, Any]:
    import engine.llm as llm
    from engine.settings import ModelSettings, StoreSettings, load_settings
    from engine.store import Store
    from engine.training.data import build_training_data
    from engine.training.runner import TrainingRun

    home = Path(tempfile.mkdtemp(prefix="phyassist-bench-train-"))
    cache = Path(args.cache_dir).expanduser() if args.cache_dir else None
    os.environ["PHYASSIST_HOME"] = str(home)
    if cache:
        os.environ["PHYASSIST_CACHE_DIR"] = str(cache)
    try:
        settings = load_settings(
            store=StoreSettings(scrypt_log2_n=12),
            model=ModelSettings(spec=args.model, device="cpu"),
        )
        t = time.perf_counter()
        llm.load_model(settings)  # builds the dequantized cache once; not part of the timing
        prepare_s = time.perf_counter() - t
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
        hp: dict[str, Any] | None = None
        done: dict[str, Any] = {}

        def run_ours() -> dict[str, Any]:
            nonlocal done
            run = TrainingRun(store, patient.id, settings, overrides=overrides)
            start = time.perf_counter()
            events = list(run.events())
            wall = time.perf_counter() - start
            first_step = next(e for e in events if e.phase == "sft" and e.step >= 1)
            done = run.summary
            return {
                "wall_s": wall,
                "train_s": done["train_s"],
                "steps": done["steps"],
                "tokens_seen": done["tokens_seen"],
                "tokens_per_s": done["tokens_seen"] / done["train_s"],
                "final_loss": done["final_loss"],
                "preference_steps": done["preference_steps"],
                "version": run.result.version,
                "first_step_event_tokens_per_s": first_step.tokens_per_s,
                "load_avg_1m_after": os.getloadavg()[0],
            }

        # Alternate the order (ours first, then plain first, ...) so a change in the
        # machine's background load does not always favour the same side.
        for i in range(args.repeats):
            if i % 2 == 0 or hp is None:
                ours_runs.append(run_ours())
                hp = done["hyperparameters"]
                plain_runs.append(_run_plain(Path(model_dir), data.sft, hp))
            else:
                plain_runs.append(_run_plain(Path(model_dir), data.sft, hp))
                ours_runs.append(run_ours())
            plain_runs[-1]["load_avg_1m_after"] = os.getloadavg()[0]
        store.close()
    finally:
        shutil.rmtree(home, ignore_errors=True)

    ours_wall = statistics.median(r["wall_s"] for r in ours_runs)
    plain_wall = statistics.median(r["wall_s"] for r in plain_runs)
    ours_train = statistics.median(r["train_s"] for r in ours_runs)
    plain_train = statistics.median(r["train_s"] for r in plain_runs)
    return {
        "bench": "train-cpu",
        "model": args.model,
        "notes": args.notes,
        "examples": len(data.sft),
        "preference_pairs": len(data.pairs),
        "preference": args.preference,
        "tokens_per_epoch": done["tokens"],
        "hyperparameters": {
            k: hp[k] for k in ("num_train_epochs", "per_device_train_batch_size", "lora_r", "optim")
        },
        "cpu_threads": __import__("torch").get_num_threads(),
        "load_avg_1m": os.getloadavg()[0],
        "model_cache_build_s": round(prepare_s, 2),
        "ours": ours_runs,
        "plain_trl": plain_runs,
        "ours_wall_s": round(ours_wall, 2),
        "plain_wall_s": round(plain_wall, 2),
        "wall_ratio": round(ours_wall / plain_wall, 3),
        "ours_train_s": round(ours_train, 2),
        "plain_train_s": round(plain_train, 2),
        "train_ratio": round(ours_train / plain_train, 3),
        "ours_tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in ours_runs), 1),
        "plain_tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in plain_runs), 1),
        "target_wall_s": 60,
        "meets_target": ours_wall <= 60,
    }


# -- GPU: Mixtral-8x7B-shaped random weights in 4-bit --------------------------------------------


def _mixtral_config(tiny: bool, vocab: int) -> Any:
    from transformers import MixtralConfig

    if tiny:
        return MixtralConfig(
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
    return MixtralConfig(  # Mixtral-8x7B-Instruct-v0.1's shape
        vocab_size=vocab,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        num_local_experts=8,
        num_experts_per_tok=2,
        max_position_embeddings=32768,
        rope_theta=1e6,
        rms_norm_eps=1e-5,
        router_aux_loss_coef=0.02,
    )


def random_mixtral(tiny: bool, device: str, vocab: int, four_bit: bool) -> Any:
    """Random weights, materialised module by module; Linear layers as NF4 when ``four_bit``.

    Built on the meta device first so the 47B parameters never exist in bf16 anywhere; each
    expert/attention weight is drawn on the GPU and quantized at once.
    """
    import torch
    from accelerate import init_empty_weights
    from transformers import MixtralForCausalLM

    config = _mixtral_config(tiny, vocab)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if not four_bit:
        torch.manual_seed(0)
        return MixtralForCausalLM(config).to(device=device, dtype=dtype)

    import bitsandbytes as bnb
    from transformers import BitsAndBytesConfig
    from transformers.integrations.bitsandbytes import replace_with_bnb_linear
    from transformers.quantizers import AutoHfQuantizer

    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
        llm_int8_skip_modules=["lm_head", "block_sparse_moe.gate"],
    )
    with init_empty_weights():
        model = MixtralForCausalLM(config)
    skip = ["lm_head", "block_sparse_moe.gate"]
    model = replace_with_bnb_linear(model, modules_to_not_convert=skip, quantization_config=quant)
    gen = torch.Generator(device="cuda").manual_seed(0)
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            out_f, in_f = module.out_features, module.in_features
            w = torch.empty(out_f, in_f, dtype=torch.bfloat16, device="cuda").normal_(
                0, 0.02, generator=gen
            )
            module.weight = bnb.nn.Params4bit(
                w,
                requires_grad=False,
                quant_type="nf4",
                compress_statistics=True,
                quant_storage=torch.uint8,
                module=module,
            ).to("cuda")  # quantized here: only the NF4 copy stays
            del w
            continue
        for name, param in list(module.named_parameters(recurse=False)):
            if "norm" in type(module).__name__.lower():
                data = torch.ones(param.shape, dtype=torch.bfloat16, device="cuda")
            else:
                data = torch.empty(param.shape, dtype=torch.bfloat16, device="cuda").normal_(
                    0, 0.02, generator=gen
                )
            setattr(module, name, torch.nn.Parameter(data, requires_grad=False))
        for name, buf in list(module.named_buffers(recurse=False)):
            module.register_buffer(name, buf.to("cuda"), persistent=False)
    model.config.quantization_config = quant
    model.hf_quantizer = AutoHfQuantizer.from_config(quant, pre_quantized=False)
    model.is_quantized = True
    model.is_loaded_in_4bit = True
    model.quantization_method = "bitsandbytes"
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


def bench_mixtral(args: argparse.Namespace) -> dict[str, Any]:
    import gc

    import torch
    from transformers import AutoTokenizer

    import engine.llm as llm
    from engine.settings import load_settings
    from engine.training.config import recipe_for
    from engine.training.worker import train_adapter

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    four_bit = device == "cuda" and not args.no_4bit
    settings = load_settings()
    loaded = llm.load_model(settings)  # only for its tokenizer and chat template
    tokenizer = AutoTokenizer.from_pretrained(
        llm.gguf_cache_dir(settings, llm.resolve_spec(settings))
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    del loaded
    llm.forget_loaded_models()
    gc.collect()

    sft, n_tokens = _examples_for_tokens(tokenizer, args.tokens)
    t = time.perf_counter()
    model = random_mixtral(args.tiny, device, len(tokenizer), four_bit)
    build_s = time.perf_counter() - t
    on_gpu = device == "cuda"
    hp = recipe_for(
        n_examples=len(sft),
        n_tokens=n_tokens,
        device=device,
        model_type="mixtral",
        overrides={"num_train_epochs": args.epochs, "load_in_4bit": four_bit, "bf16": on_gpu},
    )
    mem_after_load = torch.cuda.memory_allocated() / 2**30 if on_gpu else None
    results: dict[str, Any] = {}
    events: list[dict] = []

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
            "peak_gpu_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2)
            if on_gpu
            else None,
        }
        return value

    with tempfile.TemporaryDirectory() as out:
        ours = measure(
            "ours",
            lambda: train_adapter(model, tokenizer, sft, [], hp, events.append, Path(out)),
        )
        results["ours"].update(
            steps=ours.steps,
            tokens_seen=ours.tokens_seen,
            tokens_per_s=round(ours.tokens_seen / ours.train_s, 1),
            final_loss=ours.final_loss,
            adapter_tensors=len(ours.state_dict),
            router_lora=any("block_sparse_moe.gate" in k for k in ours.state_dict),
        )
        # Remove our LoRA layers so the plain run starts from the same bare base.
        base = ours.peft_model.unload()
        del ours
        gc.collect()
        if on_gpu:
            torch.cuda.empty_cache()
        plain = measure("plain_trl", lambda: _plain_sft(base, tokenizer, sft, hp, Path(out)))
        results["plain_trl"].update(plain)

    ratio = results["ours"]["wall_s"] / results["plain_trl"]["wall_s"]
    return {
        "bench": "train-mixtral-random",
        "device": torch.cuda.get_device_name() if on_gpu else "cpu",
        "tiny": args.tiny,
        "four_bit": four_bit,
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
    }


def _plain_sft(model: Any, tokenizer: Any, sft: list, hp: Any, out: Path) -> dict[str, Any]:
    """The brief's recipe with stock TRL/PEFT calls only."""
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
            logging_steps=10,
            disable_tqdm=True,
            use_cpu=not on_gpu,
            bf16=on_gpu,
            learning_rate=2e-4,
            num_train_epochs=hp.num_train_epochs,
            per_device_train_batch_size=hp.per_device_train_batch_size,
            gradient_accumulation_steps=hp.gradient_accumulation_steps,
            max_grad_norm=0.3,
            warmup_ratio=0.03,
            optim="paged_adamw_32bit" if on_gpu else "adamw_torch",
            gradient_checkpointing=on_gpu,
            max_length=hp.max_length,
            include_num_input_tokens_seen="non_padding",
        ),
        train_dataset=datasets.Dataset.from_list(sft),
        processing_class=tokenizer,
        peft_config=LoraConfig(
            r=32,
            lora_alpha=32,
            lora_dropout=0.05,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "block_sparse_moe.gate"],
            task_type="CAUSAL_LM",
        ),
    )
    start = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - start
    tokens = int(trainer.state.num_input_tokens_seen)
    return {
        "steps": trainer.state.global_step,
        "tokens_seen": tokens,
        "tokens_per_s": round(tokens / train_s, 1),
        "final_loss": next(
            (h["loss"] for h in reversed(trainer.state.log_history) if "loss" in h), None
        ),
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
    parser.add_argument("--mixtral-random", action="store_true")
    parser.add_argument("--tokens", type=int, default=20_000)
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
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
