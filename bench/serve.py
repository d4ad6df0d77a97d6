"""Many counselors: one vLLM server vs separate local engines; prints one JSON object.

For each count N (``--counselors 1 4 16``) N simulated counselors each run one Analysis at
the same moment (the engine's structured draft, greedy, a statement from a fixed EN/ZH list),
each with its own patient adapter (a random rank-8 LoRA, a different one per counselor);
time to first token is the engine's own (request to the model's first token: the structured
draft's headings, which stream at once, do not count):

* ``server``: N client processes with ``backend.kind = "openai"`` against one vLLM server
  started here by ``engine.serving`` (what ``phyassist server`` runs), on this machine;
* ``local``: N processes each loading its own copy of the model (today's TUI).

Every counselor is its own process (as N TUIs would be). Each loads, reports ready, waits
for the same start signal and reports its time to first text and tokens written. Per side:
``aggregate_tokens_per_s`` = all tokens / wall time from start to the last draft done;
``ttft_p50_s``/``ttft_p95_s``; ``peak_rss_gib`` = the peak over the run of the summed
resident memory of every process of that side (server process tree included), and
``peak_pss_gib`` the same in proportional set size (a page shared by k processes counts 1/k
in each: the summed RSS counts shared library pages once per process, on both sides), with
the server's own part apart (``server_peak_rss_gib``/``server_peak_pss_gib``).
``ratios``: server / local throughput and memory, per N. The baseline (local) is measured in
the same run, never a stored figure. Load averages are recorded before and after each side.

Before each side the bench checks free memory: a side whose estimated need (PSS per process,
from the smaller N already measured, else 1.0 GiB per local engine and 0.6 GiB per client)
plus 1 GiB of headroom exceeds what the machine has available is skipped and says so.

    python -m bench.serve [--counselors 1 4 16] [--threads 1] [--port 8123] [--skip-local]
                          [--server max_num_seqs=4 --server cpu_dtype=bfloat16 ...]
                          [--adapters random8|product] [--local-dtype auto|bfloat16]

``--server KEY=VALUE`` sets one ``server.*`` setting of the server under test (what a
``settings.json`` would say), e.g. a server sized for the counselors it serves.

``--adapters random8`` (the default, as earlier runs): no domain adapter; each patient adapter
is a random rank-8 LoRA on q/v. ``--adapters product``: what the product runs by default: the
shipped domain adapter, and each patient adapter of the training recipe's rank and modules
trained over it (its card says so), so both backends stack domain + patient adapter; the
server gets the LoRA slots ``phyassist server`` plans for that stack. ``--local-dtype`` sets
the local engines' ``model.dtype`` (a bfloat16 server against float32 engines measures the
dtype as much as the batching).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

STATEMENTS = [
    "I can't sleep and I feel worthless since I lost my job.",
    "我最近总是失眠，觉得自己什么都做不好。",
    "My client panics before every exam and then freezes.",
    "他说和父母吵架以后一直很焦虑，不想上学。",
]


class MemoryBlobs:
    """The blob side of a vault, in memory (the bench holds no patient data)."""

    def __init__(self) -> None:
        self.blobs: dict[tuple[str, str], bytes] = {}

    def read_blob(self, pid: str, kind: str) -> bytes | None:
        return self.blobs.get((pid, kind))

    def write_blob(self, pid: str, kind: str, data: bytes) -> None:
        self.blobs[(pid, kind)] = bytes(data)

    def list_blobs(self, pid: str, prefix: str = "") -> list[str]:
        return [k for p, k in self.blobs if p == pid and k.startswith(prefix)]

    def set_has_adapter(self, pid: str, value: bool) -> None:
        pass


# (in, out, block) of each projection of the embedded model (SmolLM2-135M)
_SHAPES = {
    "q_proj": (576, 576, "self_attn"),
    "k_proj": (576, 192, "self_attn"),
    "v_proj": (576, 192, "self_attn"),
    "o_proj": (576, 576, "self_attn"),
    "gate_proj": (576, 1536, "mlp"),
    "up_proj": (576, 1536, "mlp"),
    "down_proj": (1536, 576, "mlp"),
}


def _random_adapter(
    seed: int, rank: int = 8, modules: tuple[str, ...] = ("q_proj", "v_proj")
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A random rank-``rank`` LoRA on ``modules`` of every layer of the embedded model."""
    import torch

    g = torch.Generator().manual_seed(seed)
    layers = 30
    state = {}
    for layer in range(layers):
        for name in modules:
            fan_in, out, block = _SHAPES[name]
            prefix = f"base_model.model.model.layers.{layer}.{block}.{name}"
            state[f"{prefix}.lora_A.weight"] = torch.randn(rank, fan_in, generator=g) * 0.02
            state[f"{prefix}.lora_B.weight"] = torch.randn(out, rank, generator=g) * 0.02
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": rank,
        "lora_alpha": 2 * rank,
        "target_modules": list(modules),
        "lora_dropout": 0.0,
        "bias": "none",
        "base_model_name_or_path": "embedded:smollm2-135m-instruct",
    }
    return config, state


# -- one counselor (a child process) -------------------------------------------------------


