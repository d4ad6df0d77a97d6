"""The fast decoder's attention functions, registered with transformers' AttentionInterface.

* :func:`_gqa_decode_attention` (one decode step over the static cache): folds each KV
  group's query heads together instead of repeating K and V; for bf16/fp16 on CUDA it uses
  :func:`engine.gpu.nf4_moe.decode_attention`, a split-K kernel.
* :func:`_suffix_prefill_attention` (new tokens after a cached prefix): lower-right causal
  flash attention with grouped K/V.
* :func:`_static_suffix_attention` (such a suffix written into the static cache by a captured
  graph): the same, over the cache rows the graph's mask covers.

:class:`~engine.gpu.fastdecode.FastDecoder` selects one by name on the model config for the
duration of a call and puts the config back after.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F

GQA_DECODE = "phyassist_gqa_decode"
#: Which decode attention a ``FastDecoder`` asks for: "triton" (engine.gpu.nf4_moe's split-K
#: decode kernel, bf16/fp16 on CUDA; 90 against 80 tokens/s on an H100, bench/RESULTS.md) or
#: "sdpa" (grouped query heads through SDPA, on ``sdpa_backends`` or PyTorch's own choice).
DecodeAttention = Literal["triton", "sdpa"]
#: Set on the model config while a FastDecoder steps: (attention, SDPA backends or None).
_DECODE_CHOICE = "_phyassist_decode_choice"


def _gqa_decode_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """One query token: fold each KV group's query heads into the query length.

    HF's SDPA path repeats K and V to all query heads whenever a mask is given (it is, over a
    static cache): 4x the cache bytes written and read again every layer. Query head ``h`` uses
    KV head ``h // group``, so ``[b, heads, 1, d]`` viewed as ``[b, kv_heads, group, d]`` attends
    the un-repeated cache with the same mask.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    b, hq, q_len, d = query.shape
    hkv = key.shape[1]
    if q_len != 1 or hq % hkv or attention_mask is None or attention_mask.dim() != 4:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs
        )
    mask = attention_mask[:, :, :, : key.shape[-2]]
    from engine.gpu import nf4_moe

    attention, backends = getattr(getattr(module, "config", None), _DECODE_CHOICE, ("triton", None))
    if (
        attention == "triton"
        and query.is_cuda
        and b == 1
        and query.dtype in (torch.bfloat16, torch.float16)
        and nf4_moe.available()
    ):
        scale = scaling if scaling is not None else d**-0.5
        return nf4_moe.decode_attention(query, key, value, mask, scale), None
    q = query.reshape(b, hkv, hq // hkv, d)
    if backends:
        from torch.nn.attention import sdpa_kernel

        with sdpa_kernel(backends):
            out = F.scaled_dot_product_attention(q, key, value, attn_mask=mask, scale=scaling)
    else:
        out = F.scaled_dot_product_attention(q, key, value, attn_mask=mask, scale=scaling)
    return out.reshape(b, hq, 1, d).transpose(1, 2).contiguous(), None


SUFFIX_PREFILL = "phyassist_suffix_prefill"


def _suffix_prefill_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """New tokens after a cached prefix, one unpadded sequence: lower-right causal attention.

    HF's SDPA path gives such a query a materialised mask, which rules out the flash kernel, and
    therefore repeats K and V to every query head: 4x the whole cache (8k tokens) written and
    read again in every layer. The mask of a single unpadded sequence whose queries are the last
    ``q_len`` positions is exactly ``causal_lower_right``, which SDPA runs on the flash kernel
    with grouped K/V. Otherwise (fp32, CPU) HF's SDPA path gets that mask materialised. Only
    :meth:`FastDecoder._prefill` selects this function, for one unpadded sequence.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    b, hq, q_len, _ = query.shape
    kv_len = key.shape[-2]
    if (
        query.is_cuda
        and b == 1
        and 1 < q_len < kv_len
        and query.dtype in (torch.bfloat16, torch.float16)
        and hq % key.shape[1] == 0
        and not dropout
    ):
        from torch.nn.attention.bias import causal_lower_right

        out = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=causal_lower_right(q_len, kv_len),
            scale=scaling,
            enable_gqa=hq != key.shape[1],
        )
        return out.transpose(1, 2).contiguous(), None
    if attention_mask is None and q_len > 1:
        # transformers builds no mask for a custom attention function: make the lower-right one.
        rows = torch.arange(q_len, device=query.device)[:, None] + (kv_len - q_len)
        attention_mask = (torch.arange(kv_len, device=query.device)[None, :] <= rows)[None, None]
    return sdpa_attention_forward(
        module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs
    )


STATIC_SUFFIX = "phyassist_static_suffix"


def _static_suffix_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """A suffix written into the static cache: attend to its first ``mask.shape[-1]`` rows.

    :meth:`FastDecoder._static_suffix_forward` passes a ``[1, 1, q_len, L]`` lower-right causal
    mask whose width ``L`` (prefix + padded suffix) is fixed for the captured graph; the rows
    past ``L`` are other requests' leftovers. The slice then goes through
    :func:`_suffix_prefill_attention` (flash with grouped K/V on CUDA).
    """
    if attention_mask is None or attention_mask.dim() != 4:
        raise ValueError("the static suffix attention needs its [1, 1, q, L] mask")
    kv_len = attention_mask.shape[-1]
    return _suffix_prefill_attention(
        module,
        query,
        key[:, :, :kv_len],
        value[:, :, :kv_len],
        None,
        dropout,
        scaling,
        is_causal,
        **kwargs,
    )


def _register_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(GQA_DECODE, _gqa_decode_attention)
    AttentionInterface.register(SUFFIX_PREFILL, _suffix_prefill_attention)
    AttentionInterface.register(STATIC_SUFFIX, _static_suffix_attention)
