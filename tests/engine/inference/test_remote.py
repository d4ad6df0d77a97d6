"""The remote (OpenAI-compatible / vLLM) backend without vLLM: a small stub server in a
thread stands in for it where the point is our side (token handling, stop rules, errors),
and the pieces that must match the local backend exactly are checked against it."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from engine.errors import GenerationFailed, ModelLoadError, ServerError
from engine.inference.constraints import TokenConstraint
from engine.inference.openai_client import read_api_key, write_api_key
from engine.inference.remote_constraint import apply_to_row, decode, encode
from engine.model.lora_merge import merge_loras
from engine.settings import Settings

# -- exact pieces -------------------------------------------------------------------------


def _lora(r: int, alpha: float, modules: dict[str, tuple[int, int]], seed: int):
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, (fan_in, fan_out) in modules.items():
        state[f"base_model.model.{name}.lora_A.weight"] = torch.randn(r, fan_in, generator=g)
        state[f"base_model.model.{name}.lora_B.weight"] = torch.randn(fan_out, r, generator=g)
    config = {"peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": ["q", "v"]}
    return config, state


def _delta(config, state, name):
    a = state.get(f"base_model.model.{name}.lora_A.weight")
    if a is None:
        return 0
    b = state[f"base_model.model.{name}.lora_B.weight"]
    return (b.float() @ a.float()) * (config["lora_alpha"] / config["r"])


def test_merged_stack_is_the_sum_of_its_adapters():
    """Domain + patient served as one LoRA: the same delta on every module, including a
    module only one of them trains (vLLM applies one adapter per request)."""
    domain = _lora(16, 32, {"l0.q": (8, 8), "l0.v": (8, 4)}, seed=1)
    patient = _lora(8, 8, {"l0.q": (8, 8), "l1.q": (8, 8)}, seed=2)
    config, state = merge_loras([domain, patient])
    assert config["r"] == 24 and config["lora_alpha"] == 24
    for name in ("l0.q", "l0.v", "l1.q"):
        want = _delta(*domain, name) + _delta(*patient, name)
        torch.testing.assert_close(_delta(config, state, name), want, rtol=1e-5, atol=1e-5)


def test_constraint_sent_to_the_server_bans_what_the_local_one_bans():
    """encode -> decode -> one logits row gives the local generate path's scores, step by
    step (language mask, first-token ban, minimum length, no repeated n-grams)."""
    size = 300
    bias = torch.zeros(size)
    bias[torch.arange(0, size, 7)] = float("-inf")
    local = TokenConstraint(
        bias=bias,
        first_banned=(3, 4, 5),
        end_ids=(2, 9),
        min_tokens=3,
        avoid=((11, 12, 13), (20, 21, 22, 23)),
        no_repeat=True,
    )
    remote = decode(encode(local))
    prompt = [1, 5, 6]
    g = torch.Generator().manual_seed(0)
    generated: list[int] = []
    for token in (11, 12, 40, 41, 40, 20, 21, 15):
        logits = torch.randn(size, generator=g)
        want = local.processor(len(prompt))(torch.tensor([prompt + generated]), logits[None])[0]
        got = apply_to_row(remote.processor(0), list(generated), logits.clone())
        assert torch.equal(torch.isinf(got), torch.isinf(want))
        torch.testing.assert_close(got[~torch.isinf(got)], want[~torch.isinf(want)])
        generated.append(token)


# -- the API key ----------------------------------------------------------------------------


def test_api_key_file_must_be_private(tmp_path: Path):
    path = tmp_path / "server" / "api-key"
    write_api_key(path, "sekret")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    settings = Settings(config_dir=tmp_path, backend={"api_key_file": path})
    assert read_api_key(settings) == "sekret"
    os.chmod(path, 0o644)
    with pytest.raises(ServerError, match="chmod 600"):
        read_api_key(settings)
    env = Settings(config_dir=tmp_path, backend={"api_key_file": path, "api_key": "from-env"})
    assert read_api_key(env) == "from-env"


# -- a stub server ----------------------------------------------------------------------------


class Stub:
    """``/v1/models`` and a streaming ``/v1/completions`` that sends ``tokens`` (or fails)."""

    def __init__(self, port: int = 0) -> None:
        self.tokens: list[int] = []
        self.die_after: int | None = None  # close the connection after this many tokens
        self.status = 200
        self.delay_s = 0.0  # before the first token
        self.requests: list[dict] = []
        self.known: set[str] = {"stub"}  # the base and the adapters loaded
        self.seen_files: list[list[str]] = []  # what each adapter directory held at load
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _json(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.headers.get("Authorization") != "Bearer k":
                    return self._json(401, {"error": {"message": "Unauthorized"}})
                self._json(200, {"data": [{"id": "stub", "parent": None, "max_model_len": 2048}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append(body)
                if self.path.endswith("/load_lora_adapter"):
                    folder = Path(body["lora_path"])
                    stub.seen_files.append(sorted(p.name for p in folder.iterdir()))
                    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
                    stub.known.add(body["lora_name"])
                    return self._json(200, {})
                if self.path.endswith("/unload_lora_adapter"):
                    stub.known.discard(body["lora_name"])
                    return self._json(200, {})
                if body.get("model") not in stub.known:
                    return self._json(404, {"error": {"message": "The model does not exist."}})
                if stub.status != 200:
                    return self._json(stub.status, {"error": {"message": "refused"}})
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                self.wfile.flush()
                time.sleep(stub.delay_s)
                for i, token in enumerate(stub.tokens):
                    if stub.die_after is not None and i >= stub.die_after:
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    event = {"choices": [{"index": 0, "text": "", "token_ids": [token]}]}
                    self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")

        class QuietServer(ThreadingHTTPServer):
            def handle_error(self, request, client_address) -> None:
                """A client that hangs up (the timeout and cancel tests) is expected here."""

        self.server = QuietServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub():
    server = Stub()
    yield server
    server.close()


@pytest.fixture
def remote_for(real_settings: Settings, tmp_path: Path):
    from engine.inference.remote import RemoteAssistant

    def make(url: str, key: str = "k", timeout: float = 30.0, wait: float = 0.0):
        settings = real_settings.model_copy(
            update={
                "config_dir": tmp_path / "config",
                "backend": real_settings.backend.model_copy(
                    update={
                        "kind": "openai",
                        "base_url": url,
                        "api_key": key,
                        "read_timeout_s": timeout,
                        "wait_for_server_s": wait,
                    }
                ),
            },
            deep=True,
        )
        return RemoteAssistant(settings)

    return make


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.model
def test_server_down_is_a_clear_typed_error(remote_for):
    remote = remote_for(f"http://127.0.0.1:{_free_port()}/v1")
    with pytest.raises(ModelLoadError, match=r"not reachable .*phyassist server"):
        remote.load()


@pytest.mark.model
def test_wrong_key_says_so(remote_for, stub):
    with pytest.raises(ServerError, match="refused the API key"):
        remote_for(stub.url, key="wrong").load()


@pytest.mark.model
def test_tokens_stream_as_the_local_streamer_would_and_stop_rules_apply(remote_for, stub):
    remote = remote_for(stub.url)
    remote.load()
    tok = remote.model.tokenizer
    stub.tokens = tok.encode(" Sleep is poor. Mood is low. More", add_special_tokens=False)
    cancel = threading.Event()
    run = remote._run(None, [1, 2, 3], cancel, 64, 0.0, None, lambda t: "." in t)
    text = "".join(run)
    assert text == " Sleep is poor."  # stopped at the token that ended the sentence
    want = tok.encode(" Sleep is poor.", add_special_tokens=False)
    assert run.stats is not None and run.stats.tokens == len(want)
    sent = stub.requests[-1]
    assert sent["prompt"] == [1, 2, 3] and sent["temperature"] == 0.0
    assert sent["model"] == "stub" and sent["stop_token_ids"] == [tok.eos_token_id]


@pytest.mark.model
def test_server_dying_mid_answer_keeps_the_partial_text(remote_for, stub):
    remote = remote_for(stub.url)
    remote.load()
    tok = remote.model.tokenizer
    stub.tokens = tok.encode(" The client reports insomnia and worry", add_special_tokens=False)
    stub.die_after = 4
    got: list[str] = []
    with pytest.raises(GenerationFailed, match="closed the connection"):
        for chunk in remote._run(None, [1, 2], threading.Event(), 64, 0.0):
            got.append(chunk)
    assert "".join(got).startswith(" The client")


@pytest.mark.model
def test_server_refusing_says_why(remote_for, stub):
    remote = remote_for(stub.url)
    remote.load()
    stub.status = 400
    with pytest.raises(ServerError, match=r"refused the request \(400\): refused"):
        list(remote._run(None, [1, 2], threading.Event(), 8, 0.0))


@pytest.mark.model
def test_slow_server_times_out_with_a_clear_message(remote_for, stub):
    remote = remote_for(stub.url, timeout=0.5)
    remote.load()
    stub.tokens = [504, 3575]
    stub.delay_s = 2.0
    with pytest.raises(ServerError, match=r"did not answer within 0.5 s"):
        list(remote._run(None, [1, 2], threading.Event(), 8, 0.0))


@pytest.mark.model
def test_server_plan_binds_localhost_with_lora_and_a_private_key(real_settings, tmp_path):
    """``phyassist server``'s command line: 127.0.0.1, LoRA at run time, the drafting
    constraint's logits processor, the key in a 0600 file and the environment only."""
    from engine.serving import LOGITS_PROCESSOR, connect_hint, plan_server

    python = tmp_path / "python"
    python.write_text("")
    settings = real_settings.model_copy(
        update={
            "config_dir": tmp_path / "config",
            "server": real_settings.server.model_copy(update={"python": python, "port": 8123}),
        },
        deep=True,
    )
    plan = plan_server(settings)
    argv = plan.argv
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert "--enable-lora" in argv and argv[argv.index("--max-loras") + 1] == "8"
    assert argv[argv.index("--logits-processors") + 1] == LOGITS_PROCESSOR
    assert argv[argv.index("--model") + 1] == str(plan.model_dir)
    assert (plan.model_dir / "tokenizer.json").is_file()
    key = plan.key_file.read_text().strip()
    assert stat.S_IMODE(plan.key_file.stat().st_mode) == 0o600
    assert plan.env["VLLM_API_KEY"] == key and not any(key in a for a in argv)
    assert plan.env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert plan_server(settings).env["VLLM_API_KEY"] == key  # the key stays across restarts
    assert "PHYASSIST_BACKEND__BASE_URL=http://127.0.0.1:8123/v1" in connect_hint(plan)