def _model_settings(adapters: str) -> dict[str, Any]:
    return {"device": "cpu"} if adapters == "product" else {"device": "cpu", "domain_adapter": None}


def _patient_adapter(index: int, adapters: str, settings: Any) -> tuple[dict, dict, dict]:
    """(config, state, card) of counselor ``index``'s patient adapter."""
    if adapters != "product":
        return (*_random_adapter(1000 + index), {})
    from engine.model.adapters import domain_adapter_path
    from engine.model.stack import CARD_KEY, adapter_identity
    from engine.training.config import Hyperparameters, target_modules_for

    rank = int(Hyperparameters.model_fields["lora_r"].default)
    config, state = _random_adapter(1000 + index, rank, tuple(target_modules_for("llama")))
    domain = domain_adapter_path(settings.model)
    assert domain is not None, "--adapters product needs the shipped domain adapter"
    return config, state, {CARD_KEY: adapter_identity(domain)}


def counselor(
    index: int, backend: str, url: str, threads: int, adapters: str, dtype: str = "auto"
) -> None:
    """Load, say ready, wait for "go" on stdin, draft once, print one JSON line."""
    import torch

    torch.set_num_threads(threads)
    from engine.model.adapters import AdapterRegistry
    from engine.records import Patient
    from engine.settings import Settings

    model = _model_settings(adapters)
    if backend == "local":
        model["dtype"] = dtype  # the local engines' model.dtype (auto: float32 on a CPU)
    settings = Settings(
        model=model,
        knowledge={"grounding": "off"},
        backend={"kind": backend, "base_url": url},
    )
    if backend == "openai":
        from engine.inference.remote import RemoteAssistant

        helper: Any = RemoteAssistant(settings)
    else:
        from engine.inference.assistant import Assistant

        helper = Assistant(settings)
        helper.prefix_cache.enabled = False  # one draft per counselor: nothing to reuse
    helper.load()
    store = MemoryBlobs()
    patient = Patient(name=f"Counselor {index}'s patient")
    config, state, card = _patient_adapter(index, adapters, settings)
    AdapterRegistry(store).save(patient.id, config, state, card, dtype=None)
    label = helper.use_patient(patient, store)
    print(json.dumps({"ready": True, "label": label}), flush=True)
    sys.stdin.readline()
    start = time.perf_counter()
    stream = helper.stream_analysis(
        patient, STATEMENTS[index % len(STATEMENTS)], cancel=threading.Event()
    )
    for _chunk in stream:
        pass
    stats = stream.stats  # ttft_s: the request to the model's first token (not the headings)
    print(
        json.dumps(
            {
                "ttft_s": stats.ttft_s if stats else None,
                "tokens": stats.tokens if stats else 0,
                "total_s": time.perf_counter() - start,
            }
        ),
        flush=True,
    )


# -- the parent ----------------------------------------------------------------------------


def _tree(pids: list[int]) -> list[Any]:
    import psutil

    seen: dict[int, Any] = {}
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for proc in procs:
            seen.setdefault(proc.pid, proc)
    return list(seen.values())


def _rss_tree(pids: list[int]) -> int:
    """Summed resident bytes of these processes and all their descendants."""
    import psutil

    total = 0
    for proc in _tree(pids):
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


