"""The fast decoder's MoE block: experts stacked once, the two experts picked on the device.

Eager Mixtral asks the host which experts a token hit (``nonzero``), which synchronises the
GPU every layer and cannot be captured in a CUDA graph. :func:`install_fast_moe` stacks the
experts of each MoE block once into an :class:`ExpertBank` (the experts' parameters become
views of it, so this costs no memory) and gives the block a forward that routes on the
device and runs one of two kernels:

* ``kernel="triton"``: :mod:`engine.gpu.nf4_moe` reads each selected expert's NF4 bytes
  once (:func:`~engine.gpu.nf4_moe.moe_one_token`; a suffix of at most
  :data:`FEW_TOKENS_MAX` tokens after a cached prefix goes through
  :func:`~engine.gpu.nf4_moe.moe_few_tokens`).
* ``kernel="gather"``: copies the two experts out and calls the same bitsandbytes kernel
  (``gemm_4bit``) that the eager block calls, so the block's output is bit-identical to it.

The block takes this path only while :class:`~engine.gpu.fastdecode.FastDecoder` sets its
flags (``_set_fast``, ``_set_few``, ``_set_kernel``); everywhere else it runs its own forward.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

#: The longest suffix (new tokens after a cached prefix) prefilled with the few-token NF4 MoE
#: kernel and lower-right causal attention; longer ones take ``generate``'s own prefill.
FEW_TOKENS_MAX = 256


# Packed order of an expert's projections inside a stacked bank.
_W1, _W2, _W3 = 0, 1, 2


_PROJ = ("w1", "w2", "w3")


class FastDecodeUnsupported(RuntimeError):
    """The model's layout does not allow the fast path (the caller should use ``generate``)."""


@dataclass
class ExpertBank:
    """One MoE block's expert weights, stacked ``[num_experts, 3, ...]`` (w1, w2, w3).

    ``kind`` is ``"bnb4"`` (packed NF4 + double-quantized scales, as bitsandbytes stores them)
    or ``"dense"`` (plain ``nn.Linear`` weights). The experts' own parameters are re-pointed at
    views of these stacks, so stacking costs no memory and the eager path reads the same bytes.
    """

    kind: str
    weights: torch.Tensor  # bnb4: uint8 packed; dense: float
    shapes: tuple[tuple[int, int], ...]  # (out, in) of w1, w2, w3
    absmax8: torch.Tensor | None = None  # bnb4: uint8 [E, 3, blocks]
    absmax2: torch.Tensor | None = None  # bnb4: float32 [E, 3, blocks / 256]
    offset: torch.Tensor | None = None  # bnb4: float32 [E, 3]
    code2: torch.Tensor | None = None  # bnb4: float32 [256], the same for every expert
    code: torch.Tensor | None = None  # bnb4: the 16 NF4 levels
    blocksize: int = 64
    quant_type: str = "nf4"

    def nbytes(self) -> int:
        parts = [self.weights, self.absmax8, self.absmax2, self.offset]
        return sum(p.numel() * p.element_size() for p in parts if p is not None)


def _linear_kind(module: torch.nn.Module) -> str | None:
    try:
        import bitsandbytes as bnb

        if type(module) is bnb.nn.Linear4bit:
            return "bnb4"
    except ImportError:
        pass
    if type(module) is torch.nn.Linear and module.bias is None:
        return "dense"
    return None  # LoRA-wrapped experts, 8-bit, biases: not handled, use the eager path


def _stack_experts(experts: torch.nn.ModuleList) -> ExpertBank | None:
    modules = [[getattr(e, p) for p in _PROJ] for e in experts]
    kinds = {_linear_kind(m) for row in modules for m in row}
    if len(kinds) != 1 or None in kinds:
        return None
    kind = kinds.pop()
    shapes = tuple((m.out_features, m.in_features) for m in modules[0])
    if kind == "dense":
        flat = [[m.weight.detach().reshape(-1) for m in row] for row in modules]
        if len({t.numel() for row in flat for t in row}) != 1:
            return None
        stacked = torch.stack([torch.stack(row) for row in flat])
        for e, row in enumerate(modules):
            for j, m in enumerate(row):
                m.weight.data = stacked[e, j].view(shapes[j])
        return ExpertBank(kind="dense", weights=stacked, shapes=shapes)

    states = [[m.weight.quant_state for m in row] for row in modules]
    first = states[0][0]
    if not first.nested or first.state2.blocksize != 256:
        return None
    for row in states:
        for st in row:
            if (
                not st.nested
                or st.blocksize != first.blocksize
                or st.quant_type != first.quant_type
                or not torch.equal(st.state2.code, first.state2.code)
                or not torch.equal(st.code, first.code)
            ):
                return None
    packed = [[m.weight.data.reshape(-1) for m in row] for row in modules]
    if len({t.numel() for row in packed for t in row}) != 1:
        return None
    weights = torch.stack([torch.stack(row) for row in packed])
    absmax8 = torch.stack([torch.stack([st.absmax for st in row]) for row in states])
    absmax2 = torch.stack([torch.stack([st.state2.absmax for st in row]) for row in states])
    offset = torch.stack(
        [torch.stack([st.offset.reshape(()).float() for st in row]) for row in states]
    )
    for e, row in enumerate(modules):
        for j, m in enumerate(row):
            m.weight.data = weights[e, j].view(m.weight.data.shape)
            st = states[e][j]
            st.absmax = absmax8[e, j]
            st.state2.absmax = absmax2[e, j]
            st.offset = offset[e, j]
    return ExpertBank(
        kind="bnb4",
        weights=weights,
        shapes=shapes,
        absmax8=absmax8,
        absmax2=absmax2,
        offset=offset,
        code2=first.state2.code,
        code=first.code.float(),
        blocksize=first.blocksize,
        quant_type=first.quant_type,
    )


