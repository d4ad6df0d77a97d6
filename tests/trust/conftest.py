"""Fixtures for the trust tests: a cheap-KDF vault under the test's PHYASSIST_HOME.

Test modules run with ``--import-mode=importlib`` and cannot import this file, so helpers
are fixtures.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from engine.settings import Settings, StoreSettings, load_settings
from engine.store import Store

PASSPHRASE = "correct horse battery"


@pytest.fixture
def passphrase() -> str:
    return PASSPHRASE


@pytest.fixture
def settings(isolated_home: Path) -> Settings:
    """Settings under the test's PHYASSIST_HOME with scrypt n=2**10 (fast; real use is 2**15)."""
    return load_settings(store=StoreSettings(scrypt_log2_n=10))


@pytest.fixture
def store(settings: Settings, passphrase: str):
    with Store.create(settings.vault_dir, passphrase, settings=settings) as opened:
        yield opened


@pytest.fixture
def reopen(settings: Settings, passphrase: str) -> Callable[..., Store]:
    """Open the test vault again (the caller closes it)."""

    def _open(*, writer: bool = True) -> Store:
        return Store.open(settings.vault_dir, passphrase, writer=writer, settings=settings)

    return _open
