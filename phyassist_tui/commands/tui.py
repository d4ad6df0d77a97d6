"""``phyassist tui`` (the default) and ``phyassist serve`` (the same app in a browser)."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    tui = subparsers.add_parser("tui", help="open the counselor's workspace (default)")
    tui.add_argument(
        "--model",
        metavar="PATH",
        help="local Hugging Face model directory or .gguf file (default: the embedded model)",
    )
    tui.set_defaults(handler=run_tui)

    serve = subparsers.add_parser("serve", help="serve the workspace in a browser on localhost")
    serve.add_argument("--port", type=int, default=8000, help="port on localhost (default 8000)")
    serve.add_argument("--model", metavar="PATH", help="as for `phyassist tui`")
    serve.set_defaults(handler=run_serve)


def _settings(model: str | None):
    from engine.settings import load_settings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    settings = load_settings()
    if model:
        settings.model.spec = os.path.abspath(os.path.expanduser(model))
    return settings


def run_tui(args: argparse.Namespace) -> int:
    from phyassist_tui.startup import pause_gc

    pause_gc()  # resumed by the app once the patient list is up (see phyassist_tui.startup)
    from phyassist_tui.app import PhyAssistApp

    app = PhyAssistApp(_settings(args.model))
    app.run()
    return int(app.return_code or 0)


SERVE_TEMPLATES = Path(__file__).resolve().parent.parent / "serve_templates"


def run_serve(args: argparse.Namespace) -> int:
    from textual_serve.server import Server

    command = [sys.executable, "-m", "phyassist_tui", "tui"]
    if args.model:
        command += ["--model", os.path.abspath(os.path.expanduser(args.model))]
    Server(
        shlex.join(command),
        host="localhost",
        port=args.port,
        title="PhyAssist",
        # textual-serve's page plus: the terminal takes the keys on load; no web font
        templates_path=SERVE_TEMPLATES,
    ).serve()
    return 0
