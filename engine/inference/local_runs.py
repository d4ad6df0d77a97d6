"""Generation runs on the model loaded in this process: prefix cache, record prefill, GPU
fast path.

Each run continues from the longest cached prefix of its prompt for the patient and the
adapter in use, and checks its KV cache back in when it ends. The patient's record prompt
is read into that cache ahead of time, in chunks a generation can interrupt. Greedy runs
of a mixture-of-experts model on a GPU go through :mod:`engine.gpu.fastdecode`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from engine.errors import PhyAssistError
from engine.inference.constraints import TokenConstraint
from engine.inference.generation import GenerationRun, prefill
from engine.model.llm import LoadedModel
from engine.records import Patient

PREFILL_CHUNK_CPU = 256  # tokens per step of the record prefill (~0.5 s on 2 cores): the
PREFILL_CHUNK_GPU = 2048  # longest a generation waits for the lock after cancelling it


class LocalRuns:
    """Local generation of :class:`~engine.inference.assistant.Assistant` (a base of it;
    the Assistant provides ``settings``, ``model``, ``adapters``, ``prefix_cache``,
    ``active_adapter``, ``record_prefix_ids`` and ``last_prompt_ids``)."""

    def _cache_key(self, patient: Patient | None) -> tuple:
        return (patient.id if patient is not None else "", self.active_adapter or "base")

    def _run(
        self,
        patient: Patient | None,
        ids: list[int],
        cancel: threading.Event,
        max_new: int,
        start: float,
        constraint: TokenConstraint | None = None,
        stop_text: Callable[[str], bool] | None = None,
    ) -> GenerationRun:
        loaded = self.model
        model = self.adapters.model
        key = self._cache_key(patient)
        self.last_prompt_ids = list(ids)

        def finished(run: GenerationRun) -> None:
            if run.cache_failed:
                self.prefix_cache.enabled = False  # this model will not take our cache
                self.prefix_cache.clear()
            elif run.error is None and run.past_key_values is not None:
                self.prefix_cache.checkin(key, ids, run.past_key_values)

        return GenerationRun(
            model,
            loaded.tokenizer,
            ids,
            cancel=cancel,
            gen=self.settings.generation,
            max_new_tokens=max_new,
            lock=loaded.lock,
            checkout=lambda: self.prefix_cache.checkout(key, ids, model),
            on_end=finished,
            start=start,
            fast=self._fast_decoder(loaded, model),
            constraint=constraint,
            stop_text=stop_text,
        )

    def _segments(self, patient: Patient | None, cancel: threading.Event, start: float):
        """A ``structured.RunSegment`` over this patient's prefix cache (drafting section by
        section continues one prompt, so each blank reuses the cache of the one before)."""

        def run(ids, max_new, constraint, stop) -> GenerationRun:  # type: ignore[no-untyped-def]
            return self._run(patient, ids, cancel, max_new, start, constraint, stop)

        return run

    def prefill_record(self, patient: Patient, cancel: threading.Event) -> int:
        """Put the KV cache of the patient's record prompt into the prefix cache now.

        Called when a patient is opened: on the 2-core CPU box the first Analysis of a
        patient with five notes spent 12 s reading the record before its first token, the
        second 0.8 s. Reading it while the counselor types the question moves that wait off
        the critical path. Runs in chunks under the model lock and stops at the next chunk
        once ``cancel`` is set (a generation asks for the lock); what was read by then is
        kept and the generation continues from it. Returns the tokens now cached.
        """
        if self._loaded is None or not self.prefix_cache.enabled:
            return 0
        loaded = self.model
        model = self.adapters.model
        key = self._cache_key(patient)
        try:
            prefix = self.record_prefix_ids(patient)
        except PhyAssistError:
            return 0
        if len(prefix) < self.prefix_cache.min_reuse or cancel.is_set():
            return 0
        with loaded.lock:
            if self.prefix_cache.cached_len(key, prefix) >= len(prefix) - 1:
                return len(prefix) - 1  # already read (a generation or an earlier prefill)
            cache, done = self.prefix_cache.checkout(key, prefix, model)
            if cache is None:
                return 0
            chunk = PREFILL_CHUNK_CPU if str(loaded.device) == "cpu" else PREFILL_CHUNK_GPU
            try:
                done = prefill(model, prefix, cache, done, chunk, cancel)
            except Exception:  # a model that will not prefill this way: generate still works
                return 0
            if done >= self.prefix_cache.min_reuse:
                self.prefix_cache.checkin(key, prefix[:done], cache)
            return done

    def _fast_decoder(self, loaded: LoadedModel, model: Any) -> Any | None:
        """The GPU fast path for this model, built once; None where it does not apply."""
        gen = self.settings.generation
        if not gen.fast_decode or gen.do_sample or loaded.fast_decoder is False:
            return None
        if loaded.fast_decoder is not None:
            return loaded.fast_decoder
        why = fast_decode_refusal(loaded)
        if why is None:
            from engine.gpu.fastdecode import FastDecoder, FastDecodeUnsupported

            try:
                with loaded.lock:
                    loaded.fast_decoder = FastDecoder(
                        model, max_cache_len=min(loaded.context_window, 16_384)
                    )
                return loaded.fast_decoder
            except (FastDecodeUnsupported, ValueError, RuntimeError) as exc:
                why = str(exc)
        loaded.fast_decoder, loaded.fast_decoder_why = False, why
        return None


def fast_decode_refusal(loaded: LoadedModel) -> str | None:
    """Why the fast decode path does not apply to this model (None: it does)."""
    if not str(loaded.device).startswith("cuda"):
        return "the fast path is for a GPU; on the CPU generate is used"
    if not any(
        hasattr(m, "experts") and hasattr(m, "gate") and hasattr(m, "top_k")
        for m in loaded.model.modules()
    ):
        return "the fast path is for mixture-of-experts models (Mixtral)"
    return None
