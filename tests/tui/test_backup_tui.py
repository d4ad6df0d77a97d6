"""Backups from the app: the status line's per-target age and warning, "Back up now" (palette /
Alt+S), and the background backup on lock; all on a real vault and a local target."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from engine.backup import service
from engine.backup.snapshots import list_snapshots
from engine.backup.state import load_state, update_state
from engine.backup.targets import keys_of, load_targets, rclone_for
from engine.vault.store import Store
from phyassist_tui.screens.unlock import UnlockScreen
from phyassist_tui.widgets.status_line import StatusLine
from tests.tui.fakes import PASSPHRASE, open_workspace, screen_text, unlock, wait_for

pytestmark = pytest.mark.anyio


@pytest.fixture
def usb(vault, settings, tmp_path):
    """The test vault with one local backup target, 'usb'."""
    with Store.open(settings.vault_dir, PASSPHRASE, settings=settings) as store:
        service.add_target(store, settings.data_dir, "usb", str(tmp_path / "usb"))
    return tmp_path / "usb"


def _snapshots(settings) -> list[str]:
    with Store.open(settings.vault_dir, PASSPHRASE, writer=False, settings=settings) as store:
        (target,) = load_targets(store)
        return list_snapshots(rclone_for(target, keys_of(store)))


async def _wait_state(pilot, settings, name: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = load_state(settings.data_dir).get(name)
        if row is not None and (row.last_success or row.last_error):
            return row
        await pilot.pause(0.2)
    raise AssertionError("the background backup did not finish")


async def test_status_line_shows_last_backup_and_warns_when_old(make_app, usb, settings):
    old = (datetime.now(UTC) - timedelta(days=3)).isoformat(timespec="seconds")
    update_state(settings.data_dir, "usb", last_success=old)
    app = make_app()
    async with app.run_test(size=(120, 24)) as pilot:
        await open_workspace(pilot)
        line = app.screen.query_one(StatusLine)
        await wait_for(pilot, lambda: line.backup, what="backup status")
        assert line.backup_stale and "usb: 3 d ago!" in line.backup
        assert "backup usb: 3 d ago!" in screen_text(app)
        update_state(settings.data_dir, "usb", last_success=datetime.now(UTC).isoformat())
        line.refresh_backup()
        await pilot.pause()
        assert not line.backup_stale and "usb: 0 min ago" in line.backup


async def test_back_up_now_sends_a_snapshot_in_the_background(make_app, usb, settings):
    app = make_app()
    async with app.run_test(size=(120, 24)) as pilot:
        await open_workspace(pilot)
        await pilot.press("alt+s")
        row = await _wait_state(pilot, settings, "usb")
        assert row.last_success and not row.last_error
        assert app.session.unlocked  # the vault stayed open
    assert len(_snapshots(settings)) == 1


async def test_lock_backs_up_unless_the_setting_is_off(make_app, usb, settings):
    settings.backup.on_lock_and_quit = False
    app = make_app(settings=settings)
    async with app.run_test(size=(120, 24)) as pilot:
        await open_workspace(pilot)
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: isinstance(app.screen, UnlockScreen), what="locked")
        await pilot.pause(1.0)
        assert not load_state(settings.data_dir)["usb"].last_success
        settings.backup.on_lock_and_quit = True
        await unlock(pilot)
        await wait_for(pilot, lambda: app.session.unlocked, what="unlocked")
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: isinstance(app.screen, UnlockScreen), what="locked")
        row = await _wait_state(pilot, settings, "usb")
        assert row.last_success
    assert len(_snapshots(settings)) == 1
