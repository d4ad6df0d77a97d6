"""What the store accepts: length limits, valid text, names without control characters.

Every check raises :class:`~engine.errors.InputRejected` with a message that says what to
change and that nothing was saved. The counselor's own text is bounded by
``Settings.limits``; what the model wrote has generous fixed bounds.
"""

from __future__ import annotations

import unicodedata

from engine.errors import InputRejected
from engine.records import BASIC_FIELDS, BasicInfo, Item, Note, Patient
from engine.settings import Limits

# Generous bounds for text the model writes (the counselor's own text uses Settings.limits).
MAX_RAW_OUTPUT_CHARS = 200_000
MAX_COMMENTS_PER_ITEM = 100
_CONTROL = {"Cc", "Cf", "Zl", "Zp"}


class RecordChecks:
    """Input validation: a base of :class:`~engine.vault.store.Store` (it provides
    ``settings``)."""

    @property
    def limits(self) -> Limits:
        return self.settings.limits

    @staticmethod
    def _check_text(label: str, text: str | None, limit: int) -> None:
        if text is None:
            return
        if len(text) > limit:
            raise InputRejected(
                f"{label} is {len(text):,} characters long; the limit is {limit:,}. "
                "Shorten it and try again (nothing was saved)."
            )
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise InputRejected(
                    f"{label} holds bytes that are not valid text (invalid UTF-8 or a lone "
                    "surrogate). Retype it; nothing was saved."
                ) from None

    def _clean_name(self, name: str) -> str:
        name = unicodedata.normalize("NFC", name or "").strip()
        if not name:
            raise InputRejected("A patient needs a name (it cannot be empty).")
        self._check_text("The name", name, self.limits.max_name_chars)
        if any(unicodedata.category(ch) in _CONTROL for ch in name):
            raise InputRejected("The name cannot contain line breaks or control characters.")
        return name

    def _check_basic(self, basic: BasicInfo) -> None:
        for field, (label, _zh) in BASIC_FIELDS.items():
            self._check_text(
                f"Basic information '{label}'", getattr(basic, field), self.limits.max_field_chars
            )

    def _check_item(self, where: str, item: Item) -> None:
        limit = self.limits.max_field_chars
        self._check_text(where, item.text, limit)
        self._check_text(f"{where} (model draft)", item.draft, limit)
        if len(item.comments) > MAX_COMMENTS_PER_ITEM:
            raise InputRejected(f"{where} has more than {MAX_COMMENTS_PER_ITEM} comments.")
        for comment in item.comments:
            self._check_text(f"A comment on {where.lower()}", comment, limit)

    def _check_note(self, note: Note, *, new: bool) -> None:
        if new and not note.question.strip():
            raise InputRejected("A note needs the client's statement (it cannot be empty).")
        self._check_text("The client's statement", note.question, self.limits.max_statement_chars)
        self._check_text("The observed state", note.observed_state, self.limits.max_field_chars)
        analysis = note.analysis
        self._check_item("The symptom type", analysis.symptom_type)
        for section in ("reasons", "advice", "unplaced"):
            items = getattr(analysis, section)
            if len(items) > self.limits.max_items_per_section:
                raise InputRejected(
                    f"{section.capitalize()} has {len(items)} items; the limit is "
                    f"{self.limits.max_items_per_section}. Merge some; nothing was saved."
                )
            for number, item in enumerate(items, start=1):
                self._check_item(f"{section.capitalize()} item {number}", item)
        self._check_text("The model output", analysis.raw_output, MAX_RAW_OUTPUT_CHARS)
        self._check_text("The model name", analysis.model_name, self.limits.max_field_chars)

    def _check_patient(self, patient: Patient) -> None:
        clean = self._clean_name(patient.name)
        if clean != patient.name:
            patient.name = clean
        self._check_basic(patient.basic)
        for note in patient.notes:
            self._check_note(note, new=False)
