"""``phyassist server``: start and supervise vLLM for the configured model on this machine.

Counselors' ``phyassist`` then use it with ``backend.kind = "openai"`` (the command prints
how). The logic is in ``engine.serving``; this module only parses arguments and prints.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    server = subparsers.add_parser(
        "server",
        help="serve the model to many counselors with vLLM (OpenAI-compatible, per-patient LoRA)",
    )
    server.add_argument("--model", help="model spec (default: settings' model.spec)")
    server.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where to run it")
    server.add_argument("--port", type=int, help="port on 127.0.0.1 (default 8000)")
    server.add_argument(
        "--socket",
        type=Path,
        help="listen on this Unix socket instead (0600 in a 0700 directory: this user only)",
    )
    server.add_argument("--log", type=Path, help="append vLLM's output to this file")
    server.add_argument("--new-key", action="store_true", help="generate a new API key")
    server.add_argument(
        "--print-command", action="store_true", help="print the vLLM command line and exit"
    )
    server.set_defaults(handler=_cmd_server)


def _cmd_server(args: argparse.Namespace) -> int:
    from engine.serving import Supervisor, connect_hint, main_print, plan_server
    from phyassist_tui.commands._common import settings

    cfg = settings(spec=args.model, device=args.device)
    given = {"port": args.port, "socket": args.socket}
    if any(given.values()):
        update = {k: v for k, v in given.items() if v}
        cfg = cfg.model_copy(update={"server": cfg.server.model_copy(update=update)}, deep=True)
    plan = plan_server(cfg, main_print, new_key=args.new_key)
    if args.print_command:
        print(shlex.join(plan.argv))
        return 0
    main_print(
        f"phyassist server: {plan.served_name} on {', '.join(plan.notes)}; "
        f"API key in {plan.key_file} (0600)."
    )
    main_print(connect_hint(plan))
    supervisor = Supervisor(plan, log=args.log, say=main_print)
    return supervisor.run_forever()
