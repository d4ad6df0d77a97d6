"""Draft training rows read, token for token, like the prompt the engine drafts from (real
embedded tokenizer): a row whose prompt drifted from inference would train the wrong thing."""

from __future__ import annotations

import threading

import pytest

from engine.dataprep.drafts import DraftCase, client_name, to_example
from engine.dataprep.format import to_record
from engine.records import BasicInfo, Patient

pytestmark = pytest.mark.model


@pytest.mark.parametrize(
    "statement, basic",
    [
        ("I can't sleep before exams and I worry all the time.", ()),
        ("我最近总是失眠，白天上班没有精神。", (("demographics", "女，30岁"),)),
    ],
)
def test_row_prompt_is_the_engines_prompt(assistant, statement, basic):
    case = DraftCase("t", "t", "train", statement, "Label", ("A reason here.",) * 2, basic=basic)
    example = to_example(case, 0)
    record = to_record(example)
    tokenizer = assistant.model.tokenizer
    row_ids = list(
        tokenizer.apply_chat_template(record["prompt"], add_generation_prompt=True, tokenize=True)
    )
    if isinstance(row_ids[0], list):
        row_ids = row_ids[0]
    # What the engine feeds the model for its first blank: the prompt plus the heading.
    patient = Patient(name=client_name(case.lang, 0), basic=BasicInfo(**dict(basic)))
    cancel = threading.Event()
    stream = iter(assistant.stream_analysis(patient, statement, cancel=cancel))
    heading = next(stream)
    next(stream)  # the label: one model run
    cancel.set()
    list(stream)
    heading_ids = tokenizer.encode(heading, add_special_tokens=False)
    assert assistant.last_prompt_ids == row_ids + heading_ids
    # The completion tokenizes at its boundary as the engine's pieces do: no token spans the
    # end of the prompt and the start of the answer.
    full = tokenizer.apply_chat_template(record["prompt"] + record["completion"], tokenize=False)
    prompt_text = tokenizer.apply_chat_template(
        record["prompt"], add_generation_prompt=True, tokenize=False
    )
    assert full.startswith(prompt_text)
    joint = tokenizer.encode(full, add_special_tokens=False)
    assert joint[: len(row_ids)] == row_ids
