"""Streaming through the Assistant on the real embedded model: text, stats, cancel, prefix cache,
loop stop, and reading a record ahead."""

from __future__ import annotations

import threading

import pytest

from engine.errors import InputRejected
from engine.inference.analysis import parse_analysis
from engine.inference.generation import GenerationRun
from engine.records import BasicInfo, ChatMessage, Note, Patient

pytestmark = pytest.mark.model

QUESTION = "I cannot sleep before exams and my parents expect me to be the best."


@pytest.fixture(autouse=True)
def free_layout(request):
    """These tests guard the generation mechanics (one run per request: stats, cancel, the
    prefix cache); the engine-owned draft layout runs one per item and has its own tests
    (tests/engine/inference/test_structured.py, test_drafts_real.py)."""
    if "assistant" not in request.fixturenames:
        yield
        return
    generation = request.getfixturevalue("assistant").settings.generation
    before, generation.draft_layout = generation.draft_layout, "free"
    yield
    generation.draft_layout = before


@pytest.fixture
def patient() -> Patient:
    return Patient(
        name="Anna",
        basic=BasicInfo(demographics="F, 19, student", mental_state="anxious, tired"),
        notes=[Note(question="Worried about the maths exam.")],
    )


def test_stream_analysis_yields_text_and_stats(assistant, patient, cancel) -> None:
    stream = assistant.stream_analysis(patient, QUESTION, cancel=cancel)
    assert stream.stats is None  # set when the run ends, on the run (not the Assistant)
    chunks = list(stream)
    assert chunks and all(isinstance(c, str) and c for c in chunks)
    text = "".join(chunks)
    assert text.strip()
    stats = stream.stats
    assert stats is not None and not stats.cancelled
    assert 1 <= stats.tokens <= assistant.settings.generation.max_new_tokens
    assert 0 < stats.ttft_s <= stats.total_s
    assert stats.prompt_tokens > 50
    if stats.tokens > 1:
        assert stats.tokens_per_s > 0
    assert stream.context_report == "1 of 1 notes fit"
    draft = parse_analysis(text, model_name=assistant.model_label)
    assert draft.raw_output == text
    assert draft.model_name == assistant.model_label


def test_cancel_stops_within_a_token_or_two(assistant, patient) -> None:
    cancel = threading.Event()
    tokens_at_cancel = None
    stream = assistant.stream_analysis(patient, QUESTION, cancel=cancel)
    for _chunk in stream:
        if tokens_at_cancel is None:
            tokens_at_cancel = assistant_tokens_so_far(stream)
            cancel.set()
    stats = stream.stats
    assert stats.cancelled
    assert stats.tokens <= tokens_at_cancel + 2
    assert stats.tokens < assistant.settings.generation.max_new_tokens


def assistant_tokens_so_far(stream) -> int:
    chunks = stream._chunks  # the GenerationRun's own iterator inside the TextStream
    run = chunks.gi_frame.f_locals["self"] if hasattr(chunks, "gi_frame") else None
    assert isinstance(run, GenerationRun)
    return run.clock.tokens


def test_cancel_before_the_first_token_ends_cleanly(assistant, patient) -> None:
    cancel = threading.Event()
    cancel.set()
    stream = assistant.stream_analysis(patient, QUESTION, cancel=cancel)
    text = "".join(stream)
    assert stream.stats.cancelled
    assert stream.stats.tokens <= 1
    assert len(text) < 40


def test_walking_away_from_the_iterator_stops_the_worker(assistant, patient, cancel) -> None:
    stream = assistant.stream_analysis(patient, QUESTION, cancel=cancel)
    next(stream)
    stream.close()  # the consumer is gone: generation must not run on in the background
    assert stream.stats.cancelled
    assert stream.stats.tokens < assistant.settings.generation.max_new_tokens
    assert not [t for t in threading.enumerate() if t.name == "phyassist-generate"]


def test_bad_input_is_rejected_before_generation(assistant, patient, cancel) -> None:
    with pytest.raises(InputRejected, match="empty"):
        assistant.stream_analysis(patient, "   ", cancel=cancel)
    with pytest.raises(InputRejected, match="characters"):
        assistant.stream_analysis(patient, "x" * 25_000, cancel=cancel)


