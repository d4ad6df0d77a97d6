"""Patients and their notes: the record file of each patient and every change to it.

A record (``patients/<id>/record.bin``, under the patient's data key) holds the Patient
(basic info and dated notes), the has-adapter flag and a save counter the manifest uses to
notice an older copy. Notes are never edited in place: an amendment keeps the earlier
content as a version, a deletion leaves a dated tombstone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from contextlib import suppress

from engine.errors import InputRejected, PatientNotFound, TamperedFile, UnknownSchema
from engine.records import (
    SCHEMA_VERSION,
    AnalysisDraft,
    BasicInfo,
    Note,
    NoteTombstone,
    NoteVersion,
    Patient,
    PatientSummary,
    utcnow,
)
from engine.vault import crypto
from engine.vault.atomicio import ensure_dir, shred_file
from engine.vault.files import KEY_FILE, RECORD_FILE, Stamp, _aad, _stamp_of


class PatientRecords:
    """Reading, creating and changing patient records: a base of
    :class:`~engine.vault.store.Store` (it provides the index, the manifest entries, the
    validation of :class:`~engine.vault.validation.RecordChecks` and ``_changing``)."""

    def _read_record(self, patient_id: str) -> tuple[Patient, bool, Stamp]:
        """The patient, its has_adapter flag and the record file's stamp.

        Raises RolledBack when the record is older than the one the vault last wrote.
        """
        patient, has_adapter, stamp, version = self._read_record_raw(patient_id)
        path = self._patient_dir(patient_id) / RECORD_FILE
        self._verify_file(
            path, lambda m, strict: m.record_problem(patient_id, version, strict=strict)
        )
        return patient, has_adapter, stamp

    def _read_record_raw(self, patient_id: str) -> tuple[Patient, bool, Stamp, int]:
        """The record as it is on disk (no manifest check) and its save counter."""
        path = self._patient_dir(patient_id) / RECORD_FILE
        key = self._data_key(patient_id)
        try:
            blob = self._read_file(path)
        except FileNotFoundError:
            raise PatientNotFound(f"No patient with id {patient_id!r}.") from None
        plain = crypto.decrypt(key, blob, _aad(patient_id, "record"), label=path)
        try:
            doc = json.loads(plain)
            version = doc["patient"].get("schema_version")
            saves = int(doc.get("saves", 0))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TamperedFile(path, f"unreadable record: {type(exc).__name__}") from None
        if version != SCHEMA_VERSION:
            raise UnknownSchema(path, version)
        try:
            patient = Patient.model_validate(doc["patient"])
            has_adapter = bool(doc.get("has_adapter", False))
        except ValueError as exc:
            raise TamperedFile(path, f"unreadable record: {type(exc).__name__}") from None
        if patient.id != patient_id:
            raise TamperedFile(path, "the record belongs to another patient")
        return patient, has_adapter, _stamp_of(blob), saves

    def _write_record(self, patient: Patient, has_adapter: bool) -> Stamp:
        path = self._patient_dir(patient.id) / RECORD_FILE
        entry = self._manifest_entry(patient.id)
        saves = (entry.version if entry is not None else 0) + 1
        try:
            body = patient.model_dump_json().encode("utf-8")
        except UnicodeEncodeError:
            raise InputRejected(
                "The text holds characters that are not valid Unicode (e.g. a lone surrogate); "
                "nothing was saved."
            ) from None
        if len(body) > self.limits.max_record_bytes:
            raise InputRejected(
                f"The record would be {len(body) / 1e6:.1f} MB; the limit is "
                f"{self.limits.max_record_bytes / 1e6:.0f} MB. Nothing was saved."
            )
        payload = (
            b'{"has_adapter":'
            + (b"true" if has_adapter else b"false")
            + b',"saves":'
            + str(saves).encode()
            + b',"patient":'
            + body
            + b"}"
        )
        envelope = self._write_encrypted(
            path, self._data_key(patient.id), payload, _aad(patient.id, "record")
        )
        stamp = _stamp_of(envelope)
        if entry is not None:
            entry.version = saves
            entry.stamp = stamp
        return stamp

    @staticmethod
    def _summary_of(patient: Patient, has_adapter: bool) -> PatientSummary:
        return PatientSummary(
            id=patient.id,
            name=patient.name,
            created=patient.created,
            updated=patient.updated,
            note_count=len(patient.notes),
            has_adapter=has_adapter,
        )

    def list_patients(self) -> list[PatientSummary]:
        """Every patient, most recently updated first."""
        with self._mutex:
            self._key()
            return self._index.all()

    def search(self, text: str) -> list[PatientSummary]:
        """Case-insensitive substring of the name (Chinese fine) or id prefix; '' = all."""
        with self._mutex:
            self._key()
            return self._index.search(text or "")

    def record_stamps(self) -> dict[str, str | None]:
        """Patient id -> stamp of its record file (a per-write nonce), from memory.

        A derived index (engine.knowledge) keeps the stamp it read each record at and
        compares: a changed stamp is a saved or amended note, a missing id a deleted patient.
        """
        with self._mutex:
            self._key()
            return self._index.stamps()

    def get_summary(self, patient_id: str) -> PatientSummary:
        with self._mutex:
            self._key()
            summary = self._index.summary(patient_id)
            if summary is None:
                raise PatientNotFound(f"No patient with id {patient_id!r}.")
            return summary

    def create_patient(self, name: str, basic: BasicInfo | None = None) -> Patient:
        """A new patient with a fresh random data key, saved and indexed."""
        patient = Patient(name=self._clean_name(name), basic=basic or BasicInfo())
        return self.import_patient(patient)

    def import_patient(self, patient: Patient) -> Patient:
        """Store a complete Patient built elsewhere (its id must be new); returns a copy."""
        self.import_patients([patient])
        return patient.model_copy(deep=True)

    def import_patients(self, patients: Iterable[Patient]) -> int:
        """Store many new patients with a single index write (migration, benchmarks)."""
        with self._mutex, self._changing(defer=False):
            count = 0
            for patient in patients:
                stamp = self._write_new_patient(patient)
                self._index.upsert(self._summary_of(patient, False), stamp)
                count += 1
            return count

    def _write_new_patient(self, patient: Patient) -> Stamp:
        self._check_patient(patient)
        directory = self._patient_dir(patient.id)
        if directory.exists() or patient.id in self._index:
            raise InputRejected(f"A patient with id {patient.id} already exists.")
        ensure_dir(directory)
        data_key = crypto.new_key()
        try:
            self._write_encrypted(
                directory / KEY_FILE, self._key(), data_key, _aad(patient.id, "key")
            )
            self._data_keys[patient.id] = data_key
            return self._write_record(patient, False)
        except BaseException:
            # leave no folder holding only a key behind
            self._data_keys.pop(patient.id, None)
            if self._manifest is not None:
                self._manifest.patients.pop(patient.id, None)
            with suppress(OSError):
                shred_file(directory / KEY_FILE)
                self._remove_patient_dir(directory)
            raise

    def load_patient(self, patient_id: str) -> Patient:
        """The whole record. Raises PatientNotFound, TamperedFile, UnknownSchema."""
        with self._mutex:
            self._key()
            patient, _has_adapter, _stamp = self._read_record(patient_id)
            return patient

    def save_patient(self, patient: Patient) -> None:
        """Atomically replace the patient's record; bumps ``updated`` on ``patient``."""
        with self._mutex:
            self._require_writer()
            self._check_patient(patient)
            if (
                patient.id not in self._index
                and not (self._patient_dir(patient.id) / RECORD_FILE).is_file()
            ):
                raise PatientNotFound(
                    f"No patient with id {patient.id!r} (deleted?). Use create_patient."
                )
            has_adapter = self._has_adapter(patient.id)
            with self._changing(defer=True):
                patient.updated = max(utcnow(), patient.updated)
                stamp = self._write_record(patient, has_adapter)
                self._index.upsert(self._summary_of(patient, has_adapter), stamp)

    def _has_adapter(self, patient_id: str) -> bool:
        summary = self._index.summary(patient_id)
        if summary is not None:
            return summary.has_adapter
        _patient, has_adapter, _stamp = self._read_record(patient_id)
        return has_adapter

    def add_note(self, patient_id: str, note: Note) -> Patient:
        """Append ``note`` to the patient's record and save; returns the updated patient."""
        with self._mutex:
            self._require_writer()
            self._check_note(note, new=True)
            patient, has_adapter, _stamp = self._read_record(patient_id)
            patient.notes.append(note.model_copy(deep=True))
            patient.updated = max(utcnow(), patient.updated)
            with self._changing(defer=True):
                stamp = self._write_record(patient, has_adapter)
                self._index.upsert(self._summary_of(patient, has_adapter), stamp)
            return patient

    def update_patient_info(
        self, patient_id: str, *, name: str | None = None, basic: BasicInfo | None = None
    ) -> Patient:
        """Correct the name and/or the basic information; returns the updated patient."""
        with self._mutex:
            self._require_writer()
            patient, has_adapter, _stamp = self._read_record(patient_id)
            if name is not None:
                patient.name = self._clean_name(name)
            if basic is not None:
                self._check_basic(basic)
                patient.basic = basic.model_copy(deep=True)
            return self._rewrite(patient, has_adapter)

    def amend_note(
        self,
        patient_id: str,
        note_id: str,
        *,
        question: str | None = None,
        observed_state: str | None = None,
        analysis: AnalysisDraft | None = None,
        reason: str = "",
    ) -> Patient:
        """Replace a note's content, keeping the content it had as an earlier version.

        ``reason`` (optional) says why; it is kept with the earlier version.
        """
        with self._mutex:
            self._require_writer()
            self._check_text("The reason", reason, self.limits.max_field_chars)
            patient, has_adapter, _stamp = self._read_record(patient_id)
            note = self._live_note(patient, note_id)
            amended = note.model_copy(deep=True)
            if question is not None:
                amended.question = question
            if observed_state is not None:
                amended.observed_state = observed_state
            if analysis is not None:
                amended.analysis = analysis.model_copy(deep=True)
            self._check_note(amended, new=True)
            if (amended.question, amended.observed_state, amended.analysis) == (
                note.question,
                note.observed_state,
                note.analysis,
            ):
                raise InputRejected("The amendment changes nothing; the note is as it was.")
            now = max(utcnow(), note.amended or note.created)
            amended.versions.append(
                NoteVersion(
                    question=note.question,
                    observed_state=note.observed_state,
                    analysis=note.analysis,
                    written=note.amended or note.created,
                    replaced=now,
                    reason=reason.strip(),
                )
            )
            amended.amended = now
            patient.notes[patient.notes.index(note)] = amended
            return self._rewrite(patient, has_adapter)

    def delete_note(self, patient_id: str, note_id: str, reason: str = "") -> Patient:
        """Delete a note: its text and versions go, a tombstone (date, reason) stays."""
        with self._mutex:
            self._require_writer()
            self._check_text("The reason", reason, self.limits.max_field_chars)
            patient, has_adapter, _stamp = self._read_record(patient_id)
            note = self._live_note(patient, note_id)
            patient.notes.remove(note)
            patient.deleted_notes.append(
                NoteTombstone(id=note.id, created=note.created, reason=reason.strip())
            )
            return self._rewrite(patient, has_adapter)

    @staticmethod
    def _live_note(patient: Patient, note_id: str) -> Note:
        try:
            return patient.note(note_id)
        except KeyError:
            gone = any(t.id == note_id for t in patient.deleted_notes)
            raise InputRejected(
                "That note was deleted." if gone else f"No note with id {note_id!r}."
            ) from None

    def _rewrite(self, patient: Patient, has_adapter: bool) -> Patient:
        patient.updated = max(utcnow(), patient.updated)
        with self._changing(defer=True):
            stamp = self._write_record(patient, has_adapter)
            self._index.upsert(self._summary_of(patient, has_adapter), stamp)
        return patient

    def set_has_adapter(self, patient_id: str, value: bool) -> None:
        """Record whether the patient has a trained adapter (shown in the list)."""
        with self._mutex:
            self._require_writer()
            patient, has_adapter, _stamp = self._read_record(patient_id)
            if has_adapter == value and patient_id in self._index:
                return
            with self._changing(defer=False):
                stamp = self._write_record(patient, value)
                self._index.upsert(self._summary_of(patient, value), stamp)
