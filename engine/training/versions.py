"""A patient's adapter versions: list, which one is active, roll back, export.

Versions live in the store as ``adapter/vN`` + ``adapter/vN.card``; which one is used is
``engine.model.adapters.AdapterRegistry.active`` (the ``adapter/active`` pointer, else the
newest). Training a new version makes it active; rolling back points the registry at an
older one. These are the operations a counselor asks for; the registry owns the storage.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import AdapterNotFound, InputRejected
from engine.model.adapters import CONFIG_NAME, WEIGHTS_NAME, AdapterRegistry, BlobStore

CARD_FILE = "phyassist_card.json"


@dataclass(frozen=True)
class AdapterVersion:
    version: int
    card: dict[str, Any] | None
    active: bool


def list_versions(store: BlobStore, patient_id: str) -> list[AdapterVersion]:
    registry = AdapterRegistry(store)
    active = registry.active(patient_id)
    return [
        AdapterVersion(v, registry.card(patient_id, v), v == active)
        for v in registry.versions(patient_id)
    ]


def rollback(store: BlobStore, patient_id: str, version: int | None = None) -> int:
    """Make ``version`` (default: the one before the active one) active; returns it."""
    registry = AdapterRegistry(store)
    versions = registry.versions(patient_id)
    if not versions:
        raise AdapterNotFound("This patient has no adapter to roll back.")
    if version is None:
        current = registry.active(patient_id)
        older = [v for v in versions if current is not None and v < current]
        if not older:
            raise AdapterNotFound(
                f"v{current} is the oldest adapter kept; there is nothing older to roll back to."
            )
        version = older[-1]
    registry.set_active(patient_id, version)
    return version


def read_version(
    store: BlobStore, patient_id: str, version: int | None = None
) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """``(version, config, state_dict)`` of ``version`` or of the active one."""
    if version is None:
        version = AdapterRegistry(store).active(patient_id)
        if version is None:
            raise AdapterNotFound("This patient has no trained adapter yet.")
    config, state = AdapterRegistry(store).read(patient_id, version)
    return version, config, state


def export_adapter(
    store: BlobStore, patient_id: str, out_dir: Path, version: int | None = None
) -> Path:
    """Write a decrypted, standard PEFT folder (``PeftModel.from_pretrained`` loads it).

    The folder must not exist yet or be empty; it is created private (0700).
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise InputRejected(f"{out_dir} exists and is not an empty folder; choose a new one.")
    version, config, state = read_version(store, patient_id, version)
    card = AdapterRegistry(store).card(patient_id, version)
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(out_dir, 0o700)
    (out_dir / CONFIG_NAME).write_text(
        json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8"
    )
    tensors = {k: v.contiguous() for k, v in state.items()}
    save_file(tensors, str(out_dir / WEIGHTS_NAME), metadata={"format": "pt"})
    if card is not None:
        (out_dir / CARD_FILE).write_text(
            json.dumps(card, ensure_ascii=False, indent=2), encoding="utf-8"
        )
    return out_dir
