"""Against a real vLLM server on the CPU serving the embedded model (``-m vllm``;
``./dev test`` and ``./dev test-vllm`` create ``.venv-vllm`` and run these). Skipped when
vLLM's environment is absent (failed under ``PHYASSIST_REQUIRE_VLLM=1``). The server is
started once for the session by ``engine.serving`` (the code behind ``phyassist server``) on a
Unix socket, and stopped after (conftest.py)."""

from __future__ import annotations

import socket
import stat
import threading
from pathlib import Path

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.model]

PROMPTS = [
    ("chat", "What is the capital of France?"),
    ("chat", "你好，请介绍一下你自己。"),
    ("analysis", "I can't sleep and I feel worthless since I lost my job."),
    ("analysis", "我最近总是失眠，觉得自己什么都做不好。"),
    ("chat", "My client says she is anxious before every exam. What could help?"),
]


@pytest.fixture
def server(vllm_server):
    """The session's server (tests/engine/inference/conftest.py), on a Unix socket."""
    settings, plan, _ = vllm_server
    return settings, plan


@pytest.fixture
def remote(vllm_remote):
    return vllm_remote


def _generate(helper, kind: str, text: str, patient=None) -> tuple[str, list[int]]:
    from engine.records import Patient

    cancel = threading.Event()
    if kind == "chat":
        stream = helper.stream_chat(patient, [], text, cancel=cancel)
    else:
        stream = helper.stream_analysis(patient or Patient(name="T"), text, cancel=cancel)
    return "".join(stream), list(helper.last_prompt_ids)


def test_key_file_is_private_and_not_on_the_command_line(server):
    _, plan = server
    assert plan.key_file.stat().st_mode & 0o077 == 0
    key = plan.key_file.read_text().strip()
    assert key and not any(key in arg for arg in plan.argv)


def _answers_http(port: int) -> bool:
    """Whether 127.0.0.1:``port`` answers an HTTP request (vLLM's internal listeners don't)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"GET /v1/models HTTP/1.0\r\nHost: x\r\n\r\n")
            return conn.recv(5) == b"HTTP/"
    except OSError:
        return False


def test_unix_socket_is_private_and_the_only_way_in(vllm_server, vllm_remote):
    """``server.socket``: vLLM serves its API on a 0600 socket in a 0700 directory and on no
    TCP port (its engine's internal torch.distributed listeners on 127.0.0.1 speak no HTTP);
    the key is still required there; the client reaches it through the socket."""
    import psutil

    from engine.errors import ServerError
    from engine.inference.openai_client import ServerClient

    _, plan, supervisor = vllm_server
    sock = plan.socket
    assert sock is not None and sock.is_socket()
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    assert "--host" not in plan.argv and "--port" not in plan.argv
    server = psutil.Process(supervisor.process.pid)
    ports = {
        c.laddr.port
        for proc in (server, *server.children(recursive=True))
        for c in proc.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    }
    assert not [port for port in ports if _answers_http(port)]
    assert "server unix:" in vllm_remote.model_label
    assert vllm_remote.client.models()[0]["id"] == vllm_remote.served
    intruder = ServerClient(plan.base_url, "not-the-key", socket=sock)
    try:
        with pytest.raises(ServerError, match="refused the API key"):
            intruder.models()
    finally:
        intruder.close()


@pytest.mark.parametrize(("kind", "text"), PROMPTS)
def test_same_prompt_ids_and_greedy_text_as_the_local_backend(assistant, remote, kind, text):
    """The structured drafts (engine headings, item by item, the constraint applied on the
    server) and plain chat give the local backend's ids and text, English and Chinese."""
    assistant.use_patient(None)
    local_text, local_ids = _generate(assistant, kind, text)
    remote_text, remote_ids = _generate(remote, kind, text)
    assert remote_ids == local_ids
    assert remote_text == local_text
    assert remote_text.strip()


def test_patient_adapter_loaded_at_run_time_changes_the_output(assistant, remote, real_store):
    """A patient's adapter (encrypted in the vault) goes to the server through a memory
    filesystem and is gone from it at once; it changes the draft as it does locally; it is
    unloaded when no patient is open."""
    from engine.model.adapters import AdapterRegistry, read_adapter_dir, shipped_adapters_dir

    shipped = next(shipped_adapters_dir().glob("*/adapter_config.json")).parent
    config, state = read_adapter_dir(shipped)
    # A patient adapter as the training recipe makes one: the attention projections only.
    from engine.training.config import ATTENTION_PROJECTIONS

    config = {**config, "target_modules": list(ATTENTION_PROJECTIONS)}
    state = {
        k: (v.float() * 3 if ".lora_B." in k else v.float())
        for k, v in state.items()
        if any(f".{m}." in k for m in ATTENTION_PROJECTIONS)
    }
    patient = real_store.create_patient("Adapter patient")
    AdapterRegistry(real_store).save(patient.id, config, state, dtype=None)
    prompt = "The client keeps checking the door lock at night."
    base_text, _ = _generate(remote, "chat", prompt)

    label = remote.use_patient(patient, real_store)
    assert "adapter v1" in label
    name = remote.active_adapter
    assert name and any(m["id"] == name for m in remote.client.models())
    assert not list(Path("/dev/shm").glob("phyassist-lora-*"))
    adapted_text, _ = _generate(remote, "chat", prompt)
    assert adapted_text != base_text
    assistant.use_patient(patient, real_store)
    try:
        local_text, _ = _generate(assistant, "chat", prompt)
    finally:
        assistant.use_patient(None)
    assert adapted_text == local_text

    remote.use_patient(None)
    assert not any(m["id"] == name for m in remote.client.models())


def test_risk_model_check_gives_the_local_verdicts(assistant, remote):
    text = "I don't see the point anymore, I have been giving my things away."
    for helper in (assistant, remote):
        helper.settings.risk_model_check = "on"
    try:
        local_flags, _ = assistant.risk_flags(text)
        remote_flags, how = remote.risk_flags(text)
    finally:
        for helper in (assistant, remote):
            helper.settings.risk_model_check = "auto"
    assert "server" in how
    assert [(f.category, f.severity, f.source) for f in remote_flags] == [
        (f.category, f.severity, f.source) for f in local_flags
    ]


@pytest.mark.parametrize("statement", [PROMPTS[2][1], PROMPTS[3][1]])
def test_regenerate_one_item_gives_the_local_text(assistant, remote, statement):
    from engine.records import Patient

    assistant.use_patient(None)
    patient = Patient(name="T")
    stream = assistant.stream_analysis(patient, statement, cancel=threading.Event())
    draft = stream.draft_of("".join(stream))
    item = draft.reasons[0]
    texts = []
    for helper in (assistant, remote):
        chunks = helper.stream_regenerate_item(
            patient, statement, draft, "reasons", item.id, cancel=threading.Event()
        )
        texts.append("".join(chunks))
    assert texts[0].strip() and texts[1] == texts[0]
