"""A model that cannot write the statement's language says so with its draft.

SmolLM2-135M holds 77 Chinese characters as whole tokens and spells the rest byte by byte;
its Chinese drafts are structured but are not real words. The engine measures that from the
vocabulary and puts a warning on the run, so the counselor is not left guessing.
"""

from __future__ import annotations

import threading

import pytest

from engine.inference.constraints import (
    MIN_WHOLE_CHINESE_CHARACTERS,
    language_caveat,
    whole_chinese_characters,
)
from engine.records import Patient

pytestmark = pytest.mark.model


class _Vocab:
    """A SentencePiece-like tokenizer stub: ``n`` ideographs as whole tokens, plus ASCII."""

    all_special_ids: tuple[int, ...] = ()

    def __init__(self, n: int) -> None:
        self.tokens = [chr(0x4E00 + i) for i in range(n)] + ["▁the", "a", "<0xE4>"]

    def __len__(self) -> int:
        return len(self.tokens)

    def convert_ids_to_tokens(self, ids):
        return [self.tokens[i] for i in ids]

    def get_vocab(self):
        return {t: i for i, t in enumerate(self.tokens)}


def test_the_embedded_model_is_flagged_for_chinese_only(real_model) -> None:
    tokenizer = real_model.tokenizer
    assert whole_chinese_characters(tokenizer) < MIN_WHOLE_CHINESE_CHARACTERS
    caveat = language_caveat(tokenizer, "zh")
    assert "Chinese" in caveat and str(whole_chinese_characters(tokenizer)) in caveat
    assert language_caveat(tokenizer, "en") == ""


def test_a_vocabulary_with_chinese_characters_is_not_flagged() -> None:
    assert whole_chinese_characters(_Vocab(700)) == 700
    assert language_caveat(_Vocab(700), "zh") == ""
    assert language_caveat(_Vocab(50), "zh") != ""


def test_the_analysis_stream_carries_it(assistant) -> None:
    zh = assistant.stream_analysis(
        Patient(name="Test"), "我最近总是睡不着，很焦虑。", cancel=threading.Event()
    )
    en = assistant.stream_analysis(
        Patient(name="Test"), "I cannot sleep before exams.", cancel=threading.Event()
    )
    try:
        assert "Chinese" in zh.caveat
        assert en.caveat == ""
    finally:
        zh.close()
        en.close()
