"""Fixtures for the encrypted-store tests: the seed patient, a fresh interpreter, files.

The vault fixtures (``passphrase``, ``settings``, ``store``, ``reopen``) are tests/conftest.py's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.records import AnalysisDraft, BasicInfo, Item, Note, Patient
from engine.settings import Settings, StoreSettings
from tests.support import REPO


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
