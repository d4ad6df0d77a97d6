"""The CUDA-graph fast path on a 4-bit model: same greedy tokens as plain ``generate``."""

from __future__ import annotations

import pytest
import torch

from engine.fastdecode import FastDecoder, _set_fast, baseline_generate, install_fast_moe
from engine.quant import load_quantized

from .conftest import prompt_ids

pytestmark = pytest.mark.gpu


@pytest.fixture
def model4(cuda_bnb, tiny_mixtral_dir):
    model, _ = load_quantized(tiny_mixtral_dir)
    model.generation_config.eos_token_id = None
    return model


def test_device_routed_4bit_moe_block_is_bit_identical(model4):
    block = model4.model.layers[1].block_sparse_moe
    x = torch.randn(1, 1, 64, dtype=torch.bfloat16, device="cuda")
    want = block(x)[0]
    (bank, *_) = install_fast_moe(model4)
    assert bank.kind == "bnb4"
    assert block(x)[0].equal(want)  # eager path over the re-pointed (stacked) weights
    _set_fast(model4, True)
    got = block(x)[0]
    _set_fast(model4, False)
    assert torch.equal(got, want)


def test_graph_decode_matches_generate_greedy(model4):
    for n_prompt, seed in ((37, 1), (200, 2)):
        ids = prompt_ids(n_prompt, seed=seed).cuda()
        want, _ = baseline_generate(model4, ids, 48)
        dec = FastDecoder(model4, max_cache_len=512)
        stats = dec.generate(ids, 48)
        assert stats.graph
        assert stats.tokens == want, (n_prompt, stats.tokens, want)


def test_graph_decode_with_prefix_cache(model4):
    ids = prompt_ids(300, seed=3).cuda()
    dec = FastDecoder(model4, max_cache_len=512)
    plain = dec.generate(ids, 24).tokens
    prefix = dec.build_prefix(ids[0, :256].tolist())
    again = dec.generate(ids, 24, prefix=prefix)
    assert again.reused_prefix_tokens == 256 and again.graph
    assert again.tokens == plain
