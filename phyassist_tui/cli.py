"""The ``phyassist`` command: the TUI by default, plus subcommands for scripted work.

Each area registers its subcommands from a module under ``phyassist_tui.commands`` that
exposes ``register(subparsers)``; heavy imports happen inside the handlers so that
``phyassist --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from engine.errors import PhyAssistError

# Modules that add subcommands. A module listed here that does not exist yet is skipped.
COMMAND_MODULES = (
    "phyassist_tui.commands.tui",
    "phyassist_tui.commands.patients",
    "phyassist_tui.commands.train",
    "phyassist_tui.commands.adapter",
    "phyassist_tui.commands.data",
    "phyassist_tui.commands.evaluate",
    "phyassist_tui.commands.audit",
    "phyassist_tui.commands.doctor",
    "phyassist_tui.commands.backup",
    "phyassist_tui.commands.knowledge",
    "phyassist_tui.commands.server",
)
TUI_MODULES = ("phyassist_tui.commands.tui",)


def build_parser(modules: tuple[str, ...] = COMMAND_MODULES) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phyassist",
        description="PhyAssist: a terminal assistant for psychological counselors.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # trust: harden the real process only; tests call main(argv) in-process
        from engine.trust.hardening import harden_process

        harden_process()  # no core dumps, not ptrace-able, umask 077
    argv = sys.argv[1:] if argv is None else argv
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["tui", *argv]
    # The workspace is what a counselor starts many times a day: registering the other
    # commands imports the data and evaluation modules (~0.2 s), so it registers only its own.
    # `backup run` from cron every hour: the same, its own module only.
    if argv[0] in ("tui", "serve"):
        modules = TUI_MODULES
    elif argv[0] == "backup":
        modules = ("phyassist_tui.commands.backup",)
    else:
        modules = COMMAND_MODULES
    parser = build_parser(modules)
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except PhyAssistError as exc:
        print(f"phyassist: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("phyassist: interrupted", file=sys.stderr)
        return 130
