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


def test_serve_runs_the_tui_command_on_localhost(monkeypatch, tmp_path, capsys):
    seen = {}
    monkeypatch.setenv("PHYASSIST_HOME", str(tmp_path))

    from phyassist_tui import serve as serve_module

    def fake_serve(self):
        token_file = tmp_path / "data" / serve_module.TOKEN_FILE
        seen.update(
            command=self.command,
            host=self.host,
            port=self.port,
            served=True,
            token_on_disk=token_file.read_text().strip() == self.token,
            templates=self.templates_path,
        )

    monkeypatch.setattr(serve_module.GuardedServer, "serve", fake_serve)
    args = build_parser().parse_args(["serve", "--port", "8124"])
    assert args.handler(args) == 0
    assert seen["host"] == "localhost" and seen["port"] == 8124 and seen["served"]
    assert seen["command"].endswith("-m phyassist_tui tui")
    assert seen["token_on_disk"]
    assert "?token=" in capsys.readouterr().out  # printed once for the counselor
    assert not (tmp_path / "data" / serve_module.TOKEN_FILE).exists()  # removed on exit
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
