"""The vLLM logits processor that applies PhyAssist's drafting constraints on the server.

Loaded inside the vLLM server process only (``phyassist server`` passes
``--logits-processors engine.inference.vllm_logits:DraftConstraint`` with this source tree on
``PYTHONPATH``); it imports vLLM, which the product's own environment does not have. A
request without ``vllm_xargs["phyassist_constraint"]`` is left alone.
"""

from __future__ import annotations

from typing import Any

import torch
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

from engine.inference.remote_constraint import XARG, apply_to_row, decode


class DraftConstraint(AdapterLogitsProcessor):
    """Per request: ``engine.inference.constraints.ConstraintProcessor`` on its logits row."""

    def is_argmax_invariant(self) -> bool:
        return False  # it bans tokens: greedy choices change

    def new_req_logits_processor(self, params: Any) -> Any:
        extra = getattr(params, "extra_args", None) or {}
        data = extra.get(XARG)
        if not data:
            return None
        processor = decode(data).processor(0)

        def apply(output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
            return apply_to_row(processor, output_ids, logits)

        return apply
