"""Helpers shared by the test areas: plain functions and classes (fixtures live in conftest.py).

Import them as ``from tests.support import ...`` (``pythonpath = ["."]`` in pyproject.toml).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from platformdirs import user_cache_path

REPO = Path(__file__).resolve().parents[1]  # the checkout: PYTHONPATH for subprocesses, data paths
TINY_VOCAB = 49152  # same ids as the SmolLM2 tokenizer, so the real tokenizer can drive it


def model_cache_root() -> Path:
    """Where tests keep dequantized public model weights (never patient data).

    One directory for the whole run (and later runs): each test area used to dequantize the
    embedded GGUF into its own fresh home, 30-110 s each on two cores.
    ``PHYASSIST_TEST_MODEL_CACHE`` overrides it.
    """
    env = os.environ.get("PHYASSIST_TEST_MODEL_CACHE")
    return Path(env) if env else user_cache_path("phyassist")


def tiny_llama(**overrides: Any) -> Any:
    """A random Llama small enough to build in a test, on the SmolLM2 token ids (2 layers,
    hidden 64, 512 positions unless ``overrides`` say otherwise)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = {
        "vocab_size": TINY_VOCAB,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 2,
        "tie_word_embeddings": True,
    }
    return LlamaForCausalLM(LlamaConfig(**{**config, **overrides}))


def save_tiny_llama(out: Path, tokenizer: Any, **overrides: Any) -> Path:
    """``tiny_llama`` (seed 0) sized for ``tokenizer``, saved with it as a local HF directory:
    the training worker, the runner and the CLI run on it in seconds."""
    import torch

    torch.manual_seed(0)
    model = tiny_llama(
        **{
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 4096,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": None,
            **overrides,
        }
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


class FakeStore:
    """In-memory stand-in with the Store's blob API (used where encryption is not the point)."""

    def __init__(self) -> None:
        self.blobs: dict[tuple[str, str], bytes] = {}
        self.has_adapter: dict[str, bool] = {}

    def read_blob(self, pid: str, kind: str) -> bytes | None:
        return self.blobs.get((pid, kind))

    def write_blob(self, pid: str, kind: str, data: bytes) -> None:
        self.blobs[(pid, kind)] = bytes(data)

    def delete_blob(self, pid: str, kind: str) -> None:
        self.blobs.pop((pid, kind), None)

    def list_blobs(self, pid: str, prefix: str = "") -> list[str]:
        return sorted(k for p, k in self.blobs if p == pid and k.startswith(prefix))

    def set_has_adapter(self, pid: str, value: bool) -> None:
        self.has_adapter[pid] = value


def _encodings(secret: str) -> dict[str, bytes]:
    """Every form in which ``secret`` could sit in a file as plaintext."""
    forms = {
        "utf-8": secret.encode("utf-8"),
        "utf-16-le": secret.encode("utf-16-le"),
        "utf-16-be": secret.encode("utf-16-be"),
        "utf-32-le": secret.encode("utf-32-le"),
    }
    escaped = json.dumps(secret, ensure_ascii=True)[1:-1].encode("ascii")
    if escaped != forms["utf-8"]:
        forms["json-ascii"] = escaped
    return forms


class PlaintextScanner:
    """Scan files for secrets in UTF-8, UTF-16/32 and JSON \\u-escaped form; each hit is
    ``(path, secret, encoding)``."""

    max_bytes = 256 * 2**20

    def __init__(self, secrets: list[str]) -> None:
        self.needles = [(s, label, raw) for s in secrets for label, raw in _encodings(s).items()]

    def scan_file(self, path: Path) -> list[tuple[str, str, str]]:
        try:
            with path.open("rb") as fh:
                data = fh.read(self.max_bytes)
        except (OSError, ValueError):
            return []
        return [(str(path), s, label) for s, label, raw in self.needles if raw in data]

    def scan(
        self, *roots: Path | str, newer_than: float | None = None
    ) -> list[tuple[str, str, str]]:
        hits: list[tuple[str, str, str]] = []
        for root in map(Path, roots):
            if root.is_file():
                hits += self.scan_file(root)
                continue
            for base, _dirs, files in os.walk(root, onerror=lambda e: None):
                for name in files:
                    path = Path(base) / name
                    try:
                        st = path.lstat()
                    except OSError:
                        continue
                    if not path.is_file() or path.is_symlink():
                        continue
                    if newer_than is not None and st.st_mtime < newer_than:
                        continue
                    hits += self.scan_file(path)
        return hits
