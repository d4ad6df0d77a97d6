"""Run a causal LM (optionally with a PEFT adapter) on the IMHI test sets and score it.

Prompts are the test ``query`` in the same chat format the domain data is trained on
(:func:`engine.dataprep.format.prompt_messages`). Generation is greedy and batched with left
padding, longest-first so a batch holds similar lengths. ``limit`` takes a seeded random
sample per task (IMHI files are ordered by question or label, so the first N rows are not
representative).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.dataprep import imhi as imhi_data
from engine.dataprep.format import prompt_messages
from engine.errors import InputRejected
from engine.evaluation.labels import extract_label, split_answer
from engine.evaluation.metrics import (
    ROUGE_L_NAME,
    UNLABELED,
    RougeL,
    accuracy,
    unlabeled_share,
    weighted_f1,
)

Progress = Callable[[str], None]


@dataclass
class Prediction:
    query: str
    gold: str
    gold_label: str | None
    output: str
    label: str | None


@dataclass
class TaskResult:
    """Scores of one task; ``rougeL_f`` is the mean ROUGE-L F-measure on the reasoning."""

    task: str
    n: int
    weighted_f1: float
    accuracy: float
    unlabeled_share: float
    rougeL_f: float
    predicted: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EvalRun:
    """One model's run over the tasks, with the predictions kept for inspection."""

    name: str
    results: dict[str, TaskResult]
    predictions: dict[str, list[Prediction]]
    settings: dict[str, Any] = field(default_factory=dict)

    def mean(self, attr: str) -> float:
        values = [getattr(r, attr) for r in self.results.values()]
        return sum(values) / len(values) if values else 0.0


def sample_rows(rows: list[imhi_data.ImhiRow], limit: int | None, seed: int) -> list:
    if limit is None or limit >= len(rows):
        return list(rows)
    picked = sorted(random.Random(seed).sample(range(len(rows)), limit))
    return [rows[i] for i in picked]


def _reasoning(text: str) -> str:
    head, reasoning = split_answer(text)
    return reasoning or head


def _encode_prompts(tokenizer: Any, queries: Sequence[str], budget: int) -> list[list[int]]:
    """Token ids of each chat prompt; a post too long for ``budget`` loses its middle."""
    encoded = []
    for query in queries:
        text = query
        for _ in range(8):
            ids = _chat_ids(tokenizer, text)
            if len(ids) <= budget:
                break
            keep = max(200, int(len(text) * budget / len(ids) * 0.9))
            text = text[: keep // 2] + " … " + text[-keep // 2 :]
        encoded.append(ids[-budget:])
    return encoded


def _chat_ids(tokenizer: Any, text: str) -> list[int]:
    messages = prompt_messages(text)
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)
    return tokenizer(f"{text}\nAnswer:", add_special_tokens=True)["input_ids"]


def stop_ids(model: Any, tokenizer: Any) -> list[int]:
    """Ids that end an answer: the model's/tokenizer's EOS and the chat end-of-turn token."""
    ids: list[int] = []
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in gen_eos if isinstance(gen_eos, list | tuple) else [gen_eos]:
        if isinstance(value, int) and value not in ids:
            ids.append(value)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(int(tokenizer.eos_token_id))
    for token in ("<|im_end|>", "<|eot_id|>", "</s>", "<|endoftext|>"):
        tid = tokenizer.convert_tokens_to_ids(token)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid not in ids:
            ids.append(tid)
    return ids


def generate_batch(
    model: Any,
    tokenizer: Any,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    eos: list[int],
) -> list[str]:
    """Greedy answers for already-tokenized prompts, left-padded into one batch."""
    import torch

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, ids in enumerate(prompts):
        input_ids[i, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention[i, width - len(ids) :] = 1
    device = next(model.parameters()).device
    with torch.inference_mode():
        out = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            repetition_penalty=1.0,
            eos_token_id=eos,
            pad_token_id=pad_id,
        )
    return [tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out.cpu()]


