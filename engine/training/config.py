"""Training hyperparameters: the product brief's recipe, scaled down for a few notes.

The recipe is LoRA r=32, alpha=32, dropout 0.05 on the attention projections (plus the MoE
router on Mixtral), paged AdamW, grad-clip 0.3, 3 % warm-up; QLoRA (4-bit base) on a GPU when
the drafting model is 4-bit, a full-precision base otherwise. A patient has a handful of notes,
so it learns at 1e-3 rather than the brief's 2e-4 (measured: GPU_LEARNING_RATE), the number of
passes grows when there are few examples and, on the CPU, is capped by a token budget so a run
finishes within a minute. Every note is its own sequence and, below 16 notes, its own step
(batch 1: no padding), and the loss and the LM head cover the answer tokens only.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.errors import TrainingLimitExceeded

ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
MIXTRAL_ROUTER = "block_sparse_moe.gate"

# Every pair is one deliberate counselor act (an edit, a deletion, an added item, a comment that
# produced a regeneration, a Compare choice), not a sampled label, so even one is worth a step:
# at the preference learning rate (5e-5, beta 0.1, one epoch) a single pair moves the adapter
# a little toward that act and cannot undo the SFT. (It was 4: a patient with three edits got
# no preference step at all.) That is the GPU recipe; on the CPU see CPU_PREFERENCE_METHOD.
MIN_PREFERENCE_PAIRS = 1
# On the CPU a DPO step costs about 2.5 SFT steps (forward + backward over chosen and rejected,
# plus the reference forward over both). ``python -m bench.train_steps`` on the embedded model,
# one torch thread, CPU seconds: SFT 1.96 s, DPO 4.45 s per step with LoRA on every layer;
# 1.34 s and 3.46 s on the top half (CPU_LORA_TOP_SHARE). The newest are kept when a CPU run
# makes a preference step (an override): the counselor's latest preferences.
CPU_MAX_PREFERENCE_PAIRS = 6
# The CPU minute goes to SFT passes, not to a preference step (issue 17, bench/learning.py,
# 10 notes, depression topic, the tuning topic): 10 SFT + 6 DPO steps at 4e-4 changed no draft
# (16 -> 16 of the items the simulated counselor edits); SFT only at 1e-3: 3 passes 16 -> 12
# items changed (67 CPU-s under load), 4 passes 16 -> 11 (-31 %, 89 CPU-s under load; 10
# notes train in ~48 s on 2 idle cores). The SFT targets already hold every signal (the final
# text of edited, regenerated and added items; deleted items absent); the pairs stay stored,
# are counted on the card and are used by GPU runs.
CPU_PREFERENCE_METHOD = "none"
# Tokens (examples x epochs) a CPU run may process. The embedded 135M model trains at roughly
# 250-300 tokens/s on 2 idle cores with half its layers adapted, about 1.5x slower with every
# layer (CPU_LORA_TOP_SHARE), so ten notes of ~3.2-3.7k tokens get three passes and the whole
# run (startup, load, save included) stays under a minute: bench/learning_train.py, quiet box,
# 53.6 and 56.2 s wall (74-78 CPU-s, 30 steps). Longer notes get two passes, three notes eight.
# Domain rehearsal rows (engine.training.rehearsal, two a pass) come on top of the budget: the
# notes alone decide the passes.
CPU_TOKEN_BUDGET = 11_200
# Passes over a CPU run's notes before the budget caps them (a GPU makes three too).
CPU_MIN_PASSES = 3
# The share of decoder layers (the top ones) the CPU patient LoRA adapts. Backpropagation stops
# at the lowest adapted layer, so the top half costs a third less per step; it was 0.5. Every
# layer learns the counselor's quotes and wording far better (bench/learning.py, 10 notes,
# items the simulated counselor changes; candidate B, registered in 5a440cb before its runs):
# dev domestic-violence 13 -> 7 (top half) vs 13 -> 6 (every layer; two passes each, by the
# budget); held-out trauma, marriage, relationship-dissolution 45 -> 25 (-44 %) vs 45 -> 11
# (-76 %). 1.0 = every layer (lora_layers None).
CPU_LORA_TOP_SHARE = 1.0
# Few steps need a high rate: at 4e-4 ten notes moved the "end Reasons after two" margin by
# 1-3 nats where ~15 were needed; at 1e-3 the label and the section length follow the
# counselor (bench/learning.py; figures above).
CPU_LEARNING_RATE = 1e-3
CPU_PREFERENCE_LEARNING_RATE = 2e-4
# The counselor's edits are the signal: on the CPU (SFT only, no preference step to carry the
# edits) the answer lines they edited, added or left in place of a deleted model line weigh
# this many times the model lines they kept (engine.training.data.edited_lines; the answer
# tokens still average 1). With every token alike, ten policy-edited notes taught the label
# but the counselor's two-reason, homework-last layout leaked (homework lines written as
# reasons). bench/learning.py, depression (a dev topic), 10 notes, items the policy changes,
# domain alone 16/21: weight 1 -> 12/23, 3 -> 10/20, 6 -> 9/19; with quoted reasons allowed
# 8/20. On three fresh held-out topics 38 -> 30 items (-21 %, old recipe -16 %): bench/RESULTS.md.
# Third pass (drafting rules only, this recipe unchanged: a quote of the statement is exempt
# from the anti-loop rules, a section may end after one item): on three more held-out topics
# 45 -> 25 items (-44 %) against 45 -> 30 with the old rules, same adapters; with every layer
# adapted (CPU_LORA_TOP_SHARE) 45 -> 11.
CPU_EDITED_LINE_WEIGHT = 6.0


# The GPU recipe for a patient's notes. The brief's recipe (batch 4, 2e-4, three passes, then
# DPO over every pair) made drafts worse on one H100 (bench/learning.py --device cuda, ten
# depression notes, items the simulated counselor changes 16 -> 18; the label learned 0/3), and
# the CPU runs below, with the GPU's settings one at a time (all layers, fp32, SFT at 1e-3),
# found the step count and rate to blame, not the batching or the GPU: batch 4 x 8 passes (24
# steps) 16 -> 4, batch 1 x 3 passes (30 steps) 16 -> 4, label 3/3 in both; the same plus
# DPO over all 49 pairs at 5e-5 16 -> 7 (bench/RESULTS.md, "GPU recipe on the CPU"). So a GPU
# run takes a step per note (batch 1 below 16 notes), learns at 1e-3 and, like the CPU, makes
# no preference step unless asked (the pairs stay stored and counted; --preference dpo).
# Measured on one H100 (bench/learning.py --device cuda, depression, bf16): 17 -> 2 changed items
# with domain rehearsal, 17 -> 5 without (bench/RESULTS.md); bf16 against fp32 not yet run.
GPU_LEARNING_RATE = 1e-3
GPU_PREFERENCE_METHOD = "none"
# With no preference step the counselor's lines carry the edits, as on the CPU: every layer
# adapted (as on a GPU), 3 passes, domestic-violence (a dev topic): weight 1 14 -> 4 changed
# items, weight 6 14 -> 2.
GPU_EDITED_LINE_WEIGHT = 6.0
GPU_BATCH_FROM_EXAMPLES = 16  # from this many notes a GPU step averages 8 in one micro-batch


class Hyperparameters(BaseModel):
    """Everything the worker needs to configure PEFT and TRL; serialised into the job and card."""

    model_config = ConfigDict(extra="forbid")

    lora_r: int = Field(32, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: list(ATTENTION_PROJECTIONS))
    # Adapt only these decoder layers (None: all). Backpropagation stops at the lowest adapted
    # layer, so the top half costs about a third less per step (CPU_LORA_TOP_SHARE).
    lora_layers: list[int] | None = None
    learning_rate: float = Field(2e-4, gt=0)
    # Loss weight of the answer lines the counselor's edits made (edited, regenerated, added
    # items, the label, the line standing where a model item was deleted) against 1 for the
    # model's lines they left as written (engine.training.data.edited_lines).
    edited_line_weight: float = Field(1.0, gt=0)
    max_grad_norm: float = Field(0.3, gt=0)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    lr_scheduler_type: str = "cosine"
    optim: str = "adamw_torch"
    num_train_epochs: float = Field(3.0, gt=0)
    max_steps: int = -1  # > 0 overrides epochs
    per_device_train_batch_size: int = Field(1, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_length: int = Field(1024, ge=32)
    gradient_checkpointing: bool = False
    load_in_4bit: bool = False
    bf16: bool = False
    # Domain rows (engine.training.rehearsal) added to each pass over the notes; 0: none.
    rehearsal_per_pass: int = Field(0, ge=0)
    preference_method: Literal["dpo", "orpo", "none"] = "dpo"
    min_preference_pairs: int = Field(MIN_PREFERENCE_PAIRS, ge=1)
    max_preference_pairs: int | None = Field(None, ge=1)  # the newest N; None = all
    preference_beta: float = Field(0.1, gt=0)
    preference_learning_rate: float = Field(5e-5, gt=0)
    preference_epochs: float = Field(1.0, gt=0)
    seed: int = 42

    def use_preference_step(self, n_pairs: int) -> bool:
        return self.preference_method != "none" and n_pairs >= self.min_preference_pairs

    def preference_pairs(self, pairs: list) -> list:
        """The pairs the preference step uses: the newest ``max_preference_pairs``."""
        if self.max_preference_pairs is None or len(pairs) <= self.max_preference_pairs:
            return list(pairs)
        return list(pairs[-self.max_preference_pairs :])


def target_modules_for(model_type: str) -> list[str]:
    """Attention projections everywhere; on Mixtral the router too, so routing can adapt."""
    targets = list(ATTENTION_PROJECTIONS)
    if model_type == "mixtral":
        targets.append(MIXTRAL_ROUTER)
    return targets


def epochs_for(n_examples: int, at_least: int = 3) -> float:
    """Three passes (``at_least``) for a reasonable set of notes, up to eight for one or two."""
    if n_examples <= 0:
        return 0.0
    return float(min(8, max(at_least, math.ceil(30 / n_examples))))


def recipe_for(
    *,
    n_examples: int,
    n_tokens: int,
    device: str,
    model_type: str,
    overrides: dict[str, Any] | None = None,
    cpu_token_budget: int = CPU_TOKEN_BUDGET,
    n_layers: int | None = None,
    quantized: bool | None = None,
) -> Hyperparameters:
    """The brief's recipe scaled to this data and device; ``overrides`` win over everything.

    ``n_tokens`` is the tokenized size of one pass over the SFT examples; ``n_layers`` the
    model's decoder layers (on the CPU the top CPU_LORA_TOP_SHARE of them are adapted).
    """
    on_gpu = device.startswith("cuda")
    # QLoRA (4-bit base, paged AdamW) only where the drafts come from a 4-bit model: see
    # ``quantized_training``. None keeps the brief's default for a GPU (benches, tests).
    quantized = on_gpu if quantized is None else (quantized and on_gpu)
    epochs = epochs_for(n_examples, 3 if on_gpu else CPU_MIN_PASSES)
    if not on_gpu and n_tokens > 0 and n_tokens * epochs > cpu_token_budget:
        epochs = max(1.0, math.floor(cpu_token_budget / n_tokens))
    values: dict[str, Any] = {
        "target_modules": target_modules_for(model_type),
        "num_train_epochs": epochs,
        # Few notes: every note its own optimizer step; more notes: average a few per step
        # (8 on a GPU, in one micro-batch: the 4-bit weights are dequantized once for all 8;
        # 4 accumulated on the CPU).
        "per_device_train_batch_size": (8 if n_examples >= GPU_BATCH_FROM_EXAMPLES else 1)
        if on_gpu
        else 1,
        "gradient_accumulation_steps": 1 if n_examples < 16 or on_gpu else 4,
        "optim": "paged_adamw_32bit" if quantized else "adamw_torch",
        "load_in_4bit": quantized,
        "bf16": on_gpu,
        "gradient_checkpointing": on_gpu,
        "max_length": 2048 if on_gpu else 1024,
        "max_preference_pairs": None if on_gpu else CPU_MAX_PREFERENCE_PAIRS,
    }
    if on_gpu:
        values["learning_rate"] = GPU_LEARNING_RATE
        values["preference_method"] = GPU_PREFERENCE_METHOD
        values["edited_line_weight"] = GPU_EDITED_LINE_WEIGHT
    if not on_gpu:
        # A few dozen steps: a warm-up step runs at learning rate 0, so none on the CPU; no
        # preference step (CPU_PREFERENCE_METHOD); when an override asks for one it learns at
        # 2e-4 (at 5e-5 six pairs moved the loss from 0.693 to 0.671: a CPU minute for no
        # change in any draft, issue 17).
        values["warmup_ratio"] = 0.0
        values["learning_rate"] = CPU_LEARNING_RATE
        values["preference_learning_rate"] = CPU_PREFERENCE_LEARNING_RATE
        values["preference_method"] = CPU_PREFERENCE_METHOD
        values["edited_line_weight"] = CPU_EDITED_LINE_WEIGHT
        if n_layers and n_layers >= 4 and CPU_LORA_TOP_SHARE < 1.0:
            first = n_layers - max(1, round(n_layers * CPU_LORA_TOP_SHARE))
            values["lora_layers"] = list(range(first, n_layers))
    values.update(overrides or {})
    return Hyperparameters(**values)


def quantized_training(device: str, inference_4bit: bool, overrides: dict[str, Any]) -> bool:
    """Train on a 4-bit base only when the drafts are made by a 4-bit model.

    A patient LoRA learns the difference between the model it was trained on and the
    counselor's text. Trained over a 4-bit copy (the domain adapter merged into it, which
    re-quantizes) and applied to the full-precision model that drafts, it also learns the
    quantization error. On one H100 with the embedded model and ten notes (bench/learning.py
    --device cuda --k 10, depression, items the simulated counselor changes on three later
    sessions, domain adapter alone -> with the patient adapter): trained 4-bit 16 -> 18, edit
    distance +21 %; trained in bf16 16 -> 17, +13.5 % (the GPU recipe itself does not move
    drafts yet; the CPU recipe gives 16 -> 11). Mixtral drafts in 4-bit
    (``model.load_in_4bit``), so it trains with QLoRA as the brief says.
    """
    if "load_in_4bit" in overrides:
        return bool(overrides["load_in_4bit"])
    return device.startswith("cuda") and inference_4bit


def check_token_limit(n_tokens: int, max_training_tokens: int) -> None:
    """Refuse a run whose notes exceed ``limits.max_training_tokens``, saying what to do."""
    if n_tokens > max_training_tokens:
        raise TrainingLimitExceeded(
            f"This patient's notes come to {n_tokens:,} tokens, over the training limit of "
            f"{max_training_tokens:,} (setting limits.max_training_tokens, env "
            "PHYASSIST_LIMITS__MAX_TRAINING_TOKENS). Raise the limit; nothing was trained."
        )
