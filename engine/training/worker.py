"""The training subprocess: ``python -m engine.training.worker``.

Reads ONE JSON job on stdin (examples, preference pairs, model settings, a one-time transfer
key), trains a LoRA adapter with TRL (SFT, then DPO/ORPO when there are enough preference
pairs), prints progress as JSON lines on stdout and writes the adapter *sealed* with the
transfer key to the staging path the parent chose. Training data lives in an in-memory
``datasets.Dataset``; TRL saves nothing (``save_strategy="no"``); nothing in plaintext touches
the disk. Anything else a library prints goes to stderr, so stdout carries only events.

Events: ``{"phase", "step", "total_steps", "loss", "tokens_per_s", "eta_s", "epoch"}`` while
training, then ``{"phase": "done", ...summary}`` or ``{"phase": "error", "message", "kind"}``.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from engine.errors import PhyAssistError, TrainingError, TrainingLimitExceeded
from engine.training.config import (
    Hyperparameters,
    check_token_limit,
    quantized_training,
    recipe_for,
)
from engine.training.edit_weights import add_token_weights, edit_weighted_trainer
from engine.training.rehearsal import rows_for_passes

Emit = Callable[[dict[str, Any]], None]
JOB_VERSION = 1


@dataclass
class TrainResult:
    """A trained adapter in memory, plus what the card records."""

    config: dict[str, Any]
    state_dict: dict[str, Any]
    steps: int = 0
    final_loss: float | None = None
    setup_s: float = 0.0  # building the trainers (tokenizing the examples, wrapping in LoRA)
    fit_s: float = 0.0  # inside ``trainer.train()``: the optimizer steps themselves
    preference_steps: int = 0
    preference_loss: float | None = None
    preference_pairs_used: int = 0
    tokens_seen: int = 0
    edit_weighted_examples: int = 0  # examples whose edited lines weighed more in the loss
    rehearsal_rows: int = 0  # domain rows replayed among the notes (engine.training.rehearsal)
    train_s: float = 0.0
    losses: list[float] = field(default_factory=list)
    peft_model: Any = None  # the trained PeftModel, for in-process callers (bench, tests)


def transfer_aad(run_id: str, patient_id: str) -> bytes:
    """What the sealed adapter is bound to: this run, this patient."""
    return f"phyassist-adapter-transfer|{run_id}|{patient_id}".encode()


def _make_callback(phase: str, emit: Emit, sink: list[float]):
    from transformers import TrainerCallback

    class EventCallback(TrainerCallback):
        """Turns Trainer logs into the JSON events the parent shows as progress."""

        def __init__(self) -> None:
            self.started = time.perf_counter()

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()
            emit(_event(phase, 0, state.max_steps, None, None, None, 0.0))

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs:
                return
            elapsed = time.perf_counter() - self.started
            step = state.global_step
            tokens = getattr(state, "num_input_tokens_seen", 0) or 0
            tps = tokens / elapsed if tokens and elapsed > 0 else None
            eta = elapsed / step * (state.max_steps - step) if step else None
            loss = float(logs["loss"])
            sink.append(loss)
            emit(_event(phase, step, state.max_steps, loss, tps, eta, state.epoch))

    return EventCallback()


def _event(
    phase: str,
    step: int,
    total: int,
    loss: float | None,
    tps: float | None,
    eta: float | None,
    epoch: float | None,
) -> dict[str, Any]:
    return {
        "phase": phase,
        "step": int(step),
        "total_steps": int(total),
        "loss": None if loss is None else round(loss, 6),
        "tokens_per_s": None if tps is None else round(tps, 2),
        "eta_s": None if eta is None else round(eta, 2),
        "epoch": None if epoch is None else round(float(epoch), 4),
    }


def _quiet_trainer(trainer: Any) -> None:
    """Drop the console printers: stdout is reserved for events (stderr would do, but why)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def _common_args(hp: Hyperparameters, output_dir: Path, use_cpu: bool) -> dict[str, Any]:
    return {
        "output_dir": str(output_dir),
        "save_strategy": "no",
        "report_to": [],
        "logging_steps": 1,
        "logging_dir": None,
        "disable_tqdm": True,
        "max_grad_norm": hp.max_grad_norm,
        "warmup_ratio": hp.warmup_ratio,
        "lr_scheduler_type": hp.lr_scheduler_type,
        "optim": hp.optim,
        "per_device_train_batch_size": hp.per_device_train_batch_size,
        "gradient_accumulation_steps": hp.gradient_accumulation_steps,
        "gradient_checkpointing": hp.gradient_checkpointing,
        "bf16": hp.bf16,
        "fp16": False,
        "use_cpu": use_cpu,
        "seed": hp.seed,
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": not use_cpu,
        "include_num_input_tokens_seen": "non_padding",
        "max_length": hp.max_length,
        "push_to_hub": False,
        "save_only_model": True,
    }


