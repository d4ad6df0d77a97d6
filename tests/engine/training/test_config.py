"""The recipe and its scaling, the limits."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from engine.errors import TrainingLimitExceeded
from engine.training.config import (
    CPU_LEARNING_RATE,
    CPU_PREFERENCE_LEARNING_RATE,
    MIXTRAL_ROUTER,
    Hyperparameters,
    check_token_limit,
    epochs_for,
    recipe_for,
)


def test_defaults_are_the_briefs_recipe():
    hp = Hyperparameters()
    assert (hp.lora_r, hp.lora_alpha, hp.lora_dropout) == (32, 32, 0.05)
    assert hp.learning_rate == 2e-4
    assert hp.max_grad_norm == 0.3
    assert hp.warmup_ratio == 0.03
    assert hp.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]


def test_gpu_uses_qlora_and_paged_adamw_cpu_full_precision():
    gpu = recipe_for(n_examples=10, n_tokens=5000, device="cuda", model_type="llama")
    cpu = recipe_for(n_examples=10, n_tokens=5000, device="cpu", model_type="llama")
    assert gpu.load_in_4bit and gpu.bf16 and gpu.optim.startswith("paged_adamw")
    assert gpu.gradient_checkpointing
    assert not cpu.load_in_4bit and not cpu.bf16 and cpu.optim == "adamw_torch"
    many = recipe_for(n_examples=60, n_tokens=20_000, device="cuda", model_type="mixtral")
    # 8 notes per optimizer step, in one micro-batch on a GPU, 4 accumulated on the CPU
    assert (many.per_device_train_batch_size, many.gradient_accumulation_steps) == (8, 1)
    cpu_many = recipe_for(n_examples=60, n_tokens=5000, device="cpu", model_type="llama")
    assert (cpu_many.per_device_train_batch_size, cpu_many.gradient_accumulation_steps) == (1, 4)


def test_mixtral_also_adapts_the_router():
    hp = recipe_for(n_examples=10, n_tokens=5000, device="cuda", model_type="mixtral")
    assert MIXTRAL_ROUTER in hp.target_modules
    assert "q_proj" in hp.target_modules
    llama = recipe_for(n_examples=10, n_tokens=5000, device="cuda", model_type="llama")
    assert MIXTRAL_ROUTER not in llama.target_modules


def test_few_notes_get_more_passes_and_cpu_stays_within_budget():
    assert epochs_for(1) == 8
    assert epochs_for(5) == 6
    assert epochs_for(10) == 3
    assert epochs_for(200) == 3
    assert epochs_for(10, at_least=4) == 4 and epochs_for(2, at_least=4) == 8
    small = recipe_for(n_examples=2, n_tokens=600, device="cpu", model_type="llama")
    assert small.num_train_epochs == 8
    big = recipe_for(
        n_examples=10, n_tokens=6000, device="cpu", model_type="llama", cpu_token_budget=12_000
    )
    assert big.num_train_epochs == 2  # 3 passes would be 18k tokens
    gpu = recipe_for(n_examples=10, n_tokens=6000, device="cuda", model_type="llama")
    assert gpu.num_train_epochs == 3  # no CPU budget on a GPU


def test_overrides_win_and_unknown_keys_are_rejected():
    hp = recipe_for(
        n_examples=3, n_tokens=100, device="cpu", model_type="llama", overrides={"max_steps": 2}
    )
    assert hp.max_steps == 2
    with pytest.raises(ValidationError):
        recipe_for(
            n_examples=3, n_tokens=100, device="cpu", model_type="llama", overrides={"lr": 1}
        )


def test_preference_step_from_one_pair_and_newest_pairs_on_cpu():
    hp = Hyperparameters()
    assert not hp.use_preference_step(0)
    assert hp.use_preference_step(1)  # every counselor signal counts (it was >= 4)
    assert not Hyperparameters(preference_method="none").use_preference_step(100)
    cpu = recipe_for(n_examples=10, n_tokens=3000, device="cpu", model_type="llama")
    pairs = list(range(40))
    # The CPU minute goes to SFT passes (issue 17): no preference step unless overridden,
    # and then on the newest pairs.
    assert cpu.preference_method == "none" and not cpu.use_preference_step(len(pairs))
    asked = recipe_for(
        n_examples=10,
        n_tokens=3000,
        device="cpu",
        model_type="llama",
        overrides={"preference_method": "dpo"},
    )
    assert asked.use_preference_step(len(pairs))
    assert asked.preference_pairs(pairs) == pairs[-asked.max_preference_pairs :]
    # On a GPU too (the DPO step after SFT made drafts worse: GPU_LEARNING_RATE's comment);
    # asked for, it uses every pair.
    gpu = recipe_for(n_examples=10, n_tokens=3000, device="cuda", model_type="llama")
    assert gpu.preference_method == "none" and not gpu.use_preference_step(len(pairs))
    gpu_dpo = recipe_for(
        n_examples=10,
        n_tokens=3000,
        device="cuda",
        model_type="llama",
        overrides={"preference_method": "dpo"},
    )
    assert gpu_dpo.use_preference_step(len(pairs)) and gpu_dpo.preference_pairs(pairs) == pairs


def test_gpu_patient_recipe_takes_a_step_per_note_at_the_measured_rate():
    """Issue 17: the brief's batch 4 at 2e-4 (9 steps for ten notes) moved no draft; a
    patient run on a GPU takes a step per note below 16 notes and learns at 1e-3."""
    from engine.training.config import GPU_LEARNING_RATE

    few = recipe_for(n_examples=10, n_tokens=3000, device="cuda", model_type="mixtral")
    assert few.per_device_train_batch_size == 1 and few.gradient_accumulation_steps == 1
    assert few.learning_rate == GPU_LEARNING_RATE == 1e-3
    assert few.num_train_epochs == 3  # 30 steps for ten notes
    many = recipe_for(n_examples=60, n_tokens=20_000, device="cuda", model_type="mixtral")
    assert many.per_device_train_batch_size == 8 and many.learning_rate == GPU_LEARNING_RATE


def test_token_limit_message_says_what_to_do():
    check_token_limit(1000, 1000)
    with pytest.raises(TrainingLimitExceeded) as err:
        check_token_limit(1001, 1000)
    assert "limits.max_training_tokens" in str(err.value)
    assert "1,001" in str(err.value)


def test_cpu_recipe_adapts_every_layer_and_wastes_no_step(monkeypatch):
    """Issue 17: on the CPU the patient LoRA covers every layer (the top half learned the
    counselor's quotes far less well) at a higher rate, three passes for ten notes, no step
    at learning rate 0, and a preference step (when asked) at 2e-4, not 5e-5; a share below 1
    still limits it to the top layers."""
    from engine.training import config

    cpu = recipe_for(n_examples=10, n_tokens=3600, device="cpu", model_type="llama", n_layers=30)
    assert cpu.lora_layers is None and cpu.num_train_epochs == 3
    monkeypatch.setattr(config, "CPU_LORA_TOP_SHARE", 0.5)
    half = recipe_for(n_examples=10, n_tokens=3600, device="cpu", model_type="llama", n_layers=30)
    assert half.lora_layers == list(range(15, 30))
    assert cpu.warmup_ratio == 0.0
    assert cpu.learning_rate == CPU_LEARNING_RATE > Hyperparameters().learning_rate
    assert cpu.preference_learning_rate == CPU_PREFERENCE_LEARNING_RATE
    assert Hyperparameters().preference_learning_rate < CPU_PREFERENCE_LEARNING_RATE
    gpu = recipe_for(n_examples=10, n_tokens=3600, device="cuda", model_type="llama", n_layers=30)
    assert gpu.lora_layers is None and gpu.warmup_ratio == 0.03
    assert (
        recipe_for(n_examples=3, n_tokens=900, device="cpu", model_type="llama").lora_layers is None
    )
    mine = recipe_for(
        n_examples=10,
        n_tokens=3600,
        device="cpu",
        model_type="llama",
        n_layers=30,
        overrides={"lora_layers": None},
    )
    assert mine.lora_layers is None  # the caller's override wins


def test_lora_layers_reach_the_peft_config():
    from engine.training.worker import lora_config_for

    config = lora_config_for(Hyperparameters(lora_layers=[2, 3]))
    assert list(config.layers_to_transform) == [2, 3]
    assert lora_config_for(Hyperparameters()).layers_to_transform is None


def test_a_patient_adapter_trains_in_the_precision_that_drafts():
    """QLoRA only where the drafts come from a 4-bit model (Mixtral with model.load_in_4bit);
    a full-precision model on a GPU trains in full precision, so the adapter does not learn
    the 4-bit copy's error (it made drafts worse on the H100, issue 17)."""
    from engine.training.config import quantized_training

    assert quantized_training("cuda", True, {}) is True
    assert quantized_training("cuda", False, {}) is False
    assert quantized_training("cpu", True, {}) is False
    assert quantized_training("cuda", False, {"load_in_4bit": True}) is True
    full = recipe_for(
        n_examples=10, n_tokens=5000, device="cuda", model_type="llama", quantized=False
    )
    assert not full.load_in_4bit and full.optim == "adamw_torch" and full.bf16
    qlora = recipe_for(
        n_examples=10, n_tokens=5000, device="cuda", model_type="mixtral", quantized=True
    )
    assert qlora.load_in_4bit and qlora.optim.startswith("paged_adamw")


def test_cpu_recipe_weighs_the_counselors_edited_lines():
    """Issue 17: the patient recipe (SFT only, no preference step, on the CPU and on a GPU)
    weighs the lines the counselor's edits made above the model text they kept; an override
    still wins."""
    from engine.training.config import CPU_EDITED_LINE_WEIGHT, GPU_EDITED_LINE_WEIGHT

    cpu = recipe_for(n_examples=10, n_tokens=3600, device="cpu", model_type="llama", n_layers=30)
    assert cpu.edited_line_weight == CPU_EDITED_LINE_WEIGHT > 1.0
    gpu = recipe_for(n_examples=10, n_tokens=3600, device="cuda", model_type="llama", n_layers=30)
    assert gpu.edited_line_weight == GPU_EDITED_LINE_WEIGHT > 1.0
    assert Hyperparameters().edited_line_weight == 1.0
    plain = recipe_for(
        n_examples=10,
        n_tokens=3600,
        device="cpu",
        model_type="llama",
        overrides={"edited_line_weight": 1.0},
    )
    assert plain.edited_line_weight == 1.0