def test_prefix_cache_gives_identical_greedy_output(assistant, patient, cancel) -> None:
    assistant.prefix_cache.clear()
    assistant.prefix_cache.enabled = False
    try:
        stream = assistant.stream_analysis(patient, QUESTION, cancel=cancel)
        plain = "".join(stream)
        assert stream.stats.cached_prefix_tokens == 0
    finally:
        assistant.prefix_cache.enabled = True
    stream = assistant.stream_analysis(patient, QUESTION, cancel=cancel)
    first = "".join(stream)
    assert stream.stats.cached_prefix_tokens == 0
    stream = assistant.stream_analysis(patient, QUESTION, cancel=cancel)
    again = "".join(stream)
    prompt_tokens = stream.stats.prompt_tokens
    assert stream.stats.cached_prefix_tokens == prompt_tokens - 1
    assert plain == first == again

    # Regenerate and chat share the patient's system prefix (role + record).
    draft = parse_analysis(again + "\nReasons:\n1. Exams", model_name=assistant.model_label)
    item = draft.reasons[-1]
    item.comments.append("more specific")
    stream = assistant.stream_regenerate_item(
        patient, QUESTION, draft, "reasons", item.id, cancel=cancel
    )
    regen = "".join(stream)
    assert regen.strip()
    shared = stream.stats.cached_prefix_tokens
    assert shared > 50
    stream = assistant.stream_chat(patient, [], "What should I ask next time?", cancel=cancel)
    list(stream)
    ids = assistant.last_prompt_ids
    im_start = assistant.model.tokenizer.convert_tokens_to_ids("<|im_start|>")
    system_turn = [i for i, t in enumerate(ids) if t == im_start][1]  # where the user turn starts
    assert system_turn > 50
    assert stream.stats.cached_prefix_tokens >= system_turn


def test_chat_with_history_and_without_patient(assistant, patient, cancel) -> None:
    history = [
        ChatMessage(role="user", content="She failed the exam twice."),
        ChatMessage(role="assistant", content="That must weigh on her."),
    ]
    stream = assistant.stream_chat(patient, history, "What now?", cancel=cancel)
    assert "".join(stream).strip()
    assert stream.context_report == "1 of 1 notes fit"
    stream = assistant.stream_chat(None, [], "What is CBT?", cancel=cancel)
    assert "".join(stream).strip()
    assert stream.context_report == "no patient record"


def test_chinese_statement_streams(assistant, seed_case_zh, cancel) -> None:
    patient = Patient(name="孙某", basic=BasicInfo(**seed_case_zh["basic_info"]))
    statement = seed_case_zh["counseling_question"]["statement"]
    stream = assistant.stream_analysis(patient, statement, cancel=cancel)
    assert "".join(stream).strip()
    assert stream.stats.prompt_tokens > 500


def test_long_history_is_fitted_and_reported(assistant, cancel, monkeypatch) -> None:
    small = 1024  # a small window keeps the prefill short; the logic is the same at 8192
    monkeypatch.setattr(assistant.model, "context_window", small)
    patient = Patient(
        name="Long",
        notes=[Note(question=f"Session {i}. " + "She talks about work. " * 20) for i in range(40)],
    )
    stream = assistant.stream_chat(patient, [], "Summarise.", cancel=cancel)
    list(stream)
    report = stream.context_report
    assert "of 40 notes fit" in report and "older notes left out" in report
    assert stream.stats.prompt_tokens + 16 <= small


def test_a_failing_model_raises_a_clear_error(real_model, cancel) -> None:
    from engine.errors import GenerationFailed
    from engine.settings import GenerationSettings

    class Broken:
        device = "cpu"
        generation_config = real_model.model.generation_config

        def generate(self, **kwargs):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    run = GenerationRun(
        Broken(),
        real_model.tokenizer,
        [1, 2, 3],
        cancel=cancel,
        gen=GenerationSettings(),
        max_new_tokens=4,
    )
    with pytest.raises(GenerationFailed, match="ran out of memory"):
        list(run)
    assert run.stats is not None and run.stats.tokens == 0


