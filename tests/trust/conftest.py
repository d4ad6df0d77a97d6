"""Fixtures for the trust tests: a cheap-KDF vault under the test's PHYASSIST_HOME.

Test modules run with ``--import-mode=importlib`` and cannot import this file, so helpers
are fixtures.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from engine.settings import Settings, StoreSettings, load_settings
from engine.vault.store import Store

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


# -- plaintext scanning ------------------------------------------------------------------------


def _encodings(secret: str) -> dict[str, bytes]:
    """Every form in which ``secret`` could sit in a file as plaintext."""
    import json

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
    """Scan files for secrets in UTF-8, UTF-16/32 and JSON \\u-escaped form."""

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

    def scan(self, *roots: Path, newer_than: float | None = None) -> list[tuple[str, str, str]]:
        import os

        hits: list[tuple[str, str, str]] = []
        for root in roots:
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


@pytest.fixture
def scanner() -> Callable[[list[str]], PlaintextScanner]:
    return PlaintextScanner


@pytest.fixture
def private_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh TMPDIR for this test, so every temp file PhyAssist writes lands where we scan."""
    import tempfile

    tmp = tmp_path_factory.mktemp("phyassist-tmp")
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)
    return tmp
