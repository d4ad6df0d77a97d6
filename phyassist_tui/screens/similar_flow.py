"""The workspace's side of the Similar pane: look up the current statement in the knowledge
index (in a worker) and insert a cited point into the draft.

Functions of the screen rather than methods, so the workspace keeps one-line hooks
(``_similar_requested``, ``_cited_point``) that survive it being split into modules.
"""

from __future__ import annotations

from typing import Any

from engine.errors import PhyAssistError

SIMILAR_K = 10


def current_statement(screen: Any) -> str:
    """What to look up: the question being written, else the draft's, else the last note's."""
    if screen.panes_mounted:
        question = screen.analysis.question
        if question:
            return question
    if screen.draft_question:
        return screen.draft_question
    patient = screen.patient
    if patient is not None and patient.notes:
        return patient.notes_newest_first()[0].question
    return ""


def lookup_similar(screen: Any) -> None:
    """Fill the Similar pane for the current statement (the query runs in a worker)."""
    pane = screen.query_one("#similar-pane")
    statement = current_statement(screen)
    if not statement.strip():
        pane.show_matches([], "Write the client's statement (F3) to see similar entries.")
        return
    patient_id = screen.patient.id if screen.patient is not None else None
    pane.set_status("Looking up similar cases and references…")
    app = screen.app

    def lookup() -> None:
        index = app.session.knowledge()
        if index is None:
            app.call_from_thread(pane.show_matches, [], "The knowledge index is not available.")
            return
        try:
            matches = index.query(
                statement,
                k=SIMILAR_K,
                exclude_patient=patient_id,
                mode=app.settings.knowledge.mode,
            )
        except PhyAssistError as exc:
            app.call_from_thread(pane.show_matches, [], f"Lookup failed: {exc}")
            return
        own = sum(1 for m in matches if m.entry.source == "note")
        status = (
            f"{len(matches)} similar ({own} own cases) · index: {index.note_count} notes, "
            f"{index.reference_count} reference entries · Enter opens · i inserts a cited point"
        )
        if not len(index):
            status = (
                "The index is empty: save notes, or build the reference corpus with "
                "`phyassist knowledge build --data DIR`."
            )
        elif not matches:
            status = nothing_similar(index.note_count, index.reference_count)
        app.call_from_thread(pane.show_matches, matches, status)

    screen.run_worker(lookup, name="similar-lookup", group="similar", exclusive=True, thread=True)


def nothing_similar(notes: int, references: int) -> str:
    """Why the pane is empty though the index is not, and what would fill it."""
    why = f"Nothing similar: the index holds {notes} notes (this client's own are left out)"
    if references:
        return f"{why} and {references} reference entries, none close to this statement."
    return (
        f"{why} and no reference entries: build them with "
        "`phyassist knowledge build --data DIR` (CounselChat and IMHI)."
    )


async def insert_cited_point(screen: Any, text: str, citation: Any) -> None:
    if not await screen.draft_pane.add_cited_item(text, citation):
        screen.notify(
            "No draft yet: draft an analysis (Ctrl+G) first, then insert cited points.",
            severity="warning",
        )
        return
    screen.notify(f"Added to Advice with its citation ({citation.label}).")
