"""Fixtures shared by every test area. Each test gets its own PHYASSIST_HOME."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SEED_CASE = SHARED_DATA / "cases" / "seed_case_zh.json"


@pytest.fixture(autouse=True)
def isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Point every PhyAssist path at a fresh directory so tests never touch the user's data."""
    home = tmp_path_factory.mktemp("phyassist-home")
    monkeypatch.setenv("PHYASSIST_HOME", str(home))
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
