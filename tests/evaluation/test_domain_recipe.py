"""The domain recipe's defaults and the progress lines (no model needed)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from engine.domain_train import DomainRecipe, _fmt_eta, _progress_callback, latest_checkpoint


def test_defaults_are_the_briefs_recipe():
    r = DomainRecipe()
    assert (r.lora_r, r.lora_alpha, r.lora_dropout) == (32, 32, 0.05)
    assert (r.learning_rate, r.max_grad_norm, r.warmup_ratio) == (2e-4, 0.3, 0.03)
    cpu = r.resolved(on_cuda=False)
    assert cpu.optim == "adamw_torch" and cpu.load_in_4bit is False
    assert cpu.gradient_checkpointing is False


def test_gpu_choices(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: object() if name == "bitsandbytes" else real(name, *a),
    )
    gpu = DomainRecipe().resolved(on_cuda=True)
    assert gpu.optim == "paged_adamw_32bit" and gpu.load_in_4bit is True
    assert DomainRecipe(load_in_4bit=False).resolved(on_cuda=True).load_in_4bit is False


def test_progress_lines_have_loss_tokens_per_second_and_eta(monkeypatch):
    clock = iter([100.0, 100.0, 110.0])
    monkeypatch.setattr("engine.domain_train.time.perf_counter", lambda: next(clock))
    lines: list[str] = []
    cb = _progress_callback(lines.append)
    state = SimpleNamespace(global_step=0, max_steps=100, is_world_process_zero=True)
    cb.on_train_begin(None, state, None)
    state.global_step = 10
    cb.on_log(None, state, None, logs={"loss": 1.25, "num_tokens": 5000.0})
    cb.on_log(None, state, None, logs={"train_runtime": 10.0})  # summary: no line
    assert lines == ["training: step 0/100", "step 10/100  loss 1.25  tokens/s 500  ETA 1m30s"]


@pytest.mark.parametrize(("s", "text"), [(59, "0m59s"), (3725, "1h02m"), (float("nan"), "?")])
def test_eta_format(s, text):
    assert _fmt_eta(s) == text


def test_latest_checkpoint(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    (tmp_path / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    (tmp_path / "checkpoints" / "checkpoint-12").mkdir()
    assert latest_checkpoint(tmp_path).endswith("checkpoint-12")
