"""Start-up without the cyclic garbage collector.

Importing Textual and pydantic and building the first screens make hundreds of thousands of
long-lived objects; while they pile up the collector scans them again and again (about
90 ms of a 1.1 s launch on the 2-core test box). ``phyassist`` pauses it before importing
the app; the app resumes it once the patient list is painted (or the model is loaded, or
the app exits), first freezing everything alive then (``gc.freeze``) so that later
collections only look at objects made since. Memory freed by reference counting is
unaffected; only reference cycles wait for the collector.
"""

from __future__ import annotations

import gc

_paused = False


def pause_gc() -> None:
    """Call before importing the app (``phyassist tui``, the benchmark)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume_gc() -> None:
    """Freeze what start-up made and let the collector run again (idempotent)."""
    global _paused
    if _paused:
        gc.freeze()
        gc.enable()
        _paused = False
