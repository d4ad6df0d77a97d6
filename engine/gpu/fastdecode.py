"""Fast single-stream greedy decoding for (4-bit) Mixtral: static KV cache + one CUDA graph a step.

Where plain ``generate`` loses time on one stream: the weights are 4-bit, so a token only needs to
read about 6.5 GiB (two of eight experts a layer). Yet each step launches about two thousand small
kernels from Python, and the MoE block asks the host which experts were hit (``nonzero``), which
synchronises the GPU every layer. This module removes both problems:

* The prompt is prefilled exactly as ``generate`` does it (a ``DynamicCache``, the same kernels),
  so the first token is the baseline's. Its keys and values are then copied into a
  ``StaticCache``.
* Every later step replays one captured CUDA graph: a fixed-shape forward over the static cache,
  with the position held in a device tensor. The MoE block picks its two experts on the device.
  The experts of a layer are stacked once, at set-up, into an :class:`ExpertBank`, and the MoE
  runs one of two kernels:

  * ``kernel="triton"`` (the default on CUDA): :mod:`engine.gpu.nf4_moe` reads each selected expert
    NF4 bytes once.
  * ``kernel="gather"``: copies the two experts out and calls the same bitsandbytes kernel
    (``gemm_4bit``) that the eager block calls, so the block's output is bit-identical to it.

  Decode attention folds each KV group's query heads together instead of repeating K and V. It
  uses :func:`engine.gpu.nf4_moe.decode_attention`, a split-K kernel, for bf16/fp16 on CUDA.
* Tokens come back through pinned memory one step behind, so the GPU never waits for Python.

What can differ from ``generate``: the decode attention covers the whole static cache under a
mask, and the Triton MoE sums in another order. In bf16 the logits can therefore differ in the
last bits, and a near-tie can flip a greedy token. tests/engine/gpu checks exact equality with fp32
compute and step-by-step agreement with bf16 (see bench/RESULTS.md).

A :class:`PrefilledPrefix` keeps the keys and values of a long prefix (the patient's record), so a
regenerate only prefills the new suffix. A suffix of at most :data:`FEW_TOKENS_MAX` tokens runs
its MoE through :func:`engine.gpu.nf4_moe.moe_few_tokens` (the NF4 experts read once, no host sync)
and attends to the cached prefix with lower-right causal flash attention
(:func:`_suffix_prefill_attention`); the first token then comes from these kernels, which agree
with the eager path to rounding (exactly, to fp32 rounding, with fp32 compute). On CUDA that
suffix is written straight into the static cache by a captured graph per (prefix length, suffix
padded to :data:`SUFFIX_BUCKET` tokens, adapter set) (:meth:`FastDecoder.static_suffix_logits`),
so the prefix is copied into the static cache once, not per request.

Graphs are kept per active adapter set, so switching between loaded LoRA adapters is a
dictionary lookup. An adapter's weights must be replaced in
place to stay valid in a captured graph (:func:`copy_adapter_in_place`).

This module holds the decoder: prefill, the decode step and its graph, the decode loop.
Its parts are their own modules: :mod:`engine.gpu.fast_moe` (expert banks and the
device-routed MoE block), :mod:`engine.gpu.fast_attention` (the attention functions) and
:mod:`engine.gpu.static_suffix` (the suffix prefill through the static cache).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from engine.gpu.fast_attention import (
    _DECODE_CHOICE,
    GQA_DECODE,
    SUFFIX_PREFILL,
    DecodeAttention,
    _register_attention,
)
from engine.gpu.fast_moe import (
    FEW_TOKENS_MAX,
    FastDecodeUnsupported,
    _moe_blocks,
    _set_fast,
    _set_few,
    _set_kernel,
    install_fast_moe,
)
from engine.gpu.static_suffix import StaticSuffix, _adapter_key, _SuffixGraph

# ---------------------------------------------------------------------------------------------
# Prefix cache
# ---------------------------------------------------------------------------------------------


@dataclass
class PrefilledPrefix:
    """Keys and values of a fixed token prefix (e.g. a patient's record) reused across requests."""

    token_ids: list[int]
    cache: Any  # transformers.DynamicCache holding exactly len(token_ids) positions

    def __len__(self) -> int:
        return len(self.token_ids)


@dataclass
class DecodeStats:
    prompt_tokens: int = 0
    reused_prefix_tokens: int = 0
    new_tokens: int = 0
    ttft_s: float = 0.0
    decode_s: float = 0.0
    graph: bool = False
    static_suffix: bool = False  # the suffix went through the static cache (captured graph)
    tokens: list[int] = field(default_factory=list)

    @property
    def decode_tokens_per_s(self) -> float:
        steps = max(self.new_tokens - 1, 0)
        return steps / self.decode_s if self.decode_s > 0 else 0.0


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The causal LM under a PEFT wrapper (LoRA layers live inside it, so calling it uses them)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _penalized(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """HF's repetition penalty on a 1-D logit row, without a host sync (graph-safe)."""
    punished = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, punished, logits)


class FastDecoder(StaticSuffix):
    """Greedy decoding of one stream with a static KV cache and a captured CUDA graph per step.

    ``model`` is a Mixtral-style causal LM (optionally PEFT-wrapped) on a single device. On CPU
    the same code runs eagerly (no graph), which is how the logic is tested without a GPU.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        max_cache_len: int = 4096,
        use_cuda_graph: bool | None = None,
        kernel: str = "auto",
        gqa_attention: bool = True,
        few_token_prefill: bool = True,
        decode_attention: DecodeAttention = "triton",
        sdpa_backends: Sequence[Any] | None = None,
    ) -> None:
        """``decode_attention`` and ``sdpa_backends`` pick the one-token attention of the
        grouped-query decode path (see :data:`DecodeAttention`); "triton" falls back to SDPA
        where its kernel cannot run (CPU, fp32, no Triton)."""
        from transformers import StaticCache

        self.model = model
        self.lm = _unwrap(model)
        devices = {p.device for p in self.lm.parameters()}
        if len(devices) != 1:
            raise FastDecodeUnsupported(
                f"the fast path needs the model on one device; it spans {sorted(map(str, devices))}"
            )
        self.device = devices.pop()
        self.use_cuda_graph = (
            self.device.type == "cuda" if use_cuda_graph is None else use_cuda_graph
        )
        if self.use_cuda_graph and self.device.type != "cuda":
            raise FastDecodeUnsupported("CUDA graphs need a CUDA device")
        self.banks = install_fast_moe(self.lm)
        from engine.gpu import nf4_moe

        all_nf4 = all(b.kind == "bnb4" for b in self.banks)
        silu = all(  # the Triton kernel has SiLU built in
            type(m.experts[0].act_fn).__name__ in ("SiLU", "SiLUActivation")
            for m in _moe_blocks(self.lm)
        )
        triton_ok = all_nf4 and silu and nf4_moe.available()
        if kernel == "auto":
            kernel = "triton" if triton_ok else "gather"
        if kernel not in ("gather", "triton"):
            raise ValueError(f"unknown MoE kernel {kernel!r}")
        if kernel == "triton" and not triton_ok:
            raise FastDecodeUnsupported(
                "the Triton MoE kernel needs NF4 experts with SiLU, on CUDA with Triton"
            )
        self.kernel = kernel
        _set_kernel(self.lm, kernel)
        self.gqa_attention = gqa_attention
        if decode_attention not in ("triton", "sdpa"):
            raise ValueError(f"unknown decode attention {decode_attention!r}")
        self.decode_choice = (decode_attention, list(sdpa_backends) if sdpa_backends else None)
        # A suffix after a cached prefix: the few-token NF4 kernel + lower-right causal attention.
        self.few_token_prefill = few_token_prefill and kernel == "triton"
        self.suffix_attention = True  # with few_token_prefill: lower-right causal flash attention
        _register_attention()
        config = self.lm.config
        max_cache_len = -(-max_cache_len // 64) * 64  # aligned rows for the attention kernels
        self.max_cache_len = max_cache_len
        self.static = StaticCache(config=config, max_cache_len=max_cache_len)
        dtype = self.lm.get_input_embeddings().weight.dtype
        head_dim = (
            getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        )
        probe = torch.zeros(
            1, config.num_key_value_heads, 1, head_dim, dtype=dtype, device=self.device
        )
        for layer in self.static.layers:
            layer.lazy_initialization(probe)
        self._tok = torch.zeros(1, 1, dtype=torch.long, device=self.device)
        self._pos = torch.zeros(1, dtype=torch.long, device=self.device)
        self._kv_arange = torch.arange(max_cache_len, device=self.device)
        vocab = self.lm.get_output_embeddings().weight.shape[0]
        self._logits = torch.zeros(vocab, dtype=dtype, device=self.device)
        # Repetition penalty (HF's RepetitionPenaltyLogitsProcessor) inside the graph: the
        # tokens seen so far as a device mask, the penalty as a device scalar.
        self._seen = torch.zeros(vocab, dtype=torch.bool, device=self.device)
        self._penalty = torch.ones((), dtype=torch.float32, device=self.device)
        self._penalize = False
        # A static additive bias over the vocabulary (engine.inference.constraints: -inf for
        # tokens outside the draft's language), read inside the graph like the penalty.
        self._bias = torch.zeros(vocab, dtype=torch.float32, device=self.device)
        self._biased = False
        self._graphs: dict[tuple[Any, ...], torch.cuda.CUDAGraph] = {}
        self._pool = torch.cuda.graph_pool_handle() if self.use_cuda_graph else None
        # A short suffix after a cached prefix goes straight into the static cache, as one
        # captured graph per (prefix length, padded suffix length, adapter set): no host work
        # for 32 layers of bitsandbytes, HF and Triton launches, and no 1 GB copy of an 8k
        # prefix into the static cache per request (bench/RESULTS.md, session 3).
        self.static_suffix = self.few_token_prefill and self.use_cuda_graph
        self._suffix_graphs: dict[tuple[Any, ...], _SuffixGraph] = {}
        # What the static cache's leading rows hold: (a weak reference to the cache they came
        # from, length, token ids), or None. Weak: a dropped patient cache is not kept alive.
        self._static_holds: tuple[Any, int, tuple[int, ...]] | None = None

    # -- prefill -------------------------------------------------------------------------------

    def _prefill(self, input_ids: torch.Tensor, past: Any) -> torch.Tensor:
        """The greedy first token after ``input_ids`` (see :meth:`prefill_logits`)."""
        return self.prefill_logits(input_ids, past).argmax(-1)

    @torch.inference_mode()
    def prefill_logits(self, input_ids: torch.Tensor, past: Any) -> torch.Tensor:
        """Run the prompt (or the part after ``past``) as ``generate``'s first step.

        Returns the last position's logits (float32, ``[1, vocab]``) and extends ``past``.

        A short suffix after a cached prefix (at most :data:`FEW_TOKENS_MAX` tokens, Triton MoE
        kernel) runs the MoE through :func:`engine.gpu.nf4_moe.moe_few_tokens` and attends with
        :func:`_suffix_prefill_attention`; the same function as the eager path, to rounding.
        """
        start = past.get_seq_length()
        total = input_ids.shape[1]
        few = self.few_token_prefill and start > 0 and total - start <= FEW_TOKENS_MAX
        cache_position = torch.arange(start, total, device=self.device)
        config = self.lm.config
        saved_attn = config._attn_implementation_internal
        if few:
            _set_few(self.lm, True)
            if saved_attn == "sdpa" and self.suffix_attention:
                config._attn_implementation_internal = SUFFIX_PREFILL
        try:
            out = self.lm(
                input_ids=input_ids[:, start:],
                attention_mask=torch.ones(1, total, dtype=torch.long, device=self.device),
                position_ids=cache_position.unsqueeze(0),
                cache_position=cache_position,
                past_key_values=past,
                use_cache=True,
                logits_to_keep=1,
            )
        finally:
            if few:
                _set_few(self.lm, False)
                config._attn_implementation_internal = saved_attn
        return out.logits[:, -1, :].float()

    def build_prefix(self, token_ids: Iterable[int]) -> PrefilledPrefix:
        """Prefill a prefix once; later :meth:`generate` calls that start with it reuse it."""
        from transformers import DynamicCache

        ids = list(token_ids)
        if not ids:
            raise ValueError("empty prefix")
        cache = DynamicCache(config=self.lm.config)
        self._prefill(torch.tensor([ids], device=self.device), cache)
        return PrefilledPrefix(token_ids=ids, cache=cache)

    def _load_static(self, dyn: Any, length: int) -> None:
        self._static_holds = None
        for layer, src in zip(self.static.layers, dyn.layers, strict=True):
            layer.keys[:, :, :length].copy_(src.keys[:, :, :length])
            layer.values[:, :, :length].copy_(src.values[:, :, :length])

    # -- one decode step -------------------------------------------------------------------------

    def _step(self) -> None:
        """Feed ``_tok`` at ``_pos``; leave the next greedy token in ``_tok`` and advance."""
        mask = (self._kv_arange <= self._pos).view(1, 1, 1, -1)
        config = self.lm.config
        saved_attn = config._attn_implementation_internal
        if self.gqa_attention and saved_attn == "sdpa":
            config._attn_implementation_internal = GQA_DECODE
        setattr(config, _DECODE_CHOICE, self.decode_choice)
        try:
            out = self.lm(
                input_ids=self._tok,
                position_ids=self._pos.view(1, 1),
                cache_position=self._pos,
                past_key_values=self.static,
                attention_mask=mask,
                use_cache=True,
                logits_to_keep=1,
            )
        finally:
            config._attn_implementation_internal = saved_attn
            delattr(config, _DECODE_CHOICE)
        logits = out.logits[:, -1, :]
        self._logits.copy_(logits.view(-1))
        if self._penalize or self._biased:
            scores = logits.view(-1).float()
            if self._penalize:
                scores = _penalized(scores, self._seen, self._penalty)
            if self._biased:
                scores = scores + self._bias
            self._tok.copy_(scores.argmax(-1).view(1, 1))
            if self._penalize:
                self._seen.index_fill_(0, self._tok.view(-1), True)
        else:
            self._tok.copy_(logits.argmax(-1).view(1, 1))
        self._pos.add_(1)

    def _graph(self) -> torch.cuda.CUDAGraph | None:
        if not self.use_cuda_graph:
            return None
        key = (_adapter_key(self.lm), self._penalize, self._biased)
        graph = self._graphs.get(key)
        if graph is not None:
            return graph
        training = [name for name, m in self.lm.named_modules() if m.training]
        if training:
            raise ValueError(
                f"{len(training)} modules are in training mode (e.g. {training[0]!r}: dropout "
                "would be active and frozen into the graph); call model.eval() first"
            )
        saved_tok, saved_pos, saved_seen = self._tok.clone(), self._pos.clone(), self._seen.clone()
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up: lazy inits, cuBLAS handles, allocator pools
                self._step()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            self._step()
        self._tok.copy_(saved_tok)
        self._pos.copy_(saved_pos)
        self._seen.copy_(saved_seen)  # warm-up and capture ran real steps: undo their marks
        self._graphs[key] = graph
        return graph

    def warm_up(self) -> None:
        """Capture the graph for the current adapter set now rather than on first use."""
        with torch.inference_mode():
            _set_fast(self.lm, True)
            try:
                self._graph()
            finally:
                _set_fast(self.lm, False)

    def forget_graphs(self) -> None:
        """Drop captured graphs (after replacing adapter tensors rather than loading in place)."""
        self._graphs.clear()

    # -- public API ----------------------------------------------------------------------------

    @torch.inference_mode()
    def generate(
        self,
        input_ids: torch.Tensor | list[int],
        max_new_tokens: int,
        *,
        eos_token_id: int | Iterable[int] | None = None,
        prefix: PrefilledPrefix | None = None,
        on_token: Callable[[int], bool | None] | None = None,
        repetition_penalty: float = 1.0,
        cache: Any | None = None,
        logits_bias: torch.Tensor | None = None,
        first_banned: Iterable[int] = (),
    ) -> DecodeStats:
        """Greedy-decode up to ``max_new_tokens``; ``on_token`` returning True stops early.

        With ``prefix`` (whose tokens must start ``input_ids``) only the rest of the prompt is
        prefilled; the prefix cache is left as it was for the next request. ``cache`` is the
        caller's own ``DynamicCache`` holding a leading part of ``input_ids`` (or nothing): it
        is extended to the whole prompt and left so, for the caller's prefix store.
        ``repetition_penalty`` applies HF's rule (divide positive, multiply negative logits of
        tokens already in the prompt or output) before every greedy choice. ``logits_bias``
        (vocabulary-sized, e.g. ``-inf`` for tokens outside a language) is added to the logits
        of every step and ``first_banned`` are never the first token, as
        ``engine.inference.constraints.ConstraintProcessor`` does for ``generate``.
        """
        from transformers import DynamicCache

        if isinstance(input_ids, list):
            input_ids = torch.tensor([input_ids])
        input_ids = input_ids.to(self.device)
        if input_ids.dim() != 2 or input_ids.shape[0] != 1:
            raise ValueError("FastDecoder decodes one sequence: input_ids must be [1, n]")
        prompt_len = input_ids.shape[1]
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if prompt_len + max_new_tokens > self.max_cache_len:
            raise ValueError(
                f"prompt ({prompt_len}) + max_new_tokens ({max_new_tokens}) exceeds the static "
                f"cache ({self.max_cache_len})"
            )
        if eos_token_id is None:
            eos: set[int] = set()
        elif isinstance(eos_token_id, int):
            eos = {eos_token_id}
        else:
            eos = set(eos_token_id)

        stats = DecodeStats(prompt_tokens=prompt_len)
        t0 = time.perf_counter()
        if prefix is not None and cache is not None:
            raise ValueError("give either prefix or cache")
        if prefix is not None:
            n = len(prefix)
            if prompt_len <= n or input_ids[0, :n].tolist() != prefix.token_ids:
                raise ValueError("input_ids do not extend the prefix")
            dyn = prefix.cache
            stats.reused_prefix_tokens = n
        elif cache is not None:
            n = cache.get_seq_length()
            if n >= prompt_len:
                raise ValueError("the cache already holds the whole prompt")
            dyn = cache
            stats.reused_prefix_tokens = n
        else:
            n = 0
            dyn = DynamicCache(config=self.lm.config)
        self._penalize = repetition_penalty != 1.0
        if self._penalize:
            self._penalty.fill_(repetition_penalty)
            self._seen.zero_()
            self._seen[input_ids[0]] = True
        self._biased = logits_bias is not None
        if logits_bias is not None:
            from engine.inference.constraints import fit_bias

            self._bias.copy_(fit_bias(logits_bias.float(), self._bias.shape[0]))
        banned = [int(i) for i in first_banned]
        try:
            via_static = self._static_suffix_ok(n, prompt_len)
            if via_static:
                logits = self.static_suffix_logits(input_ids, dyn, n)
            else:
                logits = self.prefill_logits(input_ids, dyn)
            if self._penalize:
                logits = _penalized(logits.view(-1), self._seen, self._penalty).view(1, -1)
            if self._biased or banned:
                logits = logits.float()
                if self._biased:
                    logits = logits + self._bias.view(1, -1)
                if banned:
                    logits[:, banned] = float("-inf")
            first_tok = int(logits.argmax(-1).item())
            stats.ttft_s = time.perf_counter() - t0
            stats.static_suffix = via_static
            stop = first_tok in eos or bool(on_token and on_token(first_tok))
            if via_static:
                if cache is not None:  # the caller's cache is extended to the whole prompt
                    self._extend_dynamic(dyn, n, prompt_len)
            elif not stop and max_new_tokens > 1:
                # The decode steps read the static cache; filled once the first token is out
                # (the whole prompt's keys and values: a 1 GB copy for an 8k Mixtral prompt).
                self._load_static(dyn, prompt_len)
        finally:
            if prefix is not None:
                dyn.crop(n)
        if self._penalize:
            self._seen[first_tok] = True
        tokens = [first_tok]

        t1 = time.perf_counter()
        if not stop and max_new_tokens > 1:
            self._tok.fill_(first_tok)
            self._pos.fill_(prompt_len)
            _set_fast(self.lm, True)
            try:
                graph = self._graph()
                stats.graph = graph is not None
                tokens += self._decode_loop(graph, max_new_tokens - 1, eos, on_token)
            finally:
                _set_fast(self.lm, False)
        stats.decode_s = time.perf_counter() - t1
        stats.tokens = tokens
        stats.new_tokens = len(tokens)
        return stats

    def _decode_loop(
        self,
        graph: torch.cuda.CUDAGraph | None,
        steps: int,
        eos: set[int],
        on_token: Callable[[int], bool | None] | None,
    ) -> list[int]:
        out: list[int] = []
        if graph is None:
            for _ in range(steps):
                self._step()
                tok = int(self._tok.item())
                out.append(tok)
                if tok in eos or (on_token and on_token(tok)):
                    break
            return out
        # The GPU runs step i+1 while the host reads token i: a pinned slot and an event a step.
        host = torch.empty(steps, dtype=torch.long, pin_memory=True)
        events = [torch.cuda.Event() for _ in range(2)]
        stream = torch.cuda.current_stream(self.device)
        pending = -1
        for i in range(steps):
            graph.replay()
            host[i : i + 1].copy_(self._tok.view(1), non_blocking=True)
            events[i % 2].record(stream)
            if pending >= 0:
                events[pending % 2].synchronize()
                tok = int(host[pending])
                out.append(tok)
                if tok in eos or (on_token and on_token(tok)):
                    stream.synchronize()  # the step in flight is discarded
                    return out
            pending = i
        events[pending % 2].synchronize()
        tok = int(host[pending])
        out.append(tok)
        if on_token:  # the last token is reported too (a streaming caller shows it)
            on_token(tok)
        return out


# ---------------------------------------------------------------------------------------------
# Adapter weights, loaded in place
# ---------------------------------------------------------------------------------------------


def copy_adapter_in_place(
    model: torch.nn.Module, adapter_name: str, state_dict: dict[str, torch.Tensor]
) -> int:
    """Copy a saved LoRA state dict into an already-created adapter's tensors.

    Keys as ``peft.get_peft_model_state_dict`` writes them (``...q_proj.lora_A.weight``). The
    tensors keep their storage, so CUDA graphs captured for this adapter stay valid; it also
    skips ``load_state_dict``'s per-key bookkeeping. Returns the number of tensors copied;
    raises KeyError naming a key with no place in the model.
    """
    params = dict(model.named_parameters())
    copied = 0
    for key, value in state_dict.items():
        name = key
        for part in (".lora_A.", ".lora_B.", ".lora_embedding_A.", ".lora_embedding_B."):
            if part in key:
                name = key.replace(part, f"{part}{adapter_name}.")
                break
        target = params.get(name)
        if target is None:
            raise KeyError(f"adapter tensor {key!r} has no place in the model ({name!r})")
        if target.shape != value.shape:
            raise ValueError(f"{key}: shape {tuple(value.shape)} != {tuple(target.shape)}")
        target.data.copy_(value, non_blocking=True)
        copied += 1
    return copied
