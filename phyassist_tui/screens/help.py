"""F1: the first five minutes: the flow from a patient to a trained adapter, and every key.

The keys are read from the bindings table as remapped in settings (and as in a browser), so
what the help says is what works.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

from phyassist_tui.bindings import ACTIONS, ActionSpec, pretty_key, spec

SCOPE_TITLES = {
    "app": "Anywhere",
    "workspace": "Workspace",
    "draft": "Draft list (F4)",
    "chat": "Chat (F5)",
    "train": "Training screen",
}

FLOW = (
    (
        "workspace.new_patient",
        "Patient",
        "create one (name + five basic-information fields), "
        "or pick one on the left and press Enter",
    ),
    (
        "workspace.show_analysis",
        "Statement",
        "write the client's statement (and what you observed) in the Analysis tab",
    ),
    ("workspace.generate", "Generate", "the local model drafts Symptom type, Reasons and Advice"),
    (
        "workspace.show_draft",
        "Edit",
        "e edit · a add (to the selected section) · d delete · "
        "c comment · r / R regenerate · m move · u undo",
    ),
    ("draft.save", "Save", "the draft becomes a dated note; the model's original is kept too"),
    (
        "workspace.train",
        "Train",
        "the patient's own adapter learns from the notes and your "
        "edits; it is used whenever the patient is opened",
    ),
)


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,f1,q", "close", "Close", id="help.close"),
    ]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 100%; max-width: 96; height: 100%; max-height: 40;
        border: round $accent; background: $surface; padding: 0 1;
    }
    HelpScreen .help-title { text-style: bold; color: $text-primary; margin-top: 1; }
    """

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-body") as body:
            body.border_title = "PhyAssist help (Esc closes)"
            yield Static("The flow", classes="help-title")
            yield Static(self._flow(), markup=False, id="help-flow")
            by_scope: dict[str, list[ActionSpec]] = {}
            for action in ACTIONS:
                by_scope.setdefault(action.scope, []).append(action)
            for scope, title in SCOPE_TITLES.items():
                yield Static(title, classes="help-title")
                yield Static(self._keys(by_scope.get(scope, [])), markup=False)
            yield Static("Everything else", classes="help-title")
            yield Static(
                f"{self.key_of('app.help')} this help · Ctrl+P every action by name · "
                "your notes, drafts, chats and adapters are encrypted; Lock (or the idle "
                "lock) saves the draft and closes the vault.",
                markup=False,
            )

    def key_of(self, binding_id: str) -> str:
        """The key as the counselor presses it (settings keymap, browser keys included)."""
        keys = self.app._keymap.get(binding_id, spec(binding_id).key).split(",")
        return " / ".join(pretty_key(k.strip()) for k in keys if k.strip())

    def _flow(self) -> Content:
        lines = []
        for number, (binding_id, step, what) in enumerate(FLOW, start=1):
            lines.append(
                Content.assemble(
                    f"{number}. ", (step, "bold"), f" ({self.key_of(binding_id)}): ", what
                )
            )
        return Content("\n").join(lines)

    def _keys(self, actions: list[ActionSpec]) -> Content:
        return Content("\n").join(
            Content.assemble((f"{self.key_of(a.id):>10}", "bold $accent"), f"  {a.help}")
            for a in actions
        )

    def action_close(self) -> None:
        self.dismiss(None)
