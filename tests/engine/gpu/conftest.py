"""Fixtures for the GPU area: tiny Mixtral configs built in the test, never downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def tiny_mixtral_config(**overrides):
    """A 2-layer Mixtral (hidden 64) whose shapes still fit bitsandbytes' 64-element blocks."""
    from transformers import MixtralConfig

    values = {
        "vocab_size": 512,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
        "max_position_embeddings": 1024,
        "sliding_window": None,
        "initializer_range": 0.1,
        "attn_implementation": "sdpa",
    }
    values.update(overrides)
    return MixtralConfig(**values)


def tiny_mixtral(dtype: torch.dtype = torch.float32, seed: int = 0, **overrides):
    from transformers import MixtralForCausalLM

    torch.manual_seed(seed)
    model = MixtralForCausalLM(tiny_mixtral_config(**overrides)).to(dtype).eval()
    model.generation_config.eos_token_id = None
    return model


def prompt_ids(n: int, vocab: int = 512, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (1, n), generator=gen)


@pytest.fixture
def tiny_mixtral_dir(tmp_path: Path) -> Path:
    """A bf16 tiny Mixtral saved as a local checkpoint, as a real model directory would be."""
    path = tmp_path / "tiny-mixtral"
    tiny_mixtral(torch.bfloat16).save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture
def cuda_bnb():
    """Skip unless a CUDA GPU and bitsandbytes are both present."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    pytest.importorskip("bitsandbytes")


@torch.inference_mode()
def forced_logits(dec, input_ids: torch.Tensor, forced: list[int]) -> torch.Tensor:
    """Logits of each decode step when fed ``forced`` tokens instead of its own choices.

    Row ``i`` scores the token after ``forced[: i + 1]``; used to compare the fast path with
    the baseline step by step without one near-tie derailing the rest of the sequence.
    """
    from transformers import DynamicCache

    from engine.gpu.fast_moe import _set_fast

    input_ids = input_ids.to(dec.device)
    prompt_len = input_ids.shape[1]
    if prompt_len + len(forced) > dec.max_cache_len:
        raise ValueError("prompt + forced tokens exceed the static cache")
    dyn = DynamicCache(config=dec.lm.config)
    dec._prefill(input_ids, dyn)
    dec._load_static(dyn, prompt_len)
    dec._pos.fill_(prompt_len)
    rows = []
    _set_fast(dec.lm, True)
    try:
        graph = dec._graph()
        for tok in forced:
            dec._tok.fill_(tok)
            if graph is None:
                dec._step()
            else:
                graph.replay()
            rows.append(dec._logits.float().clone())
    finally:
        _set_fast(dec.lm, False)
    return torch.stack(rows)
