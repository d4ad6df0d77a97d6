"""Where a 4-bit model goes (one GPU or several), decided without a GPU, and the engine's wiring.

Multi-GPU machines were not available to run on; this checks the decision and that the engine's
loader passes it to ``engine.gpu.quant.load_quantized`` (which hands it to ``from_pretrained``).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from engine.gpu import quant
from engine.gpu.quant import Placement, QuantizationError, plan_placement

GIB = 2**30
H100 = 80 * GIB


def test_one_gpu_takes_everything():
    p = plan_placement(None, [H100])
    assert p.device_map == {"": 0} and p.max_memory is None and p.single_device


def test_several_gpus_spread_with_headroom_for_the_kv_cache():
    p = plan_placement(None, [H100, H100, 40 * GIB])
    assert p.device_map == "auto" and not p.single_device
    assert p.max_memory == {
        0: f"{(H100 - quant.HEADROOM_BYTES) // 2**20}MiB",
        1: f"{(H100 - quant.HEADROOM_BYTES) // 2**20}MiB",
        2: f"{(40 * GIB - quant.HEADROOM_BYTES) // 2**20}MiB",
    }
    assert "cpu" not in p.max_memory  # bitsandbytes 4-bit weights cannot be offloaded


@pytest.mark.parametrize(
    ("setting", "device_map"),
    [
        ("single", {"": 0}),
        ("cuda:1", {"": 1}),
        ("1", {"": 1}),
        ("balanced", "balanced"),
        ("Sequential", "sequential"),
        ("auto-select", "auto"),
    ],
)
def test_a_setting_overrides_the_default(setting, device_map):
    p = plan_placement(setting, [H100, H100])
    assert p.device_map == device_map
    assert (p.max_memory is None) == isinstance(device_map, dict)


def test_a_spread_asked_for_on_one_gpu_still_bounds_memory():
    p = plan_placement("auto", [H100])
    assert p.device_map == "auto" and list(p.max_memory) == [0]


@pytest.mark.parametrize(
    ("setting", "gpus", "message"),
    [
        (None, [], "needs a CUDA GPU"),
        ("cuda:2", [H100, H100], "not visible"),
        ("cuda:x", [H100], "not visible"),
        ("everywhere", [H100], "Unknown model.device_map"),
    ],
)
def test_impossible_placements_are_refused(setting, gpus, message):
    with pytest.raises(QuantizationError, match=message):
        plan_placement(setting, gpus)


@pytest.mark.parametrize(
    ("gpus", "setting", "device_map"),
    [([H100], None, {"": 0}), ([H100, H100], None, "auto"), ([H100, H100], "single", {"": 0})],
)
def test_the_engine_loads_4bit_through_engine_quant(
    monkeypatch, tmp_path, gpus, setting, device_map
):
    """engine.model.llm hands a 4-bit HF directory to engine.gpu.quant.load_quantized, placed."""
    pytest.importorskip("pydantic")  # engine.model.llm's settings (absent on the bare GPU image)
    import transformers

    from engine.model import llm

    seen = {}

    def fake_load_quantized(path, **kwargs):
        seen.update(kwargs, path=path)
        return "model", None

    monkeypatch.setattr(quant, "visible_gpu_bytes", lambda: list(gpus))
    monkeypatch.setattr(quant, "load_quantized", fake_load_quantized)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: "tok")
    settings = SimpleNamespace(
        model=SimpleNamespace(device_map=setting), model_cache_dir=tmp_path / "models"
    )
    model, tok = llm._from_pretrained(
        tmp_path,
        gguf_file=None,
        dtype=torch.bfloat16,
        device="cuda",
        quant=object(),
        settings=settings,
    )
    assert (model, tok) == ("model", "tok")
    assert seen["device_map"] == device_map
    assert (seen["max_memory"] is None) == isinstance(device_map, dict)
    assert seen["spec"].compute_dtype == torch.bfloat16
    assert seen["cache_root"] == tmp_path / "models" / "quantized"
    assert isinstance(llm.quantized_placement(settings), Placement)
