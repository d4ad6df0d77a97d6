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
    # per note: symptom edited, reason 1 edited, reason 2 added by the counselor,
    # advice 1 edited, advice 2 deleted
    assert len(data.pairs) == 10
    chosen = {p["chosen"][0]["content"] for p in data.pairs}
    assert chosen == {ex["completion"][0]["content"] for ex in data.sft}
    rejected = [p["rejected"][0]["content"] for p in data.pairs[:5]]
    assert rejected[0].startswith("Symptom type: Generalized anxiety")
    assert "1. The client is lonely" in rejected[1]
    assert "Zorblax is ageing" not in rejected[2]  # the added reason is what the model lacked
    assert "1. Practise relaxation" in rejected[3]
    assert "Buy a new dog" in rejected[4]
    # exactly one change per pair: everything else equals the final answer
    final = data.pairs[1]["chosen"][0]["content"].splitlines()
    diff = [a for a, b in zip(final, rejected[1].splitlines(), strict=True) if a != b]
    assert len(diff) == 1
    signals = data.signals
    assert (signals["notes"], signals["notes_trained"]) == (2, 2)
    assert (signals["edits"], signals["deletions"], signals["added"]) == (6, 2, 2)
    assert [n["edits"] for n in signals["per_note"]] == [3, 3]


def test_untouched_drafts_make_no_pairs_and_hand_written_notes_no_added_pairs(patient_record):
    data = build_training_data(patient_record("Zorblax", 2, edits=False))
    assert len(data.sft) == 2
    # each note still has one model draft line ("Buy a new dog", kept unchanged): the three
    # lines the counselor wrote next to it are "added" items; nothing else is a signal
    assert (data.signals["added"], data.signals["edits"], data.signals["deletions"]) == (6, 0, 0)
    hand_written = Patient(
        name="X",
        notes=[
            Note(
                question="q",
                analysis=AnalysisDraft(symptom_type=Item(text="s"), reasons=[Item(text="r")]),
            )
        ],
    )
    assert build_training_data(hand_written).pairs == []


def test_regeneration_with_comments_is_a_pair():
    item = Item(text="Keep a sleep diary", draft="Keep a sleep diary")
    item.comments = ["more concrete: what to write down"]
    item.apply_regeneration("Write down bedtime, wake time and worries each night")
    assert item.regenerations[0].previous == "Keep a sleep diary"
    assert item.regenerations[0].comments == ["more concrete: what to write down"]
    note = Note(
        question="I cannot sleep",
        analysis=AnalysisDraft(symptom_type=Item(text="Insomnia", draft="Insomnia"), advice=[item]),
    )
    data = build_training_data(Patient(name="X", notes=[note]))
    assert data.signals["regenerations"] == 1 and data.signals["edits"] == 0
    (pair,) = data.pairs
    assert "1. Keep a sleep diary" in pair["rejected"][0]["content"]
    assert "Write down bedtime" in pair["chosen"][0]["content"]


def test_compare_choices_are_pairs():
    from engine.records import PreferenceChoice

    patient = Patient(
        name="X",
        preferences=[
            PreferenceChoice(question="I fight with my sister", chosen="A", rejected="B"),
            PreferenceChoice(question="same text", chosen="C", rejected="C"),  # no preference
        ],
    )
    data = build_training_data(patient)
    assert data.signals["choices"] == 1
    (pair,) = data.pairs
    assert "I fight with my sister" in pair["prompt"][1]["content"]
    assert (pair["chosen"][0]["content"], pair["rejected"][0]["content"]) == ("A", "B")


def test_unplaced_lines_the_counselor_kept_are_trained_and_counted():
    """The "notes 1 edits 0" undercount: a note whose draft the parser could not place."""
    note = Note(
        question="I feel low",
        analysis=AnalysisDraft(
            raw_output="whatever the model wrote",
            unplaced=[Item(text="Talk to a friend daily", draft="Talk to a friend")],
        ),
    )
    data = build_training_data(Patient(name="X", notes=[Note(question="first"), note]))
    assert data.signals["notes"] == 2 and data.signals["notes_trained"] == 1
    assert data.signals["edits"] == 1
    assert "Talk to a friend daily" in data.sft[0]["completion"][0]["content"]


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
        "症状类型：焦虑",  # symptom edited
        "症状类型：学业焦虑",  # reason added by the counselor
        "症状类型：学业焦虑",  # advice edited
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


def test_adapter_list_reports_counts_per_signal_and_note(patient_record):
    """`adapter list` once said "notes 1 edits 0" for 2 notes with several edits."""
    from phyassist_tui.commands.adapter import signal_lines

    data = build_training_data(patient_record("Zorblax", 2))
    lines = signal_lines({"signals": data.signals, "preference_pairs_used": 10})
    assert lines[0] == (
        "notes 2/2 trained; edits 6, deletions 2, added 2, regenerations 0, choices 0; "
        "preference pairs 10"
    )
    assert len(lines) == 3 and all("edits 3, deletions 1, added 1" in x for x in lines[1:])
    assert "not recorded" in signal_lines({"examples": 1, "preference_pairs": 0})[0]
    # the public domain rows replayed among the notes are counted too (rehearsal)
    replayed = signal_lines({"signals": data.signals, "rehearsal_rows": 6})
    assert replayed[1].startswith("domain rehearsal: 6 public rows") and len(replayed) == 4


def test_the_engines_safety_item_is_not_trained_on():
    """The safety item is the engine's (``inserted_by``): it is added to every flagged draft
    anyway. Trained on it, a patient adapter wrote self-harm reasons for statements without
    risk (seen in Compare). Neither the item, nor the counselor's deleting or editing it, is
    an example or a preference pair; the counselor's own risk wording stays."""
    safety = 'Safety first: the client said "I wish I could disappear." Assess suicide risk.'
    analysis = AnalysisDraft(
        symptom_type=Item(text="Low mood", draft="Low mood"),
        reasons=[Item(text="Passive ideation after the layoff", draft="The client is sad")],
        advice=[
            Item(text=safety, draft=safety, inserted_by="risk:suicide_self_harm"),
            Item(text="Weekly check-in calls", draft="Weekly check-in calls"),
        ],
        raw_output="Symptom type: Low mood",
    )
    deleted = analysis.model_copy(deep=True)
    deleted.advice[0].deleted = True
    edited = analysis.model_copy(deep=True)
    edited.advice[0].text = "Safety plan agreed: crisis line number given."
    for a in (analysis, deleted, edited):
        patient = Patient(
            name="R",
            basic_info=BasicInfo(),
            notes=[Note(question="I wish I could disappear.", analysis=a)],
        )
        data = build_training_data(patient)
        [example] = data.sft
        answer = example["completion"][0]["content"]
        assert "Safety" not in answer and "Assess suicide risk" not in answer
        assert "1. Passive ideation after the layoff" in answer
        assert "1. Weekly check-in calls" in answer
        assert len(example["edited_lines"]) == len(answer.split("\n"))
        assert len(data.pairs) == 1  # the reason's edit; nothing about the safety item
        assert all("Safety" not in p["rejected"][0]["content"] for p in data.pairs)
        # nor is it counted as the counselor's edit ("The record now: N edits")
        from engine.training.data import count_edits

        assert count_edits(patient) == 1
    assert analysis.advice[0].text == safety  # the note itself is untouched