def _bank_linear(
    bank: ExpertBank, x: torch.Tensor, picked: dict[str, torch.Tensor], slot: int, proj: int
) -> torch.Tensor:
    """``x @ W.T`` for the expert in ``slot`` of the picked pair, projection ``proj``."""
    n_out, n_in = bank.shapes[proj]
    if bank.kind == "dense":
        return F.linear(x, picked["w"][slot, proj].view(n_out, n_in))
    return torch.ops.bitsandbytes.gemm_4bit.default(
        x,
        picked["w"][slot, proj].view(-1, 1),
        [n_out, n_in],
        picked["a2"][slot, proj],
        bank.blocksize,
        bank.quant_type,
        bias=None,
        absmax_8bit=picked["a8"][slot, proj],
        absmax_code=bank.code2,
        absmax_offset=picked["off"][slot, proj],
    )


def _fast_moe_forward(self: torch.nn.Module, hidden_states: torch.Tensor) -> Any:
    """MixtralSparseMoeBlock.forward for one token, with the experts chosen on the device.

    The routing mirrors the eager block op for op (softmax in fp32, top-k, renormalise, cast).
    With the gather kernel each expert's output, times its weight and summed, is also the eager
    block's bit for bit. The Triton kernel agrees to bf16 rounding.
    """
    batch, seq, hidden = hidden_states.shape
    n = batch * seq
    bank: ExpertBank = self._phyassist_bank
    few = (
        self._phyassist_few
        and 1 < n <= FEW_TOKENS_MAX
        and bank.kind == "bnb4"
        and self._phyassist_kernel == "triton"
    )
    if self.training or not (few or (n == 1 and self._phyassist_fast)):
        return self._phyassist_eager_forward(hidden_states)
    x = hidden_states.view(-1, hidden)
    router_logits = self.gate(x)
    routing = F.softmax(router_logits, dim=1, dtype=torch.float)
    routing, selected = torch.topk(routing, self.top_k, dim=-1)
    routing /= routing.sum(dim=-1, keepdim=True)
    routing = routing.to(x.dtype)
    if few:
        from engine.gpu import nf4_moe

        y = nf4_moe.moe_few_tokens(bank, x, selected, routing, bank.code)
        return y.view(batch, seq, hidden), router_logits
    sel = selected[0]
    if bank.kind == "bnb4" and self._phyassist_kernel == "triton":
        from engine.gpu import nf4_moe

        y = nf4_moe.moe_one_token(bank, x, sel, routing, bank.code)
        return y.view(batch, seq, hidden), router_logits
    picked = {"w": bank.weights.index_select(0, sel)}
    if bank.kind == "bnb4":
        picked["a8"] = bank.absmax8.index_select(0, sel)
        picked["a2"] = bank.absmax2.index_select(0, sel)
        picked["off"] = bank.offset.index_select(0, sel)
    act = self.experts[0].act_fn
    out = None
    for slot in range(self.top_k):
        h = act(_bank_linear(bank, x, picked, slot, _W1)) * _bank_linear(bank, x, picked, slot, _W3)
        y = _bank_linear(bank, h, picked, slot, _W2) * routing[:, slot, None]
        out = y if out is None else out + y
    return out.view(batch, seq, hidden), router_logits


def install_fast_moe(model: torch.nn.Module) -> list[ExpertBank]:
    """Stack each MoE block's experts and give the block a device-side routing path.

    Idempotent. The fast path is only taken while a block's ``_phyassist_fast`` flag is set
    (during :class:`FastDecoder` steps); everywhere else the block runs its own forward.
    """
    banks = []
    for module in model.modules():
        if not (
            hasattr(module, "experts") and hasattr(module, "gate") and hasattr(module, "top_k")
        ):
            continue
        if getattr(module, "_phyassist_bank", None) is not None:
            banks.append(module._phyassist_bank)
            continue
        bank = _stack_experts(module.experts)
        if bank is None:
            raise FastDecodeUnsupported(
                "MoE experts are not plain Linear/Linear4bit (nested NF4) modules; "
                "use generate() for this model."
            )
        module._phyassist_bank = bank
        module._phyassist_fast = False
        module._phyassist_few = False
        module._phyassist_kernel = "gather"
        module._phyassist_eager_forward = module.forward
        module.forward = types.MethodType(_fast_moe_forward, module)
        banks.append(bank)
    return banks


def _moe_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    blocks = getattr(model, "_phyassist_blocks", None)
    if blocks is None:
        blocks = [m for m in model.modules() if hasattr(m, "_phyassist_bank")]
        if blocks:
            model._phyassist_blocks = blocks
    return blocks


def _set_fast(model: torch.nn.Module, on: bool) -> None:
    for module in _moe_blocks(model):
        module._phyassist_fast = on


def _set_few(model: torch.nn.Module, on: bool) -> None:
    for module in _moe_blocks(model):
        module._phyassist_few = on


def _set_kernel(model: torch.nn.Module, kernel: str) -> None:
    for module in _moe_blocks(model):
        module._phyassist_kernel = kernel
