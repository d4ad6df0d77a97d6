"""A short suffix after a cached prefix, prefilled straight into the fast decoder's static cache.

On CUDA the suffix (padded up to a multiple of :data:`SUFFIX_BUCKET` tokens) is written by
one captured CUDA graph per (prefix length, bucket, adapter set): no host work for 32 layers
of bitsandbytes, HF and Triton launches, and no 1 GB copy of an 8k prefix into the static
cache per request (the prefix rows are copied once and kept while the same cache is used).
The least recently used of at most :data:`SUFFIX_GRAPHS_MAX` graphs is dropped first.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import torch

from engine.gpu.fast_attention import STATIC_SUFFIX
from engine.gpu.fast_moe import FEW_TOKENS_MAX, _set_few

#: A suffix prefilled through the static cache (captured CUDA graph) is padded up to a multiple
#: of this many tokens, so one graph serves every suffix length of its bucket.
SUFFIX_BUCKET = 16
#: Captured suffix-prefill graphs kept (least recently used dropped first).
SUFFIX_GRAPHS_MAX = 8


def _adapter_key(model: torch.nn.Module) -> tuple[Any, ...]:
    for module in model.modules():
        if (
            hasattr(module, "active_adapters")
            and hasattr(module, "disable_adapters")
            and hasattr(module, "lora_A")
        ):
            return (tuple(module.active_adapters), bool(module.disable_adapters))
    return ()


@dataclass
class _SuffixGraph:
    """Fixed buffers of one captured suffix prefill: ``bucket`` tokens at positions ``n``..."""

    ids: torch.Tensor  # [1, bucket] input ids (the suffix, padded with its last token)
    positions: torch.Tensor  # [bucket] cache positions n .. n + bucket - 1
    mask: torch.Tensor  # [1, 1, bucket, n + bucket] lower-right causal
    keep: torch.Tensor  # [1] index of the suffix's last real token
    logits: torch.Tensor  # [1, vocab] float32, that token's logits
    graph: Any = None  # torch.cuda.CUDAGraph once captured
    pool: Any = None


class StaticSuffix:
    """The static-suffix prefill of :class:`~engine.gpu.fastdecode.FastDecoder` (a base of
    it; the decoder provides ``lm``, ``static``, ``device``, ``max_cache_len``,
    ``use_cuda_graph``, ``few_token_prefill``, ``static_suffix``, ``_suffix_graphs``,
    ``_static_holds``, ``_logits`` and ``_load_static``)."""

    def _static_suffix_ok(self, start: int, total: int) -> bool:
        bucket = -(-(total - start) // SUFFIX_BUCKET) * SUFFIX_BUCKET
        return (
            self.static_suffix
            # the eager MoE block asks the host which experts were hit: it cannot be captured
            and (self.few_token_prefill or not self.use_cuda_graph)
            and start > 0
            and 1 < total - start <= FEW_TOKENS_MAX
            and bucket <= FEW_TOKENS_MAX
            and start + bucket <= self.max_cache_len
        )

    def _static_suffix_forward(self, entry: _SuffixGraph) -> None:
        config = self.lm.config
        saved_attn = config._attn_implementation_internal
        config._attn_implementation_internal = STATIC_SUFFIX
        _set_few(self.lm, self.few_token_prefill)
        try:
            out = self.lm(
                input_ids=entry.ids,
                position_ids=entry.positions.view(1, -1),
                cache_position=entry.positions,
                past_key_values=self.static,
                attention_mask=entry.mask,
                use_cache=True,
                logits_to_keep=entry.keep,
            )
        finally:
            _set_few(self.lm, False)
            config._attn_implementation_internal = saved_attn
        entry.logits.copy_(out.logits[:, -1, :].float())

    def _suffix_entry(self, start: int, bucket: int) -> _SuffixGraph:
        key = (start, bucket, _adapter_key(self.lm))
        entry = self._suffix_graphs.pop(key, None)
        if entry is None:
            dev = self.device
            positions = torch.arange(start, start + bucket, device=dev)
            allowed = torch.arange(start + bucket, device=dev)[None, :] <= positions[:, None]
            vocab = self._logits.numel()
            entry = _SuffixGraph(
                ids=torch.zeros(1, bucket, dtype=torch.long, device=dev),
                positions=positions,
                mask=allowed.view(1, 1, bucket, start + bucket),
                keep=torch.zeros(1, dtype=torch.long, device=dev),
                logits=torch.zeros(1, vocab, dtype=torch.float32, device=dev),
            )
            while len(self._suffix_graphs) >= SUFFIX_GRAPHS_MAX:
                self._suffix_graphs.pop(next(iter(self._suffix_graphs)))
        self._suffix_graphs[key] = entry  # most recently used last
        return entry

    def _capture_suffix(self, entry: _SuffixGraph) -> None:
        training = [name for name, m in self.lm.named_modules() if m.training]
        if training:
            raise ValueError(f"{len(training)} modules are in training mode; call eval() first")
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):  # warm-up: Triton compiles, cuBLAS handles, allocator
            self._static_suffix_forward(entry)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        entry.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=entry.pool, capture_error_mode="thread_local"):
            self._static_suffix_forward(entry)
        entry.graph = graph

    @torch.inference_mode()
    def static_suffix_logits(self, input_ids: torch.Tensor, dyn: Any, start: int) -> torch.Tensor:
        """Logits after ``input_ids`` (``dyn`` holds its first ``start`` tokens), static cache.

        The prefix rows are copied into the static cache unless it already holds them (the same
        cache object, length and tokens as last time; decode steps only write later rows). The
        suffix, padded with its last token up to a multiple of :data:`SUFFIX_BUCKET`, is written
        at positions ``start``... by one forward (a replayed CUDA graph on CUDA): the padding
        comes after every real token, so causal attention keeps it out of their results. Leaves
        the whole prompt's keys and values in the static cache; ``dyn`` is not touched.
        """
        total = input_ids.shape[1]
        if not self._static_suffix_ok(start, total):
            raise ValueError("this suffix does not fit the static suffix path")
        ids = tuple(input_ids[0, :start].tolist())
        holds = self._static_holds
        if holds is None or holds[0]() is not dyn or holds[1] != start or holds[2] != ids:
            self._load_static(dyn, start)
            self._static_holds = (weakref.ref(dyn), start, ids)
        n_sfx = total - start
        bucket = -(-n_sfx // SUFFIX_BUCKET) * SUFFIX_BUCKET
        entry = self._suffix_entry(start, bucket)
        entry.ids[0, :n_sfx].copy_(input_ids[0, start:])
        entry.ids[0, n_sfx:].fill_(int(input_ids[0, -1]))
        entry.keep.fill_(n_sfx - 1)
        if not self.use_cuda_graph:
            self._static_suffix_forward(entry)
        else:
            if entry.graph is None:
                self._capture_suffix(entry)
            entry.graph.replay()
        return entry.logits

    @torch.inference_mode()
    def warm_up_suffix(self, prefix_len: int, suffix_len: int) -> bool:
        """Capture the suffix graph for this prefix length and suffix length's bucket now.

        E.g. when a patient's record is opened, so that the first regenerate does not pay the
        capture (0.3-0.4 s for 32 Mixtral layers on an H100, more on a Triton compile). Runs on
        whatever the static cache holds and writes only rows past ``prefix_len``, so the
        prefix rows stay valid. Returns False where the path does not apply (e.g. no graphs).
        """
        if not (
            self.use_cuda_graph and self._static_suffix_ok(prefix_len, prefix_len + suffix_len)
        ):
            return False
        bucket = -(-suffix_len // SUFFIX_BUCKET) * SUFFIX_BUCKET
        entry = self._suffix_entry(prefix_len, bucket)
        if entry.graph is None:
            entry.ids.zero_()
            entry.keep.zero_()
            self._capture_suffix(entry)
        return True

    def _extend_dynamic(self, dyn: Any, start: int, length: int) -> None:
        """Append the static cache's rows ``start:length`` to ``dyn`` (the caller's cache)."""
        for i, layer in enumerate(self.static.layers):
            dyn.update(layer.keys[:, :, start:length], layer.values[:, :, start:length], i)
