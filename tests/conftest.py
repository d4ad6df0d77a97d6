"""Fixtures shared by every test area. Each test gets its own PHYASSIST_HOME."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from platformdirs import user_cache_path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SEED_CASE = SHARED_DATA / "cases" / "seed_case_zh.json"


def model_cache_root() -> Path:
    """Where tests keep dequantized public model weights (never patient data).

    One directory for the whole run (and later runs): each test area used to dequantize the
    embedded GGUF into its own fresh home, 30-110 s each on two cores.
    ``PHYASSIST_TEST_MODEL_CACHE`` overrides it.
    """
    env = os.environ.get("PHYASSIST_TEST_MODEL_CACHE")
    return Path(env) if env else user_cache_path("phyassist")


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
    for var in ("PHYASSIST_PASSPHRASE", "PHYASSIST_PASSPHRASE_FD"):
        monkeypatch.delenv(var, raising=False)
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
