"""The training subprocess end to end on a tiny model: versions, cards, kill, cancel, limits."""

from __future__ import annotations

import os
import signal
import tempfile
import threading

import pytest

from engine.errors import (
    AdapterNotFound,
    InputRejected,
    TrainingCancelled,
    TrainingError,
    TrainingLimitExceeded,
)
from engine.model.adapters import AdapterRegistry
from engine.settings import Limits
from engine.training.runner import TrainingRun, runs_dir, store_adapter
from engine.training.versions import export_adapter, list_versions, rollback

pytestmark = pytest.mark.model

QUICK = {"max_steps": 2, "preference_method": "none"}


def _train(store, pid, settings, overrides=QUICK):
    run = TrainingRun(store, pid, settings, overrides=dict(overrides))
    events = list(run.events())
    return run, events


def test_run_streams_progress_and_stores_a_sealed_version(
    tiny_settings, open_vault, make_patient, marker, scanner, test_start
):
    with open_vault(tiny_settings) as store:
        pid = make_patient(store, marker)
        # a CPU run makes no preference step unless asked (config.CPU_PREFERENCE_METHOD): ask, so
        # the whole pipeline (SFT, then DPO on the pairs, one adapter) runs in the subprocess
        overrides = {"max_steps": 3, "preference_epochs": 0.25, "preference_method": "dpo"}
        run, events = _train(store, pid, tiny_settings, overrides)
        phases = [e.phase for e in events]
        assert phases[0] == "loading"
        assert "prepared" in phases and phases[-2:] == ["done", "stored"]
        sft = [e for e in events if e.phase == "sft" and e.step > 0]
        assert [e.step for e in sft] == [1, 2, 3]
        assert all(e.total_steps == 3 and e.loss is not None and e.loss > 0 for e in sft)
        assert all(e.tokens_per_s and e.tokens_per_s > 0 for e in sft)
        assert sft[-1].eta_s == 0
        # 3 notes x 5 signals (4 edits/deletions, 1 added item) = 15 pairs: DPO ran after SFT
        dpo = [e for e in events if e.phase == "dpo" and e.step > 0]
        assert dpo and phases.index("dpo") > phases.index("sft")

        versions = list_versions(store, pid)
        assert [(v.version, v.active) for v in versions] == [(1, True)]
        card = versions[0].card
        assert card["examples"] == 3 and card["preference_pairs"] == 15
        assert card["signals"]["notes"] == 3 and card["signals"]["added"] == 3
        assert card["domain_adapter"] is None  # no domain adapter for the tiny model
        assert card["steps"] == 3 and card["final_loss"] == pytest.approx(sft[-1].loss)
        assert card["preference_steps"] == len(dpo)
        assert card["hyperparameters"]["lora_r"] == 32
        assert card["base_model"] and card["date"]
        assert store.get_summary(pid).has_adapter
        assert not run.work_dir.exists()
    # nothing readable left behind: vault, caches, run folders, temp dir
    scan = scanner([marker])
    home = tiny_settings.data_dir.parent
    assert scan.scan(home) == []
    assert scan.scan(tempfile.gettempdir(), newer_than=test_start) == []


def _tiny_adapter(tiny_model_dir, seed: int):
    """A LoRA adapter (config, state) on the tiny model, as the worker hands it back."""
    import torch
    from peft import get_peft_model, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    from engine.training.config import Hyperparameters
    from engine.training.worker import adapter_config_dict, lora_config_for

    torch.manual_seed(seed)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), lora_config_for(Hyperparameters())
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)  # as if trained: B starts at zero
    state = {k: v.clone() for k, v in get_peft_model_state_dict(model).items()}
    return adapter_config_dict(model, "tiny"), state