@pytest.mark.model
def test_a_server_still_starting_is_waited_for(remote_for):
    """TUIs started together with ``phyassist server`` connect once it is up."""
    port = _free_port()
    remote = remote_for(f"http://127.0.0.1:{port}/v1", wait=60.0)
    said: list[str] = []
    late: list[Stub] = []

    def say(message: str) -> None:
        # the server comes up once the TUI has said it waits (a fixed 3 s timer raced a slow
        # start on a loaded box: the server was up before the first try, nothing was said)
        said.append(message)
        if "Waiting for the inference server" in message and not late:
            late.append(Stub(port))

    try:
        remote.load(say)
    finally:
        for server in late:
            server.close()
    assert remote.loaded and late


@pytest.mark.model
def test_patient_adapter_goes_through_memory_and_is_reloaded_after_a_restart(
    remote_for, stub, real_store
):
    """The decrypted adapter exists only while the server loads it (a 0700 directory on a
    memory filesystem); a server that restarted and lost it gets it again, and the draft
    goes on; opening no patient unloads it."""
    from engine.inference.remote import memory_dir
    from engine.model.adapters import AdapterRegistry

    remote = remote_for(stub.url)
    remote.load()
    patient = real_store.create_patient("Remote patient")
    AdapterRegistry(real_store).save(patient.id, *_lora(4, 8, {"model.l0.q": (8, 8)}, seed=3))
    assert "adapter v1" in remote.use_patient(patient, real_store)
    name = remote.active_adapter
    assert name in stub.known
    assert stub.seen_files == [["adapter_config.json", "adapter_model.safetensors"]]
    assert not list(memory_dir().glob("phyassist-lora-*"))

    stub.known = {"stub"}  # the server restarted
    stub.tokens = remote.model.tokenizer.encode(" Better now.", add_special_tokens=False)
    text = "".join(remote._run(patient, [1, 2], threading.Event(), 8, 0.0))
    assert text == " Better now." and name in stub.known and len(stub.seen_files) == 2

    remote.use_patient(None)
    assert name not in stub.known and remote.active_adapter is None
