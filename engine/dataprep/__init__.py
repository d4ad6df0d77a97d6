"""Domain data preparation: read IMHI and CounselChat, clean them, write a chat dataset.

``prepare`` is the one entry point the CLI uses; the modules underneath each do one job
(``imhi``/``counselchat`` read, ``clean`` filters with counted rules, ``format`` turns rows
into the conversational prompt/completion form TRL trains on).
"""

from __future__ import annotations

from engine.dataprep.clean import CleanReport, Example
from engine.dataprep.pipeline import PrepareResult, prepare

__all__ = ["CleanReport", "Example", "PrepareResult", "prepare"]
