"""The product's generation uses the fast decode path: same tokens as ``generate``.

``GenerationRun`` takes an ``engine.gpu.fastdecode.FastDecoder`` for greedy runs; the Assistant
builds one for a MoE model on one GPU. On CPU the decoder runs eagerly, so CI checks here that
the streamed text, the repetition penalty, the reused prefix cache and cancel all behave as the
``generate`` path does. tests/engine/gpu/test_fastdecode_gpu.py covers the CUDA-graph 4-bit path.
"""

from __future__ import annotations

import threading

import pytest
import torch

from engine.gpu.fastdecode import FastDecoder
from engine.inference.generation import GenerationRun
from engine.settings import GenerationSettings

from .conftest import prompt_ids, tiny_mixtral


class NumberTokenizer:
    """Token i decodes to ' t<i>': enough for the streamer, no vocabulary files."""

    eos_token_id = None
    pad_token_id = 0

    def decode(self, ids, **_kwargs) -> str:
        return "".join(f" t{int(i)}" for i in ids)


def greedy(penalty: float) -> GenerationSettings:
    return GenerationSettings(do_sample=False, repetition_penalty=penalty, max_new_tokens=24)


def stream(model, ids: list[int], gen, fast=None, cache=None, cached=0):
    cancel = threading.Event()
    run = GenerationRun(
        model,
        NumberTokenizer(),
        ids,
        cancel=cancel,
        gen=gen,
        max_new_tokens=gen.max_new_tokens,
        past_key_values=cache,
        cached_tokens=cached,
        fast=fast,
    )
    return "".join(run).split(), run


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_fast_decoder_applies_the_repetition_penalty_like_generate(penalty: float) -> None:
    model = tiny_mixtral()
    ids = prompt_ids(30)
    mask = torch.ones_like(ids)
    want = model.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=False,
        max_new_tokens=20,
        repetition_penalty=penalty,
        pad_token_id=0,
    )[0, 30:].tolist()
    got = FastDecoder(model, max_cache_len=128).generate(ids, 20, repetition_penalty=penalty)
    assert got.tokens == want
    if penalty == 1.0:
        return
    plain = FastDecoder(model, max_cache_len=128).generate(ids, 20).tokens
    assert plain != want, "the penalty must change this prompt's greedy output"


def test_generation_run_streams_the_same_text_through_the_fast_path() -> None:
    model = tiny_mixtral()
    ids = prompt_ids(40)[0].tolist()
    gen = greedy(1.1)
    want, _ = stream(model, ids, gen)
    fast = FastDecoder(model, max_cache_len=128)
    got, run = stream(model, ids, gen, fast=fast)
    assert got == want and len(got) == 24
    assert run.stats.tokens == 24 and run.fast is fast
    # The run leaves its KV cache holding the prompt, for the Assistant's prefix store.
    assert run.past_key_values.get_seq_length() == len(ids)

    # A later request reuses that cache's leading 32 tokens: same text as from scratch.
    cache = run.past_key_values
    cache.crop(32)
    again, reused_run = stream(model, ids, gen, fast=fast, cache=cache, cached=32)
    assert again == want and reused_run.stats.cached_prefix_tokens == 32


def test_cancel_and_fallback_on_the_fast_path() -> None:
    model = tiny_mixtral()
    ids = prompt_ids(20)[0].tolist()
    fast = FastDecoder(model, max_cache_len=64)
    cancel = threading.Event()
    cancel.set()  # Esc before the first token: the run stops after it
    run = GenerationRun(
        model,
        NumberTokenizer(),
        ids,
        cancel=cancel,
        gen=greedy(1.0),
        max_new_tokens=16,
        fast=fast,
    )
    got = "".join(run).split()
    assert len(got) == 1 and run.stats.cancelled and run.fast is fast
    # A request longer than the decoder's static cache falls back to generate, same text.
    long_ids = prompt_ids(60)[0].tolist()
    want, _ = stream(model, long_ids, greedy(1.0))
    got, run = stream(model, long_ids, greedy(1.0), fast=fast)
    assert got == want and run.fast is None


