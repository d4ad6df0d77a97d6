"""A drafting :class:`~engine.inference.constraints.TokenConstraint` sent to a vLLM server.

The structured draft's rules (language mask, no empty item, no repeated n-grams) are what
keep the embedded model's drafts readable, so the remote backend must apply the very same
rules on the server. The client encodes the constraint as one JSON string in the request's
``vllm_xargs`` (the language mask as a compressed bitmap: ~2 KB rather than 30k ids); the
server's logits processor (``engine.inference.vllm_logits``, loaded by ``phyassist server``)
decodes it and runs the same :class:`~engine.inference.constraints.ConstraintProcessor` on
each request's row of logits. One implementation, both backends.
"""

from __future__ import annotations

import base64
import json
import threading
import zlib
from collections import OrderedDict
from typing import Any

import torch

from engine.inference.constraints import ConstraintProcessor, TokenConstraint

__all__ = ["XARG", "apply_to_row", "decode", "encode"]

XARG = "phyassist_constraint"  # the key in vllm_xargs / SamplingParams.extra_args


def _pack_mask(bias: torch.Tensor) -> str:
    banned = torch.isneginf(bias).to(torch.uint8).numpy()
    import numpy as np

    return base64.b64encode(zlib.compress(np.packbits(banned).tobytes(), 6)).decode("ascii")


def _unpack_mask(data: str, size: int) -> torch.Tensor:
    import numpy as np

    bits = np.unpackbits(np.frombuffer(zlib.decompress(base64.b64decode(data)), dtype=np.uint8))
    bias = torch.zeros(size, dtype=torch.float32)
    bias[torch.from_numpy(bits[:size].astype(bool))] = float("-inf")
    return bias


# The packed language mask of a bias tensor, computed once per tensor (they are cached per
# tokenizer and language, so a handful exist).
_PACKED: dict[int, tuple[torch.Tensor, str]] = {}


def encode(constraint: TokenConstraint) -> str:
    """The constraint as one JSON string (what ``vllm_xargs`` carries)."""
    out: dict[str, Any] = {
        "first": list(constraint.first_banned),
        "end": list(constraint.end_ids),
        "min": constraint.min_tokens,
        "avoid": [list(seq) for seq in constraint.avoid],
        "own": constraint.no_repeat,
        "copy": [list(seq) for seq in constraint.copy_source],
    }
    if constraint.bias is not None:
        bias = constraint.bias
        hit = _PACKED.get(id(bias))
        if hit is None or hit[0] is not bias:
            hit = (bias, _pack_mask(bias))
            _PACKED[id(bias)] = hit
        out["mask"] = hit[1]
        out["size"] = int(bias.shape[0])
    return json.dumps(out, separators=(",", ":"))


# Server side: decoded masks by their text (each request of a draft sends the same one).
_MASKS: OrderedDict[str, torch.Tensor] = OrderedDict()
_MASKS_LOCK = threading.Lock()


def decode(data: str) -> TokenConstraint:
    """``encode``'s JSON back into a constraint (the repetition penalty travels as the
    request's own ``repetition_penalty``)."""
    raw = json.loads(data)
    bias = None
    if "mask" in raw:
        key = raw["mask"]
        with _MASKS_LOCK:
            bias = _MASKS.get(key)
            if bias is None:
                bias = _unpack_mask(key, int(raw["size"]))
                _MASKS[key] = bias
                while len(_MASKS) > 8:
                    _MASKS.popitem(last=False)
    return TokenConstraint(
        bias=bias,
        first_banned=tuple(int(i) for i in raw.get("first", ())),
        end_ids=tuple(int(i) for i in raw.get("end", ())),
        min_tokens=int(raw.get("min", 0)),
        avoid=tuple(tuple(int(i) for i in seq) for seq in raw.get("avoid", ())),
        no_repeat=bool(raw.get("own", False)),
        copy_source=tuple(tuple(int(i) for i in seq) for seq in raw.get("copy", ())),
    )


def apply_to_row(
    processor: ConstraintProcessor, output_ids: list[int], logits: torch.Tensor
) -> torch.Tensor:
    """One request's row of logits through the local ``generate`` path's processor.

    ``processor`` was built with ``prompt_tokens=0``, so its "generated so far" is exactly
    ``output_ids``."""
    ids = torch.tensor([output_ids], dtype=torch.long)
    return processor(ids, logits.unsqueeze(0))[0]
