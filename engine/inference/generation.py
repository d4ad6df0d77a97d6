"""Streaming generation with a cancel path and honest timing.

``model.generate`` runs in a worker thread and feeds a ``TextIteratorStreamer``; the caller
iterates text chunks. A ``StoppingCriteria`` polls a ``threading.Event`` after every decoding
step, so a cancel stops generation within one token and the iterator simply ends.

Timing is taken where the tokens appear (the streamer's ``put``), so time to first token and
decode speed mean the same here as in the benchmark's plain ``model.generate`` baseline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from transformers import (
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

from engine.errors import GenerationFailed, PhyAssistError
from engine.inference.constraints import TokenConstraint
from engine.inference.stream import GenerationStats
from engine.settings import GenerationSettings

LOOP_MAX_PERIOD = 8  # the longest cycle (in tokens) that counts as a loop


def is_looping(tokens: Sequence[int], run: int, max_period: int = LOOP_MAX_PERIOD) -> bool:
    """Whether the last ``run`` tokens are one cycle of at most ``max_period`` tokens repeated.

    Cheap enough for every decoding step (at most ``max_period`` list comparisons)."""
    if run <= max_period or len(tokens) < run:
        return False
    tail = list(tokens[-run:])
    return any(tail[p:] == tail[:-p] for p in range(1, max_period + 1))


class LoopCriteria(StoppingCriteria):
    """Stop when the generated tokens (not the prompt) end in a loop (see ``is_looping``)."""

    def __init__(self, prompt_tokens: int, run: int, on_loop: Callable[[], None]) -> None:
        self.prompt_tokens = prompt_tokens
        self.run = run
        self.on_loop = on_loop

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        generated = input_ids.shape[1] - self.prompt_tokens
        stop = generated >= self.run and is_looping(input_ids[0, -self.run :].tolist(), self.run)
        if stop:
            self.on_loop()
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class TextStopCriteria(StoppingCriteria):
    """Stop once ``stop(text generated so far)`` says so (an item ended, a label is done)."""

    def __init__(self, tokenizer: Any, prompt_tokens: int, stop: Callable[[str], bool]) -> None:
        self.tokenizer = tokenizer
        self.prompt_tokens = prompt_tokens
        self.stop = stop

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        text = self.tokenizer.decode(input_ids[0, self.prompt_tokens :], skip_special_tokens=True)
        stop = bool(self.stop(text))
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class CancelCriteria(StoppingCriteria):
    """Stop as soon as any of the given events is set (checked after every token)."""

    def __init__(self, *events: threading.Event) -> None:
        self.events = events

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        stop = any(e.is_set() for e in self.events)
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class TokenClock:
    """Records when each generated token arrives (prompt excluded)."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.last: float | None = None
        self.cpu_first = self.cpu_last = 0.0  # the generating thread's CPU time
        self.tokens = 0

    def tick(self, count: int) -> None:
        now = time.perf_counter()
        cpu = time.thread_time()  # tick runs on the generating thread (the streamer's put)
        if self.first is None:
            self.first = now
            self.cpu_first = cpu
        self.last = now
        self.cpu_last = cpu
        self.tokens += count

    def decode_cpu_s(self) -> float:
        return self.cpu_last - self.cpu_first if self.tokens >= 2 else 0.0

    def decode_rate(self) -> float:
        if self.tokens < 2 or self.first is None or self.last is None or self.last <= self.first:
            return 0.0
        return (self.tokens - 1) / (self.last - self.first)


class TimedTextStreamer(TextIteratorStreamer):
    """A TextIteratorStreamer that also times the generated tokens."""

    def __init__(self, tokenizer: Any, clock: TokenClock, **kwargs: Any) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True, **kwargs)
        self.clock = clock

    def put(self, value: torch.Tensor) -> None:
        if not (self.skip_prompt and self.next_tokens_are_prompt):
            self.clock.tick(int(value.numel()))
        super().put(value)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        # U+FFFD is what invalid UTF-8 decodes to, and it must not reach the note: a run cut
        # off inside a multi-byte character ends with it, and a small model sometimes writes
        # a byte sequence that is not UTF-8 at all (seen in Chinese chat and drafts). The
        # streamer holds back an incomplete character until it completes, so none is lost.
        super().on_finalized_text(text.replace("\ufffd", ""), stream_end)


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every id that ends a turn: the generation config's and the tokenizer's."""
    ids: list[int] = []
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(gen_eos, int):
        ids.append(gen_eos)
    elif isinstance(gen_eos, list | tuple):
        ids.extend(int(i) for i in gen_eos)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(int(tokenizer.eos_token_id))
    return ids


def generate_kwargs(
    model: Any, tokenizer: Any, gen: GenerationSettings, max_new_tokens: int
) -> dict[str, Any]:
    """The sampling arguments shared by our stream and the benchmark's baseline."""
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": gen.do_sample,
        "repetition_penalty": gen.repetition_penalty,
        "eos_token_id": eos_ids(model, tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
    }
    if gen.do_sample:
        kwargs["temperature"] = max(gen.temperature, 1e-3)
        kwargs["top_p"] = gen.top_p
    else:
        # Silence "temperature is set but do_sample is False" from the model's own config.
        kwargs.update(temperature=None, top_p=None, top_k=None)
    return kwargs


