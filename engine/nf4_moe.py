"""Triton kernels for one-token MoE on bitsandbytes NF4 weights, experts chosen on the device.

Why: at one token a Mixtral layer must read two experts (3 x 29 MB of packed NF4 each); the
bitsandbytes path (gather the two experts' bytes, then six ``gemm_4bit`` calls) reads them three
times and launches a dozen kernels. These two kernels read each selected expert's bytes once,
straight from the stacked bank (:class:`engine.fastdecode.ExpertBank`), with the expert index
read from device memory, so they sit inside a CUDA graph:

* ``gate_up``: ``h[s] = silu(W1[e_s] x) * (W3[e_s] x)`` for both selected experts ``e_s``;
* ``down``: ``y = sum_s r_s * (W2[e_s] h[s])``.

Storage format (bitsandbytes 0.50, ``quant_type="nf4"``, double quantization): the weight
``[N, K]`` is flattened row-major, two 4-bit codes a byte (high nibble first); every 64 weights
share a uint8 scale code ``a8``, whose value is ``code2[a8] * absmax2[block // 256] + offset``.

Rounding follows the eager module (each projection rounded to bf16, SiLU and product in bf16,
the weighted expert outputs summed in bf16); the dot products themselves are summed in a
different order than bitsandbytes' kernel, so results agree to bf16 rounding, not bit for bit.
"""

from __future__ import annotations

from typing import Any

import torch

try:  # Triton ships with CUDA builds of PyTorch; CPU-only hosts simply do not get this path.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the host
    triton = None
    tl = None


def available() -> bool:
    return triton is not None and torch.cuda.is_available()


def block_k_for(k: int) -> int:
    for bk in (512, 256, 128, 64):
        if k % bk == 0:
            return bk
    raise ValueError(f"inner dimension {k} is not a multiple of 64")


