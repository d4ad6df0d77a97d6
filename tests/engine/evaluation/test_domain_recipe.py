"""The domain recipe's defaults and the progress lines (no model needed)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from engine.training.domain_train import (
    DomainRecipe,
    _fmt_eta,
    _progress_callback,
    _time_budget_callback,
    latest_checkpoint,
)
from phyassist_tui.commands.data import add_domain_train_arguments


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
    monkeypatch.setattr("engine.training.domain_train.time.perf_counter", lambda: next(clock))
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


def test_time_budget_stops_training_and_saves(monkeypatch):
    clock = iter([0.0, 0.0, 5.0, 10.5])
    monkeypatch.setattr("engine.training.domain_train.time.perf_counter", lambda: next(clock))
    lines: list[str] = []
    cb = _time_budget_callback(10, lines.append)
    state = SimpleNamespace(global_step=0)
    control = SimpleNamespace(should_training_stop=False, should_save=False)
    cb.on_train_begin(None, state, control)
    state.global_step = 3
    cb.on_step_end(None, state, control)  # 5 s: keeps going
    assert not control.should_training_stop and lines == []
    state.global_step = 6
    cb.on_step_end(None, state, control)  # 10.5 s: stops, and the checkpoint is saved
    assert control.should_training_stop and control.should_save
    assert lines == ["time budget of 10 s reached at step 6"]


def test_cli_gradient_checkpointing_and_time_budget_flags():
    import argparse

    parser = argparse.ArgumentParser()
    add_domain_train_arguments(parser)
    base = ["--data", "d", "--out", "o"]
    args = parser.parse_args(base)
    assert args.gradient_checkpointing is None and args.time_budget is None
    args = parser.parse_args([*base, "--no-gradient-checkpointing", "--time-budget", "360"])
    assert args.gradient_checkpointing is False and args.time_budget == 360.0
    assert parser.parse_args([*base, "--gradient-checkpointing"]).gradient_checkpointing is True
    assert (
        DomainRecipe(gradient_checkpointing=False).resolved(on_cuda=True).gradient_checkpointing
        is False
    )


def test_several_gpus_relaunch_the_same_command_under_accelerate(monkeypatch, tmp_path):
    """`phyassist domain train` on a multi-GPU host re-runs itself once per GPU; the
    relaunched ranks (LOCAL_RANK set) train in-process."""
    import subprocess
    import sys

    import torch

    from phyassist_tui.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("PHYASSIST_NO_RELAUNCH", raising=False)
    argv = ["domain", "train", "--data", str(tmp_path), "--out", str(tmp_path / "o")]
    monkeypatch.setattr(sys, "argv", ["phyassist", *argv])
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    assert main(argv) == 0
    [command] = calls
    assert command[command.index("--num_processes") + 1] == "2"
    assert command[-len(argv) - 2 :] == ["-m", "phyassist_tui", *argv]

    from engine.training.domain_train import accelerate_command

    monkeypatch.setenv("LOCAL_RANK", "0")
    assert accelerate_command(["-m", "phyassist_tui", *argv]) is None