def score_answer_tokens_only() -> bool:
    """Make TRL's fused LM head project only the labelled (answer) positions on the CPU too.

    TRL computes the loss through a chunked LM head. On Triton devices it projects only the
    positions that carry a label; elsewhere it projects every position so that tile shapes stay
    fixed for graph compilers (Neuron). Eager CPU code has no such concern, and with answer-only
    loss about 70 % of a note's tokens are prompt: projecting them onto the 49k-word vocabulary
    cost ~20 % of each CPU step for nothing. The loss and gradients are the same either way
    (``tests/engine/training/test_speed.py``). Returns whether TRL's switch was found.
    """
    try:
        import trl.trainer.utils as trl_utils
    except ImportError:  # pragma: no cover - TRL is a dependency
        return False
    original = getattr(trl_utils, "_use_triton", None)
    if original is None:
        return False
    if getattr(original, "phyassist_compact", False):
        return True

    def compact_on_cpu_too(device: Any) -> bool:
        return device.type == "cpu" or original(device)

    compact_on_cpu_too.phyassist_compact = True  # type: ignore[attr-defined]
    compact_on_cpu_too.original = original  # type: ignore[attr-defined]
    trl_utils._use_triton = compact_on_cpu_too
    return True


def lora_config_for(hp: Hyperparameters):
    from peft import LoraConfig

    return LoraConfig(
        r=hp.lora_r,
        lora_alpha=hp.lora_alpha,
        lora_dropout=hp.lora_dropout,
        target_modules=list(hp.target_modules),
        layers_to_transform=list(hp.lora_layers) if hp.lora_layers else None,
        bias="none",
        task_type="CAUSAL_LM",
    )


def adapter_config_dict(peft_model: Any, base_name: str, adapter: str = "default") -> dict:
    """The adapter_config.json content PEFT would write, JSON-safe."""
    config = peft_model.peft_config[adapter]
    data = config.to_dict()
    data["base_model_name_or_path"] = base_name
    return json.loads(json.dumps(data, default=_json_default))


def _json_default(value: Any) -> Any:
    return sorted(value) if isinstance(value, set) else str(value)


