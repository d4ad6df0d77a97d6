"""Fixtures for the trust tests. The vault (``passphrase``, ``settings``, ``store``, ``reopen``)
and the plaintext ``scanner`` are tests/conftest.py's."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def private_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh TMPDIR for this test, so every temp file PhyAssist writes lands where we scan."""
    import tempfile

    tmp = tmp_path_factory.mktemp("phyassist-tmp")
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)
    return tmp
