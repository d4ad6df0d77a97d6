"""A whole-statement suicide / self-harm probe on the embedded model's hidden states.

The rules and the sentence classifier read one sentence at a time through patterns and
static word vectors, so risk told indirectly ("my will is done, the cat goes to my sister on
friday") or spread over sentences that each look harmless is missed. The embedded
SmolLM2-135M reads the whole statement in context: a logistic regression over its
mean-pooled hidden states (layers 8, 16, 24 and 30, each L2-normalised, concatenated) scores
the statement. The weights are data in the repository (``risk_probe.npz`` beside this
module), fitted by ``python -m bench.risk_probe train`` on the same training split as the
sentence classifier plus posts; the thresholds were chosen on dev only.

The model is a private float32 copy on the CPU, loaded from the dequantized cache of the
embedded GGUF (nothing is fetched): the running model may carry a patient's adapter, which
would move the hidden states the weights were fitted on, and may be busy generating.
Loading takes a few seconds: :func:`warm_up` off the UI thread at launch. Scoring a
statement takes tens of milliseconds; run it in a worker.

Off by default (``Settings.risk_probe``, ``PHYASSIST_RISK_PROBE=1`` turns it on): on the
held-out test split it found 19 more of 95 blind risk posts but flagged 5 more of 115 IMHI
loneliness "no" posts, over the ship gate's limit; a refit with loneliness posts failed
again (SECURITY.md, sixth and seventh rounds).
"""

from __future__ import annotations

import importlib.resources
import io
import os
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

__all__ = [
    "PROBE_FILE",
    "Probe",
    "configure",
    "enabled",
    "env_override",
    "is_loaded",
    "override",
    "probe",
    "warm_up",
]

PROBE_FILE = "risk_probe.npz"
MAX_TOKENS = 256  # the fit's statements were cut here; longer ones are scored in windows
_STRIDE = 192


_CONFIGURED = False


def configure(on: bool) -> None:
    """Set by the Session from ``Settings.risk_probe``."""
    global _CONFIGURED
    _CONFIGURED = bool(on)


def env_override() -> bool | None:
    """``PHYASSIST_RISK_PROBE`` where set (it decides over the settings), else ``None``."""
    value = os.environ.get("PHYASSIST_RISK_PROBE", "").strip().lower()
    return value in ("1", "on", "yes", "true") if value else None


def enabled() -> bool:
    """Whether :func:`engine.trust.risk.assess` runs the probe: ``PHYASSIST_RISK_PROBE``
    where set, else what :func:`configure` was told (off by default)."""
    override = env_override()
    return _CONFIGURED if override is None else override


@dataclass(frozen=True)
class ProbeWeights:
    """``p = sigmoid(coef · (features - mean) * scale + bias)``; flagged at ``threshold``
    (``threshold_zh`` for mostly-Chinese statements)."""

    layers: tuple[int, ...]
    mean: np.ndarray  # (len(layers) * hidden,) float32
    coef: np.ndarray  # (len(layers) * hidden,) float32
    bias: float
    scale: float
    threshold: float
    threshold_zh: float
    version: str
    encoder: str = "smollm2"  # the embedded LLM's hidden states (bench/ measures others)

    def threshold_for(self, text: str) -> float:
        from engine.trust.risk_classifier import is_chinese

        return self.threshold_zh if is_chinese(text) else self.threshold


def save_weights(w: ProbeWeights, path) -> None:
    np.savez_compressed(
        path,
        layers=np.asarray(w.layers, dtype=np.int64),
        mean=w.mean.astype(np.float32),
        coef=w.coef.astype(np.float32),
        bias=np.float32(w.bias),
        scale=np.float32(w.scale),
        threshold=np.float32(w.threshold),
        threshold_zh=np.float32(w.threshold_zh),
        version=np.array(w.version),
        encoder=np.array(w.encoder),
    )


def load_weights(data: bytes) -> ProbeWeights:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return ProbeWeights(
            layers=tuple(int(x) for x in z["layers"]),
            mean=z["mean"].astype(np.float32),
            coef=z["coef"].astype(np.float32),
            bias=float(z["bias"]),
            scale=float(z["scale"]),
            threshold=float(z["threshold"]),
            threshold_zh=float(z["threshold_zh"]),
            version=str(z["version"]),
            encoder=str(z["encoder"]) if "encoder" in z.files else "smollm2",
        )


class Probe:
    """The weights and the encoder they were fitted on; :meth:`scores` is thread-safe."""

    def __init__(self, weights: ProbeWeights, encoder: Any) -> None:
        self.weights = weights
        self.encoder = encoder  # .windows(texts, all_windows=...) -> (features, owner)

    def features(self, texts: list[str]) -> np.ndarray:
        """Per text, the features of its first window (what the fit saw; :meth:`scores`
        also reads the windows after)."""
        return self.encoder.windows(texts, all_windows=False)[0]

    def scores(self, texts: list[str]) -> np.ndarray:
        """Probability of risk per text (the highest over a long text's windows)."""
        if not texts:
            return np.zeros(0, dtype=np.float32)
        w = self.weights
        feats, owner = self.encoder.windows(texts, all_windows=True)
        logits = ((feats - w.mean) * w.scale) @ w.coef + w.bias
        out = np.full(len(texts), -np.inf, dtype=np.float32)
        np.maximum.at(out, owner, logits.astype(np.float32))
        return 1.0 / (1.0 + np.exp(-out))

    def flagged(self, texts: list[str]) -> list[bool]:
        return [
            bool(p >= self.weights.threshold_for(s))
            for s, p in zip(texts, self.scores(texts), strict=True)
        ]


