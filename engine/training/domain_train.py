"""Domain fine-tuning: (Q)LoRA SFT with TRL on the dataset written by ``phyassist data prepare``.

The brief's recipe is the default: LoRA r=32, alpha=32, dropout 0.05 on every linear layer
(QLoRA's choice), lr 2e-4 with 3 % warm-up then constant, gradient clipping 0.3, paged AdamW
and a 4-bit base on a GPU (plain AdamW, full precision on the CPU). The loss falls on the answer
only (prompt/completion data). Domain data is public, so checkpoints are plain files under
``OUT/checkpoints`` and a rerun resumes from the newest one. With several GPUs and no
launcher yet, ``phyassist domain train`` re-executes itself under ``accelerate launch`` (one
process per GPU, see ``accelerate_command``).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import InputRejected, TrainingError

if TYPE_CHECKING:
    from engine.settings import Settings

ADAPTER_DIR = "adapter"
CHECKPOINT_DIR = "checkpoints"
SUMMARY_FILE = "training_summary.json"

Printer = Callable[[str], None]


@dataclass
class DomainRecipe:
    """Hyperparameters of a domain run; the defaults are the brief's recipe."""

    lora_r: int = 32
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"
    learning_rate: float = 2e-4
    max_grad_norm: float = 0.3
    warmup_ratio: float = 0.03
    lr_scheduler_type: str = "constant_with_warmup"
    num_train_epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 2
    max_length: int = 1024
    optim: str | None = None  # None: paged_adamw_32bit on CUDA, adamw_torch on CPU
    load_in_4bit: bool | None = None  # None: on CUDA when bitsandbytes is installed
    gradient_checkpointing: bool | None = None  # None: on CUDA
    save_steps: int = 100
    save_total_limit: int = 2
    logging_steps: int = 10
    eval_steps: int = 0  # 0: evaluate the validation split only at the end
    time_budget_s: float | None = None  # stop cleanly (and save) once training took this long
    seed: int = 42

    def resolved(self, on_cuda: bool) -> DomainRecipe:
        """Fill the device-dependent choices left as None."""
        import importlib.util

        has_bnb = importlib.util.find_spec("bitsandbytes") is not None
        r = DomainRecipe(**asdict(self))
        if r.optim is None:
            r.optim = "paged_adamw_32bit" if on_cuda and has_bnb else "adamw_torch"
        if r.load_in_4bit is None:
            r.load_in_4bit = on_cuda and has_bnb
        if r.gradient_checkpointing is None:
            r.gradient_checkpointing = on_cuda
        return r


@dataclass
class DomainResult:
    adapter_dir: Path
    steps: int
    train_loss: float | None
    eval_loss: float | None
    train_rows: int
    tokens: int
    seconds: float
    resumed_from: str | None
    recipe: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["adapter_dir"] = str(self.adapter_dir)
        return d


