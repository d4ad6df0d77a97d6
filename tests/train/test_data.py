"""Notes -> SFT examples and edit preference pairs."""

from __future__ import annotations

import pytest

from engine.records import AnalysisDraft, BasicInfo, Item, Note, Patient
from engine.training.data import build_training_data, example_text, final_answer


def test_one_example_per_saved_note_with_final_text(patient_record):
    patient = patient_record("Zorblax", 3)
    data = build_training_data(patient)
    assert len(data.sft) == 3
    ex = data.sft[0]
    assert [m["role"] for m in ex["prompt"]] == ["system", "user"]
    assert [m["role"] for m in ex["completion"]] == ["assistant"]
    # the prompt carries the basic information and the statement, not the answer
    assert "lives alone with his dog Zorblax" in ex["prompt"][0]["content"]
    assert "Session 1." in ex["prompt"][1]["content"]
    answer = ex["completion"][0]["content"]
    assert answer.startswith("Symptom type: Anxiety centred on the dog Zorblax")
    assert "1. The client's attachment to Zorblax replaces social contact" in answer
    assert "Plan care for Zorblax" in answer
    # the model's draft and the deleted item are not what the model should learn
    assert "Generalized anxiety" not in answer
    assert "Buy a new dog" not in answer
    assert "Anxiety centred" not in ex["prompt"][1]["content"]


def test_each_counselor_change_is_one_pair(patient_record):
    patient = patient_record("Zorblax", 2)
    data = build_training_data(patient)
    # per note: symptom edited, reason 1 edited, advice 1 edited, advice 2 deleted
    assert len(data.pairs) == 8
    chosen = {p["chosen"][0]["content"] for p in data.pairs}
    assert chosen == {ex["completion"][0]["content"] for ex in data.sft}
    rejected = [p["rejected"][0]["content"] for p in data.pairs[:4]]
    assert rejected[0].startswith("Symptom type: Generalized anxiety")
    assert "1. The client is lonely" in rejected[1]
    assert "1. Practise relaxation" in rejected[2]
    assert "Buy a new dog" in rejected[3]
    # exactly one change per pair: everything else equals the final answer
    final = data.pairs[1]["chosen"][0]["content"].splitlines()
    diff = [a for a, b in zip(final, rejected[1].splitlines(), strict=True) if a != b]
    assert len(diff) == 1


def test_counselor_written_items_and_untouched_drafts_make_no_pairs(patient_record):
    data = build_training_data(patient_record("Zorblax", 2, edits=False))
    assert len(data.sft) == 2
    assert data.pairs == []


def test_notes_without_analysis_are_skipped():
    patient = Patient(
        name="X",
        notes=[Note(question="Only a question so far"), Note(question="   ")],
    )
    assert build_training_data(patient).sft == []


def test_chinese_note_uses_chinese_layout():
    note = Note(
        question="我最近总是失眠，担心考试考不好。",
        analysis=AnalysisDraft(
            symptom_type=Item(text="学业焦虑", draft="焦虑"),
            reasons=[Item(text="父母期望高")],
            advice=[Item(text="认知行为疗法", draft="多休息")],
        ),
    )
    patient = Patient(name="孙某", basic=BasicInfo(demographics="女，19岁，复读生"), notes=[note])
    data = build_training_data(patient)
    answer = data.sft[0]["completion"][0]["content"]
    assert answer == "症状类型：学业焦虑\n原因：\n1. 父母期望高\n建议：\n1. 认知行为疗法"
    assert "复读生" in data.sft[0]["prompt"][0]["content"]
    assert "我最近总是失眠" in example_text(data.sft[0])
    assert [p["rejected"][0]["content"].splitlines()[0] for p in data.pairs] == [
        "症状类型：焦虑",
        "症状类型：学业焦虑",
    ]


def test_seed_case_becomes_an_example(seed_case_zh):
    ref = seed_case_zh["reference_analysis"]
    basic = BasicInfo(**seed_case_zh["basic_info"])
    note = Note(
        question=seed_case_zh["counseling_question"]["statement"],
        observed_state=seed_case_zh["counseling_question"]["observed_state"],
        analysis=AnalysisDraft(
            symptom_type=Item(text=ref["symptom_type"]),
            reasons=[Item(text=r) for r in ref["reasons"]],
            advice=[Item(text=a) for a in ref["advice"]],
        ),
    )
    data = build_training_data(Patient(name="孙某", basic=basic, notes=[note]))
    assert len(data.sft) == 1
    assert final_answer(note.analysis, "zh") == data.sft[0]["completion"][0]["content"]
    assert ref["reasons"][0] in data.sft[0]["completion"][0]["content"]


@pytest.mark.model
def test_loss_falls_on_the_answer_only(tiny_model_dir, patient_record, tmp_path):
    """TRL's own preprocessing masks the prompt: only answer tokens carry labels."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    data = build_training_data(patient_record("Zorblax", 1))
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(
            output_dir=str(tmp_path / "out"),
            report_to=[],
            use_cpu=True,
            bf16=False,
            completion_only_loss=True,
            max_length=1024,
        ),
        train_dataset=datasets.Dataset.from_list(data.sft),
        processing_class=tokenizer,
    )
    row = trainer.train_dataset[0]
    ids = row["input_ids"]
    mask = row.get("completion_mask") or [int(x != -100) for x in row["labels"]]
    learned = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
    answer = data.sft[0]["completion"][0]["content"]
    assert answer in learned
    assert "Session 1." not in learned
    assert len(learned) < len(answer) + 40  # the answer plus the turn's end marker