def train_adapter(
    model: Any,
    tokenizer: Any,
    sft: list[dict[str, Any]],
    pairs: list[dict[str, Any]],
    hp: Hyperparameters,
    emit: Emit,
    output_dir: Path,
    *,
    base_name: str = "",
    rehearsal: list[dict[str, Any]] | None = None,
) -> TrainResult:
    """SFT (answer-only loss) and, with enough pairs, DPO/ORPO on the same LoRA adapter.

    With ``rehearsal`` rows and ``hp.rehearsal_per_pass``, each pass over the notes also sees
    the next few of them (the passes are laid out in one dataset, trained as one epoch)."""
    import datasets
    import torch
    from peft import get_peft_model_state_dict, prepare_model_for_kbit_training
    from trl import SFTConfig, SFTTrainer

    datasets.disable_caching()
    if not sft:
        raise TrainingError("There are no saved notes with an Analysis to train on.")
    score_answer_tokens_only()
    use_cpu = next(model.parameters()).device.type == "cpu"
    if getattr(model, "is_loaded_in_4bit", False):
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=hp.gradient_checkpointing
        )
    started = time.perf_counter()
    sft_losses: list[float] = []
    weigh = hp.edited_line_weight != 1.0 and any(any(ex.get("edited_lines") or []) for ex in sft)
    rows = [{k: v for k, v in ex.items() if weigh or k != "edited_lines"} for ex in sft]
    rows, epochs, replayed = _with_rehearsal(rows, rehearsal or [], hp, weigh)
    args = SFTConfig(
        **_common_args(hp, output_dir / "sft", use_cpu),
        learning_rate=hp.learning_rate,
        num_train_epochs=epochs,
        max_steps=hp.max_steps,
        completion_only_loss=True,
        # A note longer than max_length keeps its end (the question and the answer) rather
        # than its start: with keep_start a long record filled the window with prompt, TRL
        # dropped the example as fully masked, and one long note failed with num_samples=0.
        truncation_mode="keep_end",
        packing=False,
    )
    # The counselor's edits are the signal: their lines weigh more in the loss than the model
    # text they left as it was (hp.edited_line_weight; 1 = every answer token alike).
    trainer_class = edit_weighted_trainer(SFTTrainer) if weigh else SFTTrainer
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora_config_for(hp),
        callbacks=[_make_callback("sft", emit, sft_losses)],
    )
    _quiet_trainer(trainer)
    if len(trainer.train_dataset) == 0:
        raise TrainingError(
            "No note has any answer text left to learn from after tokenization "
            f"(max_length {hp.max_length} tokens)."
        )
    edit_weighted = add_token_weights(trainer, tokenizer, hp.edited_line_weight) if weigh else 0
    setup_s = time.perf_counter() - started
    fit_started = time.perf_counter()
    trainer.train()
    fit_s = time.perf_counter() - fit_started
    peft_model = trainer.model
    result = TrainResult(
        config={},
        state_dict={},
        steps=trainer.state.global_step,
        final_loss=sft_losses[-1] if sft_losses else None,
        tokens_seen=int(getattr(trainer.state, "num_input_tokens_seen", 0) or 0),
        losses=list(sft_losses),
        edit_weighted_examples=edit_weighted,
        rehearsal_rows=replayed,
    )
    del trainer

    pairs = hp.preference_pairs(pairs)
    result.preference_pairs_used = len(pairs) if hp.use_preference_step(len(pairs)) else 0
    if hp.use_preference_step(len(pairs)):
        pref_losses: list[float] = []
        t = time.perf_counter()
        pref_trainer = _preference_trainer(peft_model, tokenizer, pairs, hp, emit, output_dir)
        pref_trainer.add_callback(_make_callback(hp.preference_method, emit, pref_losses))
        _quiet_trainer(pref_trainer)
        setup_s += time.perf_counter() - t
        t = time.perf_counter()
        pref_trainer.train()
        fit_s += time.perf_counter() - t
        result.preference_steps = pref_trainer.state.global_step
        result.preference_loss = pref_losses[-1] if pref_losses else None
        del pref_trainer
        if "ref" in getattr(peft_model, "peft_config", {}):
            peft_model.delete_adapter("ref")  # DPO's frozen copy; only "default" is the result
            peft_model.set_adapter("default")

    state = get_peft_model_state_dict(peft_model, adapter_name="default")
    result.state_dict = {
        k: v.detach().to("cpu", dtype=torch.float32).contiguous() for k, v in state.items()
    }
    result.config = adapter_config_dict(peft_model, base_name or _model_name(model))
    result.train_s = time.perf_counter() - started
    result.setup_s, result.fit_s = setup_s, fit_s
    result.peft_model = peft_model
    return result


def _with_rehearsal(
    rows: list[dict[str, Any]], pool: list[dict[str, Any]], hp: Hyperparameters, weigh: bool
) -> tuple[list[dict[str, Any]], float, int]:
    """The SFT rows with each pass's rehearsal rows, the epochs to train them for, and how
    many distinct rehearsal rows went in. Whole passes are laid out in one dataset so every
    pass sees different rows; without rehearsal the rows train for ``hp.num_train_epochs``."""
    passes = hp.num_train_epochs
    if not (pool and hp.rehearsal_per_pass) or hp.max_steps > 0 or passes != int(passes):
        return rows, passes, 0
    laid_out: list[dict[str, Any]] = []
    seen: set[int] = set()
    for extra in rows_for_passes(pool, int(passes), hp.rehearsal_per_pass):
        laid_out.extend(rows)
        for row in extra:
            seen.add(id(row))
            replay = {"prompt": row["prompt"], "completion": row["completion"]}
            laid_out.append({**replay, "edited_lines": []} if weigh else replay)
    return laid_out, 1.0, len(seen)


def _model_name(model: Any) -> str:
    return str(getattr(model.config, "_name_or_path", "") or model.config.model_type)


