"""The counselor's edited lines weigh more in the SFT loss than the model text they kept.

Most of a saved note is model text the counselor left alone; their own lines (edited, added,
regenerated, or standing where they deleted one: ``data.edited_lines``) are the signal. These
pieces give each tokenized example per-token weights, pad them in the collator and use them
in the loss (``Hyperparameters.edited_line_weight``; 1 = every answer token alike).
"""

from __future__ import annotations

from typing import Any


def line_token_weights(
    tokenizer: Any, input_ids: list[int], labels: list[int], flags: list[bool], weight: float
) -> list[float] | None:
    """Per-token loss weights for one tokenized example: ``weight`` on the answer tokens of the
    lines the counselor's edits made (``data.edited_lines``), 1 on the other answer tokens,
    0 on the prompt; scaled so the answer tokens average 1, so the loss keeps the scale of the
    plain mean (and of TRL's normalisation over the batch's answer tokens).

    A token belongs to the line it ends in (its line break decides where that line stops);
    the end-of-turn tokens belong to the last line. None when the answer's lines do not
    match ``flags`` (an item with a line break in it, a truncated answer): plain weights."""
    answer = [i for i, label in enumerate(labels) if label != -100]
    if not answer or len(flags) < 1:
        return None
    line, per_line = 0, []
    for i in answer:
        per_line.append(min(line, len(flags) - 1))
        line += tokenizer.decode([input_ids[i]], skip_special_tokens=False).count("\n")
    # the answer's own line breaks: one fewer than its lines (the template adds its own after)
    if line < len(flags) - 1 or line > len(flags) + 1:
        return None
    raw = [weight if flags[n] else 1.0 for n in per_line]
    scale = len(raw) / sum(raw)
    out = [0.0] * len(input_ids)
    for i, w in zip(answer, raw, strict=True):
        out[i] = w * scale
    return out


def edit_weighted_trainer(base: type) -> type:
    """``SFTTrainer`` whose answer-token loss carries per-token weights (``token_weights``)."""
    import torch

    class EditWeightedSFTTrainer(base):  # type: ignore[misc, valid-type]
        def _set_signature_columns_if_needed(self) -> None:
            super()._set_signature_columns_if_needed()
            if "token_weights" not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, "token_weights"]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            weights = inputs.pop("token_weights", None)
            if weights is None or return_outputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            inputs["use_cache"] = False
            outputs = model(**inputs, fused_lm_head=True)
            # the fused head scores position t against label t + 1
            w = weights[:, 1:].to(outputs.log_probs.dtype) * outputs.label_mask
            n = outputs.label_mask.sum() if num_items_in_batch is None else num_items_in_batch
            return -(outputs.log_probs * w).sum() / torch.as_tensor(n).clamp(min=1)

    return EditWeightedSFTTrainer


def _weighting_collator(collate: Any) -> Any:
    """The trainer's collator, plus the examples' ``token_weights`` padded like the labels."""
    import torch

    def with_weights(examples: list[dict[str, Any]]) -> dict[str, Any]:
        weights = [e.pop("token_weights", None) for e in examples]
        out = collate(examples)
        if any(w is None for w in weights):
            return out
        length = out["input_ids"].shape[1]
        padded = torch.zeros((len(weights), length), dtype=torch.float32)
        for row, w in enumerate(weights):
            padded[row, : len(w)] = torch.tensor(w[:length], dtype=torch.float32)
        out["token_weights"] = padded
        return out

    return with_weights


def add_token_weights(trainer: Any, tokenizer: Any, weight: float) -> int:
    """Give each tokenized example its ``token_weights`` (``line_token_weights``); returns how
    many examples carry edited lines. Examples without a match train with plain weights."""
    dataset = trainer.train_dataset
    if "edited_lines" not in dataset.column_names:
        return 0
    rows, weighted = [], 0
    for example in dataset:
        flags = list(example.get("edited_lines") or [])
        w = None
        if any(flags):
            w = line_token_weights(
                tokenizer, example["input_ids"], example["labels"], flags, weight
            )
        if w is None:
            w = [0.0 if label == -100 else 1.0 for label in example["labels"]]
        else:
            weighted += 1
        rows.append(w)
    dataset = dataset.remove_columns("edited_lines").add_column("token_weights", rows)
    trainer.train_dataset = dataset
    trainer.data_collator = _weighting_collator(trainer.data_collator)
    return weighted
