"""A trained patient adapter must change the drafts the Session hands the counselor.

The learning bench once measured domain and domain + patient drafts that were identical to
the character while the adapter moved the logits (issue 17). Here the "training" stores an
adapter with a known, large delta (as the worker's result would be stored), and the Session's
Analysis of the same statement must differ from the domain adapter's, and come back to it
when the patient's adapter is dropped: nothing of one model (a prompt KV cache read before
the switch, a resident adapter) may leak into the other's draft.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from engine.records import AnalysisDraft, BasicInfo, Item, Note
from engine.session import Session

PASSPHRASE = "learning loop test passphrase"
QUESTION = "I feel empty most days and I stopped seeing my friends."


def _lora(config, *, seed: int, scale: float, b_scale: float | None = None):
    """A LoRA on q/v of every layer with random A and B (B = 0: a delta of exactly zero)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    hidden = config.hidden_size
    kv = config.num_key_value_heads * (hidden // config.num_attention_heads)
    state = {}
    for layer in range(config.num_hidden_layers):
        for module, out in (("q_proj", hidden), ("v_proj", kv)):
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            state[f"{prefix}.lora_A.weight"] = torch.randn(4, hidden, generator=gen) * scale
            state[f"{prefix}.lora_B.weight"] = torch.randn(out, 4, generator=gen) * (
                scale if b_scale is None else b_scale
            )
    cfg = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.0,
        "target_modules": ["q_proj", "v_proj"],
        "bias": "none",
    }
    return cfg, state


@pytest.mark.model
def test_a_trained_adapter_changes_the_sessions_draft(
    fixed_ids_model_dir: Path, settings_for, tmp_path: Path
) -> None:
    import json

    from safetensors.torch import save_file
    from transformers import AutoConfig

    from engine.model.adapters import AdapterRegistry
    from engine.model.stack import adapter_identity

    config = AutoConfig.from_pretrained(fixed_ids_model_dir)
    domain_dir = tmp_path / "domain"
    domain_dir.mkdir()
    cfg, state = _lora(config, seed=1, scale=0.3)
    (domain_dir / "adapter_config.json").write_text(json.dumps(cfg), encoding="utf-8")
    save_file(
        {k: v.contiguous() for k, v in state.items()}, domain_dir / "adapter_model.safetensors"
    )

    trained: list[float] = []

    def runner(*, patient, store, settings, cancel):
        """Training as the runner ends it: the worker's adapter stored as the next version,
        its card naming the domain adapter it was trained over. The first run's adapter has
        a zero delta (B = 0), the second a known, large one."""
        yield {"phase": "sft", "step": 1, "total_steps": 1}
        b_scale = 0.0 if not trained else 2.0
        trained.append(b_scale)
        cfg, state = _lora(config, seed=2, scale=2.0, b_scale=b_scale)
        card = {"domain_adapter": adapter_identity(domain_dir), "steps": 1}
        AdapterRegistry(store).save(patient.id, cfg, state, card)
        yield {"phase": "stored", "step": 1, "total_steps": 1}

    settings = settings_for(tmp_path, spec=str(fixed_ids_model_dir), domain_adapter=str(domain_dir))
    settings.generation.max_new_tokens = 24
    session = Session(settings, training_runner=runner)
    session.create_vault(PASSPHRASE)
    session.start_model_load()
    assert session.wait_ready(timeout=120)
    patient = session.create_patient("Learner", BasicInfo(demographics="F, 30"))
    note = Note(
        question="I cannot sleep before exams.",
        analysis=AnalysisDraft(symptom_type=Item(text="Exam worry", draft="Anxiety")),
    )
    patient = session.save_note(patient.id, note)

    def draft() -> str:
        outcome = session.analysis(patient, QUESTION).result()
        assert outcome.error is None and outcome.draft is not None
        return outcome.text

    assert "domain adapter" in (session.use_patient(patient) or "")
    session.prefill_record(patient, threading.Event())  # the record read under the domain
    domain_draft = draft()
    assert domain_draft.strip()

    def train() -> str:
        list(session.train(patient, threading.Event()))
        label = session.after_training(patient)
        session.prefill_record(patient, threading.Event())
        return label or ""

    assert "domain + adapter v1" in train()  # a zero delta: the domain model's very draft
    assert draft() == domain_draft
    session.model.prefix_cache.clear()  # v2 reads the record itself: its KV in the cache
    assert "domain + adapter v2" in train()
    patient_draft = draft()
    assert patient_draft != domain_draft  # the adapter is live in the draft, not just the logits

    assert session.rollback_adapter(patient.id, 1) == (2, 1)
    assert "domain + adapter v1" in (session.use_patient(patient, force=True) or "")
    # nothing of v2 stays behind: not its weights, not the record's KV cache it computed
    assert draft() == domain_draft
