"""``python -m bench.store`` still runs end to end (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import json

from bench import store as bench


def test_store_benchmark_runs_and_reports_baselines(tmp_path, capsys):
    argv = ["--patients", "6", "--notes", "2", "--reps", "4", "--scrypt-log2-n", "10"]
    assert bench.main([*argv, "--dir", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("unlock", "unlock_after_crash", "list", "search_name", "open_patient"):
        assert report["results"][key]["n"] >= 4
    assert set(report["targets_ms"]) == {"open_patient", "save_note", "search_name"}
    assert "save_note/plain_json_fsync_save" in report["ratio_p50_vs_baseline"]
    assert report["config"]["patients"] == 6
    assert list(tmp_path.iterdir()) == []  # the temporary vault is removed
