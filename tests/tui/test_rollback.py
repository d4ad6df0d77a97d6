"""One key rolls a patient's adapter back (Alt+R), as `phyassist adapter rollback` does."""

from __future__ import annotations

import pytest
import torch

from engine.model.adapters import AdapterRegistry
from engine.trust.audit import AuditLog
from engine.vault.store import Store
from phyassist_tui.screens.confirm import ConfirmScreen
from tests.tui.fakes import PASSPHRASE, open_patient, wait_for

pytestmark = pytest.mark.anyio


def _two_versions(settings) -> str:
    store = Store.open(settings.vault_dir, PASSPHRASE, settings=settings)
    try:
        sun = next(s for s in store.list_patients() if s.name == "Sun")
        registry = AdapterRegistry(store)
        config = {"peft_type": "LORA", "r": 1, "target_modules": ["q_proj"]}
        for n in (1, 2):
            state = {"base_model.model.q_proj.lora_A.weight": torch.full((1, 2), float(n))}
            registry.save(sun.id, config, state, {"examples": n, "date": f"2026-0{n}-01"})
        assert AdapterRegistry(store).active(sun.id) == 2
        return sun.id
    finally:
        store.close()


async def test_alt_r_rolls_the_adapter_back_after_asking(make_app, vault, settings):
    pid = _two_versions(settings)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await open_patient(pilot, "Sun")
        await pilot.press("alt+r")
        confirm = await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert confirm
        assert "from v2 back to v1 (1 notes" in app.screen.question
        await pilot.press("y")
        await wait_for(
            pilot,
            lambda: app.session.vault_call(lambda store: AdapterRegistry(store).active(pid)) == 1,
        )
        await wait_for(
            pilot, lambda: any("v1 is now active" in n.message for n in app._notifications)
        )
        entry = app.session.vault_call(lambda store: AuditLog(store).entries(pid))[-1]
        assert (entry.action, entry.detail) == ("adapter_activated", "rollback v2->v1")
        await pilot.press("alt+r")  # nothing older than v1: says so, asks nothing
        await pilot.pause(0.1)
        assert not isinstance(app.screen, ConfirmScreen)
        assert any("no older adapter" in n.message for n in app._notifications)
