"""The CUDA-graph fast path on a 4-bit model against plain ``generate``.

Two settings. With float32 compute (4-bit weights, fp32 activations) rounding differences are far
below any logit gap, so the greedy tokens must be exactly the baseline's: this checks the logic
(static cache, device-side routing, both MoE kernels, graph replay, prefix reuse). With bf16
compute (the product setting) the decode attention runs a different SDPA kernel than
``generate`` (masked static cache vs exact length) and the Triton MoE kernel sums in another
order, so the check is step by step: fed the baseline's tokens, the fast path must give the
same logits to bf16 precision and the same argmax wherever the baseline's choice is not a
near-tie. The gather kernel's MoE output must be the eager block's bit for bit.
"""

from __future__ import annotations

import pytest
import torch

from bench.reference import baseline_generate
from engine.gpu.fast_moe import _set_fast, _set_kernel
from engine.gpu.fastdecode import FastDecoder
from engine.gpu.quant import QuantSpec, load_quantized

from .conftest import forced_logits, prompt_ids

pytestmark = pytest.mark.gpu
KERNELS = ("triton", "gather")


@pytest.fixture
def model_bf16(cuda_bnb, tiny_mixtral_dir):
    model, _ = load_quantized(tiny_mixtral_dir)
    model.generation_config.eos_token_id = None
    return model


@pytest.fixture
def model_fp32(cuda_bnb, tiny_mixtral_dir):
    model, _ = load_quantized(tiny_mixtral_dir, spec=QuantSpec(compute_dtype=torch.float32))
    model.generation_config.eos_token_id = None
    return model


def test_gather_moe_block_is_bit_identical_to_eager(model_bf16):
    block = model_bf16.model.layers[1].block_sparse_moe
    x = torch.randn(1, 1, 64, dtype=torch.bfloat16, device="cuda")
    want = block(x)[0]
    dec = FastDecoder(model_bf16, max_cache_len=64, kernel="gather")
    assert dec.banks[0].kind == "bnb4"
    assert block(x)[0].equal(want)  # eager path over the re-pointed (stacked) weights
    _set_fast(model_bf16, True)
    got = block(x)[0]
    _set_kernel(model_bf16, "triton")
    tri = block(x)[0]
    _set_fast(model_bf16, False)
    assert torch.equal(got, want)
    rel = (tri.float() - want.float()).norm() / want.float().norm()
    assert rel < 1e-2


@pytest.mark.parametrize("kernel", KERNELS)
def test_fp32_graph_decode_equals_generate(model_fp32, kernel):
    dec = FastDecoder(model_fp32, max_cache_len=512, kernel=kernel)
    for n_prompt, seed in ((37, 1), (200, 2)):
        ids = prompt_ids(n_prompt, seed=seed).cuda()
        want, _ = baseline_generate(model_fp32, ids, 48)
        stats = dec.generate(ids, 48)
        assert stats.graph and dec.kernel == kernel
        assert stats.tokens == want


@pytest.mark.parametrize(
    ("kernel", "decode_attention"),
    [("triton", "sdpa"), ("gather", "sdpa"), ("triton", "triton")],
)
def test_bf16_fast_path_matches_generate_step_by_step(model_bf16, kernel, decode_attention):
    ids = prompt_ids(100, seed=4).cuda()
    with torch.no_grad():
        ref = model_bf16.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=40,
            eos_token_id=None,
            pad_token_id=0,
            output_logits=True,
            return_dict_in_generate=True,
        )
    base_tokens = ref.sequences[0, ids.shape[1] :].tolist()
    base_logits = torch.stack([x[0].float() for x in ref.logits])  # [40, vocab]
    dec = FastDecoder(
        model_bf16, max_cache_len=256, kernel=kernel, decode_attention=decode_attention
    )
    assert dec.decode_choice[0] == decode_attention
    assert dec.generate(ids, 1).tokens == base_tokens[:1]  # the prefill is generate's own
    ours = forced_logits(dec, ids, base_tokens[:-1])  # predicts base_tokens[1:]
    want = base_logits[1:]
    rel = (ours - want).norm(dim=-1) / want.norm(dim=-1)
    assert rel.max() < 4e-2, rel  # typical 1e-2: 4-bit weights, bf16 activations
    top2 = want.topk(2, dim=-1).values
    margin = top2[:, 0] - top2[:, 1]
    slack = (ours - want).abs().max(dim=-1).values
    clear = margin > 2 * slack
    assert clear.sum() >= len(clear) // 2  # most steps are not near-ties
    assert torch.equal(ours.argmax(-1)[clear], want.argmax(-1)[clear])


def test_graph_decode_with_prefix_cache(model_fp32):
    ids = prompt_ids(300, seed=3).cuda()
    dec = FastDecoder(model_fp32, max_cache_len=512)
    plain = dec.generate(ids, 24).tokens
    prefix = dec.build_prefix(ids[0, :256].tolist())
    again = dec.generate(ids, 24, prefix=prefix)
    assert again.reused_prefix_tokens == 256 and again.graph
    assert again.tokens == plain
    assert prefix.cache.get_seq_length() == 256


@pytest.mark.parametrize(("length", "valid"), [(256, 200), (1088, 1000), (256, 1)])
def test_triton_decode_attention_matches_sdpa(cuda_bnb, length, valid):
    import torch.nn.functional as F

    from engine.gpu import nf4_moe

    q = torch.randn(1, 32, 1, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, 8, length, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(1, 8, length, 128, device="cuda", dtype=torch.bfloat16)
    mask = (torch.arange(length, device="cuda") < valid).view(1, 1, 1, -1)
    ref = F.scaled_dot_product_attention(
        q.float().view(1, 8, 4, 128), k.float(), v.float(), attn_mask=mask, scale=128**-0.5
    )
    ref = ref.reshape(1, 32, 1, 128).transpose(1, 2)
    got = nf4_moe.decode_attention(q, k, v, mask, 128**-0.5).float()
    assert torch.isfinite(got).all()
    assert (got - ref).norm() / ref.norm() < 1e-2
