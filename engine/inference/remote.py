"""The model on an OpenAI-compatible server (vLLM): ``backend.kind = "openai"``.

:class:`RemoteAssistant` is the :class:`~engine.inference.assistant.Assistant` with its
generation moved to the server. The prompt side does not change: the same tokenizer (read
from the model's directory, no weights), the same record fitting, the same structured
drafting item by item with the engine's headings. Each run is a streaming ``/v1/completions``
request over the exact prompt token ids (so both backends see the same ids), greedy with the
same repetition penalty, its drafting constraint applied on the server by the same code
(``engine.inference.remote_constraint``), and the patient's adapter named as the request's
``model``. Stop rules that read the text (an item ended, a loop) run here, on the tokens as
they arrive, and close the request.

Adapters stay encrypted at rest: :class:`ServedAdapters` decrypts one into a 0700 directory
on a memory filesystem, has the server load it (``/v1/load_lora_adapter``) and removes the
files before returning. A patient's adapter is unloaded when another patient is opened and
on lock (``use_patient(None)``).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from engine.errors import PhyAssistError, ServerError
from engine.inference.assistant import Assistant
from engine.inference.constraints import TokenConstraint
from engine.inference.context import CountingCache
from engine.inference.generation import is_looping
from engine.inference.openai_client import ServerClient, client_for, server_address
from engine.inference.remote_constraint import XARG, encode
from engine.inference.stream import GenerationStats
from engine.model.adapters import AdapterRegistry, domain_adapter_path, read_adapter_dir
from engine.model.llm import LoadedModel, load_tokenizer
from engine.records import Patient
from engine.settings import Settings
from engine.trust.risk import RiskFlag, assess, found_by
from engine.trust.risk_model import assess_with_model

__all__ = ["RemoteAssistant", "RemoteRun", "ServedAdapters", "memory_dir"]

AdapterParts = list[tuple[dict[str, Any], dict[str, Any]]]


def memory_dir() -> Path:
    """A directory on a memory filesystem for decrypted adapter files (never on disk)."""
    for candidate in (os.environ.get("XDG_RUNTIME_DIR"), "/dev/shm"):
        if candidate and Path(candidate).is_dir() and os.access(candidate, os.W_OK):
            return Path(candidate)
    raise ServerError(
        "No memory filesystem (/dev/shm or $XDG_RUNTIME_DIR) to hand an adapter to the server "
        "without writing it to disk; the base model is used."
    )


class ServedAdapters:
    """The adapters this process has put on the server, by name, and how to put each back
    (the server forgets them when it restarts)."""

    def __init__(self, client: ServerClient) -> None:
        self.client = client
        self._sources: dict[str, Callable[[], AdapterParts]] = {}
        self._lock = threading.Lock()

    def ensure(self, name: str, source: Callable[[], AdapterParts]) -> None:
        """Load ``name`` on the server unless this process already did."""
        with self._lock:
            if name in self._sources:
                return
            self._upload(name, source())
            self._sources[name] = source

    def reload(self, name: str) -> bool:
        """Load ``name`` again (after a server restart); False if it was never ours."""
        with self._lock:
            source = self._sources.get(name)
            if source is None:
                return False
            self._upload(name, source())
            return True

    def drop(self, name: str) -> None:
        with self._lock:
            if self._sources.pop(name, None) is not None:
                self.client.unload_lora(name)

    def drop_patients(self) -> None:
        """At exit: unload every patient adapter this process loaded (best effort; the
        shared domain adapter stays for the other counselors)."""
        for name in [n for n in self._sources if n.startswith("patient-")]:
            try:
                self.drop(name)
            except PhyAssistError:
                return  # the server is gone: it holds nothing any more

    def _upload(self, name: str, parts: AdapterParts) -> None:
        from safetensors.torch import save_file

        from engine.model.lora_merge import merge_loras

        config, state = merge_loras(parts)  # one adapter (a stack is summed exactly), float32
        holder = Path(tempfile.mkdtemp(prefix="phyassist-lora-", dir=memory_dir()))
        try:
            os.chmod(holder, 0o700)
            config_path = holder / "adapter_config.json"
            fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(config, handle)
            weights = holder / "adapter_model.safetensors"
            os.close(os.open(weights, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            save_file(state, str(weights))
            try:
                self.client.load_lora(name, holder)
            except ServerError as exc:
                if "already" not in str(exc).lower():  # loaded by another counselor: fine
                    raise
        finally:
            shutil.rmtree(holder, ignore_errors=True)  # the server holds it in memory now


class RemoteRun:
    """One streaming completion; the same interface as ``generation.GenerationRun``
    (iterate for text, then ``stats``), the tokens decoded here with the local tokenizer."""

    def __init__(
        self,
        owner: RemoteAssistant,
        model: str,
        input_ids: list[int],
        *,
        cancel: threading.Event,
        max_new_tokens: int,
        start: float,
        constraint: TokenConstraint | None = None,
        stop_text: Callable[[str], bool] | None = None,
    ) -> None:
        self.owner = owner
        self.model = model
        self.input_ids = input_ids
        self.cancel = cancel
        self.max_new_tokens = max_new_tokens
        self.start = start
        self.constraint = constraint
        self.stop_text = stop_text
        self.looped = False
        self.error: BaseException | None = None
        self.stats: GenerationStats | None = None
        self.tokens: list[int] = []
        self._first: float | None = None
        self._last: float | None = None
        self._cached = 0

    def payload(self) -> dict[str, Any]:
        gen = self.owner.settings.generation
        penalty = gen.repetition_penalty
        if self.constraint is not None and self.constraint.repetition_penalty is not None:
            penalty = self.constraint.repetition_penalty
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": self.input_ids,
            "max_tokens": self.max_new_tokens,
            "repetition_penalty": penalty,
            "stop_token_ids": self.owner.eos_ids,
            "skip_special_tokens": True,
            "return_token_ids": True,
            "stream_options": {"include_usage": True},
        }
        if gen.do_sample:
            body.update(temperature=max(gen.temperature, 1e-3), top_p=gen.top_p)
        else:
            body.update(temperature=0.0)
        if self.constraint is not None:
            body["vllm_xargs"] = {XARG: encode(self.constraint)}
        return body

    def __iter__(self) -> Iterator[str]:
        streamer = _Collector(self.owner.model.tokenizer)
        loop_run = self.owner.settings.generation.stop_loop_tokens
        stop = False
        try:
            for event in self.owner.completion_events(self.payload(), self.cancel):
                usage = event.get("usage") or {}
                details = usage.get("prompt_tokens_details") or {}
                self._cached = int(details.get("cached_tokens") or self._cached)
                for choice in event.get("choices") or []:
                    # One token at a time, as generate's stopping criteria see them: a stop
                    # rule ends the text at the same token on both backends.
                    for token in choice.get("token_ids") or []:
                        stop = self._take(int(token), streamer, loop_run)
                        yield from streamer.drain()
                        if stop:
                            break
                if stop or self.cancel.is_set():
                    break
            streamer.end()
            yield from streamer.drain()
        except PhyAssistError as exc:
            self.error = exc
            raise
        finally:
            self._finish()

    def _take(self, token: int, streamer: _Collector, loop_run: int) -> bool:
        """Record one generated token; whether a stop rule ends the run here."""
        import torch

        now = time.perf_counter()
        self._first = self._first or now
        self._last = now
        self.tokens.append(token)
        streamer.put(torch.tensor([token]))
        if loop_run and is_looping(self.tokens, loop_run):
            self.looped = True
            return True
        if self.stop_text is not None:
            text = self.owner.model.tokenizer.decode(self.tokens, skip_special_tokens=True)
            if self.stop_text(text):
                return True
        return self.cancel.is_set()

    def _finish(self) -> None:
        end = time.perf_counter()
        count = len(self.tokens)
        rate = 0.0
        if count >= 2 and self._first is not None and self._last and self._last > self._first:
            rate = (count - 1) / (self._last - self._first)
        self.stats = GenerationStats(
            ttft_s=(self._first or end) - self.start,
            tokens=count,
            tokens_per_s=rate,
            total_s=end - self.start,
            cancelled=self.cancel.is_set(),
            prompt_tokens=len(self.input_ids),
            cached_prefix_tokens=self._cached,
            looped=self.looped,
        )


class _Collector:
    """transformers' ``TextStreamer`` text chunking (what the local backend streams), kept
    in a list: the same tokens give the same chunks on both backends."""

    def __init__(self, tokenizer: Any) -> None:
        from transformers import TextStreamer

        collector = self

        class _Streamer(TextStreamer):
            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                # invalid UTF-8 (a cut character, or bytes the model got wrong): as locally
                text = text.replace("\ufffd", "")
                if text:
                    collector.out.append(text)

        self.out: list[str] = []
        self._streamer = _Streamer(tokenizer, skip_prompt=False, skip_special_tokens=True)

    def put(self, value: Any) -> None:
        self._streamer.put(value)

    def end(self) -> None:
        self._streamer.end()

    def drain(self) -> list[str]:
        out, self.out = self.out, []
        return out


class RemoteAssistant(Assistant):
    """:class:`Assistant` whose model runs on ``settings.backend.base_url``."""

    def __init__(self, settings: Settings, client: ServerClient | None = None) -> None:
        super().__init__(settings)
        self.client = client
        self.served = ""  # the base model's name on the server
        self.eos_ids: list[int] = []
        self._served_adapters: ServedAdapters | None = None
        self._adapter: str | None = None  # the adapter named in requests (None: the base)
        self._patient_adapter: str | None = None  # ours to unload when the patient changes
        # Names carry a per-process nonce: two counselors on the same patient never unload
        # each other's adapter.
        self._nonce = secrets.token_hex(4)
        self._switch = threading.RLock()

    # Loading -------------------------------------------------------------------------------

    def load(self, progress: Callable[[str], None] | None = None) -> None:
        say = progress or (lambda _msg: None)
        say(f"Connecting to the inference server at {server_address(self.settings)}…")
        if self.client is None:
            self.client = client_for(self.settings)
        models = self._models_when_up(say)
        base = next((m for m in models if not m.get("parent")), None)
        if base is None:
            raise ServerError(f"The server at {server_address(self.settings)} serves no model.")
        self.served = str(base["id"])
        say("Reading the model's tokenizer…")
        tokenizer = load_tokenizer(self.settings, say)
        window = self.settings.model.context_window or int(base.get("max_model_len") or 2048)
        self._loaded = LoadedModel(
            model=None,
            tokenizer=tokenizer,
            name=self.served,
            context_window=window,
            device="server",
            source="server",
        )
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        self.eos_ids = [int(i) for i in eos]
        self._count = CountingCache(
            lambda text: len(tokenizer.encode(text, add_special_tokens=False))
        )
        self._served_adapters = ServedAdapters(self.client)
        atexit.register(self._served_adapters.drop_patients)  # a quit leaves none behind
        self.prefix_cache.enabled = False  # the server keeps its own (vLLM prefix caching)
        self.use_patient(None)

    def _models_when_up(self, say: Callable[[str], None]) -> list[dict[str, Any]]:
        """The server's models, waiting up to ``backend.wait_for_server_s`` for a server
        that is still starting (a refused key or any other answer fails at once)."""
        assert self.client is not None
        deadline = time.monotonic() + self.settings.backend.wait_for_server_s
        while True:
            try:
                return self.client.models()
            except ServerError as exc:
                if "not reachable" not in str(exc) or time.monotonic() >= deadline:
                    raise
                say(f"Waiting for the inference server at {server_address(self.settings)}…")
                time.sleep(2.0)

    @property
    def model_label(self) -> str:
        if self._loaded is None:
            return "model not loaded"
        backend = self.settings.backend
        host = f"unix:{backend.socket}" if backend.socket else urlsplit(backend.base_url).netloc
        return f"{self._loaded.name} · {self._suffix} · server {host}"

    @property
    def active_adapter(self) -> str | None:
        return self._adapter

    # Adapters ------------------------------------------------------------------------------

    def use_patient(self, patient: Patient | None, store: Any | None = None) -> str:
        """The same choice as the local backend (the patient's active adapter, stacked on the
        domain adapter it was trained over; else the domain adapter; else the base), loaded
        on the server. The previous patient's adapter is unloaded there."""
        if self._loaded is None or self._served_adapters is None:
            return self.model_label
        served = self._served_adapters
        with self._switch:
            self.last_adapter_error = None
            problem = ""
            chosen: tuple[str, Callable[[], AdapterParts], str] | None = None
            if patient is not None and store is not None:
                registry = AdapterRegistry(store)
                version, problem = self._active_version(registry, patient)
                if version is not None:
                    try:
                        chosen = self._patient_choice(registry, patient, version)
                    except PhyAssistError as exc:
                        problem = f"adapter v{version} unusable"
                        self.last_adapter_error = f"Adapter v{version}: {exc}"
            if chosen is not None:
                try:
                    served.ensure(chosen[0], chosen[1])
                except PhyAssistError as exc:
                    problem = "adapter not loaded on the server"
                    self.last_adapter_error = f"Adapter: {exc}"
                    chosen = None
            if chosen is None:
                chosen = self._domain_choice()
            old = self._patient_adapter
            if chosen is not None and chosen[0].startswith("patient-"):
                self._patient_adapter = chosen[0]
            else:
                self._patient_adapter = None
            self._adapter = chosen[0] if chosen is not None else None
            self._suffix = chosen[2] if chosen is not None else "base"
            if problem:
                self._suffix += f" ({problem})"
            if old is not None and old != self._patient_adapter:
                try:
                    served.drop(old)
                except PhyAssistError as exc:  # the server is down: it holds nothing anyway
                    self.last_adapter_error = self.last_adapter_error or str(exc)
        return self.model_label

    def _patient_choice(
        self, registry: AdapterRegistry, patient: Patient, version: int
    ) -> tuple[str, Callable[[], AdapterParts], str]:
        from engine.model.stack import stack_base

        domain_path = stack_base(registry.card(patient.id, version), self.settings.model)
        # Read (and so check) the adapter now: a damaged one falls back at once.
        registry.read(patient.id, version)
        name = f"patient-{patient.id[:12]}-v{version}-{self._nonce}"

        def parts() -> AdapterParts:
            own = registry.read(patient.id, version)
            return [read_adapter_dir(domain_path), own] if domain_path is not None else [own]

        suffix = f"domain + adapter v{version}" if domain_path else f"adapter v{version}"
        return name, parts, suffix

    def _domain_choice(self) -> tuple[str, Callable[[], AdapterParts], str] | None:
        """The shipped domain adapter (public weights: shared by every counselor)."""
        assert self._served_adapters is not None
        try:
            path = domain_adapter_path(self.settings.model)
        except PhyAssistError as exc:
            self.last_adapter_error = str(exc)
            return None
        if path is None:
            return None
        from engine.model.stack import adapter_identity

        identity = json.dumps(adapter_identity(path), sort_keys=True).encode()
        name = f"domain-{hashlib.sha256(identity).hexdigest()[:12]}"
        try:
            self._served_adapters.ensure(name, lambda: [read_adapter_dir(path)])
        except PhyAssistError as exc:
            self.last_adapter_error = f"Domain adapter: {exc}"
            return None
        return name, lambda: [read_adapter_dir(path)], "domain adapter"

    # Generation ----------------------------------------------------------------------------

    def completion_events(
        self, payload: dict[str, Any], cancel: threading.Event
    ) -> Iterator[dict[str, Any]]:
        """The request's events; an adapter the server lost (it restarted) is loaded again
        once, before any token came."""
        assert self.client is not None and self._served_adapters is not None
        name = payload.get("model")
        started = False
        try:
            for event in self.client.stream_completion(payload, cancel):
                started = True
                yield event
        except ServerError as exc:
            lost = not started and name != self.served and getattr(exc, "status", None) == 404
            if not lost or not self._served_adapters.reload(str(name)):
                raise
            yield from self.client.stream_completion(payload, cancel)

    def _run(  # type: ignore[override]
        self,
        patient: Patient | None,
        ids: list[int],
        cancel: threading.Event,
        max_new: int,
        start: float,
        constraint: TokenConstraint | None = None,
        stop_text: Callable[[str], bool] | None = None,
    ) -> RemoteRun:
        self.last_prompt_ids = list(ids)
        return RemoteRun(
            self,
            self._adapter or self.served,
            list(ids),
            cancel=cancel,
            max_new_tokens=max_new,
            start=start,
            constraint=constraint,
            stop_text=stop_text,
        )

    def prefill_record(self, patient: Patient, cancel: threading.Event) -> int:
        """Have the server read the patient's record prompt now (one token asked for): its
        prefix cache then holds it when the counselor's first draft comes."""
        if self._loaded is None or cancel.is_set():
            return 0
        try:
            prefix = self.record_prefix_ids(patient)
            run = self._run(patient, prefix, cancel, 1, time.perf_counter())
            for _ in run:
                pass
        except PhyAssistError:
            return 0
        return len(prefix)

    # Risk ----------------------------------------------------------------------------------

    def risk_flags(self, text: str) -> tuple[list[RiskFlag], str]:
        """As the local backend: rules, and where allowed the model's constrained yes/no per
        category, here one token chosen among the yes/no tokens by the server (greedy)."""
        why = self.risk_model_refusal()
        if why is not None:
            flags = assess(text)
            return flags, found_by(model_not_asked=why)
        try:
            flags = assess_with_model(text, self._yes_no(), ask_unflagged=True, may_drop=False)
        except Exception as exc:  # the rule flags are still shown: never lose them
            flags = assess(text)
            return flags, found_by(model_not_asked=f"the model check failed ({exc})")
        return flags, found_by(f"{self.model.name} (server)")

    def _yes_no(self) -> Callable[[str], str]:
        tokenizer = self.model.tokenizer

        def first_ids(words: tuple[str, ...]) -> list[int]:
            return sorted({tokenizer.encode(w, add_special_tokens=False)[0] for w in words})

        yes = first_ids(("yes", " yes", "Yes", " Yes", "是"))
        no = first_ids(("no", " no", "No", " No", "否"))

        def generate(prompt: str) -> str:
            ids = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
            )
            if hasattr(ids, "keys"):
                ids = ids["input_ids"]
            payload = {
                "model": self._adapter or self.served,
                "prompt": [int(i) for i in ids],
                "max_tokens": 1,
                "temperature": 0.0,
                "allowed_token_ids": yes + no,
                "return_token_ids": True,
            }
            chosen: list[int] = []
            for event in self.completion_events(payload, threading.Event()):
                for choice in event.get("choices") or []:
                    chosen.extend(choice.get("token_ids") or [])
            return "yes" if chosen and chosen[0] in yes else "no"

        return generate
