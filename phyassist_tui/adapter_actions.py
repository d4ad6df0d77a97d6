"""Adapter actions of the workspace that live outside its module: roll back, Compare.

Kept apart from ``screens/workspace.py`` (which is being split) so the workspace only binds
the keys: ``action_rollback_adapter`` calls ``rollback_adapter(app, patient)``,
``action_compare`` calls ``start_compare(workspace)``.
"""

from __future__ import annotations

from typing import Any

from engine.errors import PhyAssistError
from engine.records import Patient
from phyassist_tui.widgets.text import clean


def rollback_adapter(app: Any, patient: Patient | None) -> None:
    """Ask, then make the version before the active one active and use it at once.

    The same as ``phyassist adapter rollback ID``; the Session audits it the same way."""
    if patient is None:
        app.notify("Open a patient first.", severity="warning")
        return
    session = app.session
    try:
        versions = session.adapter_versions(patient.id)  # the vault's index: fast enough here
    except PhyAssistError as exc:
        app.notify(str(exc), severity="error")
        return
    active = next((v for v in versions if v.active), None)
    older = [v for v in versions if active is not None and v.version < active.version]
    if active is None or not older:
        app.notify(
            "There is no older adapter version to roll back to."
            if active
            else "This patient has no trained adapter.",
            severity="warning",
        )
        return
    target = older[-1]
    card = target.card or {}
    what = f"{card.get('examples', '?')} notes, trained {card.get('date', '?')}"

    def answer(yes: bool | None) -> None:
        if not yes:
            return

        def work() -> None:
            try:
                _previous, version = session.rollback_adapter(patient.id, target.version)
                label = session.use_patient(patient, force=True)
            except PhyAssistError as exc:
                app.call_from_thread(app.notify, str(exc), severity="error")
                return
            if label:
                app.call_from_thread(setattr, app, "model_label", clean(label))
            app.call_from_thread(app.notify, f"Adapter v{version} is now active.")

        app.run_worker(work, thread=True, name="rollback-adapter", exit_on_error=False)

    from phyassist_tui.screens.confirm import ConfirmScreen

    app.push_screen(
        ConfirmScreen(
            f"Switch {clean(patient.name)}'s adapter from v{active.version} back to "
            f"v{target.version} ({what})?",
            yes="Roll back",
            no="Keep",
        ),
        answer,
    )


def start_compare(workspace: Any) -> None:
    """Draft the current statement with the domain model and with the patient's adapter, show
    both side by side (``CompareScreen``), store the picks, put the taken draft in the Draft tab.
    """
    from phyassist_tui.screens.compare import CompareScreen

    app = workspace.app
    patient = workspace.patient
    if patient is None:
        app.notify("Open a patient first.", severity="warning")
        return
    question = workspace.analysis.question or workspace.draft_question
    observed = workspace.analysis.observed
    if not question:
        workspace.action_show_tab("analysis")
        app.notify("Write the counseling question first.", severity="warning")
        return
    if workspace.generating is not None:
        app.notify("A generation is already running (Esc stops it).", severity="warning")
        return

    workspace._stop_prefill()  # what it read so far is kept and used
    session = app.session

    def make_pair(cancel: Any):
        return session.compare(patient, question, cancel, observed=observed)

    def store_choices(choices: list) -> int:
        return session.record_preferences(patient.id, choices)

    async def taken(draft: Any) -> None:
        if draft is None:
            return
        workspace.draft_question = question
        await workspace.draft_pane.load(draft)
        workspace.refresh_quote_caveat()
        workspace.action_show_tab("draft")
        workspace._schedule_autosave()
        if workspace.draft_pane.caveat:  # as for a generated draft: a quote of an earlier note
            app.notify(workspace.draft_pane.caveat, severity="warning", timeout=12)

    app.push_screen(
        CompareScreen(clean(patient.name), make_pair, store_choices, session.new_cancel()), taken
    )
