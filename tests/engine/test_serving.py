"""``phyassist server``'s vLLM command line on a CPU: a KV cache vLLM accepts at every size a
server may be given, and the dtype setting."""

from __future__ import annotations

import json

import pytest

from engine.serving import CPU_KV_BLOCK_TOKENS, kv_bytes_per_token, plan_server


def _plan(real_settings, tmp_path, **server):
    python = tmp_path / "python"
    python.write_text("")
    settings = real_settings.model_copy(
        update={
            "config_dir": tmp_path / "config",
            "model": real_settings.model.model_copy(update={"device": "cpu"}),
            "server": real_settings.server.model_copy(update={"python": python, **server}),
        },
        deep=True,
    )
    return plan_server(settings)


def _arg(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


@pytest.mark.parametrize("seqs", [1, 4, 16])
def test_cpu_kv_cache_holds_a_full_length_request_beside_vllms_null_block(
    real_settings, tmp_path, seqs
):
    """vLLM refuses to start unless its blocks, less the one it keeps back, hold one request of
    the model's full length; a server sized for a few counselors (max_num_seqs 4: the cache
    is then one full-length request) failed to start with "0.35 GiB needed, 0.35 available"."""
    plan = _plan(real_settings, tmp_path, max_num_seqs=seqs)
    config = json.loads((plan.model_dir / "config.json").read_text())
    max_len = int(config["max_position_embeddings"])
    per_token = kv_bytes_per_token(plan.model_dir)
    block = int(_arg(plan.argv, "--block-size"))
    assert block == CPU_KV_BLOCK_TOKENS
    blocks = int(_arg(plan.argv, "--kv-cache-memory-bytes")) // (block * per_token)
    assert blocks - 1 >= -(-max_len // block)  # vLLM's rule, its null block aside
    wanted = seqs * real_settings.server.kv_tokens_per_seq
    assert (blocks - 1) * block >= wanted  # and every counselor's request at once
    assert (blocks - 2) * block < max(max_len, wanted)  # no more than that: it is all touched


def test_cpu_dtype_setting_halves_the_kv_cache_in_bfloat16(real_settings, tmp_path):
    f32 = _plan(real_settings, tmp_path, max_num_seqs=4)
    bf16 = _plan(real_settings, tmp_path, max_num_seqs=4, cpu_dtype="bfloat16")
    assert _arg(f32.argv, "--dtype") == "float32"  # the default: the local backend's tokens
    assert _arg(bf16.argv, "--dtype") == "bfloat16"
    kv = int(_arg(f32.argv, "--kv-cache-memory-bytes"))
    assert int(_arg(bf16.argv, "--kv-cache-memory-bytes")) * 2 == kv
