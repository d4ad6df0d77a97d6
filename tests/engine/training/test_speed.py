"""The CPU speed-ups keep the training maths: answer-only LM head, the CPU token budget."""

from __future__ import annotations

import pytest

from engine.training.config import CPU_TOKEN_BUDGET, recipe_for

pytestmark = pytest.mark.model


class _Spy:
    """Wraps TRL's chunked log-prob function and records how many rows it projects."""

    def __init__(self, real):
        self.real = real
        self.rows: list[int] = []

    def apply(self, hidden, *args):
        self.rows.append(hidden.shape[0])
        return self.real.apply(hidden, *args)


def _loss_and_grads(tiny_model_dir, input_ids, labels):
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from engine.training.config import Hyperparameters
    from engine.training.worker import lora_config_for

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    peft_model = get_peft_model(model, lora_config_for(Hyperparameters(lora_dropout=0.0)))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)  # non-zero B so the LoRA A matrices get gradients
    out = peft_model(input_ids=input_ids, labels=labels, fused_lm_head=True)
    mask = labels[:, 1:] != -100
    loss = -out.log_probs.sum() / mask.sum()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in peft_model.named_parameters() if p.requires_grad}
    return float(loss.detach()), grads


def test_answer_only_lm_head_gives_the_same_loss_and_gradients(tiny_model_dir, monkeypatch):
    import torch
    import trl.trainer.utils as trl_utils

    from engine.training.worker import score_answer_tokens_only

    torch.manual_seed(1)
    input_ids = torch.randint(0, 1000, (1, 48))
    labels = input_ids.clone()
    labels[:, :36] = -100  # prompt: 35 scored positions fewer

    spy = _Spy(trl_utils._ChunkedLogProbFunction)
    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", spy)
    # Stock TRL first (an in-process training test may already have switched it); restored after.
    stock = getattr(trl_utils._use_triton, "original", trl_utils._use_triton)
    monkeypatch.setattr(trl_utils, "_use_triton", stock)
    full_loss, full_grads = _loss_and_grads(tiny_model_dir, input_ids, labels)
    assert spy.rows == [47]  # stock TRL on a CPU: every position goes through the LM head

    assert score_answer_tokens_only()
    assert score_answer_tokens_only()  # idempotent
    compact_loss, compact_grads = _loss_and_grads(tiny_model_dir, input_ids, labels)
    assert spy.rows[1:] == [12]  # only the answer positions
    assert compact_loss == pytest.approx(full_loss, rel=1e-5)
    assert compact_grads.keys() == full_grads.keys()
    for name, grad in full_grads.items():
        torch.testing.assert_close(compact_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_cpu_budget_gives_ten_notes_three_passes_and_few_notes_more():
    """Every layer adapted costs ~1.5x per step: ten notes (3.2-3.7k tokens) get three passes
    within the minute (config.CPU_TOKEN_BUDGET), not four."""
    ten_notes = recipe_for(n_examples=10, n_tokens=3200, device="cpu", model_type="llama")
    assert ten_notes.num_train_epochs == 3
    assert ten_notes.per_device_train_batch_size == 1  # no padding on the CPU
    three_notes = recipe_for(n_examples=3, n_tokens=950, device="cpu", model_type="llama")
    assert three_notes.num_train_epochs == 8
    assert 3700 * 3 <= CPU_TOKEN_BUDGET < 3200 * 4
    assert ten_notes.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
