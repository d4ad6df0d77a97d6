"""Snapshots of every main screen at 80x24 and 120x40 (fixed dates, fake engine).

Update after an intended visual change with ``pytest tests/tui/test_snapshots.py
--snapshot-update`` and review the SVGs in ``__snapshots__``.
"""

from __future__ import annotations

import fcntl
import shutil
import tempfile
import threading
from pathlib import Path

import pytest
from textual.widgets import Input

from engine.settings import Settings, StoreSettings
from phyassist_tui.screens.new_patient import NewPatientScreen
from phyassist_tui.screens.train import TrainScreen
from phyassist_tui.screens.unlock import UnlockScreen
from tests.tui.fakes import (
    FakeAssistant,
    add_seed_case_patient,
    draft_ready,
    generate,
    open_patient,
    open_workspace,
    type_text,
    wait_for,
)

SIZES = pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
SNAPSHOT_HOME = Path(tempfile.gettempdir()) / "phyassist-snapshots"


@pytest.fixture
def settings() -> Settings:
    """Settings with a fixed data directory: the unlock screen shows the vault's path.

    The path is fixed, so two test runs on one machine (worktrees, CI jobs) would share it:
    a lock file serialises them instead of letting one wipe the other's vault mid-test."""
    with open(f"{SNAPSHOT_HOME}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            shutil.rmtree(SNAPSHOT_HOME, ignore_errors=True)
            yield Settings(
                store=StoreSettings(scrypt_log2_n=10),
                idle_lock_minutes=0,
                data_dir=SNAPSHOT_HOME / "data",
                cache_dir=SNAPSHOT_HOME / "cache",
            )
            shutil.rmtree(SNAPSHOT_HOME, ignore_errors=True)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


async def settle(pilot) -> None:
    """Freeze what varies between runs: cursors, live speeds, toasts."""
    app = pilot.app
    if app.session.unlocked:  # unlocked: the status line shows the model once loaded
        await wait_for(pilot, lambda: app.model_state != "loading", what="model loaded")
    await pilot.pause(0.1)
    app.clear_notifications()
    for widget in app.screen.query("Input, TextArea"):
        widget.cursor_blink = False
    status = app.screen.query("StatusLine")
    if status:
        status.first().tokens_per_s = 42.0 if status.first().tokens_per_s is not None else None
    await pilot.pause(0.1)


@SIZES
def test_unlock_first_run(snap_compare, make_app, size):
    app = make_app()

    async def run_before(pilot):
        await wait_for(
            pilot, lambda: isinstance(app.screen, UnlockScreen) and app.screen.creating is True
        )
        await settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@SIZES
def test_unlock_wrong_passphrase(snap_compare, make_app, vault, size):
    app = make_app()

    async def run_before(pilot):
        await wait_for(
            pilot,
            lambda: (
                isinstance(app.screen, UnlockScreen)
                and app.screen.creating is False
                and app.focused is not None
            ),
        )
        await type_text(pilot, "wrong passphrase")
        await pilot.press("enter")
        await wait_for(
            pilot, lambda: "Wrong" in str(app.screen.query_one("#unlock-error").render())
        )
        await settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@SIZES
def test_workspace_notes(snap_compare, make_app, vault, size):
    app = make_app()

    async def run_before(pilot):
        await open_patient(pilot, "Sun")
        await settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@SIZES
def test_new_patient_form(snap_compare, make_app, vault, size):
    app = make_app()

    async def run_before(pilot):
        await open_workspace(pilot)
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: isinstance(app.screen, NewPatientScreen))
        await pilot.press("ctrl+s")  # shows the validation message
        await settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@SIZES
def test_analysis_streamed(snap_compare, make_app, vault, size):
    fake = FakeAssistant(pause_after=12)
    app = make_app(assistant=fake)

    async def run_before(pilot):
        screen = await open_patient(pilot, "Sun")
        await generate(pilot, screen, "Since the exam I cannot focus.")
        screen.query_one("#observed", Input).value = "tired, anxious"
        await wait_for(pilot, lambda: fake.paused.is_set())
        await wait_for(pilot, lambda: screen.analysis.stream.text.count("\n") >= 3)
        await settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)
    fake.resume.set()


@SIZES
def test_draft_with_edits(snap_compare, make_app, vault, size):
    app = make_app()

    async def run_before(pilot):
        screen = await open_patient(pilot, "Sun")
        await generate(pilot, screen, "Since the exam I cannot focus.")
        await draft_ready(pilot, screen)
        await pilot.press("down", "down", "e")  # past the Reasons header
        app.focused.value = "Very high expectations from the parents"
        await pilot.press("enter", "down", "c")
        await type_text(pilot, "mention the village")
        await pilot.press("enter", "down", "d")
        await settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@SIZES
def test_chat(snap_compare, make_app, vault, size):
    app = make_app()

    async def run_before(pilot):
        screen = await open_patient(pilot, "Sun")
        await pilot.press("f5")
        await type_text(pilot, "How should I open the next session?")
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.generating is None and len(screen.history) == 2)
        await settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@SIZES
def test_train_progress(snap_compare, make_app, vault, size):
    released = threading.Event()

    def runner(*, patient, store, settings, cancel):
        for step in range(1, 31):
            yield {
                "phase": "sft",
                "step": step,
                "total_steps": 60,
                "loss": 2.5 - step * 0.05 + (step % 3) * 0.02,
                "tokens_per_s": 850.0,
                "eta_s": 90 - step,
            }
        while not (cancel.is_set() or released.is_set()):
            cancel.wait(0.05)

    app = make_app(training_runner=runner)

    async def run_before(pilot):
        await open_patient(pilot, "Sun")
        await pilot.press("ctrl+t")
        screen = await wait_for(pilot, lambda: isinstance(app.screen, TrainScreen) and app.screen)
        from phyassist_tui.widgets.loss_plot import LossPlot

        await wait_for(pilot, lambda: len(screen.query_one(LossPlot).steps) == 30)
        await settle(pilot)

    try:
        assert snap_compare(app, terminal_size=size, run_before=run_before)
    finally:
        released.set()


@SIZES
def test_restore_draft_offer(snap_compare, make_app, vault, size):
    """Reopening a patient whose draft was kept (lock, quit or crash) offers it back."""
    app = make_app()

    async def run_before(pilot):
        from phyassist_tui.screens.restore import RestoreDraftScreen

        screen = await open_patient(pilot, "Sun")
        await generate(pilot, screen, "Since the exam I cannot focus.")
        await draft_ready(pilot, screen)
        await pilot.press("ctrl+l")
        await open_patient(pilot, "Sun")
        await wait_for(pilot, lambda: isinstance(app.screen, RestoreDraftScreen))
        await settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@SIZES
def test_chinese_seed_case_notes(snap_compare, make_app, settings, seed_case_zh, size):
    """The worked Chinese example: wide characters wrap inside the notes at both sizes."""
    from datetime import UTC, datetime

    add_seed_case_patient(settings, seed_case_zh, created=datetime(2026, 3, 14, 9, 30, tzinfo=UTC))
    app = make_app()

    async def run_before(pilot):
        screen = await open_patient(pilot, "孙某")
        notes = screen.query_one("#notes-view")
        await pilot.pause(0.2)
        notes.scroll_end(animate=False)  # the note's Analysis and Advice
        await settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)
