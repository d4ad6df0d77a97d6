"""Triton kernels for one-token MoE on bitsandbytes NF4 weights, experts chosen on the device.

Why: at one token a Mixtral layer must read two experts (3 x 29 MB of packed NF4 each); the
bitsandbytes path (gather the two experts' bytes, then six ``gemm_4bit`` calls) reads them three
times and launches a dozen kernels. These two kernels read each selected expert's bytes once,
straight from the stacked bank (:class:`engine.gpu.fast_moe.ExpertBank`), with the expert index
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


# Tile sizes picked on an H100 with `python -m bench.gpu_profile`; `use_tiles` for other cards.
# "pairs": one 256-entry table load a byte (both fp16 NF4 levels) instead of two 16-entry ones;
# "block_k": weights a row per loop step (0 = the largest of 512/256/128/64 dividing K).
# Measured on an H100 (bench/RESULTS.md): 0.21 ms for both kernels on two experts,
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


# ---------------------------------------------------------------------------------------------
# A few tokens at once (a suffix prefill after a cached prefix): grouped small-M NF4 GEMM
# ---------------------------------------------------------------------------------------------
#
# Why: bitsandbytes runs several tokens through a Linear4bit by dequantizing the whole weight to
# bf16 first (writing and re-reading 4x the packed bytes), and the eager MoE block asks the host
# which experts were hit (a sync a layer). For a 32-token suffix that costs about as much as a
# 512-token prefill. Here the (token, slot) pairs are sorted by expert on the device; one program
# per (expert, N-tile) dequantizes its NF4 tile in registers, exactly as bitsandbytes does
# (``code[nibble] * absmax`` in fp32, rounded to the compute dtype), and multiplies it with the
# tokens that chose that expert on the tensor cores. Every later rounding (each projection, SiLU,
# the product, the routing weight, the sum of the top-k outputs) follows the eager block, so the
# two differ only in the order the dot products are summed.

if triton is not None:

    @triton.jit
    def _nf4_tile(
        w_ptr,
        a8_ptr,
        a2_ptr,
        off,
        code2_ptr,
        nf4_ptr,
        row_bytes,
        row_blocks,
        nmask,
        k0,
        OUT: tl.constexpr,
        BLOCK_N: tl.constexpr,
        LUT: tl.constexpr,
    ):
        """``W[rows, k0 : k0 + 64]`` (one NF4 scale block) dequantized, split by nibble.

        Returns ``(hi, lo)``, each ``[BLOCK_N, 32]`` in dtype ``OUT``: column ``j`` of ``hi`` is
        weight ``k0 + 2j``, of ``lo`` weight ``k0 + 2j + 1`` (the two nibbles of byte ``j``).
        One block per step keeps every tile 2-D with one scale per row (no reshapes).

        ``LUT`` 0: ``nf4_ptr`` is the 16 fp32 levels, two lookups a byte (exactly bitsandbytes'
        ``code[nibble] * absmax``). 1: ``nf4_ptr`` is :func:`pair_table` (both levels of a byte
        as fp16 bits), one lookup a byte; the levels are then fp16-rounded, so a dequantized
        weight can land one bf16 step away from bitsandbytes' (bf16 compute only).
        """
        t = tl.arange(0, 32)
        packed = tl.load(
            w_ptr + row_bytes[:, None] + (k0 // 2 + t)[None, :], mask=nmask[:, None], other=0
        )
        blk = row_blocks + k0 // 64
        a8 = tl.load(a8_ptr + blk, mask=nmask, other=0).to(tl.int32)
        a2 = tl.load(a2_ptr + blk // 256, mask=nmask, other=0.0)
        scale = tl.load(code2_ptr + a8) * a2 + off  # launched without FMA contraction
        if LUT == 1:
            pair = tl.load(nf4_ptr + packed.to(tl.int32))
            hi = (pair >> 16).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
            lo = (pair & 0xFFFF).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
        else:
            hi = tl.load(nf4_ptr + (packed >> 4).to(tl.int32))
            lo = tl.load(nf4_ptr + (packed & 15).to(tl.int32))
        return (hi * scale[:, None]).to(OUT), (lo * scale[:, None]).to(OUT)

    @triton.jit
    def _mma(a, b, acc, IEEE: tl.constexpr):
        if IEEE:
            return tl.dot(a, b, acc, input_precision="ieee")
        else:
            return tl.dot(a, b, acc)

    @triton.jit
    def _token_tile(ptr, tok_rows, stride, k0, kk, mmask, SWAP: tl.constexpr):
        """Even and odd inputs of one 64-wide block for the token rows ``tok_rows``:
        ``[32, M]`` tiles (``x^T``) with ``SWAP``, else ``[M, 32]``."""
        if SWAP:
            col = ptr + tok_rows[None, :] * stride + k0 + 2 * kk[:, None]
            even = tl.load(col, mask=mmask[None, :], other=0.0)
            odd = tl.load(col + 1, mask=mmask[None, :], other=0.0)
        else:
            row = ptr + tok_rows[:, None] * stride + k0 + 2 * kk[None, :]
            even = tl.load(row, mask=mmask[:, None], other=0.0)
            odd = tl.load(row + 1, mask=mmask[:, None], other=0.0)
        return even, odd

    @triton.jit
    def _mma_block(w_hi, w_lo, even, odd, acc, SWAP: tl.constexpr, IEEE: tl.constexpr):
        """Add one block's product: ``W x^T`` (weight tile on the left) with ``SWAP``."""
        if SWAP:
            acc = _mma(w_hi, even, acc, IEEE)
            acc = _mma(w_lo, odd, acc, IEEE)
        else:
            acc = _mma(even, tl.trans(w_hi), acc, IEEE)
            acc = _mma(odd, tl.trans(w_lo), acc, IEEE)
        return acc

    @triton.jit
    def _few_gate_up_kernel(
        x_ptr,
        pair_tok_ptr,
        counts_ptr,
        starts_ptr,
        w_ptr,
        a8_ptr,
        a2_ptr,
        off_ptr,
        code2_ptr,
        nf4_ptr,
        h_ptr,
        part_ptr,
        F,
        H,
        w_se,
        w_sp,
        a8_se,
        a8_sp,
        a2_se,
        a2_sp,
        max_pairs,
        K_PER,
        ROUND: tl.constexpr,
        IEEE: tl.constexpr,
        SPLIT: tl.constexpr,
        UNROLL: tl.constexpr,
        SWAP: tl.constexpr,
        LUT: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
    ):
        """``h[p] = silu(W1[e] x[t]) * (W3[e] x[t])`` for each pair ``p = (t, slot)`` of ``e``.

        ``SWAP``: the dequantized weight tile is the left operand (``acc[N, M] = W x^T``), so
        it goes to the tensor cores from registers, and only the small token tile is staged.
        """
        e = tl.program_id(0)
        pid_n = tl.program_id(1)
        k_lo = tl.program_id(2) * K_PER  # this program's share of the inner dimension
        count = tl.load(counts_ptr + e)
        start = tl.load(starts_ptr + e)
        dt = x_ptr.dtype.element_ty
        rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        nmask = rows < F
        row_bytes = rows.to(tl.int64) * (H // 2)
        row_blocks = rows.to(tl.int64) * (H // 64)
        e64 = e.to(tl.int64)
        w1 = w_ptr + e64 * w_se
        w3 = w1 + 2 * w_sp
        a8_1 = a8_ptr + e64 * a8_se
        a8_3 = a8_1 + 2 * a8_sp
        a2_1 = a2_ptr + e64 * a2_se
        a2_3 = a2_1 + 2 * a2_sp
        off1 = tl.load(off_ptr + e64 * 3)
        off3 = tl.load(off_ptr + e64 * 3 + 2)
        kk = tl.arange(0, 32)
        for m0 in range(0, max_pairs, BLOCK_M):  # bounded by the host-known pair count
            if m0 < count:
                mm = m0 + tl.arange(0, BLOCK_M)
                mmask = mm < count
                tok = tl.load(pair_tok_ptr + start + mm, mask=mmask, other=0).to(tl.int64)
                if SWAP:
                    acc_g = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
                    acc_u = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
                else:
                    acc_g = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
                    acc_u = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
                for k00 in range(k_lo, k_lo + K_PER, 64 * UNROLL):
                    for u_step in tl.static_range(UNROLL):  # UNROLL blocks of 64 a row per step
                        k0 = k00 + 64 * u_step
                        xe, xo = _token_tile(x_ptr, tok, H, k0, kk, mmask, SWAP)
                        g_hi, g_lo = _nf4_tile(
                            w1, a8_1, a2_1, off1, code2_ptr, nf4_ptr, row_bytes, row_blocks, nmask,
                            k0, dt, BLOCK_N, LUT,
                        )  # fmt: skip
                        acc_g = _mma_block(g_hi, g_lo, xe, xo, acc_g, SWAP, IEEE)
                        u_hi, u_lo = _nf4_tile(
                            w3, a8_3, a2_3, off3, code2_ptr, nf4_ptr, row_bytes, row_blocks, nmask,
                            k0, dt, BLOCK_N, LUT,
                        )  # fmt: skip
                        acc_u = _mma_block(u_hi, u_lo, xe, xo, acc_u, SWAP, IEEE)
                if SWAP:
                    m2 = nmask[:, None] & mmask[None, :]
                    dst_rows = (start + mm).to(tl.int64)[None, :] * F + rows[:, None]
                else:
                    m2 = mmask[:, None] & nmask[None, :]
                    dst_rows = (start + mm).to(tl.int64)[:, None] * F + rows[None, :]
                if SPLIT > 1:  # fp32 partial sums [SPLIT, 2, pairs, F], finished on the host
                    part = part_ptr + tl.program_id(2).to(tl.int64) * 2 * max_pairs * F
                    tl.store(part + dst_rows, acc_g, mask=m2)
                    tl.store(part + max_pairs * F + dst_rows, acc_u, mask=m2)
                elif ROUND:  # as the eager module: each projection, SiLU and the product rounded
                    g = acc_g.to(dt).to(tl.float32)
                    u = acc_u.to(dt).to(tl.float32)
                    act = (g / (1.0 + tl.exp(-g))).to(dt).to(tl.float32)
                    h = (act * u).to(dt)
                    tl.store(h_ptr + dst_rows, h, mask=m2)
                else:
                    h = (acc_g / (1.0 + tl.exp(-acc_g)) * acc_u).to(dt)
                    tl.store(h_ptr + dst_rows, h, mask=m2)

    @triton.jit
    def _few_down_kernel(
        h_ptr,
        pair_idx_ptr,
        rw_ptr,
        counts_ptr,
        starts_ptr,
        w_ptr,
        a8_ptr,
        a2_ptr,
        off_ptr,
        code2_ptr,
        nf4_ptr,
        y_ptr,
        part_ptr,
        H,
        F,
        w_se,
        w_sp,
        a8_se,
        a8_sp,
        a2_se,
        a2_sp,
        max_pairs,
        K_PER,
        ROUND: tl.constexpr,
        IEEE: tl.constexpr,
        SPLIT: tl.constexpr,
        UNROLL: tl.constexpr,
        SWAP: tl.constexpr,
        LUT: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
    ):
        """``y[pair] = r[pair] * (W2[e] h[p])``, written at the pair's own (token, slot) row."""
        e = tl.program_id(0)
        pid_n = tl.program_id(1)
        k_lo = tl.program_id(2) * K_PER  # this program's share of the inner dimension
        count = tl.load(counts_ptr + e)
        start = tl.load(starts_ptr + e)
        dt = h_ptr.dtype.element_ty
        rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        nmask = rows < H
        row_bytes = rows.to(tl.int64) * (F // 2)
        row_blocks = rows.to(tl.int64) * (F // 64)
        e64 = e.to(tl.int64)
        w2 = w_ptr + e64 * w_se + w_sp
        a8_2 = a8_ptr + e64 * a8_se + a8_sp
        a2_2 = a2_ptr + e64 * a2_se + a2_sp
        off2 = tl.load(off_ptr + e64 * 3 + 1)
        kk = tl.arange(0, 32)
        for m0 in range(0, max_pairs, BLOCK_M):  # bounded by the host-known pair count
            if m0 < count:
                mm = m0 + tl.arange(0, BLOCK_M)
                mmask = mm < count
                src = (start + mm).to(tl.int64)
                if SWAP:
                    acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
                else:
                    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
                for k00 in range(k_lo, k_lo + K_PER, 64 * UNROLL):
                    for u_step in tl.static_range(UNROLL):
                        k0 = k00 + 64 * u_step
                        he, ho = _token_tile(h_ptr, src, F, k0, kk, mmask, SWAP)
                        w_hi, w_lo = _nf4_tile(
                            w2, a8_2, a2_2, off2, code2_ptr, nf4_ptr, row_bytes, row_blocks, nmask,
                            k0, dt, BLOCK_N, LUT,
                        )  # fmt: skip
                        acc = _mma_block(w_hi, w_lo, he, ho, acc, SWAP, IEEE)
                pair = tl.load(pair_idx_ptr + start + mm, mask=mmask, other=0).to(tl.int64)
                r = tl.load(rw_ptr + pair, mask=mmask, other=0.0).to(tl.float32)
                if SWAP:
                    m2 = nmask[:, None] & mmask[None, :]
                    dst = pair[None, :] * H + rows[:, None]
                    rb = r[None, :]
                else:
                    m2 = mmask[:, None] & nmask[None, :]
                    dst = pair[:, None] * H + rows[None, :]
                    rb = r[:, None]
                if SPLIT > 1:  # fp32 partial sums [SPLIT, pairs, H] at the pair's own row
                    part = part_ptr + tl.program_id(2).to(tl.int64) * max_pairs * H
                    tl.store(part + dst, acc, mask=m2)
                else:
                    y = (acc.to(dt).to(tl.float32) * rb).to(dt) if ROUND else (acc * rb).to(dt)
                    tl.store(y_ptr + dst, y, mask=m2)


# Tiles for the few-token kernels (`python -m bench.gpu_profile --steps few` sweeps them).
# BLOCK_M is the token chunk an expert's tile is applied to; None: picked from the token count.
# "split": programs sharing a row tile's inner dimension (fp32 partial sums, added on the host in
# a fixed order, so the result is deterministic); "unroll": 64-weight blocks a row per loop step;
# "swap": the weight tile is the MMA's left operand (``W x^T``); "lut": 0 = two lookups a byte
# in the 16 fp32 NF4 levels (bitsandbytes' exact values), 1 = one lookup a byte in the fp16 pair
# table (bf16/fp16 compute only; fp32 compute always uses 0).
# Best of the session-3 sweep at 32 tokens on an H100 (bench/RESULTS.md, session 3):
# 2.07 ms a Mixtral layer (gate/up 1.41, down 0.55), against 2.84 ms for session 2's tiles
# (swap 0, lut 0) and 8.2 ms for the eager block on the same inputs. One lookup a byte gave most
# of the gain, so the kernels seem bound by the table lookups more than by the weight bytes.
FEW_TUNING: dict[str, dict[str, int | None]] = {
    "gate_up": {
        "BLOCK_M": None, "BLOCK_N": 256, "num_warps": 4, "num_stages": 4, "split": 2, "unroll": 1,
        "swap": 1, "lut": 1,
    },
    "down": {
        "BLOCK_M": None, "BLOCK_N": 256, "num_warps": 4, "num_stages": 4, "split": 2, "unroll": 1,
        "swap": 0, "lut": 1,
    },
}  # fmt: skip

#: Tiles above :data:`FEW_SMALL_PAIRS` (token, expert) pairs, e.g. a 128-token suffix, where the
#: small-count tiles spill registers: swept at 128 tokens on an H100 (bench/RESULTS.md),
#: 3.93 ms a layer against 7.25 ms with the small-count tiles and 5.5-5.8 ms with session 2's.
FEW_TUNING_LARGE: dict[str, dict[str, int | None]] = {
    "gate_up": {
        "BLOCK_M": 64, "BLOCK_N": 256, "num_warps": 4, "num_stages": 4, "split": 1, "unroll": 1,
        "swap": 0, "lut": 1,
    },
    "down": {
        "BLOCK_M": 64, "BLOCK_N": 256, "num_warps": 4, "num_stages": 4, "split": 4, "unroll": 1,
        "swap": 0, "lut": 1,
    },
}  # fmt: skip
#: The most (token, expert) pairs that use :data:`FEW_TUNING` (32 tokens at top-2).
FEW_SMALL_PAIRS = 64


def use_tiles(
    moe: dict[str, dict[str, int]] | None = None,
    few: dict[str, dict[str, int | None]] | None = None,
    few_large: dict[str, dict[str, int | None]] | None = None,
) -> None:
    """Use other tile sizes (e.g. ``python -m bench.gpu_profile``'s best on another card) for the
    one-token (:data:`TUNING`) and few-token (:data:`FEW_TUNING`, :data:`FEW_TUNING_LARGE`)
    kernels, by kernel name ("gate_up", "down"). Kernels launched afterwards use them."""
    for given, table in ((moe, TUNING), (few, FEW_TUNING), (few_large, FEW_TUNING_LARGE)):
        for name, cfg in (given or {}).items():
            if name not in table or set(cfg) - set(table[name]):
                raise ValueError(f"unknown kernel or tile field in {name}: {sorted(cfg)}")
            table[name] = dict(cfg)


def few_tuning_for(pairs: int) -> dict[str, dict[str, int | None]]:
    """The tile set for a call with ``pairs`` (token, expert) pairs."""
    return FEW_TUNING if pairs <= FEW_SMALL_PAIRS else FEW_TUNING_LARGE


#: The compiled kernels of the latest :func:`moe_few_tokens` call (registers, spills: profiling).
LAST_FEW_KERNELS: dict[str, Any] = {}


def _k_plan(k: int, split: int | None, unroll: int | None) -> tuple[int, int, int]:
    """``(split, unroll, k_per_split)``: the largest of the wanted that divide ``k`` evenly."""
    blocks = k // 64
    for sp, un in ((split or 1, unroll or 1), (split or 1, 1), (1, unroll or 1), (1, 1)):
        if blocks % (sp * un) == 0:
            return sp, un, k // sp
    raise AssertionError("unreachable: (1, 1) always divides")


def _few_block_m(pairs: int, experts: int, wanted: int | None) -> int:
    if wanted:
        return int(wanted)
    per_expert = -(-pairs // experts)
    return min(64, max(16, triton.next_power_of_2(per_expert)))


def route_pairs(selected: torch.Tensor, num_experts: int) -> dict[str, torch.Tensor]:
    """(token, slot) pairs grouped by expert, computed on the device (no host sync).

    ``selected [M, top_k]``. Returns ``pair_idx`` (flat ``token * top_k + slot``, sorted by
    expert, stable), ``pair_tok`` (the token of each), and per expert ``counts``/``starts``.
    """
    top_k = selected.shape[1]
    flat = selected.reshape(-1)
    _, order = torch.sort(flat, stable=True)
    experts = torch.arange(num_experts, device=flat.device)
    counts = (flat[:, None] == experts[None, :]).sum(0).to(torch.int32)
    starts = (torch.cumsum(counts, 0, dtype=torch.int32) - counts).to(torch.int32)
    return {
        "pair_idx": order.to(torch.int32),
        "pair_tok": torch.div(order, top_k, rounding_mode="floor").to(torch.int32),
        "counts": counts,
        "starts": starts,
    }


def moe_few_tokens(
    bank: Any,
    x: torch.Tensor,
    selected: torch.Tensor,
    routing: torch.Tensor,
    nf4_code: torch.Tensor,
) -> torch.Tensor:
    """The MoE block's output for ``x [M, H]``: ``sum_s routing[:, s] * expert_{selected[:, s]}``.

    ``selected``/``routing`` are ``[M, top_k]`` as the eager block computes them (routing in the
    compute dtype). bf16/fp16 activations are rounded like the eager module; float32 ones use
    IEEE fp32 dot products (no TF32), so the result is the eager one to fp32 rounding.
    """
    if x.dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise ValueError(f"unsupported activation dtype {x.dtype}")
    m, hidden = x.shape
    f, h = bank.shapes[0]
    if h != hidden:
        raise ValueError(f"hidden size {hidden} != the experts' {h}")
    if getattr(bank, "blocksize", 64) != 64 or h % 64 or f % 64:
        raise ValueError("the few-token kernel needs NF4 blocks of 64 and sizes divisible by 64")
    num_experts = bank.weights.shape[0]
    top_k = selected.shape[1]
    fp32 = x.dtype == torch.float32
    x = x.contiguous()
    routes = route_pairs(selected, num_experts)
    rw = routing.to(x.dtype).contiguous().view(-1)
    w, a8, a2 = bank.weights, bank.absmax8, bank.absmax2
    code = nf4_code.float().contiguous()
    strides = (w.stride(0), w.stride(1), a8.stride(0), a8.stride(1), a2.stride(0), a2.stride(1))
    pairs = m * top_k
    hbuf = torch.empty(pairs, f, dtype=x.dtype, device=x.device)
    ypair = torch.empty(pairs, h, dtype=x.dtype, device=x.device)
    tiles = few_tuning_for(pairs)
    gu, dn = tiles["gate_up"], tiles["down"]
    if fp32:  # twice the bytes a tile: the bf16 tiles overflow shared memory (measured on H100)
        gu = {**gu, "BLOCK_N": min(gu["BLOCK_N"], 64), "num_stages": min(gu["num_stages"], 2)}
        dn = {**dn, "BLOCK_N": min(dn["BLOCK_N"], 64), "num_stages": min(dn["num_stages"], 2)}
        gu["lut"] = dn["lut"] = 0  # the exact fp32 levels: fp32 results to fp32 rounding
    tables = {0: code}
    if gu.get("lut") or dn.get("lut"):
        tables[1] = pair_table(nf4_code)
    bm = _few_block_m(pairs, num_experts, gu.get("BLOCK_M"))
    split, unroll, k_per = _k_plan(h, gu.get("split"), gu.get("unroll"))
    part = hbuf
    if split > 1:
        part = torch.empty(split, 2, pairs, f, dtype=torch.float32, device=x.device)
    grid = (num_experts, triton.cdiv(f, gu["BLOCK_N"]), split)
    LAST_FEW_KERNELS["gate_up"] = _few_gate_up_kernel[grid](
        x,
        routes["pair_tok"],
        routes["counts"],
        routes["starts"],
        w,
        a8,
        a2,
        bank.offset,
        bank.code2,
        tables[int(gu.get("lut") or 0)],
        hbuf,
        part,
        f,
        h,
        *strides,
        pairs,
        k_per,
        ROUND=not fp32,
        IEEE=fp32,
        SPLIT=split,
        UNROLL=unroll,
        SWAP=bool(gu.get("swap")),
        LUT=int(gu.get("lut") or 0),
        BLOCK_M=bm,
        BLOCK_N=gu["BLOCK_N"],
        num_warps=gu["num_warps"],
        num_stages=gu["num_stages"],
        enable_fp_fusion=False,
    )
    if split > 1:  # the eager module's roundings: each projection, SiLU, the product
        sums = part.sum(dim=0)
        hbuf = torch.nn.functional.silu(sums[0].to(x.dtype)) * sums[1].to(x.dtype)
    bm = _few_block_m(pairs, num_experts, dn.get("BLOCK_M"))
    split, unroll, k_per = _k_plan(f, dn.get("split"), dn.get("unroll"))
    part = ypair
    if split > 1:
        part = torch.empty(split, pairs, h, dtype=torch.float32, device=x.device)
    grid = (num_experts, triton.cdiv(h, dn["BLOCK_N"]), split)
    LAST_FEW_KERNELS["down"] = _few_down_kernel[grid](
        hbuf,
        routes["pair_idx"],
        rw,
        routes["counts"],
        routes["starts"],
        w,
        a8,
        a2,
        bank.offset,
        bank.code2,
        tables[int(dn.get("lut") or 0)],
        ypair,
        part,
        h,
        f,
        *strides,
        pairs,
        k_per,
        ROUND=not fp32,
        IEEE=fp32,
        SPLIT=split,
        UNROLL=unroll,
        SWAP=bool(dn.get("swap")),
        LUT=int(dn.get("lut") or 0),
        BLOCK_M=bm,
        BLOCK_N=dn["BLOCK_N"],
        num_warps=dn["num_warps"],
        num_stages=dn["num_stages"],
        enable_fp_fusion=False,
    )
    if split > 1:  # each expert output rounded, times its routing weight, rounded
        ypair = part.sum(dim=0).to(x.dtype) * rw[:, None]
    # The eager block adds each expert's weighted output into zeros in the compute dtype; for two
    # experts that is one rounding of their exact sum, which this is.
    return ypair.view(m, top_k, h).sum(dim=1, dtype=torch.float32).to(x.dtype)
