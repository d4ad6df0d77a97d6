"""Adapters: the encrypted container and registry, and switching LoRA adapters on one base."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import torch

from engine.errors import AdapterLoadError
from engine.model.adapters import (
    AdapterManager,
    AdapterRegistry,
    pack_adapter,
    read_adapter_dir,
    unpack_adapter,
)
from engine.records import BasicInfo

QUESTION = "I cannot sleep before exams and my parents expect me to be the best."


def random_lora(config, *, r: int = 4, seed: int = 0, scale: float = 0.5, layers=None):
    """A LoRA on q_proj/v_proj of every layer with random, non-zero A and B (so output moves)."""
    gen = torch.Generator().manual_seed(seed)
    hidden = config.hidden_size
    kv = config.num_key_value_heads * (hidden // config.num_attention_heads)
    state = {}
    for layer in layers if layers is not None else range(config.num_hidden_layers):
        for module, out in (("q_proj", hidden), ("v_proj", kv)):
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            state[f"{prefix}.lora_A.weight"] = torch.randn(r, hidden, generator=gen) * scale
            state[f"{prefix}.lora_B.weight"] = torch.randn(out, r, generator=gen) * scale
    cfg = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": r,
        "lora_alpha": 2 * r,
        "lora_dropout": 0.0,
        "target_modules": ["q_proj", "v_proj"],
        "bias": "none",
        "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct",
    }
    return cfg, state


def test_pack_unpack_roundtrip() -> None:
    config = {"peft_type": "LORA", "r": 2, "target_modules": ["q_proj"]}
    state = {"a.lora_A.weight": torch.randn(2, 8), "a.lora_B.weight": torch.zeros(8, 2)}
    data = pack_adapter(config, state)
    config2, state2 = unpack_adapter(data)
    assert config2 == config
    assert state2.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(state2[key], value)
    # The container is an ordinary tar of the two files save_pretrained writes.
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert sorted(tar.getnames()) == ["adapter_config.json", "adapter_model.safetensors"]


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not a tar at all", "damaged"),
        (_tar({"adapter_config.json": b"{}"}), "lacks adapter_model.safetensors"),
        (_tar({"../evil": b"x"}), "Unexpected entry"),
        (_tar({"adapter_config.json": b"[1]", "adapter_model.safetensors": b""}), "cannot be read"),
    ],
)
def test_bad_containers_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(AdapterLoadError, match=message):
        unpack_adapter(data)


def _v1_container(config: dict, state: dict) -> bytes:
    """An adapter as the first release packed it: fp32 weights, no format version."""
    from safetensors.torch import save

    weights = save({k: v.contiguous() for k, v in state.items()}, metadata={"format": "pt"})
    return _tar(
        {"adapter_config.json": json.dumps(config).encode(), "adapter_model.safetensors": weights}
    )


def test_registry_stores_bf16_and_still_reads_fp32_adapters(fake_store) -> None:
    config = {"peft_type": "LORA", "r": 2, "target_modules": ["q_proj"]}
    state = {"a.lora_A.weight": torch.randn(2, 4096), "a.lora_B.weight": torch.randn(4096, 2)}
    registry = AdapterRegistry(fake_store)
    registry.save("p1", config, state)
    fp32_bytes = len(pack_adapter(config, state))
    assert len(fake_store.read_blob("p1", "adapter/v1")) < 0.6 * fp32_bytes  # half the weights
    _, stored = registry.read("p1", 1)
    for key, value in state.items():
        assert stored[key].dtype == torch.bfloat16
        assert torch.equal(stored[key], value.to(torch.bfloat16))
    fake_store.write_blob("p1", "adapter/v2", _v1_container(config, state))  # an old version
    config2, old = registry.read("p1", 2)
    assert config2 == config
    assert all(old[k].dtype == torch.float32 and torch.equal(old[k], v) for k, v in state.items())


def test_unpacked_weights_can_go_to_a_device_in_one_transfer() -> None:
    state = {
        "a": torch.randn(3, 5),
        "b": torch.arange(7, dtype=torch.int64),
        "c": torch.zeros(0, 4),
    }
    data = pack_adapter({"r": 1}, state, dtype="bfloat16")
    _, got = unpack_adapter(data, device="cpu")
    assert got["a"].dtype == torch.bfloat16 and torch.equal(got["a"], state["a"].bfloat16())
    assert torch.equal(got["b"], state["b"])  # integers are never converted
    assert got["c"].shape == (0, 4)


def _with_weights(weights: bytes) -> bytes:
    return _tar({"adapter_config.json": b"{}", "adapter_model.safetensors": weights})


def _safetensors(header: dict, body: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + body


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (_safetensors({"__metadata__": {"phyassist_adapter": "9"}}), "newer PhyAssist"),
        (
            _safetensors({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"x"),
            "byte range",
        ),
        (
            _safetensors({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"x" * 8),
            "byte range",
        ),
        (_safetensors({"w": {"dtype": "Q4", "shape": [1], "data_offsets": [0, 1]}}, b"x"), "dtype"),
        (
            _safetensors({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"x" * 4),
            "malformed",
        ),
        ((10**6).to_bytes(8, "little") + b"{}", "longer than"),
    ],
)
def test_bad_weight_files_are_refused(weights: bytes, message: str) -> None:
    with pytest.raises(AdapterLoadError, match=message):
        unpack_adapter(_with_weights(weights))


def test_registry_versions_cards_and_pruning(fake_store) -> None:
    registry = AdapterRegistry(fake_store)
    assert registry.versions("p1") == [] and registry.newest("p1") is None
    config = {"peft_type": "LORA", "r": 1, "target_modules": ["q_proj"]}
    state = {"x.lora_A.weight": torch.ones(1, 2)}
    assert registry.save("p1", config, state, {"loss": 1.5}) == 1
    assert registry.save("p1", config, state, {"loss": 1.2}) == 2
    assert registry.versions("p1") == [1, 2]
    assert registry.newest("p1") == 2
    assert registry.card("p1", 2) == {"loss": 1.2, "version": 2}
    assert fake_store.has_adapter["p1"] is True
    assert registry.read("p1", 1)[0] == config
    assert registry.active("p1") == 2
    fake_store.write_blob("p1", "adapter/active", b"1")  # a rollback
    assert registry.active("p1") == 1
    fake_store.write_blob("p1", "adapter/active", b"7")  # gone: fall back to the newest
    assert registry.active("p1") == 2
    registry.save("p1", config, state, keep=2)
    assert registry.versions("p1") == [2, 3]
    assert registry.versions("other") == []


def test_one_pointer_for_training_rollback_and_the_assistant(fake_store) -> None:
    """The registry is the one reader and writer of ``adapter/active``: what a rollback sets
    is what the Assistant applies, and a pointer naming no stored version is refused."""
    from engine.errors import AdapterNotFound
    from engine.training.versions import list_versions, rollback

    registry = AdapterRegistry(fake_store)
    config = {"peft_type": "LORA", "r": 1, "target_modules": ["q_proj"]}
    state = {"x.lora_A.weight": torch.ones(1, 2)}
    for _ in range(3):
        registry.save("p1", config, state)
    assert rollback(fake_store, "p1") == 2
    assert registry.active("p1") == 2
    assert [v.version for v in list_versions(fake_store, "p1") if v.active] == [2]
    with pytest.raises(AdapterNotFound):
        registry.set_active("p1", 9)
    fake_store.write_blob("p1", "adapter/active", b"\xff\xfe")  # not ASCII: the newest
    assert registry.active("p1") == 3


def test_pruning_never_deletes_the_active_version(fake_store) -> None:
    registry = AdapterRegistry(fake_store)
    config = {"peft_type": "LORA", "r": 1, "target_modules": ["q_proj"]}
    state = {"x.lora_A.weight": torch.ones(1, 2)}
    for _ in range(3):
        registry.save("p1", config, state)
    fake_store.write_blob("p1", "adapter/active", b"1")  # rolled back to the oldest
    assert registry.prune("p1", keep=1) == [2]
    assert registry.versions("p1") == [1, 3] and registry.active("p1") == 1


def test_killed_before_the_pointer_moves_keeps_the_previous_adapter(fake_store) -> None:
    """store_adapter writes the new version, then the pointer, then prunes: a crash while
    writing the pointer leaves the rolled-back version active and present."""
    from engine.settings import Settings
    from engine.training.runner import store_adapter

    registry = AdapterRegistry(fake_store)
    config = {"peft_type": "LORA", "r": 1, "target_modules": ["q_proj"]}
    state = {"x.lora_A.weight": torch.ones(1, 2)}
    for _ in range(2):
        registry.save("p1", config, state)
    fake_store.write_blob("p1", "adapter/active", b"1")
    settings = Settings(limits={"max_adapters_per_patient": 1})
    write = fake_store.write_blob

    def crash_on_pointer(patient_id, kind, data):
        if kind == "adapter/active":
            raise KeyboardInterrupt("killed")
        write(patient_id, kind, data)

    fake_store.write_blob = crash_on_pointer
    with pytest.raises(KeyboardInterrupt):
        store_adapter(fake_store, "p1", config, state, {"loss": 1.0}, settings)
    assert registry.active("p1") == 1 and 1 in registry.versions("p1")
    fake_store.write_blob = write
    stored = store_adapter(fake_store, "p1", config, state, {"loss": 0.5}, settings)
    assert stored.version == 4 and registry.active("p1") == 4
    assert registry.versions("p1") == [4] and stored.pruned == [1, 2, 3]


def test_adapters_are_encrypted_at_rest(real_store) -> None:
    patient = real_store.create_patient("Enc")
    registry = AdapterRegistry(real_store)
    config = {"peft_type": "LORA", "r": 1, "target_modules": ["q_proj"], "marker": "PLAINTEXT-X"}
    registry.save(patient.id, config, {"x.lora_A.weight": torch.ones(1, 2)}, {"note": "CARD-Y"})
    assert registry.newest(patient.id) == 1
    assert registry.read(patient.id, 1)[0]["marker"] == "PLAINTEXT-X"
    for path in Path(real_store.vault_dir).rglob("*"):
        if path.is_file():
            raw = path.read_bytes()
            assert b"PLAINTEXT-X" not in raw and b"CARD-Y" not in raw and b"lora_A" not in raw


@pytest.mark.model
def test_manager_switches_and_evicts_on_a_tiny_model(
    fixed_ids_model_dir, settings_for, tmp_path
) -> None:
    from engine.model.llm import load_model

    loaded = load_model(settings_for(tmp_path, spec=str(fixed_ids_model_dir)), use_cache=False)
    manager = AdapterManager(loaded.model, max_resident=2)
    ids = torch.tensor([[1, 5, 9, 13, 42]])

    def logits() -> torch.Tensor:
        with torch.no_grad():
            return manager.model(ids).logits

    base = logits()
    for n in (1, 2, 3):
        manager.load(f"a{n}", *random_lora(loaded.model.config, seed=n))
        manager.activate(f"a{n}")
        assert not torch.allclose(logits(), base)
    assert manager.resident() == ["a2", "a3"]  # a1 evicted
    manager.activate(None)
    assert torch.equal(logits(), base)
    # A LoRA for another architecture (wrong shapes) is refused and the base still works.
    cfg, state = random_lora(loaded.model.config, seed=9)
    state = {k: torch.randn(3, 3) for k in state}
    with pytest.raises(AdapterLoadError):
        manager.load("bad", cfg, state)
    assert torch.equal(logits(), base)
    assert "bad" not in manager.resident()


@pytest.mark.model
def test_use_patient_switches_adapters_on_the_real_model(assistant, real_store, cancel) -> None:
    patient = real_store.create_patient("Lee", BasicInfo(demographics="M, 20"))
    assert assistant.use_patient(patient, real_store) == "SmolLM2-135M-Instruct · base"

    def answer() -> str:
        return "".join(assistant.stream_analysis(patient, QUESTION, cancel=cancel))

    base_text = answer()
    registry = AdapterRegistry(real_store)
    config = assistant.model.model.config
    registry.save(patient.id, *random_lora(config, seed=1), {"loss": 1.0})
    label = assistant.use_patient(patient, real_store)
    assert label == "SmolLM2-135M-Instruct · adapter v1"
    assert assistant.model_label == label
    v1_text = answer()
    assert v1_text != base_text

    assert assistant.use_patient(None) == "SmolLM2-135M-Instruct · base"
    assert answer() == base_text  # switching off restores the base exactly

    registry.save(patient.id, *random_lora(config, seed=2), {"loss": 0.9})
    assert assistant.use_patient(patient, real_store).endswith("adapter v2")
    v2_text = answer()
    assert v2_text != base_text

    # Rolled back to v1 (still resident): a switch, not a reload, and the same output.
    real_store.write_blob(patient.id, "adapter/active", b"1")  # a rollback to v1
    assert assistant.adapters.is_loaded(f"patient-{patient.id[:16]}-v1")
    assert assistant.use_patient(patient, real_store).endswith("adapter v1")
    assert answer() == v1_text

    # A damaged adapter never leaves another adapter active: base, and the label says why.
    real_store.delete_blob(patient.id, "adapter/active")
    real_store.write_blob(patient.id, "adapter/v3", b"garbage")
    label = assistant.use_patient(patient, real_store)
    assert label == "SmolLM2-135M-Instruct · base (adapter v3 unusable)"
    assert "damaged" in (assistant.last_adapter_error or "")
    assert answer() == base_text
    assistant.use_patient(None)


@pytest.mark.model
def test_domain_adapter_from_a_plain_peft_dir(assistant, real_store, tmp_path, cancel) -> None:
    from safetensors.torch import save_file

    cfg, state = random_lora(assistant.model.model.config, seed=5, layers=[0, 1])
    path = tmp_path / "domain"
    path.mkdir()
    (path / "adapter_config.json").write_text(json.dumps(cfg))
    save_file(state, path / "adapter_model.safetensors")
    assert read_adapter_dir(path)[0]["r"] == 4
    original = assistant.settings.model.domain_adapter
    assistant.settings.model.domain_adapter = str(path)
    try:
        patient = real_store.create_patient("Domain")
        assert assistant.use_patient(patient, real_store).endswith("· domain adapter")
        assert assistant.use_patient(None).endswith("· domain adapter")
        assistant.settings.model.domain_adapter = str(tmp_path / "missing")
        assert assistant.use_patient(None).endswith("· base")
        assert "not found" in (assistant.last_adapter_error or "")
    finally:
        assistant.settings.model.domain_adapter = original
        assistant.use_patient(None)


@pytest.mark.model
def test_unknown_patient_in_the_store_falls_back_to_base(assistant, real_store) -> None:
    from engine.records import Patient

    stranger = Patient(name="Not in this vault")
    label = assistant.use_patient(stranger, real_store)
    assert label == "SmolLM2-135M-Instruct · base (adapters unreadable)"
    assert "No patient" in (assistant.last_adapter_error or "")
    assert assistant.use_patient(stranger) == "SmolLM2-135M-Instruct · base"


@pytest.mark.model
def test_patient_adapter_trained_over_the_domain_stacks_on_it(
    assistant, real_store, tmp_path, cancel
) -> None:
    """Learning: a card naming the loaded domain adapter -> domain + patient active together;
    a card naming another domain adapter -> not used, the domain adapter alone, said why."""
    from safetensors.torch import save_file

    from engine.model.stack import adapter_identity

    config = assistant.model.model.config
    cfg, state = random_lora(config, seed=5, layers=[0, 1])
    path = tmp_path / "domain"
    path.mkdir()
    (path / "adapter_config.json").write_text(json.dumps(cfg))
    save_file(state, path / "adapter_model.safetensors")
    original = assistant.settings.model.domain_adapter
    assistant.settings.model.domain_adapter = str(path)
    try:
        patient = real_store.create_patient("Stacked")
        registry = AdapterRegistry(real_store)
        card = {"domain_adapter": adapter_identity(path)}
        registry.save(patient.id, *random_lora(config, seed=6), card)
        label = assistant.use_patient(patient, real_store)
        assert label.endswith("· domain + adapter v1")
        assert assistant.active_adapter == f"domain+patient-{patient.id[:16]}-v1"
        ids = torch.tensor([[1, 504, 3300, 30, 1200]])
        with torch.no_grad():
            stacked = assistant.adapters.model(ids).logits
            assistant.adapters.activate(f"patient-{patient.id[:16]}-v1")
            alone = assistant.adapters.model(ids).logits
        assert (stacked - alone).abs().max() > 1e-3  # the domain delta is really in

        other = dict(card["domain_adapter"], sha256="0" * 64, name="older-domain")
        registry.save(patient.id, *random_lora(config, seed=7), {"domain_adapter": other})
        label = assistant.use_patient(patient, real_store)
        assert label.endswith("· domain adapter (adapter v2 unusable)")
        assert "older-domain" in (assistant.last_adapter_error or "")
        assert assistant.active_adapter == "domain"
    finally:
        assistant.settings.model.domain_adapter = original
        assistant.use_patient(None)
