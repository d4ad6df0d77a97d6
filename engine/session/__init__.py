"""The one object a front end talks to: :class:`Session` (vault, model, runs, audit).

``core`` holds the Session; ``loading`` the model's background load and readiness;
``runs`` the generation runs and their typed outcomes; ``training`` the default training
runner; ``backend`` the protocols of what the Session drives (the model, the vault).
Nothing here imports torch or textual at import time.
"""

from engine.session.backend import ModelBackend, TrainingRunner, VaultOpener, VaultStore
from engine.session.core import (
    DRAFT_BLOB,
    KEPT_DRAFT_BLOB,
    ModelState,
    OpenedPatient,
    RiskCheck,
    Session,
    VaultLocked,
)
from engine.session.runs import AnalysisOutcome, ChatOutcome, ItemOutcome, Outcome, Run, RunKind

__all__ = [
    "DRAFT_BLOB",
    "KEPT_DRAFT_BLOB",
    "AnalysisOutcome",
    "ChatOutcome",
    "ItemOutcome",
    "ModelBackend",
    "ModelState",
    "OpenedPatient",
    "Outcome",
    "RiskCheck",
    "Run",
    "RunKind",
    "Session",
    "TrainingRunner",
    "VaultLocked",
    "VaultOpener",
    "VaultStore",
]
