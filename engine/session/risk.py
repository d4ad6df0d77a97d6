"""Risk checks of a statement and the audit entries of the risk screen, as Session methods.

The rules always run; the model is asked too where it may be (``risk_model_refusal``). The
risk screen's outcomes (shown, acknowledged, cancelled) are audited with categories,
severities and rule ids only, never the quoted words.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.session.vault_access import VaultLocked

if TYPE_CHECKING:
    from engine.trust.risk import RiskFlag


@dataclass(frozen=True)
class RiskCheck:
    """Risk flags of one statement and a line saying how they were found."""

    flags: list[RiskFlag]
    found_by: str


class RiskActions:
    """Risk methods of :class:`~engine.session.Session` (a base of it; the Session provides
    ``_loader``, ``model``, ``_vault`` and ``_audit``)."""

    _vault: Callable[..., Any]
    _audit: Callable[..., None]

    def risk_model_refusal(self) -> str | None:
        """Why the model is not asked in the risk check (``None``: it is). Cheap."""
        assistant = self._loader.ready_backend
        if assistant is None:
            return "the model is still loading"
        return assistant.risk_model_refusal()

    def check_risk(self, text: str) -> RiskCheck:
        """Rules always; the model too where :meth:`risk_model_refusal` allows (blocking:
        call it from a worker then). The model never silences a rule flag."""
        from engine.trust.risk import assess, found_by

        why = self.risk_model_refusal()
        if why is not None:
            flags = assess(text)
            return RiskCheck(flags, found_by(model_not_asked=why))
        flags, found_by = self.model.risk_flags(text)
        return RiskCheck(list(flags), found_by)

    def risk_shown(self, patient_id: str | None, flags: list[RiskFlag]) -> None:
        self._risk_audit("risk_flagged", patient_id, flags)

    def risk_acknowledged(self, patient_id: str | None, flags: list[RiskFlag]) -> None:
        self._risk_audit("risk_acknowledged", patient_id, flags)

    def risk_cancelled(self, patient_id: str | None, flags: list[RiskFlag]) -> None:
        self._risk_audit("risk_cancelled", patient_id, flags)

    def _risk_audit(self, action: str, patient_id: str | None, flags: list[RiskFlag]) -> None:
        """Categories, severities and rule ids only: never the quoted words."""
        from engine.trust.risk import risk_audit_detail

        with contextlib.suppress(VaultLocked):
            self._vault(
                lambda store: self._audit(store, action, patient_id, risk_audit_detail(flags))
            )
