"""`phyassist domain ship`: the card is built from the run's own result files."""

from __future__ import annotations

import json

from engine.evaluation.imhi import EvalRun, TaskResult
from engine.evaluation.report import write_report
from phyassist_tui.cli import main


def test_ship_copies_adapter_and_writes_card(tmp_path, imhi_fixture, counselchat_fixture):
    data, run, ev, dest = (tmp_path / n for n in ("data", "run", "eval", "adapters/domain"))
    assert main(["data", "prepare", "--imhi", str(imhi_fixture), "--counselchat",
                 str(counselchat_fixture), "--out", str(data)]) == 0  # fmt: skip
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text("{}", encoding="utf-8")
    (run / "adapter" / "adapter_model.safetensors").write_bytes(b"weights")
    summary = {"steps": 7, "tokens": 1234, "seconds": 9.0, "train_loss": 1.5,
               "eval_loss": 1.7, "recipe": {"lora_r": 32, "learning_rate": 2e-4}}  # fmt: skip
    (run / "training_summary.json").write_text(json.dumps(summary), encoding="utf-8")
    runs = [
        EvalRun(n, {"DR": TaskResult("DR", 10, f, f, 0.0, 0.1)}, {}) for n, f in
        (("base", 0.2), ("adapter", 0.6))
    ]  # fmt: skip
    write_report(ev, runs)

    assert main(["domain", "ship", "--run", str(run), "--eval", str(ev), "--data", str(data),
                 "--dest", str(dest)]) == 0  # fmt: skip
    card = (dest / "README.md").read_text(encoding="utf-8")
    assert (dest / "adapter_model.safetensors").read_bytes() == b"weights"
    assert "| imhi | 20 | 11 |" in card and "drop_broken_encoding 3" in card
    assert "7 optimizer steps" in card and "lora_r=32" in card
    assert "| DR | 10 | 20.00 | 60.00 | +40.00 |" in card
    assert (dest / "imhi_results.json").is_file()


def test_ship_refuses_an_untrained_run(tmp_path):
    assert main(["domain", "ship", "--run", str(tmp_path), "--eval", str(tmp_path), "--data",
                 str(tmp_path), "--dest", str(tmp_path / "d")]) == 1  # fmt: skip
