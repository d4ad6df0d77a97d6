"""Where the CPU vLLM server's memory goes, per process, under chosen server settings.

For each configuration (``--config NAME KEY=VALUE ...``: ``server.*`` settings, and ``env:NAME=V``
for an environment variable of the server) the bench starts the server that ``phyassist
server`` would start (``engine.serving.plan_server``) for the embedded model, sends one request
(a 500-token prompt, 32 tokens greedy, the base model), then reads every process of the server
tree: RSS, PSS, USS and the resident memory by mapping (anonymous, heap, the largest shared
libraries). Prints one JSON object. The import floor of vLLM's processes (what a fresh Python
holds after importing torch, vLLM, the engine core and the API server modules) is measured
alongside, in the same vLLM environment.

    python -m bench.serve_memory                      # the default configuration only
    python -m bench.serve_memory --config seqs4 max_num_seqs=4 \
        --config seqs4-bf16 max_num_seqs=4 cpu_dtype=bfloat16
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

IMPORTS = ("torch", "vllm", "vllm.v1.engine.core", "vllm.entrypoints.openai.api_server")


def _mappings(pid: int, top: int = 6) -> dict[str, int]:
    """Resident MiB by mapping: [anon], [heap], or the package a file belongs to."""
    totals: collections.Counter[str] = collections.Counter()
    name = "[anon]"
    with open(f"/proc/{pid}/smaps", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            parts = line.split()
            if not parts:
                continue
            if parts[0].endswith(":"):
                if parts[0] == "Rss:":
                    totals[name] += int(parts[1])
                continue
            name = parts[5] if len(parts) > 5 else "[anon]"
            if "site-packages/" in name:
                name = name.split("site-packages/")[1].split("/")[0]
    return {k: v // 1024 for k, v in totals.most_common(top)}


def _tree(pid: int) -> list[dict[str, Any]]:
    import psutil

    root = psutil.Process(pid)
    rows = []
    for proc in [root, *root.children(recursive=True)]:
        info = proc.memory_full_info()
        rows.append(
            {
                "pid": proc.pid,
                "name": " ".join(proc.cmdline())[:60],
                "rss_gib": round(info.rss / 2**30, 3),
                "pss_gib": round(info.pss / 2**30, 3),
                "uss_gib": round(info.uss / 2**30, 3),
                "mappings_mib": _mappings(proc.pid),
            }
        )
    return rows


def _parse(items: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    server: dict[str, Any] = {}
    env: dict[str, str] = {}
    for item in items:
        key, _, value = item.partition("=")
        if key.startswith("env:"):
            env[key[4:]] = value
            continue
        try:
            server[key] = json.loads(value)
        except json.JSONDecodeError:
            server[key] = value
    return server, env


def measure(name: str, server: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    from engine.inference.openai_client import ServerClient
    from engine.serving import Supervisor, plan_server
    from engine.settings import Settings

    home = Path(tempfile.mkdtemp(prefix="phyassist-bench-serve-memory-"))
    os.environ["PHYASSIST_BACKEND__API_KEY_FILE"] = str(home / "api-key")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(
        config_dir=home,
        model={"device": "cpu", "domain_adapter": None},
        server={"port": port, **server},
    )
    plan = plan_server(settings)
    plan.env.update(env)
    supervisor = Supervisor(plan, log=home / "vllm.log")
    out: dict[str, Any] = {"config": name, "server": server, "env": env, "argv": plan.argv[3:]}
    supervisor.start()
    try:
        out["ready_s"] = round(supervisor.wait_ready(), 1)
        client = ServerClient(plan.base_url, plan.env["VLLM_API_KEY"], read_timeout_s=600)
        served = client.models()[0]["id"]
        body = {
            "model": served,
            "prompt": list(range(100, 600)),
            "max_tokens": 32,
            "temperature": 0.0,
            "return_token_ids": True,
        }
        start = time.perf_counter()
        for _event in client.stream_completion(body, threading.Event()):
            pass
        out["request_s"] = round(time.perf_counter() - start, 2)
        client.close()
        assert supervisor.process is not None
        out["processes"] = _tree(supervisor.process.pid)
        out["total_rss_gib"] = round(sum(p["rss_gib"] for p in out["processes"]), 3)
        out["total_pss_gib"] = round(sum(p["pss_gib"] for p in out["processes"]), 3)
        out["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        supervisor.stop()
    return out


def import_floor(python: Path) -> dict[str, int]:
    """RSS (MiB) of a fresh Python of vLLM's environment after each import."""
    floor = {}
    for module in IMPORTS:
        code = (
            f"import gc, {module}; gc.collect(); "
            "print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])"
        )
        run = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
        floor[module] = int(run.stdout.strip().splitlines()[-1]) // 1024
    return floor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        nargs="+",
        action="append",
        metavar=("NAME", "KEY=VALUE"),
        help="a configuration: its name, then server.* settings and env:NAME=VALUE",
    )
    args = parser.parse_args()
    configs = args.config or [["default"]]

    from engine.serving import vllm_python
    from engine.settings import Settings

    out: dict[str, Any] = {
        "bench": "serve_memory",
        "import_floor_rss_mib": import_floor(vllm_python(Settings())),
        "runs": [],
    }
    for name, *items in configs:
        server, env = _parse(items)
        row = measure(name, server, env)
        out["runs"].append(row)
        print(
            json.dumps({k: row[k] for k in ("config", "total_rss_gib", "total_pss_gib")}),
            file=sys.stderr,
            flush=True,
        )
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
