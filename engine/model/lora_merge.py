"""Several LoRA adapters as one, exactly: for servers that apply one adapter per request.

A patient adapter trained over the domain adapter is used locally as a stack (PEFT adds both
deltas). vLLM applies one LoRA per request, so the remote backend sends the stack as a single
adapter whose rank is the sum of the ranks: for each module,
``B1 s1 A1 x + B2 s2 A2 x = [s1 B1 | s2 B2] [A1 ; A2] x``, with the scales folded into B and
``lora_alpha = r`` (scale 1). No approximation; the weights are in float32.
"""

from __future__ import annotations

import math
from typing import Any

from engine.errors import AdapterLoadError

__all__ = ["merge_loras", "scale_of"]

_A, _B = ".lora_A.weight", ".lora_B.weight"


def scale_of(config: dict[str, Any]) -> float:
    """PEFT's scaling: ``alpha / r`` (``alpha / sqrt(r)`` with rsLoRA)."""
    r = int(config["r"])
    alpha = float(config.get("lora_alpha", r))
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


def _check(config: dict[str, Any]) -> None:
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise AdapterLoadError(f"Only LoRA adapters can be served, not {config['peft_type']}.")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise AdapterLoadError("Adapters with per-module ranks cannot be merged for serving.")
    if config.get("modules_to_save"):
        raise AdapterLoadError("Adapters that also save whole modules cannot be served.")
    if config.get("bias", "none") != "none" or config.get("lora_bias"):
        raise AdapterLoadError("Adapters with trained biases cannot be merged for serving.")


def merge_loras(
    parts: list[tuple[dict[str, Any], dict[str, Any]]],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(config, state_dict)`` of one LoRA equal to the sum of ``parts``' deltas."""
    import torch

    if not parts:
        raise AdapterLoadError("No adapter to serve.")
    for config, _ in parts:
        _check(config)
    modules: dict[str, list[tuple[Any, Any]]] = {}
    for config, state in parts:
        scale = scale_of(config)
        for key, a in state.items():
            if not key.endswith(_A):
                continue
            prefix = key[: -len(_A)]
            b = state.get(prefix + _B)
            if b is None:
                raise AdapterLoadError(f"The adapter lacks {prefix + _B}.")
            modules.setdefault(prefix, []).append(
                (a.detach().to(torch.float32), b.detach().to(torch.float32) * scale)
            )
    rank = sum(int(config["r"]) for config, _ in parts)
    merged: dict[str, Any] = {}
    for prefix, pieces in modules.items():
        in_features, out_features = pieces[0][0].shape[1], pieces[0][1].shape[0]
        a_rows, b_cols = [], []
        for config, _ in parts:
            r = int(config["r"])
            found = next((p for p in pieces if p[0].shape[0] == r), None)
            if found is not None:  # (blocks may pair up in any order: the sum is the same)
                pieces.remove(found)
                a_rows.append(found[0])
                b_cols.append(found[1])
            else:  # this adapter does not touch the module: a zero block of its rank
                a_rows.append(torch.zeros(r, in_features))
                b_cols.append(torch.zeros(out_features, r))
        merged[prefix + _A] = torch.cat(a_rows, dim=0).contiguous()
        merged[prefix + _B] = torch.cat(b_cols, dim=1).contiguous()
    targets: list[str] = sorted(
        {t for config, _ in parts for t in _as_list(config.get("target_modules"))}
    )
    config = dict(parts[-1][0])
    config.update(
        r=rank,
        lora_alpha=rank,
        use_rslora=False,
        target_modules=targets,
        lora_dropout=0.0,
        rank_pattern={},
        alpha_pattern={},
    )
    return config, merged


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]
