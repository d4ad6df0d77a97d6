"""The counselor's edits weigh more in patient training than the model text they left alone.

Issue 17: a patient adapter trained with every answer token alike learned the counselor's
label but not their reasons; most of each note's answer is model text the counselor kept, so
the lines they wrote were a small share of the loss. ``data.edited_lines`` marks the lines the
counselor's hand shows on and the worker weighs their tokens ``hp.edited_line_weight`` times
the others (``edit_weights.line_token_weights``, ``EditWeightedSFTTrainer``)."""

from __future__ import annotations

import math

import pytest

from engine.records import AnalysisDraft, Item
from engine.training.data import build_training_data, edited_lines, final_answer


def _drafted(**kw) -> AnalysisDraft:
    return AnalysisDraft(raw_output="model text", **kw)


def _kept(text: str) -> Item:
    return Item(text=text, draft=text)


def test_edited_lines_mark_the_counselors_lines_and_where_they_deleted():
    note = _drafted(
        symptom_type=Item(text="Low mood", draft="Depression and sadness"),
        reasons=[
            Item(text='"I feel empty."', draft="Isolation."),  # edited
            _kept("Poor sleep."),  # left alone
            Item(text="Grief.", draft="Grief.", deleted=True),  # deleted: the heading next
        ],
        advice=[
            _kept("Plan a walk."),
            Item(text="You are not alone.", draft="You are not alone.", deleted=True),
            _kept("Call a friend."),  # stands where a deletion was
            Item(text="Homework: keep a diary."),  # added by the counselor
        ],
    )
    lines = final_answer(note, "en").split("\n")
    assert lines == [
        "Symptom type: Low mood",
        "Reasons:",
        '1. "I feel empty."',
        "2. Poor sleep.",
        "Advice:",
        "1. Plan a walk.",
        "2. Call a friend.",
        "3. Homework: keep a diary.",
    ]
    assert edited_lines(note) == [True, False, True, False, True, False, True, True]


def test_a_note_left_alone_or_written_by_hand_marks_nothing():
    untouched = _drafted(
        symptom_type=_kept("Low mood"), reasons=[_kept("Isolation.")], advice=[_kept("Walk.")]
    )
    assert edited_lines(untouched) == [False] * 5
    by_hand = AnalysisDraft(
        symptom_type=Item(text="Low mood"), reasons=[Item(text="Isolation.")], advice=[]
    )
    assert edited_lines(by_hand) == [False] * 3
    # a deletion that ends the answer marks the last line (where the model should have stopped)
    ended = _drafted(
        symptom_type=_kept("Low mood"),
        reasons=[_kept("Isolation.")],
        advice=[_kept("Walk."), Item(text="Be kind.", draft="Be kind.", deleted=True)],
    )
    assert edited_lines(ended) == [False, False, False, False, True]


def test_every_sft_example_carries_its_edited_lines(patient_with_notes):
    data = build_training_data(patient_with_notes)
    for example in data.sft:
        answer = example["completion"][0]["content"]
        assert len(example["edited_lines"]) == len(answer.split("\n"))


@pytest.fixture
def patient_with_notes():
    from engine.records import Note, Patient

    notes = [
        Note(
            question=f"I feel tired every day, session {n}.",
            analysis=_drafted(
                symptom_type=Item(text="Low mood", draft="Fatigue"),
                reasons=[_kept("Poor sleep."), Item(text='"I feel tired."', draft="Stress.")],
                advice=[_kept("Rest."), Item(text="Homework: sleep diary.")],
            ),
        )
        for n in range(2)
    ]
    return Patient(name="Test", notes=notes)


def _example(tokenizer):
    note = _drafted(
        symptom_type=Item(text="Low mood", draft="Fatigue"),
        reasons=[_kept("Poor sleep at night."), Item(text='"I feel tired."', draft="Stress.")],
        advice=[_kept("Rest more in the afternoon."), Item(text="Homework: a sleep diary.")],
    )
    prompt = [
        {"role": "system", "content": "You help a counselor."},
        {"role": "user", "content": "I feel tired every day."},
    ]
    answer = final_answer(note, "en")
    ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
    full = tokenizer.apply_chat_template(
        [*prompt, {"role": "assistant", "content": answer}], tokenize=True
    )
    ids, full = list(getattr(ids, "input_ids", ids)), list(getattr(full, "input_ids", full))
    labels = [-100] * len(ids) + full[len(ids) :]
    return note, prompt, answer, full, labels


