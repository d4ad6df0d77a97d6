"""Answer-only loss of a model on SFT examples: the measure that training lowers."""

from __future__ import annotations

import math
from typing import Any


def encode_example(tokenizer: Any, example: dict[str, Any], max_length: int | None = None):
    """(input_ids, labels) with the prompt masked out (-100), as TRL trains on them."""
    prompt_ids = tokenizer.apply_chat_template(
        example["prompt"], tokenize=True, add_generation_prompt=True
    )
    full_ids = tokenizer.apply_chat_template(
        example["prompt"] + example["completion"], tokenize=True
    )
    prompt_ids = list(_ids(prompt_ids))
    full_ids = list(_ids(full_ids))
    start = 0
    while start < min(len(prompt_ids), len(full_ids)) and prompt_ids[start] == full_ids[start]:
        start += 1
    labels = [-100] * start + full_ids[start:]
    if max_length is not None:
        full_ids, labels = full_ids[:max_length], labels[:max_length]
    return full_ids, labels


def _ids(value: Any) -> list[int]:
    if hasattr(value, "input_ids"):
        value = value["input_ids"]
    if hasattr(value, "tolist"):
        value = value.tolist()
    return value


def count_tokens(tokenizer: Any, examples: list[dict[str, Any]]) -> int:
    """Tokens in one pass over the examples, chat template included."""
    return sum(len(encode_example(tokenizer, ex)[0]) for ex in examples)


def completion_loss(
    model: Any, tokenizer: Any, examples: list[dict[str, Any]], max_length: int = 2048
) -> float:
    """Mean cross-entropy per answer token over ``examples`` (perplexity = exp of it)."""
    import torch

    device = next(model.parameters()).device
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for example in examples:
                ids, labels = encode_example(tokenizer, example, max_length)
                n = sum(1 for x in labels[1:] if x != -100)
                if n == 0:
                    continue
                out = model(
                    input_ids=torch.tensor([ids], device=device),
                    labels=torch.tensor([labels], device=device),
                )
                total += float(out.loss) * n
                count += n
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("no answer tokens to score")
    return total / count


def perplexity(loss: float) -> float:
    return math.exp(loss)
