"""The one object a front end talks to: :class:`Session` (vault, model, runs, audit).

``core`` holds the Session, whose methods are grouped by job in its bases: ``vault_access``
(unlock, lock, one vault call at a time, audit), ``patients`` (patients, notes, autosave,
chat history), ``corrections`` (amended and deleted notes), ``risk``, ``generating`` (the
runs) and ``adapters`` (training, rollback, export, Compare). ``loading`` holds the model's
background load and readiness; ``runs`` the generation runs and their typed outcomes;
``training`` the default training runner; ``backend`` the protocols of what the Session
drives (the model, the vault).
Nothing here imports torch or textual at import time.
"""

from engine.session.backend import ModelBackend, TrainingRunner, VaultOpener, VaultStore
from engine.session.core import Session
from engine.session.loading import ModelState
from engine.session.patients import DRAFT_BLOB, KEPT_DRAFT_BLOB, OpenedPatient
from engine.session.risk import RiskCheck
from engine.session.runs import AnalysisOutcome, ChatOutcome, ItemOutcome, Outcome, Run, RunKind
from engine.session.vault_access import VaultLocked

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
