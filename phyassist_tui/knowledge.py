"""Warming up the knowledge index (``Session.knowledge()``) a little after start-up.

Reading the index costs seconds on a large vault and holds the GIL in bursts, so it is kept
off the start-up path: it is read ``settings.knowledge.warm_up_s`` after the vault is open
and the model has loaded, in a worker, or on first use (a Similar lookup or a grounded generation,
both in workers), whichever comes first. The index itself lives in the Session
(engine.session.knowledge), which drops it on lock.
"""

from __future__ import annotations

from functools import partial
from typing import Any


def schedule_warm_up(app: Any) -> None:
    """On the UI thread (in the app's context), once the vault is open: schedule reading
    the index (nothing slow happens here)."""
    delay = app.settings.knowledge.warm_up_s
    if delay > 0 and app.session.unlocked:
        app.set_timer(delay, partial(_warm_up, app))


def _warm_up(app: Any) -> None:
    if not app.session.unlocked:
        return  # locked since
    if app.session.model_state.state in ("idle", "loading"):
        schedule_warm_up(app)  # not while the model loads: both want the two cores
        return
    from phyassist_tui.screens.risk import warm_up_risk_classifier

    warm_up_risk_classifier(app)  # the risk check's sentence classifier (about a second)
    app.run_worker(
        app.session.knowledge,
        name="warm-knowledge",
        group="knowledge",
        exclusive=True,
        thread=True,
        exit_on_error=False,
    )
