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
# Measured (bench/results/profile-h100-run3.json): 0.21 ms for both kernels on two experts,
# against 0.33 ms for the two-lookup version with its best tiles.
TUNING: dict[str, dict[str, int]] = {
    "gate_up": {"BLOCK_N": 16, "num_warps": 4, "pairs": 1, "block_k": 512},
    "down": {"BLOCK_N": 16, "num_warps": 4, "pairs": 1, "block_k": 1024},
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


# ---------------------------------------------------------------------------------------------
# One-token attention over a static KV cache (split-K "flash decoding")
# ---------------------------------------------------------------------------------------------

if triton is not None:

    @triton.jit
    def _decode_attn_partial(
        q_ptr,
        k_ptr,
        v_ptr,
        mask_ptr,
        m_ptr,
        l_ptr,
        acc_ptr,
        scale,
        L,
        stride_kh,
        stride_kl,
        NSPLIT,
        G: tl.constexpr,
        GP: tl.constexpr,
        D: tl.constexpr,
        CHUNK: tl.constexpr,
        BLOCK_L: tl.constexpr,
    ):
        """Partial softmax(q K^T) V of one KV head's ``G`` query heads over one key chunk."""
        h = tl.program_id(0)
        s = tl.program_id(1)
        g = tl.arange(0, GP)
        d = tl.arange(0, D)
        q = tl.load(q_ptr + (h * G + g)[:, None] * D + d[None, :], mask=(g < G)[:, None], other=0.0)
        m = tl.full([GP], float("-inf"), dtype=tl.float32)
        lsum = tl.zeros([GP], dtype=tl.float32)
        acc = tl.zeros([GP, D], dtype=tl.float32)
        for start in range(s * CHUNK, s * CHUNK + CHUNK, BLOCK_L):
            keys = start + tl.arange(0, BLOCK_L)
            inside = keys < L
            valid = tl.load(mask_ptr + keys, mask=inside, other=0) != 0
            kv_off = h * stride_kh + keys[:, None] * stride_kl + d[None, :]
            k = tl.load(k_ptr + kv_off, mask=inside[:, None], other=0.0)
            v = tl.load(v_ptr + kv_off, mask=inside[:, None], other=0.0)
            scores = tl.dot(q, tl.trans(k)) * scale
            scores = tl.where(valid[None, :], scores, float("-inf"))
            m_new = tl.maximum(m, tl.max(scores, axis=1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.exp(scores - m_safe[:, None])
            alpha = tl.exp(m - m_safe)
            lsum = lsum * alpha + tl.sum(p, axis=1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m = m_new
        base = h * NSPLIT + s
        tl.store(m_ptr + base * GP + g, m)
        tl.store(l_ptr + base * GP + g, lsum)
        tl.store(acc_ptr + (base * GP + g)[:, None] * D + d[None, :], acc)

    @triton.jit
    def _decode_attn_combine(
        m_ptr,
        l_ptr,
        acc_ptr,
        out_ptr,
        NSPLIT,
        G: tl.constexpr,
        GP: tl.constexpr,
        D: tl.constexpr,
        SP: tl.constexpr,
    ):
        hq = tl.program_id(0)
        h = hq // G
        g = hq % G
        sp = tl.arange(0, SP)
        d = tl.arange(0, D)
        ok = sp < NSPLIT
        idx = (h * NSPLIT + sp) * GP + g
        m = tl.load(m_ptr + idx, mask=ok, other=float("-inf"))
        big = tl.max(m, axis=0)
        w = tl.where(ok, tl.exp(m - big), 0.0)
        lsum = tl.sum(w * tl.load(l_ptr + idx, mask=ok, other=0.0), axis=0)
        acc = tl.load(acc_ptr + idx[:, None] * D + d[None, :], mask=ok[:, None], other=0.0)
        out = tl.sum(acc * w[:, None], axis=0) / lsum
        tl.store(out_ptr + hq * D + d, out.to(out_ptr.dtype.element_ty))


ATTN_TUNING = {"CHUNK": 256, "BLOCK_L": 64, "num_warps": 4}


def decode_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor, scale: float
) -> torch.Tensor:
    """``softmax(q K^T * scale + mask) V`` for one token; returns ``[b, 1, heads, d]``.

    ``query [1, heads, 1, d]``, ``key``/``value [1, kv_heads, L, d]`` (a static cache, rows
    contiguous), ``mask`` boolean, last dimension ``>= L``; masked keys get no weight.
    """
    _, hq, _, dim = query.shape
    hkv, length = key.shape[1], key.shape[2]
    if key.stride(-1) != 1 or key.stride() != value.stride():
        raise ValueError("decode_attention needs matching, row-contiguous K and V")
    group = hq // hkv
    gp = max(16, triton.next_power_of_2(group))
    chunk, block_l = ATTN_TUNING["CHUNK"], ATTN_TUNING["BLOCK_L"]
    nsplit = triton.cdiv(length, chunk)
    dev = query.device
    m = torch.empty(hkv * nsplit * gp, dtype=torch.float32, device=dev)
    lsum = torch.empty_like(m)
    acc = torch.empty(hkv * nsplit * gp, dim, dtype=torch.float32, device=dev)
    q = query.reshape(hq, dim).contiguous()
    mask_row = mask.reshape(-1)[:length].to(torch.int8)
    _decode_attn_partial[(hkv, nsplit)](
        q,
        key,
        value,
        mask_row,
        m,
        lsum,
        acc,
        scale,
        length,
        key.stride(1),
        key.stride(2),
        nsplit,
        G=group,
        GP=gp,
        D=dim,
        CHUNK=chunk,
        BLOCK_L=block_l,
        num_warps=ATTN_TUNING["num_warps"],
    )
    out = torch.empty(hq, dim, dtype=query.dtype, device=dev)
    _decode_attn_combine[(hq,)](
        m, lsum, acc, out, nsplit, G=group, GP=gp, D=dim, SP=triton.next_power_of_2(nsplit)
    )
    return out.view(1, 1, hq, dim)