def _pss_tree(pids: list[int]) -> int:
    """Summed proportional set size (shared pages split among their users)."""
    import psutil

    total = 0
    for proc in _tree(pids):
        with contextlib.suppress(psutil.Error):
            total += proc.memory_full_info().pss
    return total


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_side(
    backend: str,
    n: int,
    url: str,
    threads: int,
    extra_pids: list[int],
    adapters: str,
    local_dtype: str = "auto",
) -> dict:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    procs = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "bench.serve", "--child", str(i)),
                *(backend, url, str(threads), adapters, local_dtype),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(n)
    ]
    load_start = time.perf_counter()
    labels = []
    for proc in procs:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise SystemExit(f"a {backend} counselor failed to load")
        labels.append(json.loads(line)["label"])
    load_s = time.perf_counter() - load_start
    peak = {"rss": 0, "pss": 0, "server_rss": 0, "server_pss": 0}
    stop = threading.Event()
    load_before = _loadavg()

    def sample() -> None:
        ticks = 0
        pids = [p.pid for p in procs] + extra_pids
        while not stop.is_set():
            peak["rss"] = max(peak["rss"], _rss_tree(pids))
            if extra_pids:
                peak["server_rss"] = max(peak["server_rss"], _rss_tree(extra_pids))
            if ticks % 5 == 0:  # reading smaps is slower: once a second
                peak["pss"] = max(peak["pss"], _pss_tree(pids))
                if extra_pids:
                    peak["server_pss"] = max(peak["server_pss"], _pss_tree(extra_pids))
            ticks += 1
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    for proc in procs:
        proc.stdin.write("go\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
    results = [json.loads(proc.stdout.readline()) for proc in procs]  # type: ignore[union-attr]
    wall = time.perf_counter() - start
    stop.set()
    sampler.join()
    for proc in procs:
        proc.wait(60)
    ttfts = sorted(r["ttft_s"] for r in results if r["ttft_s"] is not None)
    tokens = sum(r["tokens"] for r in results)
    return {
        "counselors": n,
        "load_s": round(load_s, 1),
        "wall_s": round(wall, 2),
        "tokens": tokens,
        "aggregate_tokens_per_s": round(tokens / wall, 2),
        "ttft_p50_s": round(statistics.median(ttfts), 2) if ttfts else None,
        "ttft_p95_s": round(ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))], 2)
        if ttfts
        else None,
        "peak_rss_gib": round(peak["rss"] / 2**30, 2),
        "peak_pss_gib": round(peak["pss"] / 2**30, 2),
        **(
            {
                "server_peak_rss_gib": round(peak["server_rss"] / 2**30, 2),
                "server_peak_pss_gib": round(peak["server_pss"] / 2**30, 2),
            }
            if extra_pids
            else {}
        ),
        "loadavg_before": load_before,
        "loadavg_after": _loadavg(),
        "adapters": sorted(set(labels)),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counselors", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per local engine")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--skip-local", action="store_true")
    parser.add_argument("--adapters", choices=["random8", "product"], default="random8")
    parser.add_argument(
        "--local-dtype",
        choices=["auto", "float32", "bfloat16"],
        default="auto",
        help="model.dtype of the local engines (auto: float32 on a CPU, the product default)",
    )
    parser.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a server.* setting for the server under test (JSON value or a plain string)",
    )
    args = parser.parse_args()

    import psutil

    from engine.serving import Supervisor, plan_server
    from engine.settings import Settings

    home = Path(tempfile.mkdtemp(prefix="phyassist-bench-serve-"))
    os.environ["PHYASSIST_BACKEND__API_KEY_FILE"] = str(home / "api-key")
    server: dict[str, Any] = {"port": args.port or _free_port()}
    for item in args.server:
        key, _, value = item.partition("=")
        try:
            server[key] = json.loads(value)
        except json.JSONDecodeError:
            server[key] = value
    settings = Settings(
        config_dir=home,
        model=_model_settings(args.adapters),
        server=server,
    )
    plan = plan_server(settings)
    supervisor = Supervisor(plan, log=home / "vllm.log")
    started = time.perf_counter()
    supervisor.start()
    out: dict[str, Any] = {
        "bench": "serve",
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "available_gib_at_start": round(psutil.virtual_memory().available / 2**30, 1),
        "server_argv": plan.argv[3:],
        "server_settings": {k: v for k, v in server.items() if k != "port"},
        "adapters": args.adapters,
        "local_dtype": args.local_dtype,
        "loadavg_at_start": _loadavg(),
        "runs": [],
    }
    try:
        out["server_start_s"] = round(supervisor.wait_ready(), 1)
        assert supervisor.process is not None
        server_pid = supervisor.process.pid
        out["server_idle_rss_gib"] = round(_rss_tree([server_pid]) / 2**30, 2)
        out["server_idle_pss_gib"] = round(_pss_tree([server_pid]) / 2**30, 2)
        # Physical memory per counselor process (PSS: shared library pages split among the
        # processes that map them), until measured at a smaller N.
        per_process = {"openai": 0.6 * 2**30, "local": 1.0 * 2**30}
        for n in sorted(args.counselors):
            row: dict[str, Any] = {"counselors": n}
            sides = ["openai"] + ([] if args.skip_local else ["local"])
            for backend in sides:
                key = "server" if backend == "openai" else "local"
                need = n * per_process[backend] + 2**30
                available = psutil.virtual_memory().available
                if need > available:
                    row[key] = {
                        "skipped": f"needs ~{need / 2**30:.1f} GiB, "
                        f"{available / 2**30:.1f} GiB available"
                    }
                    continue
                extra = [server_pid] if backend == "openai" else []
                url = plan.base_url if backend == "openai" else ""
                row[key] = result = run_side(
                    backend, n, url, args.threads, extra, args.adapters, args.local_dtype
                )
                clients = (result["peak_pss_gib"] - result.get("server_peak_pss_gib", 0)) * 2**30
                per_process[backend] = clients / n  # measured replaces the first guess
            s, lo = row["server"], row.get("local", {})
            if "aggregate_tokens_per_s" in s and "aggregate_tokens_per_s" in lo:
                row["throughput_ratio"] = round(
                    s["aggregate_tokens_per_s"] / max(lo["aggregate_tokens_per_s"], 1e-9), 2
                )
                row["memory_ratio_rss"] = round(
                    s["peak_rss_gib"] / max(lo["peak_rss_gib"], 1e-9), 2
                )
                row["memory_ratio_pss"] = round(
                    s["peak_pss_gib"] / max(lo["peak_pss_gib"], 1e-9), 2
                )
            out["runs"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        supervisor.stop()
        out["total_s"] = round(time.perf_counter() - started, 1)
        out["loadavg_at_end"] = _loadavg()
    print(json.dumps(out, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        mode = sys.argv[6] if len(sys.argv) > 6 else "random8"
        dtype = sys.argv[7] if len(sys.argv) > 7 else "auto"
        counselor(int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), mode, dtype)
    else:
        main()
