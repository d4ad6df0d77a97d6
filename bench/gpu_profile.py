"""Where decode time goes on the Mixtral-8x7B-shaped 4-bit model, and which MoE kernel to use.

Builds the random 4-bit model (bench/gpu.py), then in one run: checks the few-token (suffix
prefill) NF4 MoE kernel against the eager block and sweeps its tiles, checks the Triton NF4 MoE
kernels against the bitsandbytes path, times kernel tile sizes, times bitsandbytes' one-token
``gemm_4bit`` and checks it is deterministic, times every FastDecoder variant at a 2k context
(same prompt, tokens compared across variants and repeats), checks plain ``generate`` repeats
itself, and profiles one eager decode step. Prints JSON (and writes ``--out``)::

    python -m bench.gpu_profile --out profile.json
    python -m bench.gpu_profile --layers 2 --steps few --out few.json   # the suffix kernel only
    python -m bench.gpu_profile --steps few,suffix --out few.json  # + where the 8k+32 TTFT goes
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench.gpu import build_random_4bit, mixtral_config, random_ids
from bench.reference import baseline_generate
from engine.gpu import nf4_moe
from engine.gpu.fast_moe import _fast_moe_forward, _set_fast, _set_kernel
from engine.gpu.fastdecode import FastDecoder
from engine.gpu.quant import QuantSpec


def bench_ms(fn, reps: int = 50) -> float:
    import triton

    return float(triton.testing.do_bench(fn, warmup=25, rep=reps, return_mode="median"))


def check_kernels(model: Any, out: dict[str, Any]) -> None:
    block = model.model.layers[3].block_sparse_moe
    res = []
    for trial in range(4):
        x = torch.randn(1, 1, 4096, device="cuda", dtype=torch.bfloat16)
        _set_fast(model, True)
        _set_kernel(model, "gather")
        ref = _fast_moe_forward(block, x)[0].float()
        _set_kernel(model, "triton")
        got = _fast_moe_forward(block, x)[0].float()
        _set_fast(model, False)
        eager = block(x)[0].float()
        res.append(
            {
                "trial": trial,
                "rel_err_triton_vs_gather": float((got - ref).norm() / ref.norm()),
                "gather_equals_eager": bool(torch.equal(ref, eager)),
                "max_abs": float((got - ref).abs().max()),
            }
        )
    out["kernel_check"] = res

    bank = block._phyassist_bank
    x = torch.randn(1, 4096, device="cuda", dtype=torch.bfloat16)
    sel = torch.tensor([2, 5], device="cuda")
    rw = torch.tensor([[0.6, 0.4]], device="cuda", dtype=torch.bfloat16)
    tune = []
    grid = [(0, 8, 2, 0)] + [
        (1, bn, warps, bk) for bn in (8, 16, 32, 64) for warps in (2, 4, 8) for bk in (512, 1024)
    ]
    for name in ("gate_up", "down"):
        for pairs, bn, warps, bk in grid:
            cfg = {"BLOCK_N": bn, "num_warps": warps, "pairs": pairs, "block_k": bk}
            saved = dict(nf4_moe.TUNING[name])
            nf4_moe.use_tiles(moe={name: cfg})
            try:
                ms = bench_ms(lambda: nf4_moe.moe_one_token(bank, x, sel, rw, bank.code))
                tune.append({"kernel": name, **cfg, "ms_both": ms})
            except Exception as exc:
                tune.append({"kernel": name, **cfg, "error": str(exc)[:300]})
            nf4_moe.use_tiles(moe={name: saved})
    best = {}
    for name in ("gate_up", "down"):
        rows = [t for t in tune if t["kernel"] == name and "ms_both" in t]
        b = min(rows, key=lambda t: t["ms_both"])
        best[name] = {k: b[k] for k in ("BLOCK_N", "num_warps", "pairs", "block_k")}
    nf4_moe.use_tiles(moe=best)
    # the tuned kernels against the gather path (bitsandbytes' own kernel)
    errs = []
    for _ in range(4):
        xx = torch.randn(1, 1, 4096, device="cuda", dtype=torch.bfloat16)
        _set_fast(model, True)
        _set_kernel(model, "gather")
        ref = _fast_moe_forward(block, xx)[0].float()
        _set_kernel(model, "triton")
        got = _fast_moe_forward(block, xx)[0].float()
        _set_fast(model, False)
        errs.append(float((got - ref).norm() / ref.norm()))
    out["tuned_rel_err_vs_gather"] = errs
    ms = bench_ms(lambda: nf4_moe.moe_one_token(bank, x, sel, rw, bank.code))
    moe_bytes = 2 * 3 * bank.weights.shape[-1] * (1 + 1 / 32)
    out["tuning"] = tune
    out["tuning_best"] = best
    out["moe_one_token_ms"] = ms
    out["moe_one_token_TBps"] = moe_bytes / (ms * 1e-3) / 1e12

    # bitsandbytes one-token gemm, as the baseline calls it.
    w1 = block.experts[2].w1
    w2 = block.experts[2].w2
    xs = torch.randn(1, 14336, device="cuda", dtype=torch.bfloat16)
    t1 = bench_ms(lambda: w1(x))
    t2 = bench_ms(lambda: w2(xs))
    outs = [w2(xs) for _ in range(20)]
    out["bnb_gemm4bit_w1_ms"] = t1
    out["bnb_gemm4bit_w2_ms"] = t2
    out["bnb_gemm4bit_TBps"] = (w1.weight.numel() * (1 + 1 / 32)) / (t1 * 1e-3) / 1e12
    out["bnb_gemm4bit_deterministic"] = all(torch.equal(o, outs[0]) for o in outs)
    gathered = bank.weights.index_select(0, sel)
    out["index_select_2_experts_ms"] = bench_ms(lambda: bank.weights.index_select(0, sel))
    del gathered


def check_few(
    model: Any,
    out: dict[str, Any],
    sweep_budget_s: float = 300.0,
    classes: tuple[str, ...] = ("small", "large"),
) -> None:
    """The few-token NF4 MoE kernel (suffix prefill) against the eager bitsandbytes block.

    Sweeps its tiles (``classes``: at 32 tokens into ``nf4_moe.FEW_TUNING``, at 128 into
    ``FEW_TUNING_LARGE``), keeps the best, then checks and times it at several token counts
    against the eager block on the same (fresh) inputs.
    """
    block = model.model.layers[1].block_sparse_moe
    bank = block._phyassist_bank
    hidden = bank.shapes[0][1]

    def inputs(m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = torch.randn(m, hidden, device="cuda", dtype=torch.bfloat16)
        routing = torch.softmax(block.gate(x), dim=1, dtype=torch.float)
        routing, selected = torch.topk(routing, block.top_k, dim=-1)
        return x, selected, (routing / routing.sum(dim=-1, keepdim=True)).to(x.dtype)

    sweep: list[dict[str, Any]] = []
    t_start = time.perf_counter()

    tables = {"few": nf4_moe.FEW_TUNING, "few_large": nf4_moe.FEW_TUNING_LARGE}

    def trial(table: str, name: str, cfg: dict[str, Any], case: tuple) -> float:
        """Time one call with ``cfg`` for kernel ``name``; inf if it fails or is wrong."""
        if time.perf_counter() - t_start > sweep_budget_s:
            return float("inf")
        x, sel, rw, want = case
        saved = dict(tables[table][name])
        nf4_moe.use_tiles(**{table: {name: cfg}})
        row: dict[str, Any] = {"tokens": x.shape[0], "kernel": name, **cfg}
        ms = float("inf")
        try:
            got = nf4_moe.moe_few_tokens(bank, x, sel, rw, bank.code).float()
            kern = nf4_moe.LAST_FEW_KERNELS.get(name)
            row["n_regs"] = getattr(kern, "n_regs", None)
            row["n_spills"] = getattr(kern, "n_spills", None)
            row["rel_err_vs_eager"] = float((got - want).norm() / want.norm())
            row["ms_both"] = bench_ms(lambda: nf4_moe.moe_few_tokens(bank, x, sel, rw, bank.code))
            if row["rel_err_vs_eager"] < 1e-2:
                ms = row["ms_both"]
        except Exception as exc:
            row["error"] = str(exc)[:300]
        nf4_moe.use_tiles(**{table: {name: saved}})
        sweep.append(row)
        return ms

    def descend(table: str, name: str, axes: list[dict[str, list[Any]]], case) -> None:
        """Coordinate search: each stage sweeps its axes jointly around the best so far."""
        best = dict(tables[table][name])
        best_ms = trial(table, name, best, case)
        for stage in axes:
            keys = list(stage)
            combos: list[dict[str, Any]] = [{}]
            for k in keys:
                combos = [{**c, k: v} for c in combos for v in stage[k]]
            for combo in combos:
                cfg = {**best, **combo}
                if cfg == best:
                    continue
                ms = trial(table, name, cfg, case)
                if ms < best_ms:
                    best_ms, best = ms, cfg
        nf4_moe.use_tiles(**{table: {name: best}})

    # Session 3: the weight tile as the MMA's left operand (swap), warps, pipeline depth, split-K
    # and the one-lookup-a-byte table, searched stage by stage; at 32 tokens for the small tile
    # set (FEW_TUNING), at 128 for the large one (FEW_TUNING_LARGE).
    plans = {
        "small": (32, "few", [
            {"swap": [0, 1], "BLOCK_N": [64, 128, 256], "num_warps": [4, 8]},
            {"split": [1, 2, 4, 8], "num_stages": [2, 3, 4]},
            {"lut": [0, 1], "BLOCK_M": [None, 32]},
        ]),
        "large": (128, "few_large", [
            {"swap": [0, 1], "lut": [0, 1]},
            {"BLOCK_N": [128, 256], "num_warps": [4, 8]},
            {"split": [1, 2, 4], "BLOCK_M": [None, 16, 64]},
        ]),
    }  # fmt: skip
    for cls in classes:
        tokens, table, stages = plans[cls]
        x, sel, rw = inputs(tokens)
        with torch.no_grad():
            want = block(x[None])[0][0].float()
        for name in ("gate_up", "down"):
            descend(table, name, stages, (x, sel, rw, want))
    out["few_tuning"] = sweep
    out["few_tuning_best"] = {k: dict(v) for k, v in nf4_moe.FEW_TUNING.items()}
    out["few_tuning_large_best"] = {k: dict(v) for k, v in nf4_moe.FEW_TUNING_LARGE.items()}
    out["few_sweep_s"] = round(time.perf_counter() - t_start, 1)

    packed_per_expert = 3 * bank.weights.shape[-1] * (1 + 1 / 32)  # NF4 bytes + uint8 scales
    rows = []
    for m in (2, 8, 32, 128, 256):
        x, sel, rw = inputs(m)
        with torch.no_grad():
            want = block(x[None])[0][0]
        got = nf4_moe.moe_few_tokens(bank, x, sel, rw, bank.code)
        hit = int(torch.unique(sel).numel())
        few_ms = bench_ms(
            lambda x=x, sel=sel, rw=rw: nf4_moe.moe_few_tokens(bank, x, sel, rw, bank.code)
        )
        eager_ms = bench_ms(lambda x=x: block(x[None]))
        rows.append(
            {
                "tokens": m,
                "experts_hit": hit,
                "rel_err_vs_eager": float(
                    (got.float() - want.float()).norm() / want.float().norm()
                ),
                "bit_equal_fraction": float((got == want).float().mean()),
                "few_ms": few_ms,
                "eager_ms": eager_ms,
                "speedup": eager_ms / few_ms,
                "few_TBps": hit * packed_per_expert / (few_ms * 1e-3) / 1e12,
            }
        )
    out["few_check"] = rows

    # Which kernels the 32-token call spends its time in (CUDA time per call, microseconds).
    from torch.profiler import ProfilerActivity, profile

    x, sel, rw = inputs(32)
    nf4_moe.moe_few_tokens(bank, x, sel, rw, bank.code)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            nf4_moe.moe_few_tokens(bank, x, sel, rw, bank.code)
        torch.cuda.synchronize()
    kernels = []
    for ev in prof.key_averages():
        us = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0)
        if us:
            kernels.append({"name": ev.key[:80], "us_per_call": round(us / 10, 1)})
    out["few_kernels_32_tokens"] = sorted(kernels, key=lambda k: -k["us_per_call"])[:12]


def _kernel_class(name: str) -> str:
    low = name.lower()
    if "_few_" in low:
        return "moe_few_token_kernels"
    if "flash" in low or "fmha" in low or "attention" in low or "attn" in low:
        return "attention"
    if "kdequantize" in low or "gemm" in low or "gemv" in low or "cutlass" in low or "sm90" in low:
        return "linear_q_k_v_o_router_lm_head"
    if "cat" in low:
        return "kv_cache_cat"
    if "sort" in low or "scan" in low or "cumsum" in low:
        return "routing_sort"
    if "reduce" in low:
        return "reductions"
    if "copy" in low or "memcpy" in low or "memset" in low:
        return "copies"
    return "elementwise_other"


def profile_suffix(
    model: Any, args: argparse.Namespace, out: dict[str, Any], tunings: dict[str, Any]
) -> None:
    """Where the time to first token goes: an 8k cached prefix plus a 32-token suffix.

    For each few-token tile set in ``tunings`` (the shipped one and the sweep's best): TTFT
    through ``FastDecoder.generate`` (7 requests, new suffix each) through the static cache (a
    captured graph) and through the DynamicCache (eager), then the eager prefill alone against
    its GPU span from CUDA events (host-bound when the GPU span exceeds the kernels' sum). Then
    a profile of the eager prefill with the last set: kernel time by class, per prefill.
    """
    import copy
    import statistics

    from torch.profiler import ProfilerActivity, profile

    long_ctx, sfx = args.long_context, 32
    dec = FastDecoder(model, max_cache_len=long_ctx + 64, **args.decoder)
    ids = random_ids(long_ctx + sfx, seed=3)
    prefix = dec.build_prefix(ids[0, :long_ctx].tolist())

    def request(k: int) -> torch.Tensor:
        req = ids[:, : long_ctx + sfx].clone()
        req[0, long_ctx:] = random_ids(sfx, seed=40 + k)[0]
        return req

    res: dict[str, Any] = {}
    for label, tuning in tunings.items():
        nf4_moe.use_tiles(few=copy.deepcopy(tuning))
        dec._suffix_graphs.clear()  # captured with the previous tiles
        row: dict[str, Any] = {"tiles": copy.deepcopy(tuning)}
        for path, static in (("static_graph", True), ("dynamic", False)):
            dec.static_suffix = static
            ttft = [dec.generate(request(k), 1, prefix=prefix).ttft_s for k in range(7)]
            row[f"{path}_ttft_runs_s"] = [round(t, 4) for t in ttft]
            row[f"{path}_ttft_median_s"] = round(statistics.median(ttft[1:]), 4)
        wall, gpu = [], []
        for k in range(5):  # the dynamic prefill alone: wall time against its GPU span
            req = request(k)
            torch.cuda.synchronize()
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0 = time.perf_counter()
            s.record()
            logits = dec.prefill_logits(req, prefix.cache)
            e.record()
            int(logits.argmax().item())
            wall.append(time.perf_counter() - t0)
            gpu.append(s.elapsed_time(e) / 1e3)
            prefix.cache.crop(long_ctx)
        row["dynamic_prefill_wall_runs_s"] = [round(t, 4) for t in wall]
        row["dynamic_prefill_gpu_event_runs_s"] = [round(t, 4) for t in gpu]
        res[label] = row
    dec.static_suffix = True
    req = request(0)
    dec.prefill_logits(req, prefix.cache)
    prefix.cache.crop(long_ctx)
    torch.cuda.synchronize()
    reps = 3
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for k in range(reps):
            dec.prefill_logits(request(k), prefix.cache)
            prefix.cache.crop(long_ctx)
        torch.cuda.synchronize()
    classes: dict[str, float] = {}
    top = []
    for ev in prof.key_averages():
        us = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0)
        if not us:
            continue
        cls = _kernel_class(ev.key)
        classes[cls] = classes.get(cls, 0.0) + us / reps / 1e3
        top.append({"name": ev.key[:90], "ms_per_prefill": round(us / reps / 1e3, 3),
                    "calls_per_prefill": ev.count // reps, "class": cls})  # fmt: skip
    res["kernel_ms_by_class"] = {k: round(v, 3) for k, v in sorted(classes.items())}
    res["kernel_ms_total"] = round(sum(classes.values()), 3)
    res["top_kernels"] = sorted(top, key=lambda r: -r["ms_per_prefill"])[:20]
    out["suffix_profile"] = res
    del dec, prefix
    torch.cuda.empty_cache()


def check_attention(out: dict[str, Any]) -> None:
    """The Triton decode attention against SDPA on the un-repeated cache (fresh inputs)."""
    import torch.nn.functional as F

    res = []
    for length, valid in ((2368, 2049), (8448, 8300), (2368, 1)):
        q = torch.randn(1, 32, 1, 128, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, 8, length, 128, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(1, 8, length, 128, device="cuda", dtype=torch.bfloat16)
        mask = (torch.arange(length, device="cuda") < valid).view(1, 1, 1, -1)
        ref = (
            F.scaled_dot_product_attention(
                q.float().view(1, 8, 4, 128), k.float(), v.float(), attn_mask=mask, scale=128**-0.5
            )
            .reshape(1, 32, 1, 128)
            .transpose(1, 2)
        )
        got = nf4_moe.decode_attention(q, k, v, mask, 128**-0.5).float()
        ms = bench_ms(
            lambda q=q, k=k, v=v, mask=mask: nf4_moe.decode_attention(q, k, v, mask, 0.088)
        )
        sd = bench_ms(
            lambda q=q, k=k, v=v, mask=mask: F.scaled_dot_product_attention(
                q.view(1, 8, 4, 128), k, v, attn_mask=mask, scale=0.088
            )
        )
        res.append(
            {
                "length": length,
                "valid": valid,
                "rel_err_vs_fp32": float((got - ref).norm() / ref.norm()),
                "triton_ms": ms,
                "sdpa_ms": sd,
            }
        )
    out["attention_check"] = res


def decode_variants(model: Any, args: argparse.Namespace, out: dict[str, Any]) -> None:
    ids = random_ids(args.context, seed=1)
    variants = []
    tokens: dict[str, list[list[int]]] = {}
    from torch.nn.attention import SDPBackend

    backends = {
        "default": None,
        "efficient": [SDPBackend.EFFICIENT_ATTENTION],
        "cudnn": [SDPBackend.CUDNN_ATTENTION],
        "math": [SDPBackend.MATH],
    }
    backends["triton"] = None
    ok_attn = all(r["rel_err_vs_fp32"] < 2e-2 for r in out.get("attention_check", []))
    plan = [("gather", "default"), ("triton", "default"), ("triton", "cudnn")]
    if ok_attn and out.get("attention_check"):
        plan.append(("triton", "triton"))
    for kernel, backend in plan:
        name = f"{kernel}+gqa:{backend}"
        try:
            attention = "triton" if backend == "triton" else "sdpa"
            cache_len = args.context + args.tokens + 64
            dec = FastDecoder(
                model,
                max_cache_len=cache_len,
                kernel=kernel,
                decode_attention=attention,
                sdpa_backends=backends[backend],
            )
            t0 = time.perf_counter()
            dec.warm_up()
            torch.cuda.synchronize()
            cap = time.perf_counter() - t0
            runs = [dec.generate(ids, args.tokens) for _ in range(3)]
            tokens[name] = [r.tokens for r in runs]
            rates = [r.decode_tokens_per_s for r in runs]
            # graph replay alone, no host reads: the GPU time a token
            g = dec._graphs[()]
            dec._tok.fill_(runs[0].tokens[0])
            dec._pos.fill_(args.context)
            torch.cuda.synchronize()
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            for _ in range(50):
                g.replay()
            e.record()
            torch.cuda.synchronize()
            variants.append(
                {
                    "variant": name,
                    "capture_s": round(cap, 2),
                    "tokens_per_s": [round(r, 2) for r in rates],
                    "replay_ms_per_token": round(s.elapsed_time(e) / 50, 3),
                    "repeats_identical": all(t == tokens[name][0] for t in tokens[name]),
                }
            )
            del dec
            torch.cuda.empty_cache()
        except Exception as exc:  # the backend may refuse this shape
            variants.append({"variant": name, "error": f"{type(exc).__name__}: {exc}"[:300]})
            torch.cuda.empty_cache()
    ok = [v for v in variants if "tokens_per_s" in v and v["variant"].startswith("triton")]
    best = max(ok, key=lambda v: sorted(v["tokens_per_s"])[1])
    out["best_variant"] = best["variant"]
    out["best_attn_backend"] = best["variant"].split(":")[1]
    # The later steps profile the winner (FastDecoder arguments).
    winner = out["best_attn_backend"]
    if winner == "triton":
        args.decoder = {"decode_attention": "triton"}
    else:
        cudnn = backends["cudnn"] if winner == "cudnn" else None
        args.decoder = {"decode_attention": "sdpa", "sdpa_backends": cudnn}
    base1, tb = baseline_generate(model, ids, args.base_tokens)
    base2, _ = baseline_generate(model, ids, args.base_tokens)

    def agree(a: list[int], b: list[int]) -> int:
        n = min(len(a), len(b))
        return next((i for i in range(n) if a[i] != b[i]), n)

    out["decode_variants"] = variants
    out["baseline_repeat_identical_prefix"] = agree(base1, base2)
    out["baseline_tokens"] = len(base1)
    out["baseline_tokens_per_s_incl_prefill"] = round(len(base1) / tb, 2)
    out["agreement_with_baseline"] = {k: agree(v[0], base1) for k, v in tokens.items()}
    out["agreement_between_variants"] = {
        k: agree(v[0], next(iter(tokens.values()))[0]) for k, v in tokens.items()
    }


def profile_step(model: Any, args: argparse.Namespace, out: dict[str, Any]) -> None:
    from torch.profiler import ProfilerActivity, profile

    ids = random_ids(args.context, seed=1)
    dec = FastDecoder(model, max_cache_len=args.context + 128, **args.decoder)
    dec.generate(ids, 2)
    _set_fast(model, True)
    with torch.inference_mode():
        dec._step()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(3):
                dec._step()
            torch.cuda.synchronize()
    _set_fast(model, False)
    rows = []
    for ev in prof.key_averages():
        t = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0)
        if t:
            rows.append(
                {"name": ev.key[:90], "us_per_step": round(t / 3, 1), "calls": ev.count // 3}
            )
    rows.sort(key=lambda r: -r["us_per_step"])
    out["profile_top"] = rows[:25]
    out["profile_total_ms_per_step"] = round(sum(r["us_per_step"] for r in rows) / 1000, 2)
    del dec


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--context", type=int, default=2048)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--base-tokens", type=int, default=24)
    parser.add_argument("--out", default=None)
    parser.add_argument("--long-context", type=int, default=8192)
    parser.add_argument("--sweep-budget", type=float, default=300.0)
    parser.add_argument("--few-classes", default="small,large", help="tile sets to sweep")
    parser.add_argument("--steps", default="few,kernels,attention,variants,profile")
    args = parser.parse_args()
    args.decoder = {}  # FastDecoder arguments: its defaults until the variants step picks
    wanted = set(args.steps.split(","))
    out: dict[str, Any] = {"device": torch.cuda.get_device_name()}
    t0 = time.perf_counter()
    model = build_random_4bit(mixtral_config(args.layers), QuantSpec())
    out["build_s"] = round(time.perf_counter() - t0, 1)
    FastDecoder(model, max_cache_len=256)  # stacks the experts
    shipped = {k: dict(v) for k, v in nf4_moe.FEW_TUNING.items()}

    def suffix_tiles() -> dict[str, Any]:
        """The shipped 32-token tiles, and the sweep's best where it found other ones."""
        tuned = {k: dict(v) for k, v in nf4_moe.FEW_TUNING.items()}
        return {"shipped": shipped} if tuned == shipped else {"shipped": shipped, "tuned": tuned}

    steps = {
        check_few: (
            "few",
            lambda: check_few(
                model, out, args.sweep_budget, tuple(c for c in args.few_classes.split(",") if c)
            ),
        ),
        check_kernels: ("kernels", lambda: check_kernels(model, out)),
        check_attention: ("attention", lambda: check_attention(out)),
        decode_variants: ("variants", lambda: decode_variants(model, args, out)),
        profile_step: ("profile", lambda: profile_step(model, args, out)),
        profile_suffix: ("suffix", lambda: profile_suffix(model, args, out, suffix_tiles())),
    }
    for step, (key, call) in steps.items():
        if key not in wanted:
            continue
        t0 = time.perf_counter()
        try:
            call()
        except Exception as exc:
            import traceback

            traceback.print_exc()
            out.setdefault("errors", {})[step.__name__] = f"{type(exc).__name__}: {exc}"[:2000]
        out.setdefault("seconds", {})[step.__name__] = round(time.perf_counter() - t0, 1)
        if args.out:
            Path(args.out).write_text(json.dumps(out, indent=1), encoding="utf-8")
        print(f"[profile] {step.__name__} {out['seconds'][step.__name__]} s", file=sys.stderr)
    if "kernels" in wanted:
        out["tuning_best"] = dict(nf4_moe.TUNING)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1), encoding="utf-8")
    summary = {k: v for k, v in out.items() if k not in ("tuning",)}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
