"""The baselines the benchmarks (and the GPU tests) compare the engine against.

They are plain library calls, timed: not product code, so they live here rather than in the
engine.
"""

from __future__ import annotations

import time

import torch
from transformers.generation.streamers import BaseStreamer

from engine.inference.generation import TokenClock


@torch.inference_mode()
def baseline_generate(
    model: torch.nn.Module, input_ids: torch.Tensor, max_new_tokens: int
) -> tuple[list[int], float]:
    """Plain ``model.generate``, greedy, exactly ``max_new_tokens`` (no EOS): (tokens, seconds)."""
    from transformers import GenerationConfig

    cfg = GenerationConfig(
        do_sample=False,
        max_new_tokens=max_new_tokens,
        eos_token_id=None,
        pad_token_id=0,
    )
    mask = torch.ones_like(input_ids)
    sync = torch.cuda.synchronize if input_ids.is_cuda else (lambda: None)
    sync()
    t0 = time.perf_counter()
    out = model.generate(input_ids=input_ids, attention_mask=mask, generation_config=cfg)
    sync()
    return out[0, input_ids.shape[1] :].tolist(), time.perf_counter() - t0


class ClockStreamer(BaseStreamer):
    """Timing only, no text: the engine benchmark's baseline wraps a plain generate in it."""

    def __init__(self, clock: TokenClock) -> None:
        self.clock = clock
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.clock.tick(int(value.numel()))

    def end(self) -> None:
        pass
