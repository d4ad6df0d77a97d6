"""prepare(): counts per rule, the written dataset, the chat format and the CLI report."""

from __future__ import annotations

import json

import pytest

from engine.dataprep import prepare
from engine.dataprep.pipeline import REPORT_FILE, load_prepared
from engine.errors import InputRejected
from phyassist_tui.cli import main


def test_prepare_writes_conversational_prompt_completion(
    tmp_path, imhi_fixture, counselchat_fixture
):
    result = prepare(tmp_path / "ds", imhi_dir=imhi_fixture, counselchat_csv=counselchat_fixture)
    ds = load_prepared(tmp_path / "ds")
    assert set(ds) <= {"train", "validation"}
    assert sum(len(split) for split in ds.values()) == result.total.rows_out == 15
    row = ds["train"][0]
    assert [m["role"] for m in row["prompt"]] == ["user"]
    assert [m["role"] for m in row["completion"]] == ["assistant"]
    from trl.data_utils import is_conversational

    assert is_conversational(row)
    # CounselChat's own split is kept: the grief question is in its val split.
    val = [r for r in ds["validation"] if r["source"] == "counselchat"]
    assert [r["task"] for r in val] == ["grief"]
    report = json.loads((tmp_path / "ds" / REPORT_FILE).read_text(encoding="utf-8"))
    assert report["sources"]["imhi"]["dropped"]["drop_broken_encoding"] == 3
    assert report["total"]["rows_out"] == 15


def test_prepare_counts_per_source(tmp_path, imhi_fixture, counselchat_fixture):
    result = prepare(tmp_path / "ds", imhi_dir=imhi_fixture, counselchat_csv=counselchat_fixture)
    assert result.reports["imhi"].dropped == {
        "drop_empty": 2,
        "drop_over_long": 1,
        "drop_urls": 1,
        "drop_broken_encoding": 3,
        "drop_test_overlap": 1,
        "drop_exact_duplicates": 1,
    }
    assert result.reports["counselchat"].dropped == {
        "drop_empty": 1,
        "drop_over_long": 0,
        "drop_urls": 1,
        "drop_broken_encoding": 1,
        "drop_exact_duplicates": 1,
        "keep_best_voted_answer": 2,
    }


def test_cli_prints_rule_counts_and_all_answers(
    tmp_path, capsys, imhi_fixture, counselchat_fixture
):
    argv = ["data", "prepare", "--counselchat", str(counselchat_fixture), "--out", str(tmp_path)]
    assert main([*argv, "--all-answers"]) == 0
    out = capsys.readouterr().out
    assert "keep_best_voted_answer" not in out
    assert "rows out" in out and "drop_urls" in out
    assert main([*argv, "--max-chars", "150"]) == 0
    lines = {ln.split()[0]: ln.split()[1:] for ln in capsys.readouterr().out.splitlines() if ln}
    assert lines["drop_over_long"][0] != "0"


def test_prepare_rejects_bad_input(tmp_path, imhi_fixture):
    with pytest.raises(InputRejected):
        prepare(tmp_path / "x")
    with pytest.raises(InputRejected):
        prepare(tmp_path / "x", imhi_dir=tmp_path)  # no CSVs there
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(InputRejected, match="CounselChat"):
        prepare(tmp_path / "x", counselchat_csv=bad)
    assert main(["data", "prepare", "--out", str(tmp_path / "y")]) == 1


def test_prepare_is_deterministic(tmp_path, imhi_fixture, counselchat_fixture):
    a = prepare(tmp_path / "a", imhi_dir=imhi_fixture, counselchat_csv=counselchat_fixture)
    b = prepare(tmp_path / "b", imhi_dir=imhi_fixture, counselchat_csv=counselchat_fixture)
    assert a.split_rows == b.split_rows
    assert (
        load_prepared(tmp_path / "a")["train"]["prompt"]
        == load_prepared(tmp_path / "b")["train"]["prompt"]
    )


def test_real_data_prepare_counts(tmp_path, shared_data):
    """The shared IMHI + CounselChat: every rule runs and the dataset is sizeable."""
    result = prepare(
        tmp_path / "ds",
        imhi_dir=shared_data / "imhi",
        counselchat_csv=shared_data / "counsel_chat" / "counsel_chat.csv",
    )
    assert result.reports["imhi"].rows_in == 13218
    assert result.reports["counselchat"].rows_in == 2012
    # one answer per CounselChat question that has a clean answer
    assert result.reports["counselchat"].rows_out <= 785
    assert result.split_rows["train"] > 12000