def test_versions_prune_roll_back_and_export(tiny_settings, tiny_model_dir, open_vault, tmp_path):
    settings = tiny_settings.model_copy(update={"limits": Limits(max_adapters_per_patient=2)})
    with open_vault(settings) as store:
        pid = store.create_patient("Versions").id
        states = {}
        for seed in (1, 2, 3):
            config, state = _tiny_adapter(tiny_model_dir, seed)
            stored = store_adapter(store, pid, config, state, {"steps": seed}, settings)
            states[stored.version] = state
        assert stored.version == 3 and stored.pruned == [1]
        assert "removed old version(s) v1" in stored.message(2)
        assert [(v.version, v.card["steps"]) for v in list_versions(store, pid)] == [(2, 2), (3, 3)]
        assert AdapterRegistry(store).active(pid) == 3

        assert rollback(store, pid) == 2
        assert AdapterRegistry(store).active(pid) == 2
        assert [v.active for v in list_versions(store, pid)] == [True, False]
        with pytest.raises(AdapterNotFound):
            rollback(store, pid)  # v2 is the oldest kept
        with pytest.raises(AdapterNotFound):
            rollback(store, pid, 1)  # pruned

        out = export_adapter(store, pid, tmp_path / "export")  # the active one: v2
        assert sorted(p.name for p in out.iterdir()) == [
            "adapter_config.json",
            "adapter_model.safetensors",
            "phyassist_card.json",
        ]
        with pytest.raises(InputRejected):
            export_adapter(store, pid, out)  # never into a non-empty folder
        # a new version becomes active again
        config, state = _tiny_adapter(tiny_model_dir, 4)
        assert store_adapter(store, pid, config, state, {}, settings).version == 4
        assert AdapterRegistry(store).active(pid) == 4

    import torch
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    with safe_open(out / "adapter_model.safetensors", "pt") as f:  # the dtype kept at rest
        names = list(f.keys())
        stored_dtype = {f.get_tensor(k).dtype for k in names}
    assert len(stored_dtype) == 1
    stored = stored_dtype.pop()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(base, out)
    loaded = model.state_dict()
    for key, value in states[2].items():
        peft_key = key.replace(".lora_A.weight", ".lora_A.default.weight").replace(
            ".lora_B.weight", ".lora_B.default.weight"
        )
        expected = value.to(stored).to(loaded[peft_key].dtype)  # v2 exactly, as stored
        assert torch.equal(loaded[peft_key], expected), key
    with torch.no_grad():
        model(input_ids=torch.tensor([[1, 2, 3]]))


def test_sigkill_mid_training_keeps_previous_adapter_and_leaves_no_plaintext(
    tiny_settings, open_vault, make_patient, marker, scanner, test_start
):
    with open_vault(tiny_settings) as store:
        pid = make_patient(store, marker)
        _train(store, pid, tiny_settings)
        run = TrainingRun(store, pid, tiny_settings, overrides={"max_steps": 500})
        killed = False
        with pytest.raises(TrainingError) as err:
            for event in run.events():
                if event.phase == "sft" and event.step >= 1 and not killed:
                    os.kill(run.pid, signal.SIGKILL)
                    killed = True
        assert killed
        assert "previous adapter stays active" in str(err.value)
        assert [v.version for v in list_versions(store, pid)] == [1]
        assert AdapterRegistry(store).active(pid) == 1
        assert not run.work_dir.exists()
        assert list(runs_dir(tiny_settings).iterdir()) == []
    scan = scanner([marker])
    assert scan.scan(tiny_settings.data_dir.parent) == []
    assert scan.scan(tempfile.gettempdir(), newer_than=test_start) == []


def test_cancel_stops_the_worker_and_stores_nothing(tiny_settings, open_vault, make_patient):
    with open_vault(tiny_settings) as store:
        pid = make_patient(store, "Rex")
        run = TrainingRun(store, pid, tiny_settings, overrides={"max_steps": 500})
        with pytest.raises(TrainingCancelled):
            for event in run.events():
                if event.phase == "sft" and event.step >= 1:
                    threading.Thread(target=run.cancel).start()
        assert run.pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(run.pid, 0)  # reaped
        assert list_versions(store, pid) == []
        assert not store.get_summary(pid).has_adapter


def test_token_limit_is_enforced_with_a_clear_message(tiny_settings, open_vault, make_patient):
    settings = tiny_settings.model_copy(update={"limits": Limits(max_training_tokens=1000)})
    with open_vault(settings) as store:
        pid = make_patient(store, "Rex", 6)
        with pytest.raises(TrainingLimitExceeded) as err:
            _train(store, pid, settings)
        assert "over the training limit of 1,000" in str(err.value)
        assert list_versions(store, pid) == []


