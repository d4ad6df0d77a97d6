"""The console script's dispatcher."""

from phyassist_tui.cli import build_parser, main


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
