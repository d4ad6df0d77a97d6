"""``server.socket`` / ``backend.socket``: the server on a Unix socket only this user can
reach, and the client through it; the CPU plan's memory settings. No vLLM here (a stub
HTTP server on a Unix socket stands in); the real server on a socket is tested with
``-m vllm`` (test_vllm_server.py)."""

from __future__ import annotations

import json
import socket
import socketserver
import stat
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from engine.errors import ModelLoadError, PhyAssistError, ServerError
from engine.settings import Settings


class UnixStub:
    """``/v1/models`` on a Unix socket, key "k"."""

    def __init__(self, path: Path) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet (and a Unix peer has no address)
                pass

            def do_GET(self):
                ok = self.headers.get("Authorization") == "Bearer k"
                body = {"data": [{"id": "stub", "parent": None, "max_model_len": 2048}]}
                data = json.dumps(body if ok else {"error": {"message": "Unauthorized"}})
                self.send_response(200 if ok else 401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data.encode())

        self.server = socketserver.ThreadingUnixStreamServer(str(path), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _remote(real_settings: Settings, tmp_path: Path, sock: Path, key: str = "k"):
    from engine.inference.remote import RemoteAssistant

    backend = real_settings.backend.model_copy(
        update={
            "kind": "openai",
            "base_url": "http://localhost/v1",
            "socket": sock,
            "api_key": key,
            "wait_for_server_s": 0.0,
        }
    )
    settings = real_settings.model_copy(
        update={"config_dir": tmp_path / "config", "backend": backend}, deep=True
    )
    return RemoteAssistant(settings)


@pytest.mark.model
def test_client_reaches_the_server_through_its_socket(real_settings, tmp_path):
    sock = tmp_path / "run" / "s.sock"
    sock.parent.mkdir(mode=0o700)
    stub = UnixStub(sock)
    try:
        remote = _remote(real_settings, tmp_path, sock)
        remote.load()
        assert remote.served == "stub"
        assert f"server unix:{sock}" in remote.model_label
        with pytest.raises(ServerError, match=f"at unix:{sock} refused the API key"):
            _remote(real_settings, tmp_path, sock, key="wrong").load()
    finally:
        stub.close()
    sock.unlink()
    with pytest.raises(ModelLoadError, match=f"unix:{sock} is not reachable"):
        _remote(real_settings, tmp_path, sock).load()


def test_socket_directory_must_be_closed_to_others(tmp_path):
    from engine.serving import prepare_socket

    fresh = tmp_path / "new" / "s.sock"
    prepare_socket(fresh)
    assert stat.S_IMODE(fresh.parent.stat().st_mode) == 0o700
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    with pytest.raises(PhyAssistError, match="chmod 700"):
        prepare_socket(shared / "s.sock")


def test_stale_socket_is_removed_a_live_one_is_not(tmp_path):
    from engine.serving import prepare_socket

    folder = tmp_path / "run"
    folder.mkdir(mode=0o700)
    path = folder / "s.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.close()  # the file stays, nothing listens: a server that died
    prepare_socket(path)
    assert not path.exists()
    live = socket.socket(socket.AF_UNIX)
    live.bind(str(path))
    live.listen()
    try:
        with pytest.raises(PhyAssistError, match="already listening"):
            prepare_socket(path)
    finally:
        live.close()
    path.unlink()
    path.write_text("not a socket")
    with pytest.raises(PhyAssistError, match="not a socket"):
        prepare_socket(path)


@pytest.mark.model
def test_cpu_plan_on_a_socket_with_a_kv_cache_sized_to_need(real_settings, tmp_path, monkeypatch):
    """One process, a KV cache for max_num_seqs requests of kv_tokens_per_seq tokens from
    the model's own shapes (vLLM's default was 4 GiB, the old setting 2 GiB), the API on the
    socket only, and the hint tells counselors to connect through it."""
    from engine.serving import connect_hint, kv_bytes_per_token, plan_server

    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "4")  # would override the planned size
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    python = tmp_path / "python"
    python.write_text("")
    sock = tmp_path / "run" / "vllm.sock"
    server = real_settings.server.model_copy(update={"python": python, "socket": sock})
    settings = real_settings.model_copy(
        update={"config_dir": tmp_path / "config", "server": server}, deep=True
    )
    settings.model.device = "cpu"
    plan = plan_server(settings)
    argv = plan.argv
    assert argv[argv.index("--uds") + 1] == str(sock) and "--host" not in argv
    assert plan.socket == sock and plan.base_url == "http://localhost/v1"
    assert f"PHYASSIST_BACKEND__SOCKET={sock}" in connect_hint(plan)
    # SmolLM2-135M: 30 layers x (K + V) x 3 KV heads x 64 dims x 4 bytes (float32)
    assert kv_bytes_per_token(plan.model_dir) == 30 * 2 * 3 * 64 * 4
    want = (16 * 1024 + 128) * kv_bytes_per_token(plan.model_dir)  # + vLLM's null block
    assert int(argv[argv.index("--kv-cache-memory-bytes") + 1]) == want
    assert argv[argv.index("--max-num-seqs") + 1] == "16"
    assert plan.env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert int(plan.env["OMP_NUM_THREADS"]) >= 1
    assert "VLLM_CPU_KVCACHE_SPACE" not in plan.env

    settings.server.cpu_kv_cache_gib = 1.5
    argv = plan_server(settings).argv
    assert int(argv[argv.index("--kv-cache-memory-bytes") + 1]) == int(1.5 * 2**30)


@pytest.mark.model
def test_lora_slots_fit_the_largest_stack_the_server_is_handed(real_settings, tmp_path):
    """A patient adapter (the recipe's rank 32 on q/k/v/o) merged with the shipped domain
    adapter (rank 16, every projection) is rank 48: a server capped at 32 refused it. Without
    a domain adapter the CPU server gives LoRA slots to the attention projections only."""
    from engine.model.adapters import domain_adapter_path
    from engine.serving import plan_server

    python = tmp_path / "python"
    python.write_text("")
    server = real_settings.server.model_copy(update={"python": python})
    with_domain = real_settings.model_copy(
        update={
            "config_dir": tmp_path / "config",
            "server": server,
            "model": real_settings.model.model_copy(
                update={"device": "cpu", "domain_adapter": "auto"}
            ),
        },
        deep=True,
    )
    assert domain_adapter_path(with_domain.model) is not None
    argv = plan_server(with_domain).argv
    assert argv[argv.index("--max-lora-rank") + 1] == "64"
    modules = argv[argv.index("--lora-target-modules") + 1 :][:7]
    assert sorted(modules) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )

    bare = with_domain.model_copy(deep=True)
    bare.model.domain_adapter = None
    argv = plan_server(bare).argv
    assert argv[argv.index("--max-lora-rank") + 1] == "32"
    i = argv.index("--lora-target-modules") + 1
    assert argv[i : i + 4] == ["k_proj", "o_proj", "q_proj", "v_proj"]
