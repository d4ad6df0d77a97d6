"""``Assistant.risk_flags``: rules always, the loaded model where the settings allow it."""

from __future__ import annotations

import pytest

import engine.inference.assistant as assistant_module
from engine.trust.risk import assess

pytestmark = pytest.mark.model

TEXT = "We talked about her week. My husband hits me when he drinks."


@pytest.fixture
def mode(assistant):
    """Set ``risk_model_check`` on the shared assistant for one test, then put it back."""
    before = assistant.settings.risk_model_check

    def set_mode(value: str) -> None:
        assistant.settings.risk_model_check = value

    yield set_mode
    assistant.settings.risk_model_check = before


def test_embedded_model_is_rules_only_by_default(assistant, mode) -> None:
    mode("auto")
    assert "embedded model" in assistant.risk_model_refusal()
    flags, found_by = assistant.risk_flags(TEXT)
    assert flags == assess(TEXT)
    assert found_by.startswith("rules and the sentence classifier; no model check: the embedded")
    mode("off")
    assert "off in the settings" in assistant.risk_model_refusal()


def test_model_check_confirms_or_adds_and_never_drops(assistant, mode) -> None:
    mode("on")
    assert assistant.risk_model_refusal() is None
    rules = assess(TEXT)
    assert [f.category for f in rules] == ["abuse"]
    flags, found_by = assistant.risk_flags(TEXT)
    assert found_by == f"rules, the sentence classifier and {assistant.model.name}"
    abuse = [f for f in flags if f.category == "abuse" and f.evidence]
    assert len(abuse) == 1 and abuse[0].model_verdict is not None  # the model was asked
    assert abuse[0].evidence == rules[0].evidence  # kept, whatever the model said
    added = [f for f in flags if f.source == "model"]
    assert all(f.severity == "low" and f.evidence == "" and f.model_verdict for f in added)


def test_failing_model_check_keeps_the_rule_flags(assistant, mode, monkeypatch) -> None:
    mode("on")

    def broken(model, tokenizer):
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(assistant_module, "yes_no_scorer", broken)
    flags, found_by = assistant.risk_flags(TEXT)
    assert flags == assess(TEXT)
    assert "model check failed" in found_by and "out of memory" in found_by
