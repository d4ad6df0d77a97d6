"""Does domain + patient adapter stacked at inference reproduce the training-time model?

Training merges the domain LoRA into the base and trains the patient LoRA on top; inference
keeps the base unmerged and activates both adapters (``AdapterManager.activate_stack``). This
prints, as JSON, the largest absolute logit difference between the two on a few real
statements, next to how far the patient adapter moves the logits at all (so a tiny difference
means something). The patient adapter is a PEFT folder (``phyassist adapter export`` or
``bench/learning.py --export-adapter``) whose card names the domain adapter.

    python bench/stack_check.py PATIENT_ADAPTER_DIR [--domain DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

STATEMENTS = [
    "I barely sleep and I keep thinking that I am worthless to everyone.",
    "My parents call every evening to ask about my marks and I cannot breathe.",
    "我最近总是失眠，担心考试考不好。",
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("patient", type=Path)
    parser.add_argument("--domain", type=Path)
    args = parser.parse_args()

    import torch

    from engine.model.adapters import (
        AdapterManager,
        read_adapter_dir,
        resolve_domain_adapter,
    )
    from engine.model.llm import _load_uncached, load_model
    from engine.model.stack import adapter_identity, stack_refusal
    from engine.settings import ModelSettings, load_settings
    from engine.training.worker import merge_domain_adapter

    settings = load_settings(model=ModelSettings(device="cpu"))
    domain = args.domain or resolve_domain_adapter("auto", settings.model.spec)
    card_path = args.patient / "phyassist_card.json"
    card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    refusal = stack_refusal(card, adapter_identity(domain))
    patient_cfg, patient_state = read_adapter_dir(args.patient)

    loaded = load_model(settings)
    tok = loaded.tokenizer
    # training-time model: a second copy of the base with the domain merged in
    merged = _load_uncached(settings, lambda _m: None, use_disk_cache=True).model
    merged = merge_domain_adapter(merged, domain)
    train_side = AdapterManager(merged)
    train_side.load("patient", patient_cfg, patient_state)
    train_side.activate("patient")

    infer = AdapterManager(loaded.model)
    infer.load("domain", *read_adapter_dir(domain))
    infer.load("patient", patient_cfg, patient_state)
    rows = []
    with torch.no_grad():
        for text in STATEMENTS:
            ids = torch.tensor([tok.encode(text)])
            expected = train_side.model(ids).logits
            infer.activate_stack(["domain", "patient"])
            stacked = infer.model(ids).logits
            infer.activate("domain")
            domain_only = infer.model(ids).logits
            rows.append(
                {
                    "tokens": ids.shape[1],
                    "max_abs_diff_stacked_vs_trained": float((stacked - expected).abs().max()),
                    "max_abs_patient_effect": float((domain_only - expected).abs().max()),
                    "same_argmax_share": float(
                        (stacked.argmax(-1) == expected.argmax(-1)).float().mean()
                    ),
                }
            )
    infer.activate(None)
    print(
        json.dumps(
            {
                "domain_adapter": adapter_identity(domain),
                "card_domain_adapter": card.get("domain_adapter"),
                "stack_refusal": refusal,
                "patient_adapter_stored_dtype": "bfloat16 (engine.model.adapters.STORAGE_DTYPE)",
                "statements": rows,
            },
            indent=2,
            ensure_ascii=False,
        )
    )


if __name__ == "__main__":
    main()
