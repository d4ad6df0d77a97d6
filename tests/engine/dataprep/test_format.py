"""The chat format: TRL renders it with the model's template and trains on the answer only."""

from __future__ import annotations

import pytest

from engine.dataprep.clean import Example
from engine.dataprep.format import render, require_chat_template, to_record
from engine.errors import InputRejected


def test_record_shape():
    rec = to_record(Example("imhi", "DR", "train", "问题：我失眠了", "Yes. Reasoning: 因为…"))
    assert rec["prompt"] == [{"role": "user", "content": "问题：我失眠了"}]
    assert rec["completion"] == [{"role": "assistant", "content": "Yes. Reasoning: 因为…"}]


def test_tokenizer_without_template_is_rejected():
    class Plain:
        chat_template = None
        name_or_path = "plain-lm"

    with pytest.raises(InputRejected, match="no chat template"):
        require_chat_template(Plain())


@pytest.fixture(scope="module")
def embedded_tokenizer():
    from transformers import AutoTokenizer

    from engine.model.llm import resolve_embedded_gguf

    gguf = resolve_embedded_gguf()
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)


@pytest.mark.model
def test_trl_masks_the_prompt_and_trains_on_the_answer(tmp_path, embedded_tokenizer):
    """Build TRL's SFT dataset with the embedded tokenizer: loss tokens = the answer turn."""
    from datasets import Dataset
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    tok = embedded_tokenizer
    tok.pad_token = tok.pad_token or "<|endoftext|>"
    answer = "Yes, the poster suffers from depression. Reasoning: 他说自己很绝望。"
    rec = to_record(Example("imhi", "DR", "train", "Consider this post: 我很累", answer))
    prompt_text, completion_text = render(tok, rec)
    assert prompt_text.endswith("<|im_start|>assistant\n")
    assert completion_text == answer + "<|im_end|>\n"

    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
    )
    trainer = SFTTrainer(
        model=LlamaForCausalLM(cfg),
        args=SFTConfig(
            output_dir=str(tmp_path),
            report_to=[],
            max_length=256,
            use_cpu=True,
            eos_token="<|im_end|>",
        ),
        train_dataset=Dataset.from_list([rec]),
        processing_class=tok,
    )
    row = trainer.train_dataset[0]
    trained = [t for t in row["labels"] if t != -100]
    assert tok.decode(trained) == completion_text
    assert "Consider this post" not in tok.decode(trained)