def test_is_looping_finds_short_cycles_only() -> None:
    from engine.inference.generation import is_looping

    assert is_looping([7] * 48, 48)
    assert is_looping([1, 2, 3] + [5, 6] * 24, 48)  # period 2 after other text
    assert is_looping(list(range(8)) * 6, 48)  # period 8: the longest that counts
    assert not is_looping(list(range(9)) * 6, 48)  # period 9 is text, not a loop
    assert not is_looping([7] * 47, 48)  # not long enough yet
    assert not is_looping([7] * 47 + [8], 48)
    assert not is_looping([7] * 100, 0)  # off


def _one_token_model(token: int):
    """A 1-layer Llama whose greedy choice is always ``token`` (lm_head = a bias on it)."""
    import torch

    from tests.support import TINY_VOCAB, tiny_llama

    model = tiny_llama(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        eos_token_id=0,
        pad_token_id=0,
        tie_word_embeddings=False,
    ).eval()
    head = torch.nn.Linear(16, TINY_VOCAB, bias=True)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    head.bias.data[token] = 5.0
    model.lm_head = head
    return model


class ScriptedFast:
    """Stands in for the GPU fast decoder: emits ``tokens`` in a cycle, stops when told to."""

    def __init__(self, tokens: list[int]) -> None:
        self.tokens = tokens

    def generate(self, ids, max_new_tokens, *, on_token, **kwargs):
        for i in range(max_new_tokens):
            if on_token(self.tokens[i % len(self.tokens)]):
                return


@pytest.mark.parametrize("fast", [False, True], ids=["generate", "fast-path"])
def test_a_looping_model_is_stopped_and_says_so(real_model, cancel, fast) -> None:
    """A small model stuck in a loop (the embedded model on a Chinese statement wrote "；"
    until max_new_tokens) stops after ``stop_loop_tokens`` tokens and the stats say why."""
    from engine.settings import GenerationSettings

    tokenizer = real_model.tokenizer
    (token,) = tokenizer.encode("!", add_special_tokens=False)
    model = _one_token_model(token)
    prompt = tokenizer.encode("我睡不着。", add_special_tokens=False)
    gen = GenerationSettings(max_new_tokens=200, stop_loop_tokens=32)
    run = GenerationRun(
        model,
        tokenizer,
        prompt,
        cancel=cancel,
        gen=gen,
        max_new_tokens=200,
        fast=ScriptedFast([token]) if fast else None,
    )
    text = "".join(run)
    assert run.stats.looped and not run.stats.cancelled
    assert run.stats.tokens == 32 and text == "!" * 32

    off = GenerationSettings(max_new_tokens=60, stop_loop_tokens=0)
    run = GenerationRun(model, tokenizer, prompt, cancel=cancel, gen=off, max_new_tokens=60)
    assert "".join(run) == "!" * 60 and not run.stats.looped


def test_a_run_cut_inside_a_character_leaves_no_broken_character(real_model, cancel) -> None:
    """ "；" is two byte-level tokens; a run stopped after the first of them used to end the
    text with U+FFFD (shown as a box in the draft and saved into the note)."""
    from engine.settings import GenerationSettings

    tokenizer = real_model.tokenizer
    halves = tokenizer.encode("；", add_special_tokens=False)
    assert len(halves) == 2
    gen = GenerationSettings(max_new_tokens=33, stop_loop_tokens=0)  # ends after a half
    run = GenerationRun(
        _one_token_model(halves[0]),  # the scripted decoder chooses the tokens
        tokenizer,
        [1, 2, 3],
        cancel=cancel,
        gen=gen,
        max_new_tokens=33,
        fast=ScriptedFast(halves),
    )
    text = "".join(run)
    assert run.stats.tokens == 33
    assert text == "；" * 16


