"""4-bit loading: the experts really are quantized, and the pre-quantized cache round-trips."""

from __future__ import annotations

import pytest
import torch

from engine.gpu.quant import expert_modules, is_complete_cache, load_quantized, quantization_report

from .conftest import prompt_ids

pytestmark = pytest.mark.gpu


def test_experts_are_linear4bit_with_packed_uint8_weights(cuda_bnb, tiny_mixtral_dir, tmp_path):
    import bitsandbytes as bnb

    model, report = load_quantized(tiny_mixtral_dir, cache_root=tmp_path / "cache")
    experts = expert_modules(model)
    assert len(experts) == 2 * 8 * 3
    for name, module in experts:
        assert isinstance(module, bnb.nn.Linear4bit), name
        assert module.weight.dtype == torch.uint8, name
        assert module.weight.quant_state.quant_type == "nf4"
        assert module.weight.quant_state.nested  # double quantization
    attn = model.model.layers[0].self_attn
    assert all(isinstance(getattr(attn, p), bnb.nn.Linear4bit) for p in ("q_proj", "o_proj"))
    assert model.lm_head.weight.dtype == torch.bfloat16  # kept in bf16, as QLoRA does
    assert report.source == "checkpoint" and report.cache_written
    assert report.quant["unquantized_expert_params"] == 0
    assert report.quant["expert_linear4bit_modules"] == 48


def test_second_load_comes_from_the_cache_and_gives_the_same_logits(
    cuda_bnb, tiny_mixtral_dir, tmp_path
):
    cache = tmp_path / "cache"
    first, r1 = load_quantized(tiny_mixtral_dir, cache_root=cache)
    assert is_complete_cache(r1.cache_dir)
    ids = prompt_ids(16).cuda()
    with torch.no_grad():
        want = first(ids).logits
    del first
    second, r2 = load_quantized(tiny_mixtral_dir, cache_root=cache)
    assert r2.source == "cache" and not r2.cache_written
    assert r2.cache_dir == r1.cache_dir
    with torch.no_grad():
        got = second(ids).logits
    assert torch.equal(got, want)
    assert quantization_report(second)["unquantized_expert_params"] == 0


def test_a_changed_checkpoint_misses_the_cache(cuda_bnb, tiny_mixtral_dir, tmp_path):
    _, r1 = load_quantized(tiny_mixtral_dir, cache_root=tmp_path / "cache")
    cfg = tiny_mixtral_dir / "config.json"
    cfg.write_text(cfg.read_text().replace('"rms_norm_eps"', '"rms_norm_eps" '), encoding="utf-8")
    _, r2 = load_quantized(tiny_mixtral_dir, cache_root=tmp_path / "cache")
    assert r2.source == "checkpoint" and r2.cache_dir != r1.cache_dir