def test_sampling_never_takes_the_fast_path() -> None:
    model = tiny_mixtral()
    fast = FastDecoder(model, max_cache_len=64)
    run = GenerationRun(
        model,
        NumberTokenizer(),
        [5, 6, 7],
        cancel=threading.Event(),
        gen=GenerationSettings(do_sample=True),
        max_new_tokens=2,
        fast=fast,
    )
    assert run.fast is None


def test_assistant_uses_the_fast_path_only_for_moe_on_a_gpu() -> None:
    from engine.inference.local_runs import fast_decode_refusal
    from engine.model.llm import LoadedModel

    moe = LoadedModel(tiny_mixtral(), NumberTokenizer(), "tiny", 1024, "cpu")
    assert "GPU" in fast_decode_refusal(moe)
    moe.device = "cuda:0"
    assert fast_decode_refusal(moe) is None
    from transformers import LlamaConfig, LlamaForCausalLM

    dense = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    )
    llama = LoadedModel(dense, NumberTokenizer(), "tiny", 1024, "cuda:0")
    assert "mixture-of-experts" in fast_decode_refusal(llama)


@pytest.mark.gpu
def test_graph_path_with_penalty_streams_generates_text_on_gpu(cuda_bnb, tiny_mixtral_dir) -> None:
    """4-bit weights, fp32 compute, CUDA graph: the wired run equals generate, token for token."""
    from engine.gpu.quant import QuantSpec, load_quantized

    model, _ = load_quantized(tiny_mixtral_dir, spec=QuantSpec(compute_dtype=torch.float32))
    model.generation_config.eos_token_id = None
    ids = prompt_ids(90, seed=3)[0].tolist()
    gen = greedy(1.2)
    want, _ = stream(model, ids, gen)
    fast = FastDecoder(model, max_cache_len=256)
    got, run = stream(model, ids, gen, fast=fast)
    assert run.fast is fast and run.error is None
    assert len(want) == 24, want
    assert got == want, (len(got), got, want)
    cache = run.past_key_values
    cache.crop(64)
    again, _ = stream(model, ids, gen, fast=fast, cache=cache, cached=64)
    assert again == want


@pytest.mark.gpu
def test_a_prefilled_cache_continues_on_the_graph_path(cuda_bnb, tiny_mixtral_dir) -> None:
    """The record read ahead on opening a patient (engine.inference.generation.prefill, forward
    passes in chunks) is a cache the fast path continues from: same tokens as generate."""
    from transformers import DynamicCache

    from engine.gpu.quant import QuantSpec, load_quantized
    from engine.inference.generation import prefill

    model, _ = load_quantized(tiny_mixtral_dir, spec=QuantSpec(compute_dtype=torch.float32))
    model.generation_config.eos_token_id = None
    ids = prompt_ids(90, seed=5)[0].tolist()
    gen = greedy(1.2)
    want, _ = stream(model, ids, gen)
    cache = DynamicCache(config=model.config)
    assert prefill(model, ids[:70], cache, 0, 32, threading.Event()) == 70
    assert cache.get_seq_length() == 70
    fast = FastDecoder(model, max_cache_len=256)
    got, run = stream(model, ids, gen, fast=fast, cache=cache, cached=70)
    assert run.fast is fast and run.error is None
    assert got == want


def _half_banned(vocab: int = 512):
    """Every odd token id banned, and token 4 never first: a mask greedy decoding would break."""
    from engine.inference.constraints import TokenConstraint

    bias = torch.zeros(vocab)
    bias[1::2] = float("-inf")
    return TokenConstraint(bias=bias, first_banned=(4,))


