"""One real vLLM server for the whole session (``-m vllm``), shared by every test that
talks to it: vLLM takes 20-60 s to start on the CPU, so each module starting its own would
cost more than its tests. It listens on a Unix socket (``server.socket``), so these tests go
through the socket path end to end; the TCP path is the default plan's (test_remote.py).

Without ``.venv-vllm`` the tests skip, unless ``PHYASSIST_REQUIRE_VLLM=1`` (``./dev test``
and ``./dev test-vllm`` set it): then a missing environment fails the run."""

from __future__ import annotations

import os

import pytest

from engine.settings import Settings
from tests.support import REPO

VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"


@pytest.fixture(scope="session")
def vllm_server(real_settings: Settings, tmp_path_factory: pytest.TempPathFactory):
    """``(settings, plan)`` of a running server started by ``engine.serving`` (the code
    behind ``phyassist server --socket``), stopped after the session."""
    if not VLLM_PYTHON.is_file():
        if os.environ.get("PHYASSIST_REQUIRE_VLLM") == "1":
            pytest.fail(f"{VLLM_PYTHON} is missing: `./dev vllm-env` must have created it")
        pytest.skip("no .venv-vllm (./dev vllm-env creates it)")
    from engine.serving import Supervisor, plan_server

    root = tmp_path_factory.mktemp("vllm")
    settings = real_settings.model_copy(
        update={
            "config_dir": root / "config",
            "server": real_settings.server.model_copy(
                update={
                    "socket": root / "run" / "vllm.sock",
                    "python": VLLM_PYTHON,
                    # sized for a few counselors: the smallest KV cache vLLM starts with
                    # (one full-length request), as a server for 4 counselors has it
                    "max_num_seqs": 4,
                }
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
    yield settings, plan, supervisor
    supervisor.stop()


@pytest.fixture(scope="session")
def vllm_remote(vllm_server):
    """A RemoteAssistant connected to the session's server through its socket."""
    from engine.inference.remote import RemoteAssistant

    settings, plan, _ = vllm_server
    settings = settings.model_copy(
        update={
            "backend": settings.backend.model_copy(
                update={"kind": "openai", "base_url": plan.base_url, "socket": plan.socket}
            )
        },
        deep=True,
    )
    helper = RemoteAssistant(settings)
    helper.load()
    return helper