def _preference_trainer(peft_model, tokenizer, pairs, hp: Hyperparameters, emit, output_dir):
    import datasets

    use_cpu = next(peft_model.parameters()).device.type == "cpu"
    common = _common_args(hp, output_dir / hp.preference_method, use_cpu)
    common.update(
        learning_rate=hp.preference_learning_rate,
        num_train_epochs=hp.preference_epochs,
        beta=hp.preference_beta,
    )
    dataset = datasets.Dataset.from_list(pairs)
    if hp.preference_method == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        return ORPOTrainer(
            model=peft_model,
            args=ORPOConfig(**common),
            train_dataset=dataset,
            processing_class=tokenizer,
        )
    from trl import DPOConfig, DPOTrainer

    return DPOTrainer(
        model=peft_model,
        ref_model=None,
        args=DPOConfig(**common),
        train_dataset=dataset,
        processing_class=tokenizer,
    )


# -- the subprocess -------------------------------------------------------------------------


def _claim_stdout() -> TextIO:
    """Keep the real stdout for events; everything else printed goes to stderr."""
    fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(fd, "w", buffering=1, encoding="utf-8")


def _write_staging(path: Path, data: bytes) -> None:
    """Atomically: a killed worker leaves at most a ``.part`` file (sealed, and removed)."""
    part = path.with_name(path.name + ".part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def _import_training_libraries() -> None:
    """The heavy imports, up front, so the startup cost is measured as one phase."""
    import datasets  # noqa: F401
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from trl import SFTConfig, SFTTrainer  # noqa: F401


def run_job(job: dict[str, Any], emit: Emit) -> dict[str, Any]:
    """Load the base, train, seal the adapter to the staging path; returns the summary.

    The summary's ``timings`` split the worker's life into phases (seconds): ``startup``
    (interpreter, this module, reading the job: from the parent's ``started_at``), ``imports``
    (torch, transformers, PEFT, TRL, datasets), ``load`` (the base model), ``prepare`` (tokens,
    recipe), ``setup`` (trainers, tokenized datasets), ``fit`` (the optimizer steps) and
    ``save`` (adapter state, packing, sealing, the staging file).
    """
    if job.get("version") != JOB_VERSION:
        raise TrainingError(f"Unknown training job version {job.get('version')!r}.")
    timings: dict[str, float] = {}
    if isinstance(job.get("started_at"), int | float):
        timings["startup_s"] = max(0.0, time.time() - float(job["started_at"]))
    key = base64.b64decode(job["transfer_key"])
    work_dir = Path(job["work_dir"])
    staging = Path(job["staging_path"])
    overrides = dict(job.get("overrides") or {})
    overrides.pop("domain_adapter", None)  # the parent's switches, resolved into the job
    overrides.pop("record_notes", None)
    settings_data = job["settings"]

    t = time.perf_counter()
    _import_training_libraries()
    import torch

    from engine.model.adapters import pack_adapter
    from engine.model.llm import load_model
    from engine.settings import Settings
    from engine.training.metrics import count_tokens
    from engine.training.rehearsal import REHEARSAL_PER_PASS, read_pool
    from engine.vault.crypto import seal

    timings["imports_s"] = time.perf_counter() - t

    t = time.perf_counter()
    torch.manual_seed(int(overrides.get("seed", 42)))
    settings = Settings(**settings_data)
    device = settings.model.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    want_4bit = quantized_training(device, settings.model.load_in_4bit, overrides)
    settings.model.load_in_4bit = want_4bit
    emit({"phase": "loading", "step": 0, "total_steps": 0, "device": device})
    loaded = load_model(settings)
    model, tokenizer = loaded.model, loaded.tokenizer
    domain = job.get("domain_adapter")
    if domain:
        model = merge_domain_adapter(model, Path(domain["path"]))
    timings["load_s"] = time.perf_counter() - t

    t = time.perf_counter()
    sft, pairs = job["sft"], job.get("pairs") or []
    n_tokens = count_tokens(tokenizer, sft)
    check_token_limit(n_tokens, int(job["max_training_tokens"]))
    # Replay of the domain adapter's own rows keeps its answers on other posts (rehearsal).
    # The notes alone decide the passes: rows replayed on top of them cost at most
    # per_pass x MAX_ROW_TOKENS a pass (2 x 200: about 10 % of a ten-note pass).
    pool = read_pool(domain["path"]) if domain else []
    per_pass = int(overrides.pop("rehearsal_per_pass", REHEARSAL_PER_PASS)) if pool else 0
    hp = recipe_for(
        n_examples=len(sft),
        n_tokens=n_tokens,
        device=device,
        model_type=model.config.model_type,
        overrides=overrides,
        n_layers=getattr(model.config, "num_hidden_layers", None),
        quantized=want_4bit,
    )
    hp.rehearsal_per_pass = per_pass
    timings["prepare_s"] = time.perf_counter() - t
    emit(
        {
            "phase": "prepared",
            "examples": len(sft),
            "preference_pairs": len(pairs),
            "tokens": n_tokens,
            "preference_step": hp.use_preference_step(len(pairs)),
        }
    )
    result = train_adapter(
        model,
        tokenizer,
        sft,
        pairs,
        hp,
        emit,
        work_dir / "trainer",
        base_name=loaded.name,
        rehearsal=pool,
    )
    timings["setup_s"] = result.setup_s
    timings["fit_s"] = result.fit_s
    emit({"phase": "saving", "step": result.steps, "total_steps": result.steps})
    t = time.perf_counter()
    packed = pack_adapter(result.config, result.state_dict)
    _write_staging(staging, seal(key, packed, transfer_aad(job["run_id"], job["patient_id"])))
    timings["save_s"] = time.perf_counter() - t
    return {
        "phase": "done",
        "base_model": loaded.name,
        "device": device,
        "examples": len(sft),
        "preference_pairs": len(pairs),
        "tokens": n_tokens,
        "tokens_seen": result.tokens_seen,
        "edit_weighted_examples": result.edit_weighted_examples,
        "rehearsal_rows": result.rehearsal_rows,
        "steps": result.steps,
        "final_loss": result.final_loss,
        "preference_steps": result.preference_steps,
        "preference_pairs_used": result.preference_pairs_used,
        "preference_loss": result.preference_loss,
        "train_s": round(result.train_s, 3),
        "timings": {k: round(v, 3) for k, v in timings.items()},
        # CPU seconds of this process, all threads: on a shared box the load-independent cost
        "cpu_s": round(time.process_time(), 3),
        "cpu_threads": torch.get_num_threads(),
        "hyperparameters": hp.model_dump(),
        "domain_adapter": (
            {k: domain[k] for k in ("name", "sha256") if k in domain} if domain else None
        ),
    }


def merge_domain_adapter(model: Any, path: Path) -> Any:
    """The base with the domain LoRA merged into its weights: the patient LoRA is trained over
    the domain-adapted model. At inference the two adapters are stacked (LoRA deltas add), which
    reproduces this model plus the patient delta (``tests/engine/model/test_stack.py``). A
    4-bit base merges with rounding (PEFT dequantizes, adds, requantizes)."""
    from peft import get_peft_model, set_peft_model_state_dict

    from engine.model.adapters import _peft_config, read_adapter_dir

    config, state = read_adapter_dir(path)
    peft_model = get_peft_model(model, _peft_config(config), adapter_name="domain")
    result = set_peft_model_state_dict(peft_model, state, adapter_name="domain")
    if list(getattr(result, "unexpected_keys", []) or []):
        raise TrainingError(f"The domain adapter in {path} does not fit this model.")
    return peft_model.merge_and_unload()


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    events = _claim_stdout()

    def emit(event: dict[str, Any]) -> None:
        events.write(json.dumps(event, ensure_ascii=False) + "\n")
        events.flush()

    try:
        job = json.loads(sys.stdin.read())
        emit(run_job(job, emit))
        return 0
    except TrainingLimitExceeded as exc:
        emit({"phase": "error", "kind": "limit", "message": str(exc)})
        return 3
    except PhyAssistError as exc:
        emit({"phase": "error", "kind": type(exc).__name__, "message": str(exc)})
        return 2
    except Exception as exc:  # reported to the parent, which keeps the old adapter
        emit({"phase": "error", "kind": type(exc).__name__, "message": f"Training failed: {exc}"})
        import traceback

        traceback.print_exc()
        return 1


if __name__ == "__main__":
    from engine.trust.hardening import harden_process

    harden_process()  # trust: no core dumps, umask 077, before anything is read
    raise SystemExit(main())
