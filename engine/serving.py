"""``phyassist server``: one vLLM server for many counselors on this machine.

vLLM lives in its own environment (``.venv-vllm``: it pins a newer transformers than ours),
so this module never imports it: it builds the command line, starts the server as a child
process bound to 127.0.0.1 with a generated API key, waits until it answers, restarts it if
it dies, and stops it on Ctrl+C. The key goes to a 0600 file and to the child through its
environment (``VLLM_API_KEY``), never on a command line that ``ps`` shows to other users.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import PhyAssistError, ServerError
from engine.inference.openai_client import ServerClient, api_key_path, write_api_key
from engine.settings import Settings

__all__ = ["ServerPlan", "Supervisor", "connect_hint", "plan_server", "vllm_python"]

Say = Callable[[str], None]
LOGITS_PROCESSOR = "engine.inference.vllm_logits:DraftConstraint"
SOURCE_ROOT = Path(__file__).resolve().parent.parent


def vllm_python(settings: Settings) -> Path:
    """The Python of vLLM's environment (``server.python``, else ``.venv-vllm``)."""
    path = settings.server.python or SOURCE_ROOT / ".venv-vllm" / "bin" / "python"
    if not Path(path).is_file():
        raise PhyAssistError(
            f"vLLM's environment was not found ({path}). Create it with `./dev vllm-env` "
            "(or set server.python to a Python with vllm installed)."
        )
    return Path(path)


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return 0


@dataclass
class ServerPlan:
    """Everything needed to start the server, and where clients find it."""

    argv: list[str]
    env: dict[str, str]
    model_dir: Path
    served_name: str
    base_url: str
    key_file: Path
    gpus: int = 0
    notes: list[str] = field(default_factory=list)