if triton is not None:

    @triton.jit
    def _nf4_rows_dot(
        w_ptr,
        a8_ptr,
        a2_ptr,
        off,
        code2_ptr,
        nf4_ptr,
        x_ptr,
        rows,
        rmask,
        K,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
    ):
        """fp32 ``W[rows] @ x`` for one NF4 matrix ``W [*, K]``."""
        HALF: tl.constexpr = BLOCK_K // 2
        NB: tl.constexpr = BLOCK_K // 64
        kk = tl.arange(0, HALF)
        jb = tl.arange(0, NB)
        acc = tl.zeros([BLOCK_N, NB], dtype=tl.float32)
        row_bytes = rows.to(tl.int64) * (K // 2)
        row_blocks = rows.to(tl.int64) * (K // 64)
        for k0 in range(0, K, BLOCK_K):
            packed = tl.load(
                w_ptr + row_bytes[:, None] + (k0 // 2 + kk)[None, :], mask=rmask[:, None], other=0
            )
            hi = tl.load(nf4_ptr + (packed >> 4).to(tl.int32))
            lo = tl.load(nf4_ptr + (packed & 15).to(tl.int32))
            xe = tl.load(x_ptr + k0 + 2 * kk).to(tl.float32)
            xo = tl.load(x_ptr + k0 + 2 * kk + 1).to(tl.float32)
            prod = hi * xe[None, :] + lo * xo[None, :]
            part = tl.sum(tl.reshape(prod, [BLOCK_N, NB, 32]), axis=2)
            blk = row_blocks[:, None] + (k0 // 64 + jb)[None, :]
            a8 = tl.load(a8_ptr + blk, mask=rmask[:, None], other=0).to(tl.int32)
            a2 = tl.load(a2_ptr + blk // 256, mask=rmask[:, None], other=0.0)
            scale = tl.load(code2_ptr + a8) * a2 + off
            acc += part * scale
        return tl.sum(acc, axis=1)

    @triton.jit
    def _nf4_rows_dot_pairs(
        w_ptr,
        a8_ptr,
        a2_ptr,
        off,
        code2_ptr,
        pair_ptr,
        x_ptr,
        rows,
        rmask,
        K,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
    ):
        """As ``_nf4_rows_dot``, one table load a byte: ``pair_ptr[b]`` holds both levels (fp16).

        The tile is loaded as ``[rows, scale blocks, 32 bytes]`` so each 64-weight block's sum
        is a plain reduction over the last axis (no reshape, no layout shuffle).
        """
        NB: tl.constexpr = BLOCK_K // 64
        t = tl.arange(0, 32)
        jb = tl.arange(0, NB)
        acc = tl.zeros([BLOCK_N, NB], dtype=tl.float32)
        row_bytes = rows.to(tl.int64) * (K // 2)
        row_blocks = rows.to(tl.int64) * (K // 64)
        inner = jb[:, None] * 32 + t[None, :]  # byte index inside the K chunk, [NB, 32]
        for k0 in range(0, K, BLOCK_K):
            packed = tl.load(
                w_ptr + row_bytes[:, None, None] + (k0 // 2 + inner)[None, :, :],
                mask=rmask[:, None, None],
                other=0,
            )
            pair = tl.load(pair_ptr + packed.to(tl.int32))
            hi = (pair >> 16).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
            lo = (pair & 0xFFFF).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
            xe = tl.load(x_ptr + k0 + 2 * inner).to(tl.float32)
            xo = tl.load(x_ptr + k0 + 2 * inner + 1).to(tl.float32)
            part = tl.sum(hi * xe[None, :, :] + lo * xo[None, :, :], axis=2)
            blk = row_blocks[:, None] + (k0 // 64 + jb)[None, :]
            a8 = tl.load(a8_ptr + blk, mask=rmask[:, None], other=0).to(tl.int32)
            a2 = tl.load(a2_ptr + blk // 256, mask=rmask[:, None], other=0.0)
            scale = tl.load(code2_ptr + a8) * a2 + off
            acc += part * scale
        return tl.sum(acc, axis=1)

    @triton.jit
    def _rows_dot(
        w_ptr,
        a8_ptr,
        a2_ptr,
        off,
        code2_ptr,
        table_ptr,
        x_ptr,
        rows,
        rmask,
        K,
        PAIRS: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
    ):
        if PAIRS:
            return _nf4_rows_dot_pairs(
                w_ptr, a8_ptr, a2_ptr, off, code2_ptr, table_ptr, x_ptr, rows, rmask, K,
                BLOCK_N, BLOCK_K,
            )  # fmt: skip
        else:
            return _nf4_rows_dot(
                w_ptr, a8_ptr, a2_ptr, off, code2_ptr, table_ptr, x_ptr, rows, rmask, K,
                BLOCK_N, BLOCK_K,
            )  # fmt: skip

    @triton.jit
    def _gate_up_kernel(
        x_ptr,
        w_ptr,
        a8_ptr,
        a2_ptr,
        off_ptr,
        code2_ptr,
        nf4_ptr,
        sel_ptr,
        h_ptr,
        F,
        H,
        w_se,
        w_sp,
        a8_se,
        a8_sp,
        a2_se,
        a2_sp,
        BF16: tl.constexpr,
        PAIRS: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
    ):
        pid = tl.program_id(0)
        slot = tl.program_id(1)
        e = tl.load(sel_ptr + slot).to(tl.int64)
        rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        rmask = rows < F
        g = _rows_dot(
            w_ptr + e * w_se,
            a8_ptr + e * a8_se,
            a2_ptr + e * a2_se,
            tl.load(off_ptr + e * 3),
            code2_ptr,
            nf4_ptr,
            x_ptr,
            rows,
            rmask,
            H,
            PAIRS,
            BLOCK_N,
            BLOCK_K,
        )
        u = _rows_dot(
            w_ptr + e * w_se + 2 * w_sp,
            a8_ptr + e * a8_se + 2 * a8_sp,
            a2_ptr + e * a2_se + 2 * a2_sp,
            tl.load(off_ptr + e * 3 + 2),
            code2_ptr,
            nf4_ptr,
            x_ptr,
            rows,
            rmask,
            H,
            PAIRS,
            BLOCK_N,
            BLOCK_K,
        )
        if BF16:
            g = g.to(tl.bfloat16).to(tl.float32)
            u = u.to(tl.bfloat16).to(tl.float32)
            act = (g / (1.0 + tl.exp(-g))).to(tl.bfloat16).to(tl.float32)
            tl.store(h_ptr + slot * F + rows, (act * u).to(tl.bfloat16), mask=rmask)
        else:
            act = g / (1.0 + tl.exp(-g))
            tl.store(h_ptr + slot * F + rows, act * u, mask=rmask)

    @triton.jit
    def _down_kernel(
        h_ptr,
        w_ptr,
        a8_ptr,
        a2_ptr,
        off_ptr,
        code2_ptr,
        nf4_ptr,
        sel_ptr,
        rw_ptr,
        y_ptr,
        H,
        F,
        w_se,
        w_sp,
        a8_se,
        a8_sp,
        a2_se,
        a2_sp,
        TOP_K: tl.constexpr,
        BF16: tl.constexpr,
        PAIRS: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
    ):
        pid = tl.program_id(0)
        rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        rmask = rows < H
        out = tl.zeros([BLOCK_N], dtype=tl.float32)
        for slot in tl.static_range(TOP_K):
            e = tl.load(sel_ptr + slot).to(tl.int64)
            acc = _rows_dot(
                w_ptr + e * w_se + w_sp,
                a8_ptr + e * a8_se + a8_sp,
                a2_ptr + e * a2_se + a2_sp,
                tl.load(off_ptr + e * 3 + 1),
                code2_ptr,
                nf4_ptr,
                h_ptr + slot * F,
                rows,
                rmask,
                F,
                PAIRS,
                BLOCK_N,
                BLOCK_K,
            )
            r = tl.load(rw_ptr + slot).to(tl.float32)
            if BF16:
                y = acc.to(tl.bfloat16).to(tl.float32)
                y = (y * r).to(tl.bfloat16).to(tl.float32)
                out = (out + y).to(tl.bfloat16).to(tl.float32)
            else:
                out = out + acc * r
        if BF16:
            tl.store(y_ptr + rows, out.to(tl.bfloat16), mask=rmask)
        else:
            tl.store(y_ptr + rows, out, mask=rmask)


# Tile sizes picked on an H100 with bench/gpu_profile.py; overridable for other cards.
# "pairs": one 256-entry table load a byte (both fp16 NF4 levels) instead of two 16-entry ones;
# "block_k": weights a row per loop step (0 = the largest of 512/256/128/64 dividing K).
TUNING: dict[str, dict[str, int]] = {
    "gate_up": {"BLOCK_N": 8, "num_warps": 2, "pairs": 0, "block_k": 0},
    "down": {"BLOCK_N": 8, "num_warps": 2, "pairs": 0, "block_k": 0},
}

_PAIR_TABLES: dict[tuple[str, int], torch.Tensor] = {}


def pair_table(code: torch.Tensor) -> torch.Tensor:
    """int32 ``[256]``: byte ``b`` -> fp16 bits of ``code[b >> 4]`` (high) and ``code[b & 15]``."""
    key = (str(code.device), code.data_ptr())
    table = _PAIR_TABLES.get(key)
    if table is None:
        bits = code.to(torch.float16).view(torch.int16).to(torch.int32) & 0xFFFF
        b = torch.arange(256, device=code.device)
        table = ((bits[b >> 4] << 16) | bits[b & 15]).to(torch.int32).contiguous()
        _PAIR_TABLES[key] = table
    return table


def _block_k(k: int, wanted: int) -> int:
    if wanted and k % wanted == 0:
        return wanted
    return block_k_for(k)


def moe_one_token(
    bank: Any,
    x: torch.Tensor,
    selected: torch.Tensor,
    routing: torch.Tensor,
    nf4_code: torch.Tensor,
) -> torch.Tensor:
    """``sum_s routing[s] * expert_{selected[s]}(x)`` for one token ``x [1, H]``.

    ``x`` is bf16 (rounded like the eager module) or float32 (no intermediate rounding).
    """
    if x.dtype not in (torch.bfloat16, torch.float32):
        raise ValueError(f"unsupported activation dtype {x.dtype}")
    bf16 = x.dtype == torch.bfloat16
    f, h = bank.shapes[0]
    top_k = selected.numel()
    w, a8, a2 = bank.weights, bank.absmax8, bank.absmax2
    x = x.contiguous()
    hbuf = torch.empty(top_k, f, dtype=x.dtype, device=x.device)
    y = torch.empty(1, h, dtype=x.dtype, device=x.device)
    gu, dn = TUNING["gate_up"], TUNING["down"]
    pairs = pair_table(nf4_code) if (gu.get("pairs") or dn.get("pairs")) else None
    _gate_up_kernel[(triton.cdiv(f, gu["BLOCK_N"]), top_k)](
        x,
        w,
        a8,
        a2,
        bank.offset,
        bank.code2,
        pairs if gu.get("pairs") else nf4_code,
        selected,
        hbuf,
        f,
        h,
        w.stride(0),
        w.stride(1),
        a8.stride(0),
        a8.stride(1),
        a2.stride(0),
        a2.stride(1),
        BF16=bf16,
        PAIRS=bool(gu.get("pairs")),
        BLOCK_N=gu["BLOCK_N"],
        BLOCK_K=_block_k(h, gu.get("block_k", 0)),
        num_warps=gu["num_warps"],
    )
    _down_kernel[(triton.cdiv(h, dn["BLOCK_N"]),)](
        hbuf,
        w,
        a8,
        a2,
        bank.offset,
        bank.code2,
        pairs if dn.get("pairs") else nf4_code,
        selected,
        routing,
        y,
        h,
        f,
        w.stride(0),
        w.stride(1),
        a8.stride(0),
        a8.stride(1),
        a2.stride(0),
        a2.stride(1),
        TOP_K=top_k,
        BF16=bf16,
        PAIRS=bool(dn.get("pairs")),
        BLOCK_N=dn["BLOCK_N"],
        BLOCK_K=_block_k(f, dn.get("block_k", 0)),
        num_warps=dn["num_warps"],
    )
    return y