def score_task(
    task: str, preds: list[Prediction], rouge: RougeL, *, seconds: float = 0.0
) -> TaskResult:
    """Scores of one task's predictions; rows whose gold answer has no label are skipped."""
    scored = [p for p in preds if p.gold_label is not None]
    gold = [p.gold_label for p in scored]
    pred = [p.label for p in scored]
    return TaskResult(
        task=task,
        n=len(scored),
        weighted_f1=weighted_f1(gold, pred),
        accuracy=accuracy(gold, pred),
        unlabeled_share=unlabeled_share(pred),
        rougeL_f=rouge.mean(
            [_reasoning(p.gold) for p in scored], [_reasoning(p.output) for p in scored]
        ),
        predicted=dict(Counter(UNLABELED if p is None else p for p in pred)),
        seconds=seconds,
    )


def rescore(predictions_jsonl: Path, name: str | None = None) -> EvalRun:
    """Re-extract labels from saved outputs with the current rules and score them again.

    Generation is the slow part; this lets label rules improve without regenerating.
    """
    import json

    path = Path(predictions_jsonl)
    by_task: dict[str, list[Prediction]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        d = json.loads(line)
        task = d["task"]
        by_task.setdefault(task, []).append(
            Prediction(
                query=d["query"],
                gold=d["gold"],
                gold_label=extract_label(task, d["gold"], d["query"]),
                output=d["output"],
                label=extract_label(task, d["output"], d["query"]),
            )
        )
    rouge = RougeL()
    results = {t: score_task(t, preds, rouge) for t, preds in by_task.items()}
    run_name = name or path.stem.removeprefix("predictions-")
    return EvalRun(run_name, results, by_task, {"rescored_from": str(path)})


def evaluate_imhi(
    model: Any,
    tokenizer: Any,
    data_dir: Path,
    *,
    name: str = "model",
    tasks: Sequence[str] | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    context_window: int = 8192,
    seed: int = 0,
    progress: Progress | None = None,
) -> EvalRun:
    """Generate an answer for each sampled test row and score every task."""
    progress = progress or (lambda _msg: None)
    files = imhi_data.find_test_csvs(Path(data_dir))
    if not files:
        raise InputRejected(f"{data_dir}: no IMHI test CSVs found (expected test/<TASK>.csv)")
    wanted = list(tasks) if tasks else [t for t in imhi_data.TASKS if t in files]
    missing = [t for t in wanted if t not in files]
    if missing:
        raise InputRejected(f"{data_dir}: no test CSV for {', '.join(missing)}")
    if batch_size < 1:
        raise InputRejected("--batch-size must be at least 1")

    was_training = model.training
    model.eval()
    saved_side = tokenizer.padding_side
    eos = stop_ids(model, tokenizer)
    budget = max(64, context_window - max_new_tokens)
    rouge = RougeL()
    results: dict[str, TaskResult] = {}
    predictions: dict[str, list[Prediction]] = {}
    try:
        tokenizer.padding_side = "left"
        for task in wanted:
            start = time.perf_counter()
            rows = sample_rows(imhi_data.read_test(Path(data_dir), task), limit, seed)
            prompts = _encode_prompts(tokenizer, [r.query for r in rows], budget)
            order = sorted(range(len(rows)), key=lambda i: -len(prompts[i]))
            outputs: list[str] = [""] * len(rows)
            for b in range(0, len(order), batch_size):
                idx = order[b : b + batch_size]
                texts = generate_batch(
                    model,
                    tokenizer,
                    [prompts[i] for i in idx],
                    max_new_tokens=max_new_tokens,
                    eos=eos,
                )
                for i, text in zip(idx, texts, strict=True):
                    outputs[i] = text
                done = min(b + batch_size, len(order))
                elapsed = time.perf_counter() - start
                progress(f"{name} {task}: {done}/{len(rows)} answers ({elapsed:.0f} s)")
            preds = [
                Prediction(
                    query=r.query,
                    gold=r.answer,
                    gold_label=extract_label(task, r.answer, r.query),
                    output=out,
                    label=extract_label(task, out, r.query),
                )
                for r, out in zip(rows, outputs, strict=True)
            ]
            results[task] = score_task(task, preds, rouge, seconds=time.perf_counter() - start)
            predictions[task] = preds
    finally:
        tokenizer.padding_side = saved_side
        if was_training:
            model.train()
    settings = {
        "limit": limit,
        "batch_size": batch_size,
        "max_new_tokens": max_new_tokens,
        "seed": seed,
        "decoding": "greedy",
        "explanation_metric": ROUGE_L_NAME,
    }
    return EvalRun(name=name, results=results, predictions=predictions, settings=settings)