def test_a_token_constraint_chooses_the_same_tokens_on_the_fast_path() -> None:
    """Drafting constraints (language mask, first-token ban) hold on the fast decoder as on
    generate: same tokens, none of them banned."""
    model = tiny_mixtral()
    ids = prompt_ids(30)[0].tolist()
    gen = greedy(1.1)
    free, _ = stream(model, ids, gen)
    constraint = _half_banned()

    def run_with(fast):
        run = GenerationRun(
            model,
            NumberTokenizer(),
            ids,
            cancel=threading.Event(),
            gen=gen,
            max_new_tokens=gen.max_new_tokens,
            fast=fast,
            constraint=constraint,
        )
        return "".join(run).split(), run

    want, _ = run_with(None)
    got, run = run_with(FastDecoder(model, max_cache_len=128))
    assert run.fast is not None and got == want
    tokens = [int(t[1:]) for t in got]
    assert all(t % 2 == 0 for t in tokens) and tokens[0] != 4
    assert got != free, "the mask must change this prompt's greedy output"


def test_a_text_stop_ends_the_fast_path_run_where_generate_ends() -> None:
    model = tiny_mixtral()
    ids = prompt_ids(30)[0].tolist()
    gen = greedy(1.0)

    def run_with(fast):
        run = GenerationRun(
            model,
            NumberTokenizer(),
            ids,
            cancel=threading.Event(),
            gen=gen,
            max_new_tokens=gen.max_new_tokens,
            fast=fast,
            stop_text=lambda text: len(text.split()) >= 5,
        )
        return "".join(run).split(), run

    want, _ = run_with(None)
    got, run = run_with(FastDecoder(model, max_cache_len=128))
    assert len(want) == 5 and got == want and run.fast is not None


@pytest.mark.gpu
def test_a_token_constraint_holds_on_the_graph_path(cuda_bnb, tiny_mixtral_dir) -> None:
    """The language mask is a static bias read inside the CUDA graph: same tokens as generate
    with the same constraint, and a graph captured without the bias is not reused with it."""
    from engine.gpu.quant import QuantSpec, load_quantized

    model, _ = load_quantized(tiny_mixtral_dir, spec=QuantSpec(compute_dtype=torch.float32))
    model.generation_config.eos_token_id = None
    ids = prompt_ids(90, seed=3)[0].tolist()
    gen = greedy(1.2)
    fast = FastDecoder(model, max_cache_len=256)
    free_fast, _ = stream(model, ids, gen, fast=fast)  # captures the unbiased graph first
    constraint = _half_banned()

    def run_with(decoder):
        run = GenerationRun(
            model,
            NumberTokenizer(),
            ids,
            cancel=threading.Event(),
            gen=gen,
            max_new_tokens=gen.max_new_tokens,
            fast=decoder,
            constraint=constraint,
        )
        return "".join(run).split(), run

    want, _ = run_with(None)
    got, run = run_with(fast)
    assert run.fast is fast and run.error is None
    assert got == want and got != free_fast
    assert all(int(t[1:]) % 2 == 0 for t in got)


def test_kernel_tiles_change_only_through_use_tiles():
    """Tiles tuned for another card go in through nf4_moe.use_tiles, which refuses names and
    fields the kernels do not have (a typo would otherwise be ignored silently)."""
    from engine.gpu import nf4_moe

    saved = dict(nf4_moe.TUNING["down"])
    with pytest.raises(ValueError):
        nf4_moe.use_tiles(moe={"down": {"BLOCK_Q": 16}})
    with pytest.raises(ValueError):
        nf4_moe.use_tiles(few={"up": {"BLOCK_N": 64}})
    try:
        nf4_moe.use_tiles(moe={"down": {**saved, "num_warps": 8}})
        assert nf4_moe.TUNING["down"] == {**saved, "num_warps": 8}
    finally:
        nf4_moe.use_tiles(moe={"down": saved})
    assert nf4_moe.TUNING["down"] == saved
