"""Fixtures shared by every test area, defined once here (plain helpers: tests/support.py).

Each test gets its own PHYASSIST_HOME; only the model cache (public weights) is shared.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.settings import Settings, StoreSettings, load_settings
from engine.vault.store import Store
from tests.support import PlaintextScanner, model_cache_root, save_tiny_llama

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SEED_CASE = SHARED_DATA / "cases" / "seed_case_zh.json"
FIXTURES = REPO / "data" / "fixtures"


@pytest.fixture(autouse=True)
def isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Point every PhyAssist path at a fresh directory so tests never touch the user's data.

    Only the model cache is shared (public weights); a test that needs a cold cache sets
    ``PHYASSIST_CACHE_DIR`` or passes ``cache_dir`` itself.
    """
    home = tmp_path_factory.mktemp("phyassist-home")
    monkeypatch.setenv("PHYASSIST_HOME", str(home))
    monkeypatch.setenv("PHYASSIST_CACHE_DIR", str(model_cache_root()))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    for var in ("PHYASSIST_PASSPHRASE", "PHYASSIST_PASSPHRASE_FD", "PHYASSIST_RISK_PROBE"):
        monkeypatch.delenv(var, raising=False)
    from engine.trust import risk_probe

    risk_probe.configure(False)  # the default; a Session sets it from its settings
    return home


@pytest.fixture(scope="session")
def seed_case_zh() -> dict:
    """The product brief's Chinese worked example; skips when ../shared is absent."""
    if not SEED_CASE.is_file():
        pytest.skip(f"{SEED_CASE} not present")
    return json.loads(SEED_CASE.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def imhi_fixture() -> Path:
    """A few rows in IMHI's layout (data/fixtures/imhi)."""
    return FIXTURES / "imhi"


@pytest.fixture(scope="session")
def counselchat_fixture() -> Path:
    return FIXTURES / "counsel_chat.csv"


# -- a real encrypted vault -------------------------------------------------------------------


@pytest.fixture
def passphrase() -> str:
    return "correct horse battery"


@pytest.fixture
def settings(isolated_home: Path) -> Settings:
    """Settings under the test's PHYASSIST_HOME with scrypt n=2**10 (fast; real use is 2**15)."""
    return load_settings(store=StoreSettings(scrypt_log2_n=10))


@pytest.fixture
def vault_dir(settings: Settings) -> Path:
    return settings.vault_dir


@pytest.fixture
def store(vault_dir: Path, settings: Settings, passphrase: str):
    with Store.create(vault_dir, passphrase, settings=settings) as opened:
        yield opened


@pytest.fixture
def reopen(vault_dir: Path, settings: Settings, passphrase: str) -> Callable[..., Store]:
    """Open the test vault again (the caller closes it)."""

    def _open(*, writer: bool = True, secret: str | None = None) -> Store:
        return Store.open(vault_dir, secret or passphrase, writer=writer, settings=settings)

    return _open


@pytest.fixture
def scanner() -> Callable[[list[str]], PlaintextScanner]:
    """``scanner([secret, ...]).scan(*roots)``: plaintext copies of the secrets in files."""
    return PlaintextScanner


# -- a tiny model -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    """The dequantized embedded model (HF directory) in the shared model cache, built once."""
    import engine.model.llm as llm

    settings = load_settings(cache_dir=model_cache_root())
    llm.load_model(settings)
    source = llm.resolve_spec(settings)
    path = llm.gguf_cache_dir(settings, source)
    if not (path / "config.json").is_file():
        # Another test area loaded the model first with another cache dir, so the in-process
        # cache answered and nothing was written here (and that in-memory model may carry
        # adapters). Build this cache from the GGUF itself.
        llm._load_uncached(settings, lambda _msg: None, use_disk_cache=True)
    assert (path / "config.json").is_file()
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(embedded_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama with random weights and the embedded model's tokenizer and template
    (tests/engine overrides it with one on fixed token ids)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir, local_files_only=True)
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), tokenizer)


@pytest.fixture
def private_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh TMPDIR for this test, so every temp file PhyAssist writes lands where we scan."""
    import tempfile

    tmp = tmp_path_factory.mktemp("phyassist-tmp")
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)
    return tmp