def _fmt_eta(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _progress_callback(printer: Printer) -> Any:
    from transformers import TrainerCallback

    class ProgressLines(TrainerCallback):
        """One line per log step: step, loss, tokens/s since the last line, ETA."""

        def __init__(self) -> None:
            self.start = time.perf_counter()
            self.last_t = self.start
            self.last_tokens = 0.0
            self.first_step: int | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = self.last_t = time.perf_counter()
            self.first_step = state.global_step
            printer(f"training: step {state.global_step}/{state.max_steps}")

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            if "loss" not in logs and "eval_loss" not in logs:
                return  # the end-of-run summary; train_domain reports that itself
            now = time.perf_counter()
            tokens = float(logs.get("num_tokens", self.last_tokens))
            dt = max(now - self.last_t, 1e-9)
            tok_s = (tokens - self.last_tokens) / dt if tokens > self.last_tokens else 0.0
            done = state.global_step - (self.first_step or 0)
            per_step = (now - self.start) / done if done > 0 else float("nan")
            eta = per_step * (state.max_steps - state.global_step)
            parts = [f"step {state.global_step}/{state.max_steps}"]
            for key in ("loss", "eval_loss", "learning_rate", "mean_token_accuracy"):
                if key in logs:
                    parts.append(f"{key} {logs[key]:.4g}")
            parts += [f"tokens/s {tok_s:,.0f}", f"ETA {_fmt_eta(eta)}"]
            printer("  ".join(parts))
            self.last_t, self.last_tokens = now, tokens

    return ProgressLines()


def _time_budget_callback(seconds: float, printer: Printer) -> Any:
    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        """Ends training after ``seconds`` of wall time; the adapter is still saved.

        For runs on a rented GPU with a hard time limit: a killed run saves nothing.
        """

        def __init__(self) -> None:
            self.start = time.perf_counter()

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if time.perf_counter() - self.start >= seconds and not control.should_training_stop:
                printer(f"time budget of {seconds:.0f} s reached at step {state.global_step}")
                control.should_training_stop = True
                control.should_save = True
            return control

    return TimeBudget()


def latest_checkpoint(out_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    ckpt = Path(out_dir) / CHECKPOINT_DIR
    return get_last_checkpoint(str(ckpt)) if ckpt.is_dir() else None


def _load_base(settings: Settings, recipe: DomainRecipe, on_cuda: bool) -> tuple[Any, Any]:
    """The base model through the engine's loader; under DDP each rank gets its own GPU."""
    from engine.model.llm import load_model

    overrides = {"load_in_4bit": bool(recipe.load_in_4bit)}
    if on_cuda:
        overrides["device"] = "cuda"
    settings = settings.model_copy(
        update={"model": settings.model.model_copy(update=overrides)}, deep=True
    )
    local_rank = int(os.environ.get("LOCAL_RANK", "-1"))
    if local_rank >= 0 and on_cuda:
        import torch

        torch.cuda.set_device(local_rank)
    loaded = load_model(settings)
    return loaded.model, loaded.tokenizer


def _turn_end_token(tokenizer: Any) -> str | None:
    """The chat template's end-of-turn token, when the tokenizer's EOS is something else.

    The embedded GGUF's tokenizer reports ``<|im_start|>`` as EOS; TRL must not use it.
    """
    template = getattr(tokenizer, "chat_template", None) or ""
    for token in ("<|im_end|>", "<|eot_id|>"):
        if token in template and tokenizer.eos_token != token:
            return token
    return None


def train_domain(
    data_dir: Path,
    out_dir: Path,
    *,
    settings: Settings | None = None,
    recipe: DomainRecipe | None = None,
    resume: bool = True,
    max_train_rows: int | None = None,
    max_eval_rows: int | None = None,
    printer: Printer = print,
) -> DomainResult:
    """Fine-tune the configured model on a prepared dataset; saves ``OUT/adapter``."""
    import torch
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from engine.dataprep.format import require_chat_template
    from engine.dataprep.pipeline import load_prepared
    from engine.settings import load_settings
    from engine.training.rehearsal import select_rows, write_pool

    settings = settings or load_settings()
    recipe = recipe or DomainRecipe()
    on_cuda = torch.cuda.is_available() and settings.model.device != "cpu"
    recipe = recipe.resolved(on_cuda)
    out_dir = Path(out_dir)
    dataset = load_prepared(Path(data_dir))
    train = dataset["train"]
    if max_train_rows is not None and max_train_rows < len(train):
        train = train.shuffle(seed=recipe.seed).select(range(max_train_rows))
    evaluation = dataset.get("validation")
    if evaluation is not None and max_eval_rows is not None and max_eval_rows < len(evaluation):
        evaluation = evaluation.shuffle(seed=recipe.seed).select(range(max_eval_rows))
    if len(train) == 0:
        raise InputRejected(f"{data_dir}: the training split is empty")

    model, tokenizer = _load_base(settings, recipe, on_cuda)
    require_chat_template(tokenizer)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    bf16 = on_cuda and torch.cuda.is_bf16_supported()
    config = SFTConfig(
        output_dir=str(out_dir / CHECKPOINT_DIR),
        learning_rate=recipe.learning_rate,
        max_grad_norm=recipe.max_grad_norm,
        warmup_ratio=recipe.warmup_ratio,
        lr_scheduler_type=recipe.lr_scheduler_type,
        num_train_epochs=recipe.num_train_epochs,
        max_steps=recipe.max_steps,
        per_device_train_batch_size=recipe.per_device_train_batch_size,
        per_device_eval_batch_size=recipe.per_device_train_batch_size,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps,
        optim=recipe.optim,
        gradient_checkpointing=bool(recipe.gradient_checkpointing),
        bf16=bf16,
        max_length=recipe.max_length,
        completion_only_loss=True,
        eos_token=_turn_end_token(tokenizer),
        save_strategy="steps",
        save_steps=recipe.save_steps,
        save_total_limit=recipe.save_total_limit,
        logging_steps=recipe.logging_steps,
        eval_strategy="steps" if evaluation is not None and recipe.eval_steps > 0 else "no",
        eval_steps=recipe.eval_steps or None,
        report_to=[],
        disable_tqdm=True,
        seed=recipe.seed,
        use_cpu=not on_cuda,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
    )
    peft_config = LoraConfig(
        r=recipe.lora_r,
        lora_alpha=recipe.lora_alpha,
        lora_dropout=recipe.lora_dropout,
        target_modules=recipe.target_modules,
        task_type="CAUSAL_LM",
    )
    columns = [c for c in train.column_names if c not in ("prompt", "completion")]
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=train.remove_columns(columns),
        eval_dataset=evaluation.remove_columns(columns) if evaluation is not None else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[_progress_callback(printer)]
        + ([_time_budget_callback(recipe.time_budget_s, printer)] if recipe.time_budget_s else []),
    )
    checkpoint = latest_checkpoint(out_dir) if resume else None
    if checkpoint:
        printer(f"resuming from {checkpoint}")
    start = time.perf_counter()
    try:
        output = trainer.train(resume_from_checkpoint=checkpoint)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        raise TrainingError(f"domain training failed: {exc}") from exc
    seconds = time.perf_counter() - start
    eval_loss = None
    if evaluation is not None:
        eval_loss = float(trainer.evaluate()["eval_loss"])
        printer(f"validation loss {eval_loss:.4f} on {len(evaluation)} rows")
    adapter_dir = out_dir / ADAPTER_DIR
    tokens = int(trainer.state.num_input_tokens_seen or 0)
    for entry in reversed(trainer.state.log_history):
        if "num_tokens" in entry:
            tokens = int(entry["num_tokens"])
            break
    result = DomainResult(
        adapter_dir=adapter_dir,
        steps=int(trainer.state.global_step),
        train_loss=float(output.training_loss) if output.training_loss is not None else None,
        eval_loss=eval_loss,
        train_rows=len(train),
        tokens=tokens,
        seconds=seconds,
        resumed_from=checkpoint,
        recipe=asdict(recipe),
    )
    if trainer.is_world_process_zero():
        trainer.model.save_pretrained(str(adapter_dir))
        # a few of its own training rows, replayed by patient runs over it (rehearsal)
        pool = select_rows(
            (train[i] for i in range(len(train))),
            lambda text: len(tokenizer(text)["input_ids"]),
        )
        if pool:
            write_pool(adapter_dir, pool)
        (out_dir / SUMMARY_FILE).write_text(
            json.dumps({**result.as_dict(), "data": str(data_dir)}, indent=2), encoding="utf-8"
        )
        printer(f"adapter saved to {adapter_dir}")
    # The engine caches loaded models in-process: take the LoRA layers out again.
    try:
        trainer.model.unload()
        model.eval()
    except Exception:
        pass
    return result


def accelerate_command(entry: list[str]) -> list[str] | None:
    """``entry`` (the arguments after ``python``) under ``accelerate launch``, one process per
    GPU, when several GPUs exist and no launcher is active yet; None to train in-process."""
    if os.environ.get("LOCAL_RANK") is not None or os.environ.get("PHYASSIST_NO_RELAUNCH"):
        return None
    try:
        import torch
    except ImportError:
        return None
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n < 2:
        return None
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(n)]
    return [*launch, "--multi_gpu", *entry]
