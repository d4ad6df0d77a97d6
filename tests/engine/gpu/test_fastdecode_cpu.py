"""The fast decode logic (static cache, device-side expert choice, prefix reuse) on CPU.

No CUDA graph here: the same step function runs eagerly, so CI checks that the fast path computes
what ``generate`` computes; tests/engine/gpu/test_fastdecode_gpu.py checks the graph-captured
4-bit path.
"""

from __future__ import annotations

import pytest
import torch

from bench.reference import baseline_generate
from engine.gpu.fast_moe import _set_fast, install_fast_moe
from engine.gpu.fastdecode import FastDecoder, FastDecodeUnsupported

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

    from engine.gpu.fastdecode import copy_adapter_in_place

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


def test_suffix_prefill_attention_is_lower_right_causal():
    from engine.gpu.fast_attention import _suffix_prefill_attention

    torch.manual_seed(0)
    q = torch.randn(1, 4, 5, 16)
    k = torch.randn(1, 2, 12, 16)
    v = torch.randn(1, 2, 12, 16)
    module = torch.nn.Module()
    module.num_key_value_groups = 2
    got, _ = _suffix_prefill_attention(module, q, k, v, None, scaling=0.25)
    kk, vv = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    scores = (q @ kk.transpose(-1, -2)) * 0.25
    # query i is position 7 + i of 12: it sees keys 0 .. 7 + i
    allowed = torch.arange(12)[None, :] <= torch.arange(5)[:, None] + 7
    want = (scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ vv).transpose(1, 2)
    assert torch.allclose(got, want, atol=1e-5)


def test_suffix_prefill_through_the_model_matches_sdpa():
    """transformers builds no mask for a custom attention function; ours must still be causal."""
    from transformers import DynamicCache

    from engine.gpu.fast_attention import SUFFIX_PREFILL, _register_attention

    _register_attention()
    model = tiny_mixtral()
    ids = prompt_ids(40)

    def suffix_logits(attn: str) -> torch.Tensor:
        cache = DynamicCache(config=model.config)
        with torch.no_grad():
            model(input_ids=ids[:, :30], past_key_values=cache, use_cache=True)
            model.config._attn_implementation_internal = attn
            try:
                pos = torch.arange(30, 40)
                out = model(
                    input_ids=ids[:, 30:],
                    attention_mask=torch.ones(1, 40, dtype=torch.long),
                    position_ids=pos[None],
                    cache_position=pos,
                    past_key_values=cache,
                    use_cache=True,
                )
            finally:
                model.config._attn_implementation_internal = "sdpa"
        return out.logits

    assert torch.allclose(suffix_logits(SUFFIX_PREFILL), suffix_logits("sdpa"), atol=1e-5)


def test_route_pairs_groups_token_slots_by_expert():
    from engine.gpu.nf4_moe import route_pairs

    selected = torch.tensor([[3, 1], [1, 0], [3, 2], [1, 3]])
    r = route_pairs(selected, num_experts=5)
    assert r["counts"].tolist() == [1, 3, 1, 3, 0]
    assert r["starts"].tolist() == [0, 1, 4, 5, 8]
    flat = selected.reshape(-1)
    pair_idx = r["pair_idx"].long()
    assert flat[pair_idx].tolist() == [0, 1, 1, 1, 2, 3, 3, 3]  # sorted by expert
    assert sorted(pair_idx.tolist()) == list(range(8))  # every (token, slot) exactly once
    assert r["pair_tok"].tolist() == (pair_idx // 2).tolist()


def test_decode_attention_is_chosen_per_decoder():
    """The decode attention and its SDPA backends are FastDecoder arguments (the benchmark
    used to set them as module globals): MATH decodes the same tokens as generate, a backend
    that cannot run here fails, so the choice reaches the attention of that decoder only."""
    from torch.nn.attention import SDPBackend

    model = tiny_mixtral()
    ids = prompt_ids(40)
    want, _ = baseline_generate(model, ids, 8)
    math = FastDecoder(
        model, max_cache_len=128, decode_attention="sdpa", sdpa_backends=[SDPBackend.MATH]
    )
    cudnn = FastDecoder(
        model,
        max_cache_len=128,
        decode_attention="sdpa",
        sdpa_backends=[SDPBackend.CUDNN_ATTENTION],
    )
    with pytest.raises(RuntimeError):
        cudnn.generate(ids, 8)
    assert math.generate(ids, 8).tokens == want
    assert FastDecoder(model, max_cache_len=128).generate(ids, 8).tokens == want
    with pytest.raises(ValueError):
        FastDecoder(model, decode_attention="flash")
