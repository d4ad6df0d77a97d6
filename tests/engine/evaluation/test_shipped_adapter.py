"""The shipped domain adapters: found for the embedded model only, the draft-format one active
by default, and it changes what the model answers (the IMHI answer format it was trained on)."""

from __future__ import annotations

import json
import re

import pytest

from engine.model.adapters import resolve_domain_adapter, shipped_domain_adapter
from engine.settings import EMBEDDED_MODEL, default_adapters_dir, load_settings

# The default ("auto") for the embedded model: trained on the product's draft format with
# MultiWD held out. The older IMHI + CounselChat Q&A adapter stays shipped with its card.
SHIPPED = default_adapters_dir() / "smollm2-135m-drafts"
OLDER = default_adapters_dir() / "smollm2-135m-imhi-counselchat"
TASKS = ("DR", "dreaddit", "Irf", "MultiWD", "SAD", "loneliness")

# Written for this test in the IMHI instruction form (not a benchmark row).
QUERY = (
    "Consider this post: \"I haven't left my bed in three days. Nothing feels worth doing "
    "anymore, I stopped answering my friends and I can't remember the last time I enjoyed "
    'anything. Everyone would be better off without me around." Question: Does the poster '
    "suffer from depression?"
)


def test_auto_picks_the_shipped_adapter_for_the_embedded_model_only() -> None:
    assert load_settings().model.domain_adapter == "auto"
    path = shipped_domain_adapter(EMBEDDED_MODEL)
    assert path == SHIPPED
    config = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["base_model_name_or_path"] == EMBEDDED_MODEL
    assert config["peft_type"] == "LORA"
    assert resolve_domain_adapter("auto", EMBEDDED_MODEL) == SHIPPED
    # Another base model must not get an adapter trained for SmolLM2.
    assert shipped_domain_adapter("/models/Mixtral-8x7B-Instruct") is None
    assert resolve_domain_adapter("auto", "/models/Mixtral-8x7B-Instruct") is None
    assert resolve_domain_adapter(None, EMBEDDED_MODEL) is None
    assert resolve_domain_adapter("", EMBEDDED_MODEL) is None


def test_auto_looks_in_the_adapters_dir_setting(tmp_path) -> None:
    """``model.adapters_dir`` replaces the source tree's adapters/ (an install without it)."""
    assert resolve_domain_adapter("auto", EMBEDDED_MODEL, tmp_path) is None
    (tmp_path / SHIPPED.name).mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (tmp_path / SHIPPED.name / name).write_bytes((SHIPPED / name).read_bytes())
    assert resolve_domain_adapter("auto", EMBEDDED_MODEL, tmp_path) == tmp_path / SHIPPED.name


@pytest.mark.parametrize(
    ("shipped", "rows"), [(SHIPPED, 120), (OLDER, 200)], ids=["drafts", "older"]
)
def test_card_table_matches_the_measured_results(shipped, rows) -> None:
    """The card's numbers are the ones in imhi_results.json, and they meet issue 7's goal."""
    results = json.loads((shipped / "imhi_results.json").read_text(encoding="utf-8"))["runs"]
    card = (shipped / "README.md").read_text(encoding="utf-8")
    for task in TASKS:
        base, adapter = results["base"]["tasks"][task], results["adapter"]["tasks"][task]
        assert base["n"] == adapter["n"] >= rows
        row = re.search(rf"^\| {task} \| (\d+) \| ([\d.]+) \| ([\d.]+) \|", card, re.M)
        assert row is not None, task
        assert int(row[1]) == adapter["n"]
        assert float(row[2]) == pytest.approx(100 * base["weighted_f1"], abs=0.006)
        assert float(row[3]) == pytest.approx(100 * adapter["weighted_f1"], abs=0.006)
    base_f1 = results["base"]["mean"]["weighted_f1"]
    adapter_f1 = results["adapter"]["mean"]["weighted_f1"]
    assert adapter_f1 - base_f1 >= 0.15
    assert results["adapter"]["mean"]["unlabeled_share"] < 0.05


def test_draft_adapter_generalises_to_the_task_it_never_saw() -> None:
    """Issue 15: no worse than base on the held-out IMHI task (MultiWD: no instruction and no
    draft row of it in training), and at least +15 mean weighted-F1 points on trained tasks."""
    results = json.loads((SHIPPED / "imhi_results.json").read_text(encoding="utf-8"))["runs"]
    card = (SHIPPED / "README.md").read_text(encoding="utf-8")
    assert "Held out of training entirely (instructions and drafts): MultiWD" in card

    def f1(run: str, task: str) -> float:
        return results[run]["tasks"][task]["weighted_f1"]

    for task in ("MultiWD", "loneliness"):  # loneliness has no IMHI training file at all
        assert f1("adapter", task) >= f1("base", task), task
    trained = ("DR", "dreaddit", "Irf", "SAD")
    gain = sum(f1("adapter", t) - f1("base", t) for t in trained) / len(trained)
    assert gain >= 0.15


@pytest.mark.model
def test_default_model_loads_with_the_domain_adapter_and_generates() -> None:
    import torch

    from engine.evaluation.imhi import _chat_ids, generate_batch, stop_ids
    from engine.evaluation.labels import extract_label
    from engine.inference.assistant import Assistant

    torch.set_num_threads(1)  # a shared 2-core box: see tests/engine/conftest.py
    settings = load_settings()  # the defaults: embedded model, domain_adapter "auto"
    settings.model.device = "cpu"
    assistant = Assistant(settings)
    assistant.load()
    manager = assistant.adapters
    try:
        assert assistant.model_label == "SmolLM2-135M-Instruct · domain adapter"
        assert assistant.active_adapter == "domain"
        assert assistant.last_adapter_error is None
        tokenizer = assistant.model.tokenizer
        prompt = _chat_ids(tokenizer, QUERY)

        def answer() -> str:
            model = manager.model
            eos = stop_ids(model, tokenizer)
            return generate_batch(model, tokenizer, [prompt], max_new_tokens=20, eos=eos)[0]

        with_adapter = answer()
        # The adapter answers in the trained IMHI form: the label sentence first.
        assert re.match(r"(Yes|No), the poster (does not )?suffers? from depression", with_adapter)
        assert extract_label("DR", with_adapter, QUERY) in {"yes", "no"}
        manager.activate(None)
        assert answer() != with_adapter  # the LoRA weights are what changed the answer
    finally:
        manager.activate(None)  # leave the shared in-process model without an active adapter
