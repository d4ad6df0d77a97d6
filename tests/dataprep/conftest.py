"""Fixtures of the data-preparation tests: the small CSVs under data/fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "data" / "fixtures"


@pytest.fixture(scope="session")
def imhi_fixture() -> Path:
    return FIXTURES / "imhi"


@pytest.fixture(scope="session")
def counselchat_fixture() -> Path:
    return FIXTURES / "counsel_chat.csv"
