"""The console script's dispatcher."""

from phyassist_tui.cli import build_parser, main
from tests.support import REPO


def test_help_lists_subcommands(capsys):
    parser = build_parser()
    help_text = parser.format_help()
    assert "COMMAND" in help_text


def test_unknown_subcommand_exits_nonzero():
    try:
        main(["no-such-command"])
    except SystemExit as exc:
        assert exc.code == 2
    else:
        raise AssertionError("argparse should reject an unknown subcommand")


def test_domain_pipeline_commands_need_no_textual():
    """`data prepare`, `domain train`, `eval imhi` run on a headless GPU host (the engine's
    dependencies only): building their parser and running `--help` imports no textual."""
    import os
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['textual'] = None\n"
        "from phyassist_tui.cli import main\n"
        "for cmd in (['data', 'prepare'], ['domain', 'train'], ['eval', 'imhi']):\n"
        "    try:\n"
        "        main([*cmd, '--help'])\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 0, cmd\n"
        "assert not any(m.startswith('textual') for m in sys.modules if sys.modules[m])\n"
    )
    root = str(REPO)
    env = dict(os.environ, PYTHONPATH=root)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--time-budget" in done.stdout and "--compare-base" in done.stdout
