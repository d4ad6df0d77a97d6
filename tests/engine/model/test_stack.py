"""A patient adapter trained over the domain adapter, stacked on it at inference.

Training merges the domain LoRA into the base and trains the patient LoRA on that; inference
activates domain + patient together on the unmerged base. LoRA deltas add, so the two must
give the same logits; the card's domain identity decides whether stacking is allowed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.model.stack import adapter_identity, stack_refusal


def _random_lora(model, name: str, targets: list[str], seed: int):
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False)
    return get_peft_model(model, config, adapter_name=name)


@pytest.mark.model
def test_stacked_adapters_reproduce_the_training_time_model(tiny_model_dir: Path, tmp_path: Path):
    import torch
    from peft import get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    from engine.model.adapters import AdapterManager, read_adapter_dir
    from engine.training.worker import adapter_config_dict, merge_domain_adapter

    def fresh():
        return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()

    domain_dir = tmp_path / "domain"
    domain = _random_lora(fresh(), "default", ["q_proj", "v_proj", "up_proj", "down_proj"], 1)
    domain.save_pretrained(domain_dir)
    ids = torch.tensor([[1, 17, 300, 42, 99, 7, 1200]])

    # Training time: the domain merged into the weights, the patient LoRA on top.
    trained = _random_lora(merge_domain_adapter(fresh(), domain_dir), "default", ["q_proj"], 2)
    trained.eval()
    with torch.no_grad():
        expected = trained(ids).logits
    config = adapter_config_dict(trained, "tiny")
    state = {k: v.clone() for k, v in get_peft_model_state_dict(trained).items()}

    # Inference: one unmerged base, both adapters resident, stacked.
    manager = AdapterManager(fresh())
    manager.load("domain", *read_adapter_dir(domain_dir))
    manager.load("patient", config, state)
    with torch.no_grad():
        manager.activate_stack(["domain", "patient"])
        assert manager.active == "domain+patient"
        stacked = manager.model(ids).logits
        manager.activate("patient")  # the old behaviour: the patient adapter alone
        alone = manager.model(ids).logits
        manager.activate("domain")
        domain_only = manager.model(ids).logits
    assert torch.allclose(stacked, expected, atol=1e-4), (stacked - expected).abs().max()
    assert (alone - expected).abs().max() > 1e-3  # without the domain the model differs
    assert (domain_only - expected).abs().max() > 1e-3  # the patient delta is not a no-op


def test_stack_refusal_names_the_domain_adapter(tmp_path: Path):
    import torch
    from safetensors.torch import save_file

    for name, value in (("a", 1.0), ("b", 2.0)):
        (tmp_path / name).mkdir()
        save_file(
            {"w": torch.full((2,), value)}, str(tmp_path / name / "adapter_model.safetensors")
        )
    a, b = adapter_identity(tmp_path / "a"), adapter_identity(tmp_path / "b")
    card = {"domain_adapter": a}
    assert stack_refusal(card, a) is None
    assert "not the one loaded" in (stack_refusal(card, b) or "")
    assert "not available" in (stack_refusal(card, None) or "")
    assert stack_refusal({}, None) is None  # trained on the bare base: used alone


def test_stack_base_uses_the_configured_adapters_dir(tmp_path: Path) -> None:
    """Local and server backends both ask ``stack_base``; it reads the domain adapter where
    ``model.adapters_dir`` says (the patient path used to ignore that setting)."""
    import shutil

    from engine.errors import AdapterLoadError
    from engine.model.stack import CARD_KEY, stack_base
    from engine.settings import default_adapters_dir, load_settings

    shipped = default_adapters_dir() / "smollm2-135m-imhi-counselchat"
    if not shipped.is_dir():
        pytest.skip("the shipped domain adapter is not in this checkout")
    copy = tmp_path / "adapters" / shipped.name
    shutil.copytree(shipped, copy)
    model = load_settings().model.model_copy(update={"adapters_dir": tmp_path / "adapters"})
    card = {CARD_KEY: {"name": shipped.name, **adapter_identity(copy)}}
    assert stack_base(card, model) == copy
    assert stack_base({}, model) is None  # trained on the bare base: used alone
    other = {CARD_KEY: {"name": "other", "sha256": "0" * 64}}
    with pytest.raises(AdapterLoadError, match="retrain it"):
        stack_base(other, model)
