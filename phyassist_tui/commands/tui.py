"""``phyassist tui`` (the default) and ``phyassist serve`` (the same app in a browser)."""

from __future__ import annotations

import argparse
import os


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
    serve.add_argument(
        "--max-sessions",
        type=int,
        default=2,
        help="browser sessions at once (each runs its own TUI process; default 2)",
    )
    serve.set_defaults(handler=run_serve)


def _settings(model: str | None):
    from phyassist_tui.commands._common import settings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    return settings(spec=os.path.abspath(os.path.expanduser(model)) if model else None)


def run_tui(args: argparse.Namespace) -> int:
    from phyassist_tui.startup import pause_gc

    pause_gc()  # resumed by the app once the patient list is up (see phyassist_tui.startup)
    from phyassist_tui.app import PhyAssistApp

    app = PhyAssistApp(_settings(args.model))
    app.run()
    return int(app.return_code or 0)


def run_serve(args: argparse.Namespace) -> int:
    from phyassist_tui.serve import serve, tui_command

    model = os.path.abspath(os.path.expanduser(args.model)) if args.model else None
    return serve(
        tui_command(model),
        port=args.port,
        data_dir=_settings(None).data_dir,
        max_sessions=max(1, args.max_sessions),
    )
