"""Engine fixtures: the real embedded model (loaded once per session), a tiny random Llama
built in the test (fast, deterministic), settings, and a real encrypted store.

The dequantized embedded model is cached in ``PHYASSIST_TEST_MODEL_CACHE`` or the user's
PhyAssist cache directory: it holds public weights only (never patient data), so test runs
after the first skip the ~25 s dequantization.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from engine.settings import GenerationSettings, ModelSettings, Settings, StoreSettings
from tests.support import FakeStore, model_cache_root, tiny_llama


def engine_settings(root: Path, **model: object) -> Settings:
    """Settings built from explicit values only (no user settings file involved)."""
    return Settings(
        data_dir=root / "data",
        config_dir=root / "config",
        cache_dir=model_cache_root(),
        model=ModelSettings(**{"domain_adapter": None, **model}),  # the bare base unless set
        generation=GenerationSettings(max_new_tokens=16, do_sample=False, repetition_penalty=1.1),
        store=StoreSettings(scrypt_log2_n=10),
    )


@pytest.fixture
def settings_for():
    """``settings_for(root, spec=..., ...)``: Settings with these model fields."""
    return engine_settings


@pytest.fixture(scope="session")
def session_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engine-session")


@pytest.fixture(scope="session")
def real_settings(session_root: Path) -> Settings:
    return engine_settings(session_root)


@pytest.fixture(scope="session")
def real_model(real_settings: Settings):
    """The embedded SmolLM2 model, loaded once for the whole session.

    One torch thread: on a shared 2-core box, two OpenMP threads per process competing with
    other processes made generation 10x slower (measured: 20 tokens in 40 s vs 3.4 s).
    """
    import torch

    from engine.model.llm import load_model

    torch.set_num_threads(1)
    return load_model(real_settings)


@pytest.fixture(scope="session")
def assistant(real_settings: Settings, real_model):
    """One Assistant on the real model (shares the session's loaded model)."""
    from engine.inference.assistant import Assistant

    helper = Assistant(real_settings)
    helper.load()
    yield helper
    helper.use_patient(None)  # leave the shared model without adapters active


@pytest.fixture
def cancel() -> threading.Event:
    return threading.Event()


@pytest.fixture(scope="session")
def fixed_ids_model_dir(session_root: Path, real_model) -> Path:
    """A 2-layer random Llama (hidden 64, fixed SmolLM2 ids, 512 positions) saved as a local
    HF directory with the real tokenizer; unlike tests/conftest.py's ``tiny_model_dir`` its
    ids and 512 positions match ``tests.support.tiny_llama`` built in a test."""
    import torch

    torch.manual_seed(0)
    model = tiny_llama()
    path = session_root / "tiny-llama"
    model.save_pretrained(path)
    real_model.tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def fake_store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def real_store(tmp_path: Path):
    """A real encrypted vault (cheap key derivation)."""
    from engine.vault.store import Store

    settings = engine_settings(tmp_path)
    store = Store.create(tmp_path / "vault", "correct horse battery", settings=settings)
    yield store
    store.close()
