"""prepare -> train a few steps -> evaluate base vs adapter, on the embedded model (fixtures)."""

from __future__ import annotations

import json

import pytest

from phyassist_tui.cli import main
from tests.support import REPO

pytestmark = pytest.mark.model


def test_prepare_train_resume_eval(tmp_path, capsys, imhi_fixture, counselchat_fixture):
    data, run, out = tmp_path / "data", tmp_path / "run", tmp_path / "eval"
    assert main(["data", "prepare", "--imhi", str(imhi_fixture), "--counselchat",
                 str(counselchat_fixture), "--out", str(data)]) == 0  # fmt: skip
    common = ["domain", "train", "--data", str(data), "--out", str(run), "--batch-size", "1",
              "--grad-accum", "1", "--max-length", "192", "--save-steps", "1",
              "--logging-steps", "1", "--device", "cpu"]  # fmt: skip
    assert main([*common, "--max-steps", "2"]) == 0
    out1 = capsys.readouterr().out
    assert "tokens/s" in out1 and "ETA" in out1
    assert (run / "checkpoints" / "checkpoint-2").is_dir()

    # A second run with a higher step budget resumes from the last checkpoint; it uses the
    # alias `train domain` (the spelling), which is the same command.
    assert main(["train", "domain", *common[2:], "--max-steps", "3"]) == 0
    summary = json.loads((run / "training_summary.json").read_text(encoding="utf-8"))
    assert summary["steps"] == 3
    assert summary["resumed_from"].endswith("checkpoint-2")
    assert summary["recipe"]["lora_r"] == 32 and summary["recipe"]["max_grad_norm"] == 0.3
    adapter = run / "adapter"
    assert (adapter / "adapter_config.json").is_file()
    assert (adapter / "adapter_model.safetensors").is_file()
    # a few of its own IMHI rows for patient runs to replay, "no" then "yes" of one task
    from engine.training.rehearsal import read_pool

    pool = [r["completion"][0]["content"].split(",")[0] for r in read_pool(adapter)]
    assert pool[:2] == ["No", "Yes"] and len(pool) >= 4

    capsys.readouterr()
    assert main(["eval", "imhi", "--data", str(imhi_fixture), "--adapter", str(adapter),
                 "--compare-base", "--tasks", "DR,SAD", "--limit", "2", "--batch-size", "2",
                 "--max-new-tokens", "8", "--device", "cpu", "--out", str(out)]) == 0  # fmt: skip
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert set(results["runs"]) == {"base", "adapter"}
    for name in ("base", "adapter"):
        tasks = results["runs"][name]["tasks"]
        assert set(tasks) == {"DR", "SAD"}
        assert all(t["n"] == 2 for t in tasks.values())
        for t in tasks.values():
            assert 0.0 <= t["weighted_f1"] <= 1.0 and 0.0 <= t["unlabeled_share"] <= 1.0
    md = (out / "results.md").read_text(encoding="utf-8")
    assert "weighted F1 (base)" in md and "weighted F1 (adapter)" in md
    preds = (out / "predictions-adapter.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(preds) == 4

    # The in-process model cache is left without LoRA layers after training and evaluation.
    from engine.model.llm import load_model
    from engine.settings import load_settings

    settings = load_settings()
    settings.model.device = "cpu"
    model = load_model(settings).model
    assert not any("lora_" in name for name, _ in model.named_parameters())


def test_eval_rejects_bad_arguments(tmp_path, imhi_fixture):
    assert main(["eval", "imhi", "--data", str(imhi_fixture), "--tasks", "XYZ",
                 "--out", str(tmp_path)]) == 1  # fmt: skip
    assert main(["eval", "imhi", "--data", str(imhi_fixture), "--adapter", str(tmp_path),
                 "--out", str(tmp_path)]) == 1  # fmt: skip
    assert main(["eval", "imhi", "--data", str(imhi_fixture), "--compare-base",
                 "--out", str(tmp_path)]) == 1  # fmt: skip


def test_domain_train_forwards_its_own_arguments() -> None:
    """A multi-GPU relaunch re-runs the same command: both spellings forward what follows."""
    from phyassist_tui.commands.data import forwarded_arguments

    assert forwarded_arguments(["domain", "train", "--data", "d"]) == ["--data", "d"]
    assert forwarded_arguments(["train", "domain", "--out", "o"]) == ["--out", "o"]
    assert forwarded_arguments(["train", "patient", "abc"]) is None


def test_eval_refuses_a_patient_adapter_trained_over_another_domain_adapter(
    tmp_path, imhi_fixture, capsys
):

    from engine.model.stack import adapter_identity

    shipped = REPO / "adapters" / "smollm2-135m-imhi-counselchat"
    patient = tmp_path / "patient"
    patient.mkdir()
    (patient / "adapter_config.json").write_text("{}")
    other = dict(adapter_identity(shipped), sha256="0" * 64, name="older-domain")
    (patient / "phyassist_card.json").write_text(json.dumps({"domain_adapter": other}))
    common = ["eval", "imhi", "--data", str(imhi_fixture), "--out", str(tmp_path / "o")]
    assert main([*common, "--patient-adapter", str(patient)]) == 1
    assert "needs --adapter" in capsys.readouterr().err
    assert main([*common, "--adapter", str(shipped), "--patient-adapter", str(patient)]) == 1
    assert "older-domain" in capsys.readouterr().err


def test_eval_stacks_each_patient_adapter_in_turn_on_one_loaded_model(
    tmp_path, imhi_fixture, embedded_model_dir
):
    """Learning: several patient adapters (e.g. two training recipes) are each their own run
    over the same domain-alone run; the shared model is left without LoRA layers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from engine.model.stack import adapter_identity

    shipped = REPO / "adapters" / "smollm2-135m-drafts"
    for seed in (1, 2):
        torch.manual_seed(seed)
        lora = get_peft_model(
            AutoModelForCausalLM.from_pretrained(embedded_model_dir),
            LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj"], init_lora_weights=False),
        )
        lora.save_pretrained(tmp_path / f"p{seed}")
        card = {"domain_adapter": adapter_identity(shipped)}
        (tmp_path / f"p{seed}" / "phyassist_card.json").write_text(json.dumps(card))
    out = tmp_path / "eval"
    assert main(["eval", "imhi", "--data", str(imhi_fixture), "--adapter", str(shipped),
                 "--patient-adapter", str(tmp_path / "p1"), "--patient-adapter",
                 str(tmp_path / "p2"), "--tasks", "DR", "--limit", "2", "--batch-size", "2",
                 "--max-new-tokens", "8", "--device", "cpu", "--out", str(out)]) == 0  # fmt: skip
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert list(results["runs"]) == ["adapter", "adapter+p1", "adapter+p2"]
    answers = {
        name: [
            json.loads(line)["output"]
            for line in (out / f"predictions-{name}.jsonl").read_text().splitlines()
        ]
        for name in results["runs"]
    }
    assert answers["adapter+p1"] != answers["adapter"] != answers["adapter+p2"]
    assert answers["adapter+p1"] != answers["adapter+p2"]

    from engine.model.llm import load_model
    from engine.settings import load_settings

    settings = load_settings()
    settings.model.device = "cpu"
    model = load_model(settings).model
    assert not any("lora_" in name for name, _ in model.named_parameters())
