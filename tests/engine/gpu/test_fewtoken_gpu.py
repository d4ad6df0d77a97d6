"""The few-token NF4 MoE kernel (a suffix after a cached prefix) against bitsandbytes' eager path.

The kernel dequantizes each NF4 tile as bitsandbytes does and follows the eager block's roundings,
so with bf16 compute the two differ only by the order of the dot products' sums; with float32
compute they agree to fp32 rounding, and greedy decoding through a cached prefix must give exactly
``generate``'s tokens.
"""

from __future__ import annotations

import pytest
import torch

from bench.reference import baseline_generate
from engine.gpu import fastdecode, nf4_moe, static_suffix
from engine.gpu.fast_moe import install_fast_moe
from engine.gpu.fastdecode import FastDecoder
from engine.gpu.quant import QuantSpec, load_quantized

from .conftest import prompt_ids, tiny_mixtral

pytestmark = pytest.mark.gpu


def _quantized(tmp_path, dtype: torch.dtype, **overrides):
    path = tmp_path / "mixtral"
    tiny_mixtral(torch.bfloat16, **overrides).save_pretrained(path, safe_serialization=True)
    model, _ = load_quantized(path, spec=QuantSpec(compute_dtype=dtype))
    model.generation_config.eos_token_id = None
    return model


def _eager_moe(block, x, selected, routing):
    """The eager block's expert loop (bitsandbytes Linear4bit), for a given routing."""
    out = torch.zeros_like(x)
    for e, expert in enumerate(block.experts):
        tok, slot = torch.where(selected == e)
        if tok.numel():
            y = expert(x[tok]) * routing[tok, slot, None]
            out.index_add_(0, tok, y.to(x.dtype))
    return out


def _set_tiles(monkeypatch, **changes):
    """The same tile changes for both token-count classes of the few-token kernel."""
    for tiles in (nf4_moe.FEW_TUNING, nf4_moe.FEW_TUNING_LARGE):
        for name in ("gate_up", "down"):
            monkeypatch.setitem(tiles, name, {**tiles[name], **changes})


