"""``phyassist`` runs the TUI by default; ``serve`` wraps the same app in textual-serve."""

from __future__ import annotations

import pytest

from phyassist_tui.cli import build_parser
from phyassist_tui.commands import tui


def test_tui_is_registered_with_model_option():
    args = build_parser().parse_args(["tui", "--model", "/models/x.gguf"])
    assert args.handler is tui.run_tui and args.model == "/models/x.gguf"


def test_serve_is_registered_with_port():
    args = build_parser().parse_args(["serve", "--port", "8123"])
    assert args.handler is tui.run_serve and args.port == 8123


def test_model_path_reaches_settings(tmp_path):
    settings = tui._settings(str(tmp_path / "weights.gguf"))
    assert settings.model.spec == str(tmp_path / "weights.gguf")


def test_serve_runs_the_tui_command_on_localhost(monkeypatch):
    seen = {}

    class FakeServer:
        def __init__(self, command, host, port, title, templates_path):
            seen.update(command=command, host=host, port=port, templates=templates_path)

        def serve(self):
            seen["served"] = True

    import textual_serve.server

    monkeypatch.setattr(textual_serve.server, "Server", FakeServer)
    args = build_parser().parse_args(["serve", "--port", "8124"])
    assert args.handler(args) == 0
    assert seen["host"] == "localhost" and seen["port"] == 8124 and seen["served"]
    assert seen["command"].endswith("-m phyassist_tui tui")
    # our page: the terminal takes the keys on load (no click first)
    assert "focusTerminal" in (seen["templates"] / "app_index.html").read_text(encoding="utf-8")


@pytest.mark.parametrize(("argv", "model"), [([], None), (["--model", "/m"], "/m")])
def test_default_command_is_tui(argv, model, monkeypatch):
    from phyassist_tui import cli

    called = {}

    def fake_run(args):
        called["model"] = args.model
        return 0

    monkeypatch.setattr(tui, "run_tui", fake_run)  # registration looks it up again
    assert cli.main(argv) == 0
    assert called == {"model": model}
