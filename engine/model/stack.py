"""A patient adapter over the domain adapter: which domain adapter it was trained over.

A patient adapter is trained on the base with the domain LoRA merged into its weights, so
its deltas only make sense added to that same domain adapter (LoRA deltas add:
``W + ΔW_domain + ΔW_patient`` at inference equals the merged training model plus the
patient delta). Its card records the domain adapter's identity; at inference the patient
adapter is stacked on the domain adapter only when the available one has that identity.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from engine.errors import AdapterLoadError, PhyAssistError
from engine.model.adapters import WEIGHTS_NAME, domain_adapter_path

CARD_KEY = "domain_adapter"


def adapter_identity(path: Path) -> dict[str, str]:
    """Name and content hash of a PEFT adapter directory (its weights file)."""
    digest = hashlib.sha256()
    with open(Path(path) / WEIGHTS_NAME, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"name": Path(path).name, "sha256": digest.hexdigest()}


def stack_refusal(card: dict[str, Any] | None, available: dict[str, str] | None) -> str | None:
    """Why this patient adapter cannot be stacked on the available domain adapter (None: it
    can, or it was trained on the bare base and needs no domain adapter)."""
    wanted = (card or {}).get(CARD_KEY)
    if not wanted:
        return None
    if available is None:
        return (
            f"it was trained over the domain adapter {wanted.get('name', '?')}, "
            "which is not available here"
        )
    if wanted.get("sha256") != available.get("sha256"):
        return (
            f"it was trained over the domain adapter {wanted.get('name', '?')} "
            f"({str(wanted.get('sha256', ''))[:12]}), not the one loaded "
            f"({available.get('name', '?')}, {available.get('sha256', '')[:12]}); retrain it"
        )
    return None


def trained_over_domain(card: dict[str, Any] | None) -> bool:
    return bool((card or {}).get(CARD_KEY))


def stack_base(card: dict[str, Any] | None, model: Any) -> Path | None:
    """The domain adapter a patient adapter with this card is stacked on (``None``: it was
    trained on the bare base and is used alone). Raises AdapterLoadError when it was trained
    over a domain adapter that is not the one ``model`` (``settings.model``) uses here.
    Shared by the local and the server backend so both refuse the same stacks."""
    if not trained_over_domain(card):
        return None
    try:
        path = domain_adapter_path(model)
    except PhyAssistError:
        path = None
    why = stack_refusal(card, adapter_identity(path) if path is not None else None)
    if why is not None:
        raise AdapterLoadError(f"not used: {why}.")
    return path
