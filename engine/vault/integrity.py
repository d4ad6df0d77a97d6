"""Rollback and disappearance detection: the Store's side of the vault manifest.

:mod:`engine.vault.manifest` is the format; this is what the Store does with it: read it at
open (clean, dirty after a crash, or missing), check the patient folders, each record, blob
and the index against it, take in a crashed writer's files, and write it dirty before a
change and clean after. A finding is kept as an integrity problem (``integrity_problems``)
and a read of an older or vanished file raises :class:`~engine.errors.RolledBack`.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from pathlib import Path

from engine.errors import PhyAssistError, RolledBack
from engine.vault import header as vault
from engine.vault.files import BLOBS_DIR, VAULT_BLOBS_DIR, Stamp, _read_head
from engine.vault.index import INDEX_NAME
from engine.vault.manifest import MANIFEST_NAME, Manifest, PatientFiles

MANIFEST_AAD = b"\x00manifest"

logger = logging.getLogger("phyassist.store")


class ManifestChecks:
    """The manifest kept and checked: a base of :class:`~engine.vault.store.Store` (it
    provides ``_manifest``, ``_manifest_strict``, ``_problems``, ``_damaged``, ``_index``,
    ``_mutex`` and the file helpers of :class:`~engine.vault.files.VaultFiles`)."""

    @property
    def _manifest_path(self) -> Path:
        return self.vault_dir / MANIFEST_NAME

    def _problem(self, text: str) -> None:
        if text not in self._problems:
            logger.warning("vault integrity: %s", text)
            self._problems.append(text)

    def integrity_problems(self) -> list[str]:
        """Rollbacks and disappearances found since this handle opened (empty: none)."""
        with self._mutex:
            return list(self._problems)

    def _read_manifest(self) -> Manifest | None:
        try:
            raw = self._read_encrypted(self._manifest_path, self._key(), MANIFEST_AAD)
        except FileNotFoundError:
            return None
        return Manifest.from_bytes(raw, self._manifest_path)

    def _load_manifest(self) -> str:
        """Read the manifest; returns "clean", "dirty" (a writer died mid-change) or "none"."""
        try:
            manifest = self._read_manifest()
        except PhyAssistError as exc:
            self._problem(f"{MANIFEST_NAME} cannot be read ({exc}); rollback checks were reset")
            manifest = None
        if manifest is None:
            if self._header.schema_version >= 2 and not self._problems:
                self._problem(
                    f"{MANIFEST_NAME} is missing although the vault header says it keeps one: "
                    "rollbacks before this open cannot be detected"
                )
            self._manifest = None
            return "none"
        self._manifest = manifest
        # A dirty manifest lags the files until _finish_manifest has taken them in.
        self._manifest_strict = not manifest.dirty
        return "dirty" if manifest.dirty else "clean"

    def _reload_manifest(self) -> None:
        """Read-only handles: another process may have written since this one opened."""
        manifest = self._read_manifest()
        if manifest is not None:
            self._manifest = manifest
            self._manifest_strict = not manifest.dirty

    def _write_manifest(self, *, dirty: bool) -> None:
        manifest = self._manifest
        if manifest is None or not self.writer:
            return
        manifest.dirty = dirty
        manifest.generation += 1
        if self._index.storage.persist:
            manifest.index_stamp = self._index.storage.stamp
        self._write_encrypted(self._manifest_path, self._key(), manifest.to_bytes(), MANIFEST_AAD)

    def _manifest_entry(self, patient_id: str) -> PatientFiles | None:
        if self._manifest is None:
            return None
        return self._manifest.patients.setdefault(patient_id, PatientFiles())

    def _manifest_from_disk(self, known: Manifest | None) -> Manifest:
        """What is on disk now, keeping ``known``'s record versions as a floor."""
        fresh = Manifest(generation=known.generation if known else 0)
        complete, _leftovers = self._scan()
        for pid, stamp in complete.items():
            old = known.patients.get(pid) if known else None
            if old is not None and (pid in self._damaged or old.stamp == stamp):
                # unchanged since the manifest (or unreadable: keep what the vault wrote)
                fresh.patients[pid] = PatientFiles(
                    version=old.version,
                    stamp=old.stamp,
                    blobs=self._scan_blobs(self._patient_dir(pid) / BLOBS_DIR),
                )
                continue
            try:
                _patient, _has, stamp, version = self._read_record_raw(pid)
            except PhyAssistError as exc:
                self._damaged[pid] = str(exc)
                continue
            floor = old.version if old is not None else 0
            if version < floor:
                self._problem(
                    f"the record of patient {pid} was rolled back: it is save #{version}, "
                    f"the vault last wrote save #{floor}"
                )
            fresh.patients[pid] = PatientFiles(
                version=max(version, floor),
                stamp=stamp,
                blobs=self._scan_blobs(self._patient_dir(pid) / BLOBS_DIR),
            )
        fresh.vault_blobs = self._scan_blobs(self.vault_dir / VAULT_BLOBS_DIR)
        return fresh

    def _finish_manifest(self, state: str, passphrase: str) -> None:
        """Writers: finish interrupted deletions, take in a crashed writer's files, migrate."""
        manifest = self._manifest
        if manifest is not None and manifest.deleting:
            for pid in sorted(manifest.deleting):
                self._complete_delete(pid)
        if state == "clean":
            leftovers = self._startup_leftovers or []
            self._clean_leftovers(leftovers)
            return
        if state == "dirty" or manifest is None:
            self._manifest = self._manifest_from_disk(manifest)
            self._manifest_strict = True
            self._flush_index()
            self._write_manifest(dirty=False)
        if self._header.schema_version < vault.VAULT_SCHEMA_VERSION:
            self._header = vault.upgrade(
                self.vault_dir, self._header, self._key(), passphrase, self.settings.store
            )

    def _check_folders(self, state: str) -> None:
        """Every patient the manifest knows still has its files; no unknown patient appeared."""
        if self._manifest is None:
            return
        complete, leftovers = self._scan()
        self._startup_leftovers = leftovers
        missing, unknown = self._folder_mismatches(complete, state)
        if (missing or unknown) and not self.writer:
            # a writer in another process may have created or deleted since we read
            self._reload_manifest()
            complete, _leftovers = self._scan()
            missing, unknown = self._folder_mismatches(complete, state)
        manifest = self._manifest
        for pid in missing:
            summary = self._index.summary(pid)
            self._damaged[pid] = "its folder or record was removed"
            self._problem(
                f"patient {pid} is gone: its folder or record was removed"
                + (" (the index was older too)" if summary is None else "")
            )
        for pid in unknown:
            self._damaged[pid] = "not in the vault manifest"
            self._problem(
                f"patient folder {pid} is not in the vault manifest "
                "(restored from an older copy or another vault?)"
            )
        for pid, stamp in complete.items():
            if pid in manifest.deleting or pid not in manifest.patients:
                continue
            if self._index.stamp(pid) != stamp and pid not in self._damaged:
                try:
                    self._read_record(pid)
                except RolledBack as exc:
                    self._damaged[pid] = str(exc)
                except PhyAssistError as exc:
                    self._damaged[pid] = str(exc)

    def _folder_mismatches(
        self, complete: dict[str, Stamp], state: str
    ) -> tuple[list[str], list[str]]:
        """Patients the manifest knows whose files are gone; folders it does not know."""
        manifest = self._manifest
        assert manifest is not None
        strict = state == "clean" and self._manifest_strict
        missing = [
            pid for pid in manifest.patients if pid not in complete and pid not in manifest.deleting
        ]
        unknown = [
            pid
            for pid in complete
            if strict and pid not in manifest.patients and pid not in manifest.deleting
        ]
        return missing, unknown

    def _verify_file(self, path: Path, problem_of) -> None:
        """Raise RolledBack when ``problem_of(manifest, strict)`` finds one."""
        if self._manifest is None:
            return
        problem = problem_of(self._manifest, self._manifest_strict)
        if problem is not None and not self.writer:
            self._reload_manifest()
            problem = problem_of(self._manifest, self._manifest_strict)
        if problem is not None:
            self._problem(problem)
            raise RolledBack(path, problem)

    def _verify_stamp(self, patient_id: str | None, kind: str, stamp: Stamp | None) -> None:
        path = (
            self._vault_blob_path(kind) if patient_id is None else self._blob_path(patient_id, kind)
        )
        self._verify_file(
            path, lambda m, strict: m.blob_problem(patient_id, kind, stamp, strict=strict)
        )

    def verify_manifest(self) -> list[str]:
        """Check every record, blob, vault blob and the index against the manifest (doctor)."""
        with self._mutex:
            self._key()
            manifest = self._manifest
            if manifest is None:
                self._problem(f"no {MANIFEST_NAME}: open the vault for writing once to make it")
                return self.integrity_problems()
            complete, _leftovers = self._scan()
            for pid in sorted(set(manifest.patients) | set(complete)):
                if pid in manifest.deleting:
                    continue
                with suppress(PhyAssistError):
                    self._read_record(pid)
                expected = manifest.patients.get(pid, PatientFiles()).blobs
                present = self._scan_blobs(self._patient_dir(pid) / BLOBS_DIR)
                for kind in sorted(set(expected) | set(present)):
                    with suppress(PhyAssistError):
                        self._verify_stamp(pid, kind, present.get(kind))
            present = self._scan_blobs(self.vault_dir / VAULT_BLOBS_DIR)
            for kind in sorted(set(manifest.vault_blobs) | set(present)):
                with suppress(PhyAssistError):
                    self._verify_stamp(None, kind, present.get(kind))
            index_stamp = _read_head(self.vault_dir / INDEX_NAME)
            if self._manifest_strict and not self._pending and index_stamp != manifest.index_stamp:
                self._problem("index.bin is not the copy the vault last wrote")
            return self.integrity_problems()

    def missing_vault_blobs(self, prefix: str = "") -> list[str]:
        """Vault-level blobs the manifest lists that are gone (e.g. deleted audit segments)."""
        with self._mutex:
            if self._manifest is None:
                return []
            present = set(self._kinds_in(self.vault_dir / VAULT_BLOBS_DIR, prefix))
            missing = [
                k for k in self._manifest.vault_blobs if k.startswith(prefix) and k not in present
            ]
            if missing and not self.writer:
                self._reload_manifest()
                if not self._manifest_strict:
                    return []
                missing = [
                    k
                    for k in self._manifest.vault_blobs
                    if k.startswith(prefix) and k not in present
                ]
            return sorted(missing)

    def accept_current_files(self) -> None:
        """Take the files as they are now as what the vault wrote (after a deliberate restore).

        Clears the rollback reports; `phyassist doctor --accept-restore` calls it.
        """
        with self._mutex:
            self._require_writer()
            self._manifest = self._manifest_from_disk(None)
            self._manifest_strict = True
            self._damaged.clear()
            self._problems.clear()
            self.rebuild_index()
            self._write_manifest(dirty=False)
