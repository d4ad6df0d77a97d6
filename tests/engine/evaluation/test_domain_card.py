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


def test_ship_bf16_names_the_base_spec_and_the_eval_rows(tmp_path, imhi_fixture):
    import torch
    from safetensors.torch import load_file, save_file

    from engine.settings import EMBEDDED_MODEL

    data, run, ev, dest = (tmp_path / n for n in ("data", "run", "eval", "adapters/x"))
    assert main(["data", "prepare", "--imhi", str(imhi_fixture), "--out", str(data)]) == 0
    (run / "adapter").mkdir(parents=True)
    config = {"peft_type": "LORA", "r": 2, "base_model_name_or_path": "/tmp/site/pkg"}
    (run / "adapter" / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
    weights = {"a.lora_A.weight": torch.randn(2, 8), "a.lora_B.weight": torch.randn(8, 2)}
    save_file(weights, str(run / "adapter" / "adapter_model.safetensors"))
    summary = {"steps": 3, "tokens": 10, "seconds": 1.0, "train_loss": 1.23456, "recipe": {}}
    (run / "training_summary.json").write_text(json.dumps(summary), encoding="utf-8")
    settings = {"limit": 10, "seed": 0, "max_new_tokens": 64, "batch_size": 4, "decoding": "greedy"}
    runs = [
        EvalRun(n, {"DR": TaskResult("DR", 10, f, f, 0.0, 0.1)}, {}, dict(settings))
        for n, f in (("base", 0.2), ("adapter", 0.6))
    ]
    write_report(ev, runs)

    assert main(["domain", "ship", "--run", str(run), "--eval", str(ev), "--data", str(data),
                 "--dest", str(dest), "--bf16"]) == 0  # fmt: skip
    shipped = load_file(str(dest / "adapter_model.safetensors"))
    for key, tensor in weights.items():
        assert shipped[key].dtype == torch.bfloat16
        assert torch.allclose(shipped[key].float(), tensor, rtol=1e-2, atol=1e-2)
    saved = json.loads((dest / "adapter_config.json").read_text(encoding="utf-8"))
    assert saved["base_model_name_or_path"] == EMBEDDED_MODEL and saved["r"] == 2
    card = (dest / "README.md").read_text(encoding="utf-8")
    assert "a seeded random sample of 10 rows per task (seed 0" in card
    assert "at most 64 new tokens" in card and "final training loss 1.2346" in card
