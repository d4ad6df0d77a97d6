"""Turn cleaned rows into the conversational prompt/completion form TRL's SFTTrainer trains on.

``prompt`` is a list with the user message, ``completion`` a list with the assistant answer.
TRL renders both with the training model's own chat template and masks the prompt, so the loss
falls on the answer only (``completion_only_loss``, TRL's default for this form). Evaluation
builds its prompts with ``prompt_messages`` so training and inference see the same text.
"""

from __future__ import annotations

from typing import Any

from engine.dataprep.clean import Example
from engine.errors import InputRejected

COLUMNS = ("prompt", "completion", "source", "task")


def prompt_messages(question: str) -> list[dict[str, str]]:
    """What a model sees for one question; no system turn, as not every template has one."""
    return [{"role": "user", "content": question}]


def to_record(example: Example) -> dict[str, Any]:
    system = [{"role": "system", "content": example.system}] if example.system else []
    return {
        "prompt": system + prompt_messages(example.prompt),
        "completion": [{"role": "assistant", "content": example.completion}],
        "source": example.source,
        "task": example.task,
    }


def require_chat_template(tokenizer: Any) -> None:
    """Refuse a tokenizer without a chat template: the chat format would be undefined."""
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "this model")
        raise InputRejected(
            f"{name} has no chat template; domain data is formatted as chat, "
            "use an instruction-tuned model or give its tokenizer a template"
        )


def render(tokenizer: Any, record: dict[str, Any]) -> tuple[str, str]:
    """``(prompt_text, completion_text)`` exactly as the chat template lays them out.

    The completion text is what the loss is computed on; useful to inspect the format.
    """
    require_chat_template(tokenizer)
    prompt = tokenizer.apply_chat_template(
        record["prompt"], tokenize=False, add_generation_prompt=True
    )
    full = tokenizer.apply_chat_template(record["prompt"] + record["completion"], tokenize=False)
    if not full.startswith(prompt):
        raise InputRejected("the chat template renders the prompt differently inside a dialogue")
    return prompt, full[len(prompt) :]


def build_dataset(examples: list[Example]) -> Any:
    """A ``datasets.DatasetDict`` with ``train`` and (when any) ``validation`` splits."""
    from datasets import Dataset, DatasetDict

    splits: dict[str, list[dict[str, Any]]] = {}
    for ex in examples:
        splits.setdefault(ex.split, []).append(to_record(ex))
    if not splits.get("train"):
        raise InputRejected("no training rows left after cleaning")
    return DatasetDict({name: Dataset.from_list(rows) for name, rows in sorted(splits.items())})
