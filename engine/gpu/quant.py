"""4-bit loading of Mixtral-class models with the experts quantized, plus a pre-quantized cache.

Why this module exists: with transformers 5.x the Mixtral experts are fused 3-D parameters that
bitsandbytes leaves in bf16 (about 85 GB for 8x7B); transformers 4.57 keeps one ``nn.Linear`` per
expert, which bitsandbytes turns into ``Linear4bit`` (about 25 GB). We pin transformers 4.57.6 and
bitsandbytes 0.50.2 and check the result (:func:`quantization_report`) instead of trusting it.

The first load of a bf16 checkpoint quantizes every weight (slow: each tensor passes through the
CPU); :func:`load_quantized` then writes the 4-bit model to a cache directory (``save_pretrained``
of the quantized model, written to a temporary directory and renamed into place), and later loads
read that directly. ``bitsandbytes`` is imported lazily, so this module imports on CPU-only hosts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from engine.errors import ModelLoadError

#: Versions this module was measured with (bench/RESULTS.md); a different version is allowed
#: but reported, because the expert layout is what decides whether quantization happens at all.
PINNED_TRANSFORMERS = "4.57.6"
PINNED_BITSANDBYTES = "0.50.2"

CACHE_MARKER = "phyassist-quant.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


class QuantizationError(ModelLoadError):
    """4-bit loading is impossible here (no CUDA, no bitsandbytes) or left weights unquantized."""


@dataclass(frozen=True)
class QuantSpec:
    """The QLoRA recipe: NF4 weights, double-quantized scales, bf16 compute."""

    quant_type: str = "nf4"
    double_quant: bool = True
    compute_dtype: torch.dtype = torch.bfloat16
    skip_modules: tuple[str, ...] = ()  # extra module names kept in bf16 (lm_head always is)

    def to_bnb_config(self) -> Any:
        from transformers import BitsAndBytesConfig

        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=self.quant_type,
            bnb_4bit_use_double_quant=self.double_quant,
            bnb_4bit_compute_dtype=self.compute_dtype,
            bnb_4bit_quant_storage=torch.uint8,
            llm_int8_skip_modules=list(self.skip_modules) or None,
        )

    def fingerprint(self) -> dict[str, Any]:
        return {
            "quant_type": self.quant_type,
            "double_quant": self.double_quant,
            "compute_dtype": str(self.compute_dtype).removeprefix("torch."),
            "skip_modules": list(self.skip_modules),
        }


@dataclass
class LoadReport:
    """What a load did and cost.

    ``source``: ``"checkpoint"`` (quantized during this load), ``"cache"`` (our pre-quantized
    copy) or ``"prequantized"`` (the directory itself holds 4-bit weights).
    """

    source: str
    seconds: float
    gpu_bytes: int  # torch.cuda.memory_allocated after the load, summed over the devices used
    cache_dir: str | None
    cache_written: bool = False
    cache_seconds: float = 0.0
    cache_error: str | None = None
    quant: dict[str, Any] = field(default_factory=dict)


def require_bitsandbytes() -> Any:
    """Import bitsandbytes or explain why 4-bit loading cannot happen here."""
    if not torch.cuda.is_available():
        raise QuantizationError("4-bit loading needs a CUDA GPU; none is visible.")
    try:
        import bitsandbytes as bnb
    except ImportError as exc:  # pragma: no cover - depends on the host
        raise QuantizationError(
            "4-bit loading needs bitsandbytes (pip install 'phyassist[gpu]')."
        ) from exc
    return bnb


def library_versions() -> dict[str, str]:
    import transformers

    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    try:
        import bitsandbytes

        versions["bitsandbytes"] = bitsandbytes.__version__
    except ImportError:
        versions["bitsandbytes"] = "absent"
    return versions


# ---------------------------------------------------------------------------------------------
# Cache keys
# ---------------------------------------------------------------------------------------------


def source_fingerprint(model_dir: Path) -> dict[str, Any]:
    """Identify a checkpoint by its config and weight files (name, size, mtime), not its bytes.

    Hashing 90 GB of weights would cost minutes; size + mtime change whenever the files do.
    """
    model_dir = Path(model_dir).resolve()
    files = []
    for path in sorted(model_dir.iterdir()):
        if path.is_file() and (path.suffix in WEIGHT_SUFFIXES or path.name.endswith(".json")):
            stat = path.stat()
            files.append([path.name, stat.st_size, int(stat.st_mtime)])
    return {"path": str(model_dir), "files": files}


def cache_key(model_dir: Path, spec: QuantSpec) -> str:
    payload = {
        "source": source_fingerprint(model_dir),
        "spec": spec.fingerprint(),
        "versions": {k: v for k, v in library_versions().items() if k != "torch"},
    }
    blob = json.dumps(payload, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def cache_dir_for(model_dir: Path, cache_root: Path, spec: QuantSpec | None = None) -> Path:
    spec = spec or QuantSpec()
    return Path(cache_root) / f"{Path(model_dir).resolve().name}-4bit-{cache_key(model_dir, spec)}"


def is_complete_cache(path: Path) -> bool:
    return (Path(path) / CACHE_MARKER).is_file() and (Path(path) / "config.json").is_file()


# ---------------------------------------------------------------------------------------------
# Placement: one GPU, or the layers spread over several
# ---------------------------------------------------------------------------------------------

#: accelerate's strategies for spreading the layers over the visible GPUs.
SPREAD_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
#: Kept free on every GPU when the layers are spread: KV cache, activations, CUDA graphs.
HEADROOM_BYTES = 6 << 30


@dataclass(frozen=True)
class Placement:
    """Where ``from_pretrained`` puts the weights (``device_map`` / ``max_memory``) and why."""

    device_map: str | dict[str, Any]
    max_memory: dict[Any, str] | None
    reason: str

    @property
    def single_device(self) -> bool:
        return isinstance(self.device_map, dict) and set(self.device_map) == {""}


def plan_placement(
    setting: str | None, gpu_bytes: list[int], *, headroom: int = HEADROOM_BYTES
) -> Placement:
    """Decide the device map from the setting and the visible GPUs' memory (pure: CPU-testable).

    ``setting``: None or ``"auto-select"`` (one GPU: all on it; several: spread with
    ``"auto"``), ``"single"`` (all on GPU 0), ``"cuda:N"`` (all on GPU N), or one of
    :data:`SPREAD_STRATEGIES` (spread even on one GPU, which is then plain placement). A spread
    gets ``max_memory`` of each GPU's size less ``headroom``, so the layers leave room for the
    KV cache. bitsandbytes 4-bit weights cannot be offloaded to the CPU, so no "cpu" entry.
    """
    n = len(gpu_bytes)
    if n == 0:
        raise QuantizationError("4-bit loading needs a CUDA GPU; none is visible.")
    choice = (setting or "auto-select").strip().lower()
    if choice == "auto-select":
        if n == 1:
            return Placement({"": 0}, None, "one GPU visible")
        choice, why = "auto", f"{n} GPUs visible"
    else:
        why = f"model.device_map = {setting!r}"
    if choice == "single":
        return Placement({"": 0}, None, why)
    if choice.startswith("cuda:") or choice.isdigit():
        index_text = choice.removeprefix("cuda:")
        if not index_text.isdigit() or int(index_text) >= n:
            raise QuantizationError(
                f"model.device_map {setting!r} names a GPU that is not visible ({n} visible)."
            )
        return Placement({"": int(index_text)}, None, why)
    if choice not in SPREAD_STRATEGIES:
        raise QuantizationError(
            f"Unknown model.device_map {setting!r}: use auto-select, single, cuda:N or one of "
            f"{', '.join(SPREAD_STRATEGIES)}."
        )
    max_memory = {
        i: f"{max(total - headroom, total // 2) // 2**20}MiB" for i, total in enumerate(gpu_bytes)
    }
    return Placement(choice, max_memory, why)


def visible_gpu_bytes() -> list[int]:
    """Total memory of each visible GPU (empty without CUDA)."""
    if not torch.cuda.is_available():
        return []
    return [
        torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count())
    ]


def placement_for(setting: str | None = None) -> Placement:
    """:func:`plan_placement` for the GPUs of this process."""
    return plan_placement(setting, visible_gpu_bytes())


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def _gpu_bytes() -> int:
    if not torch.cuda.is_available():
        return 0
    return sum(torch.cuda.memory_allocated(i) for i in range(torch.cuda.device_count()))


def _sync_all() -> None:
    for i in range(torch.cuda.device_count()):
        torch.cuda.synchronize(i)


def load_quantized(
    model_dir: str | os.PathLike[str],
    *,
    cache_root: str | os.PathLike[str] | None = None,
    spec: QuantSpec | None = None,
    device_map: str | Mapping[str, Any] | None = None,
    max_memory: Mapping[Any, Any] | None = None,
    write_cache: bool = True,
    attn_implementation: str = "sdpa",
) -> tuple[Any, LoadReport]:
    """Load ``model_dir`` in 4-bit (or its cached 4-bit copy) and check the experts are quantized.

    ``device_map`` is passed to ``from_pretrained``: ``None`` puts everything on the current GPU,
    ``"auto"``/``"balanced"`` (with ``max_memory``) spreads the layers over several GPUs; see
    :func:`placement_for` for the engine's choice. Nothing is downloaded: every read is
    ``local_files_only``.
    """
    require_bitsandbytes()
    from transformers import AutoModelForCausalLM

    use_expandable_segments()
    spec = spec or QuantSpec()
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise QuantizationError(f"{model_dir} is not a model directory (no config.json).")
    if device_map is None:
        device_map = {"": torch.cuda.current_device()}
    elif isinstance(device_map, str) and max_memory is None and torch.cuda.device_count() > 1:
        max_memory = plan_placement(device_map, visible_gpu_bytes()).max_memory

    try:
        prequantized = "quantization_config" in json.loads(
            (model_dir / "config.json").read_text(encoding="utf-8")
        )
    except ValueError as exc:
        raise QuantizationError(f"{model_dir}/config.json is not valid JSON: {exc}") from exc
    cached = None
    if cache_root is not None and not prequantized:
        cached = cache_dir_for(model_dir, Path(cache_root), spec)
    use_cache = cached is not None and is_complete_cache(cached)
    source_dir = cached if use_cache else model_dir

    kwargs: dict[str, Any] = {
        "device_map": device_map,
        "dtype": spec.compute_dtype,
        "local_files_only": True,
        "attn_implementation": attn_implementation,
    }
    if max_memory is not None:
        kwargs["max_memory"] = dict(max_memory)
    if not (use_cache or prequantized):
        # A cached (or already 4-bit) directory carries its own quantization_config.
        kwargs["quantization_config"] = spec.to_bnb_config()

    start = time.perf_counter()
    try:
        model = AutoModelForCausalLM.from_pretrained(source_dir, **kwargs)
    except (OSError, ValueError, RuntimeError) as exc:
        raise QuantizationError(f"Could not load {source_dir} in 4-bit: {exc}") from exc
    _sync_all()
    seconds = time.perf_counter() - start
    torch.cuda.empty_cache()  # hand back the loader's transient buffers

    quant = quantization_report(model)
    if quant["unquantized_expert_params"]:
        raise QuantizationError(
            f"{quant['unquantized_expert_params']:,} expert parameters stayed in "
            f"{quant['unquantized_expert_dtypes']}: this transformers version fuses the experts "
            f"(pin transformers=={PINNED_TRANSFORMERS})."
        )
    report = LoadReport(
        source="cache" if use_cache else ("prequantized" if prequantized else "checkpoint"),
        seconds=seconds,
        gpu_bytes=_gpu_bytes(),
        cache_dir=str(cached) if cached else None,
        quant=quant,
    )
    if cached is not None and not use_cache and write_cache:
        t0 = time.perf_counter()
        try:
            save_quantized(model, cached, source=model_dir, spec=spec)
            report.cache_written = True
        except OSError as exc:  # a full disk costs the next start time, not this load
            report.cache_error = f"{type(exc).__name__}: {exc}"
        report.cache_seconds = time.perf_counter() - t0
    return model, report


def use_expandable_segments() -> bool:
    """Let PyTorch's allocator return the loader's freed blocks to the card.

    Measured on an H100 (bench/RESULTS.md, the 4-bit load row): after loading the
    32-layer 4-bit model nvidia-smi shows 40.0 GiB with the default allocator (the loader's
    transient blocks stay reserved around the weights) and 23.4 GiB with expandable segments.
    Only possible before CUDA's allocator starts; a value the user set is left alone.
    """
    if "PYTORCH_CUDA_ALLOC_CONF" in os.environ or torch.cuda.is_initialized():
        return False
    os.environ["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"
    return True


def save_quantized(
    model: Any, target: Path, *, source: Path | None = None, spec: QuantSpec | None = None
) -> Path:
    """Write the 4-bit model so ``from_pretrained`` loads it without re-quantizing.

    Written to ``<target>.tmp-<pid>`` and renamed, so a killed process never leaves a half cache
    that would be taken for a whole one (the marker file is written last).
    """
    target = Path(target)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        # Small shards: loading materialises a shard at a time, which sets the load's peak.
        model.save_pretrained(tmp, safe_serialization=True, max_shard_size="2GB")
        marker = {
            "source": str(source) if source else None,
            "spec": (spec or QuantSpec()).fingerprint(),
            "versions": library_versions(),
            "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp / CACHE_MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------


def _is_4bit(module: torch.nn.Module) -> bool:
    try:
        import bitsandbytes as bnb
    except ImportError:
        return False
    return isinstance(module, bnb.nn.Linear4bit)


def quantization_report(model: torch.nn.Module) -> dict[str, Any]:
    """Count what is and is not 4-bit, with attention to the MoE experts.

    An expert parameter counts as quantized when its module is ``bnb.nn.Linear4bit`` and its
    storage is packed ``uint8``; anything in a floating dtype under ``.experts`` is reported.
    """
    linear4bit = 0
    expert_linear4bit = 0
    unquantized_expert = 0
    unquantized_dtypes: set[str] = set()
    packed_bytes = 0
    float_bytes = 0
    for name, module in model.named_modules():
        is_expert = ".experts" in name
        if _is_4bit(module):
            linear4bit += 1
            expert_linear4bit += int(is_expert)
            packed_bytes += module.weight.numel() * module.weight.element_size()
            continue
        for pname, param in module.named_parameters(recurse=False):
            if param.is_floating_point():
                float_bytes += param.numel() * param.element_size()
                # LoRA adapters attached to experts are meant to be float.
                if is_expert and "lora_" not in f"{name}.{pname}":
                    unquantized_expert += param.numel()
                    unquantized_dtypes.add(str(param.dtype).removeprefix("torch."))
    return {
        "linear4bit_modules": linear4bit,
        "expert_linear4bit_modules": expert_linear4bit,
        "unquantized_expert_params": unquantized_expert,
        "unquantized_expert_dtypes": sorted(unquantized_dtypes),
        "packed_weight_bytes": packed_bytes,
        "float_param_bytes": float_bytes,
    }


def expert_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The per-expert projection modules (``...experts.N.w1/w2/w3``)."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if ".experts." in name and name.rsplit(".", 1)[-1] in {"w1", "w2", "w3"}
    ]


def summary(report: LoadReport) -> dict[str, Any]:
    return asdict(report)
