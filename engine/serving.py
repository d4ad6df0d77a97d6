"""``phyassist server``: one vLLM server for many counselors on this machine.

vLLM lives in its own environment (``.venv-vllm``: it pins a newer transformers than ours),
so this module never imports it: it builds the command line, starts the server as a child
process bound to 127.0.0.1 with a generated API key, waits until it answers, restarts it if
it dies, and stops it on Ctrl+C. The key goes to a 0600 file and to the child through its
environment (``VLLM_API_KEY``), never on a command line that ``ps`` shows to other users.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket as socketlib
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import PhyAssistError, ServerError
from engine.inference.openai_client import ServerClient, api_key_path, write_api_key
from engine.settings import Settings

__all__ = [
    "ServerPlan",
    "Supervisor",
    "connect_hint",
    "cpu_kv_cache_bytes",
    "kv_bytes_per_token",
    "plan_server",
    "prepare_socket",
    "vllm_python",
]

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
    socket: Path | None = None  # listening on this Unix socket instead of TCP


def kv_bytes_per_token(model_dir: Path, dtype_bytes: int = 4) -> int:
    """KV cache bytes one token takes: keys and values of every layer (config.json's shapes)."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    config = config.get("text_config", config)
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or config["hidden_size"] // heads)
    return 2 * int(config["num_hidden_layers"]) * kv_heads * head_dim * dtype_bytes


def _model_max_len(model_dir: Path) -> int:
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    return int(config.get("text_config", config).get("max_position_embeddings") or 2048)


VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's allowed max_lora_rank
CPU_KV_BLOCK_TOKENS = 128  # vLLM's CPU KV block (its default there; passed as --block-size)
CPU_DTYPE_BYTES = {"float32": 4, "bfloat16": 2}


def cpu_kv_cache_bytes(tokens: int, model_dir: Path, dtype: str = "float32") -> int:
    """A CPU KV cache that holds ``tokens`` tokens at once: whole blocks, plus the one block
    vLLM keeps back (its null block). Sized at exactly ``tokens`` it refused to start when
    ``tokens`` was one full-length request ("0.35 GiB needed, 0.35 GiB available")."""
    blocks = -(-tokens // CPU_KV_BLOCK_TOKENS) + 1
    return blocks * CPU_KV_BLOCK_TOKENS * kv_bytes_per_token(model_dir, CPU_DTYPE_BYTES[dtype])


def lora_needs(settings: Settings, model_dir: Path) -> tuple[int, list[str] | None]:
    """Rank and modules of the largest LoRA this server is handed: a patient adapter of the
    training recipe (its rank, its modules) merged with the domain adapter it was trained
    over (ranks add up, modules unite). Modules None: the domain adapter's are not a list."""
    from engine.model.adapters import domain_adapter_path
    from engine.training.config import Hyperparameters, target_modules_for

    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    rank = int(Hyperparameters.model_fields["lora_r"].default)
    targets: set[str] | None = set(target_modules_for(str(config.get("model_type", ""))))
    domain = domain_adapter_path(settings.model)
    if domain is not None and (domain / "adapter_config.json").is_file():
        adapter = json.loads((domain / "adapter_config.json").read_text(encoding="utf-8"))
        rank += int(adapter.get("r", 0))
        modules = adapter.get("target_modules")
        targets = targets | set(modules) if isinstance(modules, list) and targets else None
    return rank, sorted(targets) if targets else None


def prepare_socket(path: Path) -> None:
    """Make ``path``'s directory 0700 (created if missing; an existing one must be ours and
    closed to others) and remove a stale socket left by a server that died."""
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = folder.stat()
    if info.st_uid != os.getuid() or info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PhyAssistError(
            f"The socket's directory {folder} must belong to you and be closed to others "
            f"(mode 0700: `chmod 700 {folder}`), so no other user can reach the server."
        )
    if path.is_socket():
        with socketlib.socket(socketlib.AF_UNIX) as probe:
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink()  # nothing listens: a leftover
            else:
                raise PhyAssistError(f"A server is already listening on {path}.")
    elif path.exists():
        raise PhyAssistError(f"{path} exists and is not a socket; choose another server.socket.")


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
    need_rank, lora_modules = lora_needs(settings, model_dir)
    max_rank = server.max_lora_rank or next(
        (r for r in VLLM_LORA_RANKS if r >= need_rank), VLLM_LORA_RANKS[-1]
    )
    argv = [
        str(python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        source.name,
        *(["--uds", str(server.socket)] if server.socket else []),
        *([] if server.socket else ["--host", server.host, "--port", str(server.port)]),
        "--enable-lora",
        "--max-loras",
        str(server.max_loras),
        "--max-lora-rank",
        str(max_rank),
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
        # CPU: float32 as the local backend runs it (same greedy tokens); the engine and its
        # model worker in one process (vLLM's default forks a worker: ~0.6 GiB more for no
        # gain with one CPU worker); a KV cache sized to need (vLLM touches all of it at start).
        dtype = server.cpu_dtype
        argv += ["--dtype", dtype, "--max-num-seqs", str(server.max_num_seqs or 16)]
        argv += ["--block-size", str(CPU_KV_BLOCK_TOKENS)]
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        # In one process vLLM does not pin its OpenMP threads; left at one per core they
        # fight the front end and the counselors' processes (measured on 2 cores: 0.9 tok/s
        # instead of 10.5). One core is left to the front end, as vLLM's own worker does.
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) - 1)))
        env.pop("VLLM_CPU_KVCACHE_SPACE", None)  # would override the size set here
        max_len = server.max_model_len or settings.model.context_window
        max_len = max_len or _model_max_len(model_dir)
        if server.cpu_kv_cache_gib:
            kv_bytes = int(server.cpu_kv_cache_gib * 2**30)
        else:
            tokens = max(max_len, (server.max_num_seqs or 16) * server.kv_tokens_per_seq)
            kv_bytes = cpu_kv_cache_bytes(tokens, model_dir, dtype)
        argv += ["--kv-cache-memory-bytes", str(kv_bytes)]
        # vLLM's CPU LoRA gathers every slot's weights per token, used or not: slots only on
        # the modules adapters train (q/k/v/o without a domain adapter: a 500-token prefill
        # with a LoRA took 3.8 s instead of 15 s with all seven projections, measured).
        modules = server.lora_target_modules or lora_modules
        if modules:
            argv += ["--lora-target-modules", *modules]
        notes.append(f"CPU, {dtype}, {kv_bytes / 2**30:.2f} GiB KV cache")
    if gpus and server.max_num_seqs:
        argv += ["--max-num-seqs", str(server.max_num_seqs)]
    if server.max_model_len or settings.model.context_window:
        argv += ["--max-model-len", str(server.max_model_len or settings.model.context_window)]
    argv += list(server.extra_args)
    # Over a socket the URL's host is not used, only its path.
    base_url = (
        f"http://{server.host}:{server.port}/v1" if not server.socket else "http://localhost/v1"
    )
    return ServerPlan(
        argv, env, model_dir, source.name, base_url, key_file, gpus, notes, server.socket
    )


