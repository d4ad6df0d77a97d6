"""A short suffix after a cached prefix, written straight into the static cache (CPU, eager).

On CUDA this forward is one captured graph per (prefix length, padded suffix length); here the
same function runs eagerly, so CI checks the padding, the lower-right mask, the bookkeeping of
which prefix the static cache holds, and the caller's cache being extended.
"""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from bench.reference import baseline_generate
from engine.gpu import fastdecode
from engine.gpu.fastdecode import FastDecoder

from .conftest import prompt_ids, tiny_mixtral


def _decoder(model, **kwargs) -> FastDecoder:
    dec = FastDecoder(model, max_cache_len=160, **kwargs)
    dec.static_suffix = True  # on by default only with CUDA graphs
    return dec


@pytest.mark.parametrize("suffix", [2, 5, 16, 17])
def test_static_suffix_greedy_equals_generate(suffix):
    model = tiny_mixtral()
    ids = prompt_ids(48 + suffix, seed=suffix)
    want, _ = baseline_generate(model, ids, 12)
    dec = _decoder(model)
    prefix = dec.build_prefix(ids[0, :48].tolist())
    got = dec.generate(ids, 12, prefix=prefix)
    assert got.static_suffix
    assert got.tokens == want
    assert prefix.cache.get_seq_length() == 48
    # Again: the static cache still holds the prefix rows (not copied again), same answer.
    holds = dec._static_holds
    again = dec.generate(ids, 12, prefix=prefix)
    assert dec._static_holds is holds
    assert again.tokens == want


def test_static_suffix_logits_equal_the_dynamic_prefill():
    model = tiny_mixtral()
    ids = prompt_ids(70, seed=3)
    dec = _decoder(model)
    prefix = dec.build_prefix(ids[0, :60].tolist())
    static = dec.static_suffix_logits(ids, prefix.cache, 60).clone()
    dynamic = dec.prefill_logits(ids, prefix.cache)
    prefix.cache.crop(60)
    torch.testing.assert_close(static, dynamic, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError):  # no prefix: not this path
        dec.static_suffix_logits(ids, DynamicCache(config=model.config), 0)


def test_another_prefix_of_the_same_length_is_loaded():
    model = tiny_mixtral()
    a, b = prompt_ids(56, seed=1), prompt_ids(56, seed=2)
    b[0, 48:] = a[0, 48:]  # same suffix, other prefix
    dec = _decoder(model)
    pa = dec.build_prefix(a[0, :48].tolist())
    pb = dec.build_prefix(b[0, :48].tolist())
    got_a = dec.generate(a, 8, prefix=pa).tokens
    got_b = dec.generate(b, 8, prefix=pb).tokens
    assert got_a == baseline_generate(model, a, 8)[0]
    assert got_b == baseline_generate(model, b, 8)[0]


def test_callers_cache_is_extended_to_the_whole_prompt():
    model = tiny_mixtral()
    ids = prompt_ids(64, seed=5)
    want, _ = baseline_generate(model, ids, 10)
    dec = _decoder(model)
    cache = DynamicCache(config=model.config)
    dec.prefill_logits(ids[:, :50], cache)
    got = dec.generate(ids, 10, cache=cache)
    assert got.static_suffix and got.tokens == want
    assert cache.get_seq_length() == 64
    full = DynamicCache(config=model.config)
    dec.prefill_logits(ids, full)
    for mine, ref in zip(cache.layers, full.layers, strict=True):
        torch.testing.assert_close(mine.keys, ref.keys, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(mine.values, ref.values, rtol=1e-4, atol=1e-4)


def test_suffix_too_long_or_past_the_cache_takes_the_dynamic_path():
    model = tiny_mixtral()
    dec = FastDecoder(model, max_cache_len=128)
    dec.static_suffix = True
    assert dec._static_suffix_ok(48, 60)
    assert not dec._static_suffix_ok(0, 12)  # no prefix
    assert not dec._static_suffix_ok(48, 49)  # one token: the decode step's job
    assert not dec._static_suffix_ok(10, 10 + fastdecode.FEW_TOKENS_MAX + 1)
    assert not dec._static_suffix_ok(118, 122)  # padded to 16 rows: 134 > 128
    ids = prompt_ids(122, seed=7)
    prefix = dec.build_prefix(ids[0, :118].tolist())
    got = dec.generate(ids, 4, prefix=prefix)
    assert not got.static_suffix
    assert got.tokens == baseline_generate(model, ids, 4)[0]
    assert not dec.warm_up_suffix(48, 12)  # nothing to capture without CUDA graphs
    dec.static_suffix = False  # switched off: never taken
    assert not dec._static_suffix_ok(48, 60)