def test_token_weights_follow_the_answer_lines(embedded_model_dir):
    from transformers import AutoTokenizer

    from engine.training.edit_weights import line_token_weights

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir, local_files_only=True)
    note, _prompt, _answer, ids, labels = _example(tokenizer)
    flags = edited_lines(note)
    weights = line_token_weights(tokenizer, ids, labels, flags, 4.0)
    assert weights is not None and len(weights) == len(ids)
    answer_at = [i for i, label in enumerate(labels) if label != -100]
    assert all(weights[i] == 0.0 for i in range(len(ids)) if i not in answer_at)
    # the answer tokens average 1 (the loss keeps its scale) ...
    assert math.isclose(sum(weights[i] for i in answer_at) / len(answer_at), 1.0, rel_tol=1e-6)
    # ... and the tokens of an edited line weigh 4x those of a line the counselor left alone
    text_by_weight: dict[float, str] = {}
    for i in answer_at:
        w = round(weights[i], 6)
        text_by_weight[w] = text_by_weight.get(w, "") + tokenizer.decode([ids[i]])
    assert len(text_by_weight) == 2
    low, high = sorted(text_by_weight)
    assert math.isclose(high / low, 4.0, rel_tol=1e-6)
    assert "Low mood" in text_by_weight[high] and "I feel tired" in text_by_weight[high]
    assert "Homework" in text_by_weight[high]
    assert "Poor sleep" in text_by_weight[low] and "Rest more" in text_by_weight[low]
    # lines that do not match the flags (an item with a line break): plain weights
    assert line_token_weights(tokenizer, ids, labels, flags[:3], 4.0) is None


def _first_step_loss(tiny_model_dir, sft, weight, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.training.config import Hyperparameters
    from engine.training.worker import train_adapter

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    hp = Hyperparameters(
        max_steps=1,
        lora_dropout=0.0,
        warmup_ratio=0.0,
        preference_method="none",
        edited_line_weight=weight,
        max_length=512,
    )
    result = train_adapter(model, tokenizer, sft, [], hp, lambda _e: None, tmp_path / str(weight))
    return result, model, tokenizer


def test_the_training_loss_weighs_the_edited_lines(tiny_model_dir, tmp_path):
    """The first step's loss (LoRA B starts at zero: the base model) is the weighted mean NLL
    over the answer tokens; with weight 1 it is the plain mean, as before."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.training.edit_weights import line_token_weights

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    note, prompt, answer, ids, labels = _example(tokenizer)
    sft = [
        {
            "prompt": prompt,
            "completion": [{"role": "assistant", "content": answer}],
            "edited_lines": edited_lines(note),
        }
    ]
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        logits = base(torch.tensor([ids])).logits[0, :-1].log_softmax(-1)
    nll = [-float(logits[i - 1, ids[i]]) for i in range(1, len(ids))]
    answer_at = [i for i in range(1, len(ids)) if labels[i] != -100]
    plain = sum(nll[i - 1] for i in answer_at) / len(answer_at)
    w = line_token_weights(tokenizer, ids, labels, edited_lines(note), 5.0)
    weighted = sum(w[i] * nll[i - 1] for i in answer_at) / len(answer_at)
    assert abs(weighted - plain) > 0.01  # the example tells the two apart

    result, _model, _tok = _first_step_loss(tiny_model_dir, sft, 1.0, tmp_path)
    assert result.edit_weighted_examples == 0
    assert result.losses[0] == pytest.approx(plain, rel=1e-3)
    result, _model, _tok = _first_step_loss(tiny_model_dir, sft, 5.0, tmp_path)
    assert result.edit_weighted_examples == 1
    assert result.losses[0] == pytest.approx(weighted, rel=1e-3)
