"""Panes the counselor cannot see at start, mounted once the first frame is on screen.

Textual's ``Lazy`` mounts its widget in the callbacks that run right after the first
refresh: on the workspace those callbacks (four hidden panes, then styling and laying out
their ~20 widgets) ran before anything else queued, so a key pressed on the freshly shown
patient list waited behind them. ``AfterFirstFrame`` hands its widget to ``Lazy`` a short
moment after that first frame instead, when the list is up and the keys typed meanwhile
have been answered (and well before the model starts loading, see ``patients_pane``).
"""

from __future__ import annotations

from textual.lazy import Lazy
from textual.widget import Widget

MOUNT_AFTER_FIRST_FRAME_S = 0.05


class AfterFirstFrame(Lazy):
    """``Lazy``, but mounted ``MOUNT_AFTER_FIRST_FRAME_S`` after the first frame."""

    async def mount_composed_widgets(self, widgets: list[Widget]) -> None:
        def later() -> None:
            self.set_timer(MOUNT_AFTER_FIRST_FRAME_S, mount)

        async def mount() -> None:
            await Lazy.mount_composed_widgets(self, widgets)  # as Lazy (and its tests) do

        self.call_after_refresh(later)