def connect_hint(plan: ServerPlan) -> str:
    """What a counselor on this machine sets to use the server."""
    where = (
        f"PHYASSIST_BACKEND__SOCKET={plan.socket}"
        if plan.socket
        else f"PHYASSIST_BACKEND__BASE_URL={plan.base_url}"
    )
    return (
        f"Counselors on this machine connect with:\n"
        f"  PHYASSIST_BACKEND__KIND=openai {where} "
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
        if self.plan.socket:
            prepare_socket(self.plan.socket)
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                self.plan.argv,
                env=self.plan.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl+C reaches us; we stop the server ourselves
                # vLLM binds the socket with the process umask: owner-only from the start.
                umask=0o077 if self.plan.socket else -1,
            )
        finally:
            if self.log:
                out.close()  # type: ignore[union-attr]

    def wait_ready(self) -> float:
        """Seconds until the server answered ``/v1/models``; ServerError if it died first."""
        assert self.process is not None
        key = self.plan.env.get("VLLM_API_KEY")
        client = ServerClient(
            self.plan.base_url,
            key,
            connect_timeout_s=2,
            read_timeout_s=10,
            socket=self.plan.socket,
        )
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
                    if self.plan.socket:  # 0700 as bound; read-write is all a client needs
                        self.plan.socket.chmod(0o600)
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
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout_s)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self.plan.socket and self.plan.socket.is_socket():
            self.plan.socket.unlink(missing_ok=True)  # vLLM leaves it behind

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
                where = f"unix:{self.plan.socket}" if self.plan.socket else self.plan.base_url
                self.say(f"vLLM ready in {took:.0f} s at {where}.")
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
