"""Decode speed by the generating thread's CPU time: what bench/drafts.py compares across
modes on a shared box, where the wall-clock rate moves with other processes' load."""

from __future__ import annotations

import threading
import time

from engine.inference.generation import TokenClock
from engine.inference.stream import GenerationStats
from engine.inference.structured import _Tally


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_clock_counts_cpu_of_its_own_thread_only():
    clock = TokenClock()
    clock.tick(1)
    _spin(0.05)  # work on this thread: counted
    other = threading.Thread(target=_spin, args=(0.2,))
    other.start()
    other.join()  # work on another thread: not counted
    time.sleep(0.05)  # waiting: not counted
    clock.tick(1)
    assert 0.04 <= clock.decode_cpu_s() < 0.15
    assert clock.last - clock.first >= 0.29  # the wall clock saw all of it


def _stats(tokens: int, wall: float, cpu: float) -> GenerationStats:
    return GenerationStats(
        ttft_s=0.1,
        tokens=tokens,
        tokens_per_s=(tokens - 1) / wall,
        total_s=wall + 0.1,
        cancelled=False,
        prompt_tokens=10,
        cached_prefix_tokens=0,
        decode_cpu_s=cpu,
        cpu_tokens_per_s=(tokens - 1) / cpu,
    )


def test_a_draft_sums_cpu_time_over_its_segments():
    tally = _Tally(start=0.0)
    tally.add(_stats(11, wall=2.0, cpu=0.5))
    tally.add(_stats(21, wall=4.0, cpu=1.5))
    stats = tally.stats(now=10.0)
    assert stats.decode_cpu_s == 2.0
    assert stats.cpu_tokens_per_s == 15.0  # (32 tokens - 2 first tokens) / 2 s
    assert stats.tokens_per_s == 5.0  # the wall-clock rate, unchanged