def plan_server(settings: Settings, say: Say | None = None, *, new_key: bool = False) -> ServerPlan:
    """The vLLM command line for ``settings.model`` on this machine (dequantizing the
    embedded GGUF first, once, if needed), and its API key (generated on first use)."""
    from engine.model.llm import model_directory, resolve_spec

    say = say or (lambda _m: None)
    server = settings.server
    python = vllm_python(settings)
    source = resolve_spec(settings)
    model_dir = model_directory(settings, say)
    key_file = api_key_path(settings)
    if new_key or not key_file.is_file():
        write_api_key(key_file, secrets.token_urlsafe(32))
    key = key_file.read_text(encoding="utf-8").strip()
    gpus = _gpu_count() if settings.model.device != "cpu" else 0
    argv = [
        str(python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        source.name,
        "--host",
        server.host,
        "--port",
        str(server.port),
        "--enable-lora",
        "--max-loras",
        str(server.max_loras),
        "--max-lora-rank",
        str(server.max_lora_rank),
        "--max-cpu-loras",
        str(max(server.max_cpu_loras, server.max_loras)),
        "--logits-processors",
        LOGITS_PROCESSOR,
        "--disable-uvicorn-access-log",  # no per-request lines (they name adapters)
    ]
    env = dict(os.environ)
    env.update(
        VLLM_API_KEY=key,
        VLLM_ALLOW_RUNTIME_LORA_UPDATING="True",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
        PYTHONPATH=os.pathsep.join(p for p in (str(SOURCE_ROOT), env.get("PYTHONPATH", "")) if p),
    )
    notes: list[str] = []
    if gpus:
        tp = server.tensor_parallel_size or gpus
        argv += ["--tensor-parallel-size", str(tp)]
        argv += ["--gpu-memory-utilization", str(server.gpu_memory_utilization)]
        if settings.model.load_in_4bit:
            argv += ["--quantization", "bitsandbytes"]
        notes.append(f"{tp} GPU(s), tensor parallel")
    else:
        # CPU: float32 as the local backend runs it (same greedy tokens), a bounded KV cache.
        argv += ["--dtype", "float32"]
        env["VLLM_CPU_KVCACHE_SPACE"] = str(server.cpu_kv_cache_gib)
        notes.append(f"CPU, float32, {server.cpu_kv_cache_gib} GiB KV cache")
    if server.max_model_len or settings.model.context_window:
        argv += ["--max-model-len", str(server.max_model_len or settings.model.context_window)]
    argv += list(server.extra_args)
    base_url = f"http://{server.host}:{server.port}/v1"
    return ServerPlan(argv, env, model_dir, source.name, base_url, key_file, gpus, notes)


def connect_hint(plan: ServerPlan) -> str:
    """What a counselor on this machine sets to use the server."""
    return (
        f"Counselors on this machine connect with:\n"
        f"  PHYASSIST_BACKEND__KIND=openai PHYASSIST_BACKEND__BASE_URL={plan.base_url} "
        f"PHYASSIST_BACKEND__API_KEY_FILE={plan.key_file} phyassist\n"
        f"(or the same as backend.* in settings.json). The key file must be readable by them "
        f"alone: copy it into each counselor's own config directory with mode 0600."
    )


class Supervisor:
    """Runs the server; restarts it when it dies (at most ``max_restarts`` times in a row
    within ``window_s``); stops it on SIGINT/SIGTERM."""

    def __init__(
        self,
        plan: ServerPlan,
        *,
        log: Path | None = None,
        say: Say | None = None,
        ready_timeout_s: float = 600.0,
        max_restarts: int = 3,
        window_s: float = 300.0,
    ) -> None:
        self.plan = plan
        self.log = log
        self.say = say or (lambda _m: None)
        self.ready_timeout_s = ready_timeout_s
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.process: subprocess.Popen[bytes] | None = None
        self._stopping = False

    def start(self) -> None:
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                self.plan.argv,
                env=self.plan.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl+C reaches us; we stop the server ourselves
            )
        finally:
            if self.log:
                out.close()  # type: ignore[union-attr]

    def wait_ready(self) -> float:
        """Seconds until the server answered ``/v1/models``; ServerError if it died first."""
        assert self.process is not None
        key = self.plan.env.get("VLLM_API_KEY")
        client = ServerClient(self.plan.base_url, key, connect_timeout_s=2, read_timeout_s=10)
        start = time.monotonic()
        try:
            while True:
                code = self.process.poll()
                if code is not None:
                    raise ServerError(
                        f"vLLM exited with status {code} while starting"
                        + (f"; see {self.log}" if self.log else "")
                    )
                try:
                    client.models()
                    return time.monotonic() - start
                except ServerError:
                    pass
                if time.monotonic() - start > self.ready_timeout_s:
                    raise ServerError(
                        f"vLLM did not answer within {self.ready_timeout_s:.0f} s"
                        + (f"; see {self.log}" if self.log else "")
                    )
                time.sleep(1.0)
        finally:
            client.close()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stopping = True
        process = self.process
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def run_forever(self) -> int:
        """Start, wait until ready, then watch; returns the exit status for the CLI."""
        restarts: list[float] = []

        def on_signal(signum: int, _frame: object) -> None:
            self._stopping = True

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while not self._stopping:
                self.start()
                try:
                    took = self.wait_ready()
                except ServerError as exc:
                    if self._stopping:
                        break
                    self.say(f"phyassist server: {exc}")
                    self.stop()
                    return 1
                self.say(f"vLLM ready in {took:.0f} s at {self.plan.base_url}.")
                assert self.process is not None
                while not self._stopping and self.process.poll() is None:
                    time.sleep(0.5)
                if self._stopping:
                    break
                now = time.monotonic()
                restarts = [t for t in restarts if now - t < self.window_s] + [now]
                code = self.process.returncode
                if len(restarts) > self.max_restarts:
                    self.say(f"vLLM exited ({code}) {len(restarts)} times; giving up.")
                    return 1
                self.say(f"vLLM exited ({code}); restarting it.")
        finally:
            self.stop()
            for s, handler in old.items():
                signal.signal(s, handler)
        return 0


def main_print(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
