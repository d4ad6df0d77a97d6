"""The app's side of backups: send a snapshot in the background (lock, quit, palette).

Taking the snapshot needs the open vault for well under a second (its files are held
still, hashed where changed, linked into a job folder); sending it is done by a detached
``engine.backup.worker`` process, so it goes on after the vault locks or the app quits.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from phyassist_tui.app import PhyAssistApp

logger = logging.getLogger("phyassist.backup")


def start_background_backup(app: PhyAssistApp, *, automatic: bool) -> tuple[str, bool]:
    """Snapshot the vault and hand it to a detached sender; (what to tell the user, started).

    Call from a thread (``asyncio.to_thread``) while the vault is still open. ``automatic``
    (lock, quit) does nothing when the setting is off or no target exists, and never raises.
    """
    from engine.backup import service
    from engine.backup.targets import load_targets
    from engine.errors import PhyAssistError

    if automatic and not app.settings.backup.on_lock_and_quit:
        return "", False

    def make_plan(store: Any) -> Any:
        if not load_targets(store):
            return None
        return service.plan_run(store, app.settings.data_dir)

    try:
        if not app.session.unlocked:
            return ("" if automatic else "Unlock the vault first."), False
        plan = app.session.vault_call(make_plan)
        if plan is None:
            hint = "No backup target yet: add one with `phyassist backup init URL` (README)."
            return ("" if automatic else hint), False
        plan.retry_delays_s = tuple(app.settings.backup.retry_delays_s)
        service.spawn_background(plan)
    except (PhyAssistError, OSError) as exc:
        logger.warning("background backup not started: %s", type(exc).__name__)
        return f"Backup not started: {exc}", False
    names = ", ".join(t.name for t in plan.targets)
    return f"Backing up to {names} in the background.", True