class GenerationRun:
    """One streaming generation. Iterate it for text; ``stats`` is set once it has ended.

    ``past_key_values``, if given, must hold the KV cache of ``input_ids[:cached_tokens]``;
    generate then only computes the rest. ``checkout`` instead supplies both once the lock
    is held. If the model rejects the cache before producing a
    token, the run retries once without it (``cache_failed`` tells the caller).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        input_ids: list[int],
        *,
        cancel: threading.Event,
        gen: GenerationSettings,
        max_new_tokens: int,
        lock: threading.RLock | None = None,
        past_key_values: Any | None = None,
        cached_tokens: int = 0,
        on_end: Callable[[GenerationRun], None] | None = None,
        start: float | None = None,
        fast: Any | None = None,
        checkout: Callable[[], tuple[Any | None, int]] | None = None,
        constraint: TokenConstraint | None = None,
        stop_text: Callable[[str], bool] | None = None,
    ) -> None:
        if not input_ids:
            raise ValueError("empty prompt")
        self.model = model
        self.tokenizer = tokenizer
        self.input_ids = input_ids
        self.cancel = cancel
        self.gen = gen
        self.max_new_tokens = max_new_tokens
        self.lock = lock or threading.RLock()
        self.past_key_values = past_key_values
        self.cached_tokens = cached_tokens if past_key_values is not None else 0
        self.on_end = on_end
        # (cache, cached tokens) taken once the model lock is held: a record prefill that
        # held the lock until then has checked its cache in by that time
        self.checkout = checkout
        # An engine.gpu.fastdecode.FastDecoder for this model (GPU MoE path), used for greedy runs.
        self.fast = fast if (fast is not None and not gen.do_sample) else None
        # engine.inference.constraints: which tokens may be chosen; when the text is complete
        self.constraint = constraint
        self.stop_text = stop_text
        self.start = start if start is not None else time.perf_counter()
        self.abandon = threading.Event()  # the consumer stopped iterating
        self.clock = TokenClock()
        self.error: BaseException | None = None
        self.cache_failed = False
        self.looped = False
        self.stats: GenerationStats | None = None
        self._started = False

    def _loop_found(self) -> None:
        self.looped = True

    # The worker ---------------------------------------------------------------------------

    def _generate(self, streamer: TimedTextStreamer, cache: Any | None) -> None:
        ids = torch.tensor([self.input_ids], dtype=torch.long, device=self.model.device)
        kwargs = generate_kwargs(self.model, self.tokenizer, self.gen, self.max_new_tokens)
        kwargs["repetition_penalty"] = self._penalty()
        if cache is not None:
            kwargs["past_key_values"] = cache
        if self.constraint is not None:
            penalty = 1.0
            if self.constraint.copy_source:  # the constraint applies the penalty, copy-aware
                penalty, kwargs["repetition_penalty"] = kwargs["repetition_penalty"], 1.0
            kwargs["logits_processor"] = LogitsProcessorList(
                [self.constraint.processor(ids.shape[1], penalty)]
            )
        with torch.inference_mode():
            self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                streamer=streamer,
                stopping_criteria=StoppingCriteriaList(self._criteria(ids.shape[1])),
                **kwargs,
            )

    def _penalty(self) -> float:
        c = self.constraint
        if c is not None and c.repetition_penalty is not None:
            return c.repetition_penalty
        return self.gen.repetition_penalty

    def _criteria(self, prompt_tokens: int) -> list[StoppingCriteria]:
        criteria: list[StoppingCriteria] = [CancelCriteria(self.cancel, self.abandon)]
        run = self.gen.stop_loop_tokens
        if run:
            criteria.append(LoopCriteria(prompt_tokens, run, self._loop_found))
        if self.stop_text is not None:
            criteria.append(TextStopCriteria(self.tokenizer, prompt_tokens, self.stop_text))
        return criteria

    def _generate_fast(self, streamer: TimedTextStreamer, cache: Any | None) -> None:
        """Greedy decode through the static-cache / CUDA-graph path, streamed token by token.

        Same choice rule as ``generate`` with ``do_sample=False`` (greedy + repetition penalty),
        same stop rules (EOS, max tokens, cancel after any token)."""
        from transformers import DynamicCache

        if cache is None:
            cache = DynamicCache(config=self.model.config)
            self.past_key_values = cache
        streamer.next_tokens_are_prompt = False  # the prompt is never echoed
        run = self.gen.stop_loop_tokens
        generated: list[int] = []

        def on_token(token: int) -> bool:
            streamer.put(torch.tensor([token]))
            generated.append(token)
            if run and is_looping(generated, run):
                self._loop_found()
                return True
            if self.stop_text is not None and self.stop_text(
                self.tokenizer.decode(generated, skip_special_tokens=True)
            ):
                return True
            return self.cancel.is_set() or self.abandon.is_set()

        constraint = self.constraint
        self.fast.generate(
            self.input_ids,
            self.max_new_tokens,
            eos_token_id=eos_ids(self.model, self.tokenizer),
            on_token=on_token,
            repetition_penalty=self._penalty(),
            cache=cache,
            logits_bias=constraint.bias if constraint is not None else None,
            first_banned=constraint.first_banned if constraint is not None else (),
        )
        streamer.end()

    def _work(self, streamer: TimedTextStreamer) -> None:
        try:
            with self.lock:
                if self.checkout is not None:
                    cache, reused = self.checkout()
                    self.past_key_values = cache
                    self.cached_tokens = reused if cache is not None else 0
                if self.fast is not None:
                    try:
                        self._generate_fast(streamer, self.past_key_values)
                        return
                    except Exception:
                        if self.clock.tokens:
                            raise
                        # Not a case the fast path takes (e.g. longer than its static cache):
                        # fall back to generate with a fresh cache.
                        self.fast = None
                        self.past_key_values = None
                        self.cached_tokens = 0
                        streamer.next_tokens_are_prompt = True
                try:
                    self._generate(streamer, self.past_key_values)
                except Exception:
                    if self.past_key_values is None or self.clock.tokens:
                        raise
                    # The model would not take our cache: say so and run without it.
                    self.cache_failed = True
                    self.past_key_values = None
                    self.cached_tokens = 0
                    streamer.next_tokens_are_prompt = True
                    self._generate(streamer, None)
        except BaseException as exc:
            self.error = exc
            streamer.end()

    # The consumer -------------------------------------------------------------------------

    def __iter__(self) -> Iterator[str]:
        if self._started:
            raise RuntimeError("a GenerationRun can be iterated once")
        self._started = True
        streamer = TimedTextStreamer(self.tokenizer, self.clock)
        worker = threading.Thread(
            target=self._work, args=(streamer,), name="phyassist-generate", daemon=True
        )
        worker.start()
        completed = False
        try:
            for text in streamer:
                if text:
                    yield text
            completed = True
        finally:
            if not completed:  # the consumer walked away: stop the worker too
                self.abandon.set()
            worker.join()
            self._finish()
        if self.error is not None:
            if isinstance(self.error, Exception) and not isinstance(self.error, PhyAssistError):
                raise GenerationFailed(_failure_message(self.error)) from self.error
            raise self.error

    def _finish(self) -> None:
        end = time.perf_counter()
        clock = self.clock
        self.stats = GenerationStats(
            ttft_s=(clock.first - self.start) if clock.first is not None else end - self.start,
            tokens=clock.tokens,
            tokens_per_s=clock.decode_rate(),
            total_s=end - self.start,
            cancelled=self.cancel.is_set() or self.abandon.is_set(),
            prompt_tokens=len(self.input_ids),
            cached_prefix_tokens=self.cached_tokens,
            looped=self.looped,
            decode_cpu_s=clock.decode_cpu_s(),
            cpu_tokens_per_s=(
                (clock.tokens - 1) / clock.decode_cpu_s() if clock.decode_cpu_s() > 0 else 0.0
            ),
        )
        if self.on_end is not None:
            self.on_end(self)


def prefill(
    model: Any, ids: list[int], cache: Any, start: int, chunk: int, cancel: threading.Event
) -> int:
    """Feed ``ids[start:]`` into ``cache`` (which holds ``ids[:start]``), ``chunk`` tokens per
    forward pass, until done or ``cancel`` is set; returns how many tokens ``cache`` holds.

    Only the last position's logits are computed (``logits_to_keep=1``): the cache is the
    point, and a 256 x vocabulary logits block per chunk would cost more than it saves."""
    done = start
    with torch.inference_mode():
        while done < len(ids) and not cancel.is_set():
            piece = ids[done : done + chunk]
            model(
                input_ids=torch.tensor([piece], dtype=torch.long, device=model.device),
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            done += len(piece)
    return done


def _failure_message(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in text.lower():
        return (
            "The model ran out of memory while generating. Shorten the statement, lower "
            "generation.max_new_tokens, or use a smaller / 4-bit model."
        )
    return f"Generation failed: {text}"
