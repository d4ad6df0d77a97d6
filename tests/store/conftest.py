"""Fixtures for the encrypted-store tests: a cheap KDF, a fresh vault, the seed patient.

Test modules run with ``--import-mode=importlib`` and cannot import this file, so helpers
are fixtures.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.records import AnalysisDraft, BasicInfo, Item, Note, Patient
from engine.settings import Settings, StoreSettings, load_settings
from engine.vault.store import Store

REPO = Path(__file__).resolve().parents[2]


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
def seed(seed_case_zh: dict) -> tuple[Patient, Note]:
    """The Chinese worked example as a Patient (basic info) and a Note (question + analysis)."""
    case = seed_case_zh
    question = case["counseling_question"]
    reference = case["reference_analysis"]
    note = Note(
        question=question["statement"],
        observed_state=question.get("observed_state", ""),
        analysis=AnalysisDraft(
            symptom_type=Item(text=reference["symptom_type"], draft=reference["symptom_type"]),
            reasons=[Item(text=r, draft=r) for r in reference["reasons"]],
            advice=[Item(text=a, draft=a, comments=["请更具体"]) for a in reference["advice"]],
            raw_output="\n".join([reference["symptom_type"], *reference["reasons"]]),
            model_name="test-model",
        ),
    )
    return Patient(name="孙某", basic=BasicInfo(**case["basic_info"])), note


@pytest.fixture
def run_python() -> Callable[..., subprocess.CompletedProcess]:
    """Run code in a fresh interpreter that imports this checkout."""

    def _run(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        return subprocess.run(
            [sys.executable, "-c", code, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )

    return _run


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture
def files_under() -> Callable[[Path], list[Path]]:
    return _files


@pytest.fixture
def low_settings() -> Callable[[], Settings]:
    return lambda: Settings(store=StoreSettings(scrypt_log2_n=10))
