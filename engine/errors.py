"""Error types the engine raises on purpose.

Every failure a counselor can hit (wrong passphrase, tampered file, model that will not load)
has its own type with a message fit to show as is; callers catch ``PhyAssistError``.
"""

from __future__ import annotations


class PhyAssistError(Exception):
    """Base for every error whose message is meant for the user."""


class WrongPassphrase(PhyAssistError):
    """The passphrase does not unlock the vault."""

    def __init__(self) -> None:
        super().__init__("Wrong passphrase: the vault could not be unlocked.")


class VaultNotFound(PhyAssistError):
    """No vault exists at the data directory yet."""


class VaultExists(PhyAssistError):
    """Creating a vault where one already exists."""


class VaultBusy(PhyAssistError):
    """Another process holds the vault open for writing."""


class TamperedFile(PhyAssistError):
    """A file failed authentication: edited, truncated, swapped or corrupt."""

    def __init__(self, path: object, detail: str = "") -> None:
        self.path = path
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"{path} is damaged or was tampered with and cannot be read{extra}. "
            "Restore it from a backup (`phyassist backup restore`); nothing was changed."
        )


class RolledBack(TamperedFile):
    """A genuine file that is not the one the vault last wrote: an older copy, or it is gone."""

    def __init__(self, path: object, detail: str = "") -> None:
        self.path = path
        PhyAssistError.__init__(
            self,
            f"{path} is not what this vault last wrote: {detail}. Someone put back an older "
            "copy or removed a file; nothing was changed. Find out who, then restore the whole "
            "vault from a backup you trust.",
        )


class UnknownSchema(PhyAssistError):
    """A file was written by a newer PhyAssist (or is not ours)."""

    def __init__(self, path: object, version: object) -> None:
        self.path = path
        self.version = version
        super().__init__(
            f"{path} has schema version {version!r}, which this PhyAssist does not know. "
            "Upgrade PhyAssist to read it."
        )


class PatientNotFound(PhyAssistError):
    """No patient with that id."""


class InputRejected(PhyAssistError):
    """User input that cannot be accepted (empty, too long, invalid)."""


class ModelLoadError(PhyAssistError):
    """A model could not be loaded (missing path, not a causal LM, out of memory)."""


class GenerationCancelled(PhyAssistError):
    """Generation stopped on request; partial text is kept by the caller."""


class TrainingError(PhyAssistError):
    """Training failed or was stopped; the previous adapter stays active."""


class ReadOnlyVault(PhyAssistError):
    """A change was attempted through a vault handle opened read-only (writer=False)."""


class VaultClosed(PhyAssistError):
    """The vault handle was closed (or locked after idle) and must be unlocked again."""


class TrainingLimitExceeded(TrainingError):
    """A training limit from ``Settings.limits`` was hit (too many tokens of notes)."""


class TrainingCancelled(TrainingError):
    """Training was cancelled on request; the previous adapter stays active."""


class AdapterNotFound(PhyAssistError):
    """The patient has no adapter, or not the version asked for."""


class AdapterLoadError(PhyAssistError):
    """An adapter could not be read or applied (corrupt container, wrong base model)."""


class StorageError(PhyAssistError):
    """The disk refused a read or write (full, read-only, I/O error); nothing was half-written."""


class GenerationFailed(PhyAssistError):
    """The model failed while generating (out of memory, a broken model); partial text stays."""


class ServerError(GenerationFailed, ModelLoadError):
    """The inference server (``backend.kind = "openai"``) is down, too slow, or refused a
    request (wrong API key, unknown adapter). The message says which and what to do; a draft
    cut short keeps its partial text, as for any failed generation."""
