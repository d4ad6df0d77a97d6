"""LoRA on q/k/v/o and the router of a 4-bit Mixtral: it changes the output and switches off."""

from __future__ import annotations

import pytest
import torch

from bench.reference import baseline_generate
from engine.gpu.fastdecode import FastDecoder
from engine.gpu.quant import QuantSpec, load_quantized

from .conftest import prompt_ids

pytestmark = pytest.mark.gpu

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "block_sparse_moe.gate"]


@pytest.fixture
def peft_model(cuda_bnb, tiny_mixtral_dir):
    from peft import LoraConfig, get_peft_model

    # fp32 activations over 4-bit weights: greedy comparisons are then exact (see
    # test_fastdecode_gpu.py for why bf16 ones are made step by step).
    model, _ = load_quantized(tiny_mixtral_dir, spec=QuantSpec(compute_dtype=torch.float32))
    model.generation_config.eos_token_id = None
    cfg = LoraConfig(
        r=32,
        lora_alpha=32,
        lora_dropout=0.05,
        target_modules=TARGETS,
        init_lora_weights=False,  # random A and B: the adapter is not a no-op
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(0)
    return get_peft_model(model, cfg).eval()


def test_adapter_targets_include_the_router(peft_model):
    names = [n for n, _ in peft_model.named_modules() if n.endswith("block_sparse_moe.gate")]
    assert names and all(hasattr(peft_model.get_submodule(n), "lora_A") for n in names)


def test_adapter_changes_output_and_switches_off(peft_model):
    ids = prompt_ids(32).cuda()
    with torch.no_grad():
        with_adapter = peft_model(ids).logits
        with peft_model.disable_adapter():
            base = peft_model(ids).logits
        again = peft_model(ids).logits
    assert not torch.allclose(with_adapter, base, atol=1e-3)
    assert torch.equal(again, with_adapter)


def test_fast_path_follows_the_active_adapter(peft_model):
    ids = prompt_ids(64, seed=5).cuda()
    dec = FastDecoder(peft_model, max_cache_len=256)
    want_on, _ = baseline_generate(peft_model, ids, 32)
    got_on = dec.generate(ids, 32).tokens
    with peft_model.disable_adapter():
        want_off, _ = baseline_generate(peft_model, ids, 32)
        got_off = dec.generate(ids, 32).tokens
    assert got_on == want_on
    assert got_off == want_off
    assert got_on != got_off
    assert len(dec._graphs) == 2  # one graph per adapter state, kept for instant switching


def test_training_mode_is_refused_before_capture(peft_model):
    dec = FastDecoder(peft_model, max_cache_len=128)
    peft_model.train()  # dropout on: it would be frozen into the captured graph
    try:
        with pytest.raises(ValueError, match="training mode"):
            dec.generate(prompt_ids(16).cuda(), 4)
    finally:
        peft_model.eval()