def test_invalid_utf8_written_by_the_model_is_dropped(real_model, cancel) -> None:
    """Half of "；" followed by "a" is not UTF-8: the embedded model sometimes writes such
    sequences (seen as a box inside Chinese chat replies and drafts)."""
    from engine.settings import GenerationSettings

    tokenizer = real_model.tokenizer
    halves = tokenizer.encode("；", add_special_tokens=False)
    [a] = tokenizer.encode("a", add_special_tokens=False)
    gen = GenerationSettings(max_new_tokens=8, stop_loop_tokens=0)
    run = GenerationRun(
        _one_token_model(halves[0]),
        tokenizer,
        [1, 2, 3],
        cancel=cancel,
        gen=gen,
        max_new_tokens=8,
        fast=ScriptedFast([halves[0], a, *halves]),
    )
    assert "".join(run) == "a；a；"


# -- reading the record ahead (what opening a patient starts) -----------------------------------
@pytest.fixture
def patient_with_history(patient) -> Patient:
    """``patient`` with four notes: a record long enough to read in several chunks."""
    notes = [Note(question=f"Worried about exam {i}; sleeps badly.") for i in range(4)]
    return patient.model_copy(update={"notes": notes})


def _draft(assistant, patient) -> tuple[str, int]:
    stream = assistant.stream_analysis(patient, QUESTION, cancel=threading.Event())
    text = "".join(stream)
    return text, stream.stats.cached_prefix_tokens


def test_prefilled_record_is_reused_and_changes_nothing(assistant, patient_with_history) -> None:
    assistant.prefix_cache.clear()
    cold_text, cold_cached = _draft(assistant, patient_with_history)
    assert cold_cached == 0

    assistant.prefix_cache.clear()
    read = assistant.prefill_record(patient_with_history, threading.Event())
    prefix = assistant.record_prefix_ids(patient_with_history)
    assert read == len(prefix) > 100  # system prompt + the record
    assert assistant.last_prompt_ids[:read] == prefix  # the analysis prompt starts with it
    warm_text, warm_cached = _draft(assistant, patient_with_history)
    assert warm_cached == read
    assert warm_text == cold_text  # greedy: the cache changes the speed, not the words

    # a chat about the same patient starts with the same record
    stream = assistant.stream_chat(
        patient_with_history, [], "How does she sleep?", cancel=threading.Event()
    )
    list(stream)
    assert stream.stats.cached_prefix_tokens >= read
    assert (
        assistant.prefill_record(patient_with_history, threading.Event()) >= read - 1
    )  # nothing to do


class CancelAfter(threading.Event):
    """Reads as set after ``calls`` looks: cancels a prefill at a known chunk boundary."""

    def __init__(self, calls: int) -> None:
        super().__init__()
        self.calls = calls

    def is_set(self) -> bool:
        self.calls -= 1
        return self.calls < 0 or super().is_set()


def test_a_cancelled_prefill_keeps_what_it_read(
    assistant, patient_with_history, monkeypatch
) -> None:
    from engine.inference import local_runs

    monkeypatch.setattr(local_runs, "PREFILL_CHUNK_CPU", 32)
    assistant.prefix_cache.clear()
    assert (
        assistant.prefill_record(patient_with_history, CancelAfter(0)) == 0
    )  # cancelled before it began
    # one look before the first chunk, one before each chunk: stop before the third
    read = assistant.prefill_record(patient_with_history, CancelAfter(3))
    assert read == 64
    _text, cached = _draft(assistant, patient_with_history)
    assert cached == 64  # the generation went on from there


def test_a_generation_asked_for_during_a_prefill_continues_from_it(
    assistant, patient_with_history, monkeypatch
) -> None:
    """The counselor presses Generate while the record is still being read: the prefill
    stops at its next chunk and the generation takes its cache (taken under the model lock,
    so not before the prefill has put it back)."""
    import time

    from engine.inference import local_runs

    monkeypatch.setattr(local_runs, "PREFILL_CHUNK_CPU", 8)
    assistant.prefix_cache.clear()
    stop = threading.Event()
    result: list[int] = []
    reader = threading.Thread(
        target=lambda: result.append(assistant.prefill_record(patient_with_history, stop))
    )
    reader.start()
    time.sleep(0.3)
    stop.set()
    _text, cached = _draft(
        assistant, patient_with_history
    )  # asked for at once, the prefill still running
    reader.join()
    assert result[0] > 0 and cached == result[0]
