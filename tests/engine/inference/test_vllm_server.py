"""Against a real vLLM server on the CPU serving the embedded model (``-m vllm``;
``./dev test-vllm`` creates ``.venv-vllm`` and runs these). Skipped when vLLM's environment
is absent. The server is started once for the module by ``engine.serving`` (the code behind
``phyassist server``) and stopped after."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from engine.settings import Settings

pytestmark = [pytest.mark.vllm, pytest.mark.model]

VLLM_PYTHON = Path(__file__).resolve().parents[3] / ".venv-vllm" / "bin" / "python"

PROMPTS = [
    ("chat", "What is the capital of France?"),
    ("chat", "你好，请介绍一下你自己。"),
    ("analysis", "I can't sleep and I feel worthless since I lost my job."),
    ("analysis", "我最近总是失眠，觉得自己什么都做不好。"),
    ("chat", "My client says she is anxious before every exam. What could help?"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(real_settings: Settings, tmp_path_factory: pytest.TempPathFactory):
    if not VLLM_PYTHON.is_file():
        pytest.skip("no .venv-vllm (./dev vllm-env creates it)")
    from engine.serving import Supervisor, plan_server

    root = tmp_path_factory.mktemp("vllm")
    settings = real_settings.model_copy(
        update={
            "config_dir": root / "config",
            "server": real_settings.server.model_copy(
                update={"port": _free_port(), "python": VLLM_PYTHON, "max_lora_rank": 32}
            ),
        },
        deep=True,
    )
    plan = plan_server(settings)
    supervisor = Supervisor(plan, log=root / "vllm.log", ready_timeout_s=600)
    supervisor.start()
    try:
        supervisor.wait_ready()
    except Exception:
        supervisor.stop()
        raise
    yield settings, plan
    supervisor.stop()


@pytest.fixture(scope="module")
def remote(server):
    from engine.inference.remote import RemoteAssistant

    settings, plan = server
    settings = settings.model_copy(
        update={
            "backend": settings.backend.model_copy(
                update={"kind": "openai", "base_url": plan.base_url}
            )
        },
        deep=True,
    )
    helper = RemoteAssistant(settings)
    helper.load()
    return helper


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
    assert "--host" in plan.argv and plan.argv[plan.argv.index("--host") + 1] == "127.0.0.1"


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
    state = {k: (v.float() * 3 if ".lora_B." in k else v.float()) for k, v in state.items()}
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
