"""Issue 18 item 4: wrong passphrases back off in the TUI too (the throttle lives in
``Store.open``; this checks the unlock screen says so and keeps its state), and the right
passphrase opens the vault once the wait is over."""

from __future__ import annotations

import time

import pytest

from phyassist_tui.screens.unlock import UnlockScreen
from phyassist_tui.screens.workspace import WorkspaceScreen
from tests.tui.fakes import PASSPHRASE, unlock, wait_for

pytestmark = pytest.mark.anyio


def _error(app) -> str:
    return str(app.screen.query_one("#unlock-error").render())


async def test_wrong_passphrases_back_off_then_the_right_one_opens(make_app, vault):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        seen: list[str] = []
        for attempt in range(8):  # 3 wrong ones, then waits of 1, 2, 4 s: one must be refused
            await unlock(pilot, f"wrong passphrase {attempt}")
            await wait_for(
                pilot,
                lambda: not app.screen.busy and "Unlocking" not in _error(app),
                timeout=30,
                what="the attempt to finish",
            )
            seen.append(_error(app))
            if "wrong passphrases in a row: wait" in seen[-1]:
                break
        assert "Wrong passphrase" in seen[0]
        assert "wrong passphrases in a row: wait" in seen[-1], seen
        assert isinstance(app.screen, UnlockScreen)
        wait_s = float(seen[-1].split("wait ")[1].split(" s")[0])
        time.sleep(wait_s + 0.2)  # the throttle counts wall-clock time since the last failure
        await unlock(pilot, PASSPHRASE)
        await wait_for(
            pilot, lambda: isinstance(app.screen, WorkspaceScreen), timeout=30, what="workspace"
        )


async def test_the_model_timer_firing_as_the_app_closes_is_harmless(make_app, vault):
    """The model's start-up timer may fire while the app shuts down (Ctrl+Q within its grace
    period; seen under load in CI as a traceback): with no screen left it does nothing."""
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
    assert not app.screen_stack
    app._model_grace_elapsed()  # raised ScreenStackError
