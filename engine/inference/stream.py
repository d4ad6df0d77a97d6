"""One generation's text stream with what it cost, without torch.

``Assistant.stream_*`` return a :class:`TextStream`: iterate it for the text chunks; once it
is exhausted (or abandoned) ``stats`` says what the run cost and ``context_report`` what of
the record fit. Per-run results live on the run, never on the shared ``Assistant``, so two
runs (or a run and a risk check) cannot overwrite each other's figures. Torch-free so that
``engine.session`` and the TUI can name these types without importing the model stack.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.records import AnalysisDraft

__all__ = ["GenerationStats", "TextStream"]


@dataclass
class GenerationStats:
    """What one generation cost; ``tokens_per_s`` is the decode rate after the first token."""

    ttft_s: float
    tokens: int
    tokens_per_s: float
    total_s: float
    cancelled: bool
    prompt_tokens: int
    cached_prefix_tokens: int
    looped: bool = False  # stopped because the output had become one short cycle repeated
    # Decode rate over the generating thread's CPU time: on a shared CPU box the wall-clock
    # rate swings with other processes' load, this one much less (one torch thread; 0 when
    # unknown, and meaningless on a GPU, where the work is not on this thread).
    cpu_tokens_per_s: float = 0.0
    decode_cpu_s: float = 0.0


class TextStream:
    """Text chunks of one generation; ``stats`` is set once the chunks are done."""

    def __init__(
        self,
        chunks: Iterator[str],
        *,
        context_report: str = "",
        stats: Callable[[], GenerationStats | None] = lambda: None,
        caveat: str = "",
    ) -> None:
        self._chunks = chunks
        self._stats = stats
        self.context_report = context_report
        self.caveat = caveat  # what the counselor should know about this output's reliability
        # An Analysis stream's reading of its own text: the engine's structured draft (with
        # its risk items) for the text it streamed; None for other streams.
        self.draft_of: Callable[[str], AnalysisDraft] | None = None

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return next(self._chunks)

    def close(self) -> None:
        """Stop early (the generation worker is told to stop)."""
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()

    @property
    def stats(self) -> GenerationStats | None:
        return self._stats()