def _routing(block, x):
    logits = block.gate(x)
    routing = torch.softmax(logits, dim=1, dtype=torch.float)
    routing, selected = torch.topk(routing, block.top_k, dim=-1)
    return selected, (routing / routing.sum(dim=-1, keepdim=True)).to(x.dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_few_token_moe_matches_the_eager_block(cuda_bnb, tmp_path, dtype):
    # hidden 256 / intermediate 512: several K tiles per row, several N tiles per expert
    model = _quantized(tmp_path, dtype, hidden_size=256, intermediate_size=512)
    install_fast_moe(model)
    block = model.model.layers[1].block_sparse_moe
    bank = block._phyassist_bank
    for m in (2, 7, 33, 200):
        x = torch.randn(m, 256, device="cuda", dtype=dtype)
        want = block(x[None])[0][0]  # the block's own forward
        selected, routing = _routing(block, x)
        got = torch.full_like(want, float("nan"))
        got.copy_(nf4_moe.moe_few_tokens(bank, x, selected, routing, bank.code))
        assert torch.isfinite(got).all()
        rel = ((got.float() - want.float()).norm() / want.float().norm()).item()
        assert rel < (1e-2 if dtype == torch.bfloat16 else 1e-5), (m, rel)


@pytest.mark.parametrize("split", [2, 4])
def test_split_and_unrolled_kernels_compute_the_same_function(
    cuda_bnb, tmp_path, monkeypatch, split
):
    model = _quantized(tmp_path, torch.bfloat16, hidden_size=256, intermediate_size=512)
    install_fast_moe(model)
    block = model.model.layers[1].block_sparse_moe
    bank = block._phyassist_bank
    x = torch.randn(40, 256, device="cuda", dtype=torch.bfloat16)
    selected, routing = _routing(block, x)
    want = block(x[None])[0][0]
    _set_tiles(monkeypatch, split=split, unroll=2, BLOCK_N=64)
    got = nf4_moe.moe_few_tokens(bank, x, selected, routing, bank.code)
    again = nf4_moe.moe_few_tokens(bank, x, selected, routing, bank.code)
    assert torch.equal(got, again)  # partial sums are added in a fixed order: deterministic
    rel = ((got.float() - want.float()).norm() / want.float().norm()).item()
    assert rel < 1e-2, rel


@pytest.mark.parametrize(("swap", "lut"), [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_every_operand_order_and_table_matches_the_eager_block(
    cuda_bnb, tmp_path, monkeypatch, swap, lut
):
    model = _quantized(tmp_path, torch.bfloat16, hidden_size=256, intermediate_size=512)
    install_fast_moe(model)
    block = model.model.layers[1].block_sparse_moe
    bank = block._phyassist_bank
    _set_tiles(monkeypatch, swap=swap, lut=lut, BLOCK_N=64)
    for m in (3, 32, 70):
        x = torch.randn(m, 256, device="cuda", dtype=torch.bfloat16)
        selected, routing = _routing(block, x)
        want = block(x[None])[0][0]
        got = nf4_moe.moe_few_tokens(bank, x, selected, routing, bank.code)
        rel = ((got.float() - want.float()).norm() / want.float().norm()).item()
        assert rel < 1e-2, (m, rel)


def test_few_token_moe_handles_every_token_on_one_expert(cuda_bnb, tmp_path):
    """One expert with more pairs than a token chunk (several chunks), the others with none."""
    model = _quantized(tmp_path, torch.bfloat16, hidden_size=256, intermediate_size=512)
    install_fast_moe(model)
    block = model.model.layers[0].block_sparse_moe
    bank = block._phyassist_bank
    m = 150
    x = torch.randn(m, 256, device="cuda", dtype=torch.bfloat16)
    selected = torch.stack(
        [torch.full((m,), 5, device="cuda"), torch.randint(0, 2, (m,), device="cuda")], dim=1
    )
    routing = torch.rand(m, 2, device="cuda").softmax(-1).to(torch.bfloat16)
    want = _eager_moe(block, x, selected, routing)
    got = nf4_moe.moe_few_tokens(bank, x, selected, routing, bank.code)
    rel = ((got.float() - want.float()).norm() / want.float().norm()).item()
    assert rel < 1e-2, rel


@pytest.mark.parametrize("static", [True, False])
def test_suffix_after_a_cached_prefix_uses_the_kernel_and_equals_generate(
    cuda_bnb, tmp_path, monkeypatch, static
):
    """With fp32 compute, greedy tokens equal ``generate``'s exactly, on both suffix paths.

    ``static``: the suffix is written into the static cache by a captured CUDA graph (padded to
    a multiple of SUFFIX_BUCKET tokens); otherwise it extends the DynamicCache eagerly.
    """
    model = _quantized(tmp_path, torch.float32)
    calls = []
    real = nf4_moe.moe_few_tokens
    monkeypatch.setattr(nf4_moe, "moe_few_tokens", lambda *a: calls.append(a[1].shape) or real(*a))
    dec = FastDecoder(model, max_cache_len=512)
    assert dec.few_token_prefill and dec.static_suffix
    dec.static_suffix = static
    for n_prefix, n_total in ((256, 300), (256, 261), (100, 101 + fastdecode.FEW_TOKENS_MAX)):
        ids = prompt_ids(n_total, seed=n_total).cuda()
        want, _ = baseline_generate(model, ids, 24)
        prefix = dec.build_prefix(ids[0, :n_prefix].tolist())
        calls.clear()
        if static and n_total == 261:  # captured ahead of the request (a patient just opened)
            assert dec.warm_up_suffix(n_prefix, n_total - n_prefix)
            assert calls  # the capture ran the kernel
        got = dec.generate(ids, 24, prefix=prefix)
        assert got.tokens == want
        suffix = n_total - n_prefix
        if suffix <= fastdecode.FEW_TOKENS_MAX:
            assert got.static_suffix == static
            rows = -(-suffix // static_suffix.SUFFIX_BUCKET) * static_suffix.SUFFIX_BUCKET
            assert calls and all(c[0] == (rows if static else suffix) for c in calls)
            again = dec.generate(ids, 24, prefix=prefix)  # a replay (static) or a new prefill
            assert again.tokens == want
        else:
            assert not calls  # a long suffix takes generate's own prefill
            assert not got.static_suffix


def test_bf16_suffix_prefill_logits_match_the_eager_prefill(cuda_bnb, tmp_path):
    from transformers import DynamicCache

    model = _quantized(tmp_path, torch.bfloat16)
    ids = prompt_ids(300, seed=8).cuda()
    dec = FastDecoder(model, max_cache_len=512)
    prefix = dec.build_prefix(ids[0, :256].tolist())
    fast = dec.prefill_logits(ids, prefix.cache)
    prefix.cache.crop(256)
    dec.few_token_prefill = False
    eager = dec.prefill_logits(ids, prefix.cache)
    with torch.no_grad():
        full = model(ids, past_key_values=DynamicCache(config=model.config)).logits[:, -1].float()
    prefix.cache.crop(256)
    assert not dec._static_suffix_ok(256, 300)  # the eager MoE cannot be captured
    dec.few_token_prefill = True
    static = dec.static_suffix_logits(ids, prefix.cache, 256).clone()  # the captured graph
    rel_fast = ((fast - full).norm() / full.norm()).item()
    rel_eager = ((eager - full).norm() / full.norm()).item()
    rel_static = ((static - fast).norm() / fast.norm()).item()
    assert rel_fast < 4e-2, rel_fast  # typical 1e-2, as the decode path (test_fastdecode_gpu)
    assert rel_eager < 4e-2, rel_eager
    assert rel_static < 1e-2, rel_static  # the same kernels, padded to 48 rows
    top2 = full.topk(2, dim=-1).values[0]
    if top2[0] - top2[1] > 2 * (fast - full).abs().max():
        assert fast.argmax() == full.argmax()


@pytest.mark.parametrize(("q_len", "kv_len"), [(32, 1088), (7, 300)])
def test_suffix_attention_flash_path_matches_a_masked_reference(cuda_bnb, q_len, kv_len):
    import torch.nn.functional as F

    from engine.gpu.fast_attention import _suffix_prefill_attention

    q = torch.randn(1, 32, q_len, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, 8, kv_len, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(1, 8, kv_len, 128, device="cuda", dtype=torch.bfloat16)
    module = torch.nn.Module()
    module.num_key_value_groups = 4
    got, _ = _suffix_prefill_attention(module, q, k, v, None, scaling=128**-0.5)
    allowed = torch.arange(kv_len, device="cuda")[None, :] <= (
        torch.arange(q_len, device="cuda")[:, None] + kv_len - q_len
    )
    ref = F.scaled_dot_product_attention(
        q.float(),
        k.float().repeat_interleave(4, dim=1),
        v.float().repeat_interleave(4, dim=1),
        attn_mask=allowed[None, None],
        scale=128**-0.5,
    ).transpose(1, 2)
    assert got.shape == ref.shape
    assert (got.float() - ref).norm() / ref.norm() < 1e-2