def window_starts(n: int, size: int) -> list[int]:
    """Window starts over ``n`` tokens: every ``_STRIDE``, the last one flush with the end."""
    starts = list(range(0, max(n - size, 0) + 1, _STRIDE))
    if n > size and (n - size) % _STRIDE:
        starts.append(n - size)
    return starts


class LLMStates:
    """Mean-pooled hidden states of ``layers`` (each L2-normalised, concatenated) of a causal
    LM, per window of ``MAX_TOKENS`` tokens."""

    def __init__(self, model: Any, tokenizer: Any, layers: tuple[int, ...]) -> None:
        self._model = model
        self.tokenizer = tokenizer
        self._layers = layers
        self._lock = threading.Lock()

    def windows(self, texts: list[str], *, all_windows: bool) -> tuple[np.ndarray, np.ndarray]:
        """Features of each text's first window (every window with ``all_windows``) and the
        index of the text each row belongs to."""
        import torch

        tok = self.tokenizer
        pieces: list[list[int]] = []
        owner: list[int] = []
        for i, text in enumerate(texts):
            ids = tok(text, add_special_tokens=False)["input_ids"] or [tok.eos_token_id]
            for s in window_starts(len(ids), MAX_TOKENS) if all_windows else [0]:
                pieces.append(ids[s : s + MAX_TOKENS])
                owner.append(i)
        layers, hidden = self._layers, self._model.config.hidden_size
        feats = np.zeros((len(pieces), len(layers) * hidden), dtype=np.float32)
        order = sorted(range(len(pieces)), key=lambda k: len(pieces[k]))
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        with self._lock, torch.inference_mode():
            for b in range(0, len(order), 16):
                batch = order[b : b + 16]
                width = max(len(pieces[k]) for k in batch)
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for r, k in enumerate(batch):  # right padding, as the fit's tokenizer had
                    ids[r, : len(pieces[k])] = torch.tensor(pieces[k])
                    mask[r, : len(pieces[k])] = 1
                states = self._model(
                    input_ids=ids, attention_mask=mask, output_hidden_states=True
                ).hidden_states
                m = mask.unsqueeze(-1).float()
                for j, layer in enumerate(layers):
                    pooled = (states[layer].float() * m).sum(1) / m.sum(1)
                    pooled = pooled / pooled.norm(dim=1, keepdim=True).clamp_min(1e-12)
                    feats[batch, j * hidden : (j + 1) * hidden] = pooled.numpy()
        return feats, np.asarray(owner)


_LOAD_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _shipped_weights() -> ProbeWeights:
    data = importlib.resources.files("engine.trust").joinpath(PROBE_FILE).read_bytes()
    return load_weights(data)


def load_embedded(weights: ProbeWeights | None = None) -> Probe:
    """A :class:`Probe` on a private float32 CPU copy of the embedded model (its dequantized
    cache, built here on first use); raises on a missing wheel or weights."""
    weights = weights or _shipped_weights()
    if weights.encoder != "smollm2":
        raise ValueError(f"probe weights for encoder {weights.encoder!r}: not the embedded model")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.model.llm import model_directory
    from engine.settings import EMBEDDED_MODEL, load_settings

    settings = load_settings()
    settings.model.spec = EMBEDDED_MODEL
    settings.model.gguf_file = None
    settings.model.device = "cpu"
    settings.model.dtype = "float32"
    settings.model.load_in_4bit = False
    directory = model_directory(settings)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        directory, dtype=torch.float32, local_files_only=True
    )
    model.eval()
    return Probe(weights, LLMStates(model, tokenizer, weights.layers))


@lru_cache(maxsize=1)
def _shipped() -> Probe:
    return load_embedded()


_OVERRIDE: list[Probe] = []


def override(candidate: Probe | None) -> None:
    """Score with ``candidate`` instead of the shipped probe (``None``: back to it): for
    measuring candidate weights (``bench.risk_classifier measure --probe-weights``)."""
    with _LOAD_LOCK:
        _OVERRIDE[:] = [candidate] if candidate is not None else []


def probe() -> Probe:
    """The shipped probe (loaded once, thread-safe; a few seconds the first time)."""
    with _LOAD_LOCK:
        return _OVERRIDE[0] if _OVERRIDE else _shipped()


def is_loaded() -> bool:
    return bool(_OVERRIDE) or _shipped.cache_info().currsize > 0


def warm_up() -> None:
    """Load the embedded model and the weights now: call it from a background thread."""
    if enabled():
        probe().scores(["warm up"])
