"""Reading a patient's record into the prompt cache when the patient is opened."""

from __future__ import annotations

import threading

import pytest

from engine.records import BasicInfo, Note, Patient

pytestmark = pytest.mark.model

QUESTION = "I cannot sleep before exams and my parents expect me to be the best."


@pytest.fixture
def patient() -> Patient:
    return Patient(
        name="Anna",
        basic=BasicInfo(demographics="F, 19, student", mental_state="anxious, tired"),
        notes=[Note(question=f"Worried about exam {i}; sleeps badly.") for i in range(4)],
    )


def _draft(assistant, patient) -> tuple[str, int]:
    text = "".join(assistant.stream_analysis(patient, QUESTION, cancel=threading.Event()))
    return text, assistant.last_stats.cached_prefix_tokens


def test_prefilled_record_is_reused_and_changes_nothing(assistant, patient) -> None:
    assistant.prefix_cache.clear()
    cold_text, cold_cached = _draft(assistant, patient)
    assert cold_cached == 0

    assistant.prefix_cache.clear()
    read = assistant.prefill_record(patient, threading.Event())
    prefix = assistant.record_prefix_ids(patient)
    assert read == len(prefix) > 100  # system prompt + the record
    assert assistant.last_prompt_ids[:read] == prefix  # the analysis prompt starts with it
    warm_text, warm_cached = _draft(assistant, patient)
    assert warm_cached == read
    assert warm_text == cold_text  # greedy: the cache changes the speed, not the words

    # a chat about the same patient starts with the same record
    list(assistant.stream_chat(patient, [], "How does she sleep?", cancel=threading.Event()))
    assert assistant.last_stats.cached_prefix_tokens >= read
    assert assistant.prefill_record(patient, threading.Event()) >= read - 1  # nothing to do


class CancelAfter(threading.Event):
    """Reads as set after ``calls`` looks: cancels a prefill at a known chunk boundary."""

    def __init__(self, calls: int) -> None:
        super().__init__()
        self.calls = calls

    def is_set(self) -> bool:
        self.calls -= 1
        return self.calls < 0 or super().is_set()


def test_a_cancelled_prefill_keeps_what_it_read(assistant, patient, monkeypatch) -> None:
    from engine import assistant as assistant_module

    monkeypatch.setattr(assistant_module, "PREFILL_CHUNK_CPU", 32)
    assistant.prefix_cache.clear()
    assert assistant.prefill_record(patient, CancelAfter(0)) == 0  # cancelled before it began
    # one look before the first chunk, one before each chunk: stop before the third
    read = assistant.prefill_record(patient, CancelAfter(3))
    assert read == 64
    _text, cached = _draft(assistant, patient)
    assert cached == 64  # the generation went on from there


def test_a_generation_asked_for_during_a_prefill_continues_from_it(
    assistant, patient, monkeypatch
) -> None:
    """The counselor presses Generate while the record is still being read: the prefill
    stops at its next chunk and the generation takes its cache (taken under the model lock,
    so not before the prefill has put it back)."""
    import time

    from engine import assistant as assistant_module

    monkeypatch.setattr(assistant_module, "PREFILL_CHUNK_CPU", 8)
    assistant.prefix_cache.clear()
    stop = threading.Event()
    result: list[int] = []
    reader = threading.Thread(target=lambda: result.append(assistant.prefill_record(patient, stop)))
    reader.start()
    time.sleep(0.3)
    stop.set()
    _text, cached = _draft(assistant, patient)  # asked for at once, the prefill still running
    reader.join()
    assert result[0] > 0 and cached == result[0]