def test_one_note_longer_than_max_length_still_trains(tiny_settings, open_vault) -> None:
    """Found driving the TUI: a patient whose only note (counselor-written items) has a prompt
    longer than max_length failed with TRL's "num_samples=0" (the example was truncated to
    prompt only and dropped). The note's end, with its answer, is kept instead."""
    from engine.records import AnalysisDraft, BasicInfo, Item, Note

    with open_vault(tiny_settings) as store:
        long_history = "复读一年，父母期望很高，失眠头痛，注意力下降。" * 60  # > 1024 tokens
        patient = store.create_patient("孙某", BasicInfo(developmental_history=long_history))
        analysis = AnalysisDraft(
            symptom_type=Item(text=""),
            reasons=[Item(text="学业压力大")],  # written by the counselor: draft is None
            advice=[Item(text="规律作息")],
        )
        store.add_note(patient.id, Note(question="我睡不着，总担心考不好。", analysis=analysis))
        run, events = _train(store, patient.id, tiny_settings, {**QUICK, "max_steps": 1})
        assert run.result is not None and run.result.version == 1
        assert events[-1].phase == "stored"


def test_no_notes_and_bad_model_fail_cleanly(tiny_settings, open_vault, tmp_path):
    with open_vault(tiny_settings) as store:
        empty = store.create_patient("Nobody")
        with pytest.raises(TrainingError, match="no saved notes"):
            _train(store, empty.id, tiny_settings)
        from engine.records import AnalysisDraft, Item, Note

        store.add_note(
            empty.id,
            Note(question="q", analysis=AnalysisDraft(symptom_type=Item(text="s"))),
        )
        bad = tiny_settings.model_copy(
            update={"model": tiny_settings.model.model_copy(update={"spec": str(tmp_path / "x")})}
        )
        with pytest.raises(TrainingError, match="Model path not found"):
            _train(store, empty.id, bad)
        assert list_versions(store, empty.id) == []


@pytest.mark.parametrize("method", ["dpo", "orpo"])
def test_preference_step_trains_the_same_adapter(tiny_model_dir, patient_record, tmp_path, method):
    """In process: SFT, then DPO or ORPO on the edit pairs; one adapter ("default") results."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.training.config import Hyperparameters
    from engine.training.data import build_training_data
    from engine.training.worker import train_adapter

    data = build_training_data(patient_record("Rex", 1))
    assert len(data.pairs) == 5  # 3 edits, 1 deletion, 1 added item
    data.pairs = data.pairs[:4]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    events: list[dict] = []
    hp = Hyperparameters(max_steps=1, preference_method=method, preference_epochs=0.5)
    result = train_adapter(model, tokenizer, data.sft, data.pairs, hp, events.append, tmp_path)
    phases = [e["phase"] for e in events]
    assert phases.index(method) > phases.index("sft")
    assert result.preference_steps == 2 and result.preference_loss is not None  # 4 pairs x 0.5
    assert list(result.peft_model.peft_config) == ["default"]
    assert result.state_dict and all("ref" not in k for k in result.state_dict)
    assert result.config["r"] == 32 and result.config["peft_type"] == "LORA"


def test_patient_adapter_is_trained_over_the_domain_adapter_and_says_so(
    tiny_settings, tiny_model_dir, open_vault, make_patient, marker, tmp_path
):
    """Learning: the worker merges the domain LoRA before training; the card names it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from engine.model.stack import adapter_identity
    from engine.training.rehearsal import write_pool

    torch.manual_seed(3)
    domain = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        LoraConfig(r=2, target_modules=["q_proj", "up_proj"], init_lora_weights=False),
    )
    domain.save_pretrained(tmp_path / "domain")
    # its rehearsal rows (engine.training.rehearsal): replayed among the notes, two a pass
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Consider this post: post {i}"}],
            "completion": [{"role": "assistant", "content": "No, the post does not."}],
        }
        for i in range(3)
    ]
    write_pool(tmp_path / "domain", rows)
    tiny_settings.model.domain_adapter = str(tmp_path / "domain")
    with open_vault(tiny_settings) as store:
        pid = make_patient(store, marker, 1)
        _train(store, pid, tiny_settings, {"num_train_epochs": 2, "preference_method": "none"})
        card = list_versions(store, pid)[0].card
    assert card["domain_adapter"] == adapter_identity(tmp_path / "domain")
    assert card["hyperparameters"]["rehearsal_per_pass"] == 2
    assert card["rehearsal_rows"] == 3  # two passes x two rows from a pool of three
    assert card["steps"] == 2 * (1 + 2)  # one note and two replayed rows a pass, batch 1
    assert card["signals"]["per_note"][0]["edits"] == 3
