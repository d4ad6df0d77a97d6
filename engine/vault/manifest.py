"""The vault manifest: what the vault last wrote, so an older or missing file is noticed.

Every file of a vault authenticates on its own (AES-GCM), but authentication cannot tell a
file from an *older* genuine copy of itself, nor notice a file that is gone. The manifest
(``manifest.bin``, encrypted under the master key) remembers, for the vault as a whole:

* each patient's record version (a counter inside the encrypted record, bumped by every
  save) and the stamp (envelope nonce, unique per write) of each of the patient's blobs:
  drafts, chat, adapter weights and the ``adapter/active`` pointer;
* the stamp of every vault-level blob, which includes the audit segments and the audit
  head (so a wiped, cut or older audit log no longer verifies);
* the stamp of ``index.bin`` (an older index cannot silently hide a later patient);
* patients whose deletion started (tombstones) so that a later open finishes it.

Its existence is bound to the vault header (schema 2 puts it in the wrapped key's
associated data), so deleting ``manifest.bin`` is reported rather than read as an old vault.

Crash safety: a writer marks the manifest ``dirty`` on disk before it changes any file and
writes it clean (with the new versions and stamps) after the files. An open that finds it
dirty accepts what is on disk (records never older than the manifest's versions) and
writes it clean again; an open that finds it clean expects every file to match exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from engine.errors import TamperedFile, UnknownSchema

MANIFEST_NAME = "manifest.bin"
MANIFEST_VERSION = 1


@dataclass
class PatientFiles:
    version: int = 0  # the record's save counter (0: a record written before manifests)
    stamp: str | None = None  # the record file's stamp at that save
    blobs: dict[str, str] = field(default_factory=dict)  # kind -> stamp


@dataclass
class Manifest:
    generation: int = 0
    dirty: bool = False
    index_stamp: str | None = None
    patients: dict[str, PatientFiles] = field(default_factory=dict)
    vault_blobs: dict[str, str] = field(default_factory=dict)
    deleting: set[str] = field(default_factory=set)

    def to_bytes(self) -> bytes:
        doc = {
            "version": MANIFEST_VERSION,
            "generation": self.generation,
            "dirty": self.dirty,
            "index": self.index_stamp,
            "patients": {
                pid: {"v": files.version, "s": files.stamp, "blobs": files.blobs}
                for pid, files in self.patients.items()
            },
            "vault_blobs": self.vault_blobs,
            "deleting": sorted(self.deleting),
        }
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode("ascii")

    @classmethod
    def from_bytes(cls, raw: bytes, label: object) -> Manifest:
        try:
            doc: Any = json.loads(raw)
            if doc.get("version") != MANIFEST_VERSION:
                raise UnknownSchema(label, doc.get("version"))
            patients = {
                str(pid): PatientFiles(
                    version=int(entry["v"]),
                    stamp=None if entry.get("s") is None else str(entry["s"]),
                    blobs={str(k): str(v) for k, v in entry["blobs"].items()},
                )
                for pid, entry in doc["patients"].items()
            }
            return cls(
                generation=int(doc["generation"]),
                dirty=bool(doc["dirty"]),
                index_stamp=None if doc["index"] is None else str(doc["index"]),
                patients=patients,
                vault_blobs={str(k): str(v) for k, v in doc["vault_blobs"].items()},
                deleting={str(p) for p in doc["deleting"]},
            )
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            raise TamperedFile(label, "unreadable vault manifest") from None

    # -- comparisons: None when the file is what the vault last wrote, else the reason ------

    def record_problem(self, patient_id: str, version: int, *, strict: bool) -> str | None:
        """``strict``: the caller knows every write (a writer, or a clean manifest on disk)."""
        files = self.patients.get(patient_id)
        if files is None:
            if not strict:
                return None
            return (
                f"patient {patient_id} is not in the vault manifest "
                "(a folder restored from an older copy or from another vault?)"
            )
        if version < files.version:
            return (
                f"the record of patient {patient_id} was rolled back: it is save #{version}, "
                f"the vault last wrote save #{files.version}"
            )
        if version > files.version and strict:
            return (
                f"the record of patient {patient_id} is save #{version}, newer than the "
                f"vault manifest's #{files.version}"
            )
        return None

    def blob_problem(
        self, patient_id: str | None, kind: str, stamp: str | None, *, strict: bool
    ) -> str | None:
        if patient_id is None:
            expected = self.vault_blobs.get(kind)
            what = f"vault file {kind!r}"
        else:
            files = self.patients.get(patient_id)
            expected = None if files is None else files.blobs.get(kind)
            what = f"{kind!r} of patient {patient_id}"
        if expected == stamp or not strict:
            return None
        if stamp is None:
            return f"{what} is missing: the vault wrote it and never deleted it"
        if expected is None:
            return f"{what} was not written by this vault (an older copy put back?)"
        return f"{what} is not the copy the vault last wrote (an older copy put back?)"
