"""A small static embedding model whose weights ship inside a PyPI wheel (no download).

WordLlama ``l2_supercat`` (256 dims, 16 MB, MIT) is in the ``wordllama`` wheel together with
its tokenizer. ``WordLlama.load`` of wordllama 0.4.0 looks for the tokenizer in a folder
named ``tokenizer`` while the wheel has ``tokenizers`` and then tries the Hugging Face hub,
so the two files are opened here directly: nothing is ever fetched.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np

from engine.errors import PhyAssistError

WEIGHTS = "weights/l2_supercat_256.safetensors"
TOKENIZER = "tokenizers/l2_supercat_tokenizer_config.json"
MODEL_NAME = "wordllama l2_supercat 256"


class EmbeddingUnavailable(PhyAssistError):
    """The embedding model could not be loaded; retrieval falls back to lexical only."""


@contextmanager
def _no_root_logging_setup() -> Iterator[None]:
    """wordllama calls ``logging.basicConfig`` on import, which would put a stderr handler on
    the root logger (log lines over the TUI); with a handler already there it is a no-op."""
    root = logging.getLogger()
    guard = logging.NullHandler()
    root.addHandler(guard)
    try:
        yield
    finally:
        root.removeHandler(guard)


class Embedder:
    """Texts -> L2-normalised float32 vectors."""

    def __init__(self) -> None:
        try:
            with _no_root_logging_setup():
                import wordllama
                from wordllama.inference import WordLlamaInference
            from safetensors import safe_open
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - the package is pinned
            raise EmbeddingUnavailable(f"wordllama is not installed: {exc}") from exc
        root = Path(wordllama.__file__).parent
        weights, tokenizer = root / WEIGHTS, root / TOKENIZER
        if not weights.is_file() or not tokenizer.is_file():
            raise EmbeddingUnavailable(f"the wordllama wheel lacks {WEIGHTS} or {TOKENIZER}")
        with safe_open(str(weights), framework="np") as fh:
            table = fh.get_tensor("embedding.weight")
        self._model = WordLlamaInference(table, Tokenizer.from_file(str(tokenizer)))
        self._lock = threading.Lock()  # the tokenizer's truncation state is shared
        self.dim = int(table.shape[1])

    def embed(self, texts: list[str], batch: int = 512) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        with self._lock:
            for start in range(0, len(texts), batch):
                vecs = self._model.embed(texts[start : start + batch], norm=True)
                out.append(np.asarray(vecs, dtype=np.float32))
        return np.vstack(out)


@lru_cache(maxsize=1)
def shared_embedder() -> Embedder:
    return Embedder()
