"""The fast decode logic (static cache, device-side expert choice, prefix reuse) on CPU.

No CUDA graph here: the same step function runs eagerly, so CI checks that the fast path computes
what ``generate`` computes; tests/gpu/test_fastdecode_gpu.py checks the graph-captured 4-bit path.
"""

from __future__ import annotations

import pytest
import torch

from engine.fastdecode import (
    FastDecoder,
    FastDecodeUnsupported,
    _set_fast,
    baseline_generate,
    install_fast_moe,
)

from .conftest import prompt_ids, tiny_mixtral


def test_device_routed_moe_block_matches_eager_bit_for_bit():
    model = tiny_mixtral(torch.bfloat16)
    block = model.model.layers[0].block_sparse_moe
    x = torch.randn(1, 1, 64, dtype=torch.bfloat16)
    want, want_logits = block(x)
    install_fast_moe(model)
    _set_fast(model, True)
    got, got_logits = block(x)
    _set_fast(model, False)
    assert torch.equal(got, want)
    assert torch.equal(got_logits, want_logits)
    # Several tokens (a prefill) always take the eager path, unchanged.
    xs = torch.randn(1, 5, 64, dtype=torch.bfloat16)
    _set_fast(model, True)
    fast_many = block(xs)[0]
    _set_fast(model, False)
    assert torch.equal(fast_many, block(xs)[0])


def test_stacking_experts_keeps_their_weights_and_costs_no_copy():
    model = tiny_mixtral()
    w = model.model.layers[1].block_sparse_moe.experts[3].w2.weight.detach().clone()
    (bank, *_) = install_fast_moe(model)
    expert = model.model.layers[0].block_sparse_moe.experts[5]
    assert expert.w1.weight.data_ptr() == bank.weights[5, 0].data_ptr()
    assert torch.equal(model.model.layers[1].block_sparse_moe.experts[3].w2.weight, w)


def test_fast_greedy_equals_generate_on_cpu():
    model = tiny_mixtral()
    ids = prompt_ids(40)
    want, _ = baseline_generate(model, ids, 24)
    dec = FastDecoder(model, max_cache_len=128)
    stats = dec.generate(ids, 24)
    assert stats.tokens == want
    assert stats.new_tokens == 24 and not stats.graph
    # A second request on the same decoder (reused static cache) gives the same answer.
    assert dec.generate(ids, 24).tokens == want


def test_prefix_cache_is_reused_and_left_intact():
    model = tiny_mixtral()
    ids = prompt_ids(60)
    dec = FastDecoder(model, max_cache_len=128)
    full = dec.generate(ids, 12).tokens
    prefix = dec.build_prefix(ids[0, :48].tolist())
    first = dec.generate(ids, 12, prefix=prefix)
    assert first.reused_prefix_tokens == 48
    assert prefix.cache.get_seq_length() == 48
    assert first.tokens == full
    assert dec.generate(ids, 12, prefix=prefix).tokens == full
    with pytest.raises(ValueError):
        dec.generate(prompt_ids(60, seed=9), 4, prefix=prefix)


def test_eos_and_callback_stop_early():
    model = tiny_mixtral()
    ids = prompt_ids(20)
    dec = FastDecoder(model, max_cache_len=64)
    tokens = dec.generate(ids, 16).tokens
    stop_at = tokens[5]
    cut = dec.generate(ids, 16, eos_token_id=stop_at).tokens
    assert cut == tokens[: tokens.index(stop_at) + 1]
    seen: list[int] = []
    dec.generate(ids, 16, on_token=lambda t: (seen.append(t), len(seen) == 3)[1])
    assert seen == tokens[:3]


def test_rejects_what_it_cannot_do():
    model = tiny_mixtral()
    dec = FastDecoder(model, max_cache_len=64)
    with pytest.raises(ValueError, match="static cache"):
        dec.generate(prompt_ids(60), 8)
    with pytest.raises(ValueError):
        dec.generate(torch.zeros(2, 4, dtype=torch.long), 2)
    with pytest.raises(FastDecodeUnsupported):
        FastDecoder(model, use_cuda_graph=True)
    with pytest.raises(FastDecodeUnsupported, match="Triton"):
        FastDecoder(model, kernel="triton")  # plain Linear experts, no CUDA: not possible
    with pytest.raises(ValueError, match="unknown MoE kernel"):
        FastDecoder(model, kernel="cutlass")


def test_adapter_weights_are_copied_in_place():
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

    from engine.fastdecode import copy_adapter_in_place

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "block_sparse_moe.gate"]
    cfg = LoraConfig(r=4, lora_alpha=4, target_modules=targets, init_lora_weights=False)
    model = get_peft_model(tiny_mixtral(), cfg, adapter_name="p1").eval()
    ids = prompt_ids(16)
    with torch.no_grad():
        want = model(ids).logits
    saved = {k: v.clone() for k, v in get_peft_model_state_dict(model, adapter_name="p1").items()}
    ptrs = {n: p.data_ptr() for n, p in model.named_parameters() if ".lora_" in n}
    for n, p in model.named_parameters():
        if ".lora_" in n:
            p.data.normal_()
    with torch.no_grad():
        assert not torch.allclose(model(ids).logits, want)
    assert copy_adapter_in_place(model, "p1", saved) == len(saved)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, want)
    assert all(p.data_ptr() == ptrs[n] for n, p in model.named_parameters() if n in ptrs)
    with pytest.raises(KeyError):
        copy_adapter_in_place(model, "p1", {"nope.lora_A.weight": torch.zeros(1)})
