"""Every key binding of the app, with a stable id, in one table.

The ids are what a counselor puts in ``settings.json`` under ``keymap`` to remap a key
(``{"keymap": {"draft.edit": "f2"}}``); Textual's keymap support (``App.set_keymap``)
applies them. The same table feeds the command palette, so every action is reachable
by name as well as by key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from textual.binding import Binding

Scope = Literal[
    "app", "unlock", "workspace", "patients", "analysis", "draft", "chat", "similar", "train"
]


@dataclass(frozen=True)
class ActionSpec:
    """One user-facing action: its binding id, default key(s), and where it lives."""

    id: str
    key: str
    action: str
    description: str
    help: str
    scope: Scope
    show: bool = True
    priority: bool = False
    palette: bool = True
    short: str = ""  # the Footer's label where the description is too long for 80 columns

    def binding(self) -> Binding:
        return Binding(
            self.key,
            self.action,
            self.short or self.description,
            show=self.show,
            priority=self.priority,
            id=self.id,
            tooltip=self.help,
        )


ACTIONS: tuple[ActionSpec, ...] = (
    # app
    ActionSpec(
        "app.quit", "ctrl+q", "quit", "Quit", "Save the draft, lock and quit", "app", priority=True
    ),
    ActionSpec("app.lock", "ctrl+l", "lock", "Lock", "Lock the vault now", "app"),
    ActionSpec(
        "app.theme", "f9", "change_theme", "Theme", "Pick a colour theme", "app", show=False
    ),
    ActionSpec(
        "app.backup",
        "alt+b",  # F8 is the Similar tab
        "backup_now",
        "Back up now",
        "Send an encrypted snapshot of the vault to every backup target (in the background)",
        "app",
        show=False,
    ),
    # workspace
    ActionSpec(
        "workspace.new_patient",
        "ctrl+n",
        "new_patient",
        "New patient",
        "Create a patient with the five basic-information fields",
        "workspace",
    ),
    ActionSpec(
        "workspace.search",
        "ctrl+f",
        "focus_search",
        "Search",
        "Search patients by name",
        "workspace",
    ),
    ActionSpec(
        "workspace.toggle_patients",
        "ctrl+b",
        "toggle_patients",
        "Patients",
        "Show or hide the patient list",
        "workspace",
        show=False,
    ),
    ActionSpec(
        "workspace.show_notes",
        "f2",
        "show_tab('notes')",
        "Notes",
        "Show the patient's basic information and notes",
        "workspace",
        show=False,  # the key is in the tab's title
    ),
    ActionSpec(
        "workspace.show_analysis",
        "f3",
        "show_tab('analysis')",
        "Analysis",
        "Write the counseling question and draft an analysis",
        "workspace",
        show=False,  # the key is in the tab's title
    ),
    ActionSpec(
        "workspace.show_draft",
        "f4",
        "show_tab('draft')",
        "Draft",
        "Review and edit the drafted analysis",
        "workspace",
        show=False,  # the key is in the tab's title
    ),
    ActionSpec(
        "workspace.show_chat",
        "f5",
        "show_tab('chat')",
        "Chat",
        "Talk with the model about this patient",
        "workspace",
        show=False,  # the key is in the tab's title
    ),
    ActionSpec(
        "workspace.show_similar",
        "f8",  # F6/F7 select a line / all in a TextArea (the question field)
        "show_tab('similar')",
        "Similar",
        "Similar own cases and reference answers for the current statement",
        "workspace",
        show=False,  # the key is in the tab's title
    ),
    ActionSpec(
        "workspace.generate",
        "ctrl+g",
        "generate",
        "Generate",
        "Draft an analysis of the counseling question",
        "workspace",
    ),
    ActionSpec(
        "workspace.cancel",
        "escape",
        "cancel_generation",
        "Stop",
        "Stop the running generation and keep what came",
        "workspace",
    ),
    ActionSpec(
        "workspace.train",
        "ctrl+t",
        "train",
        "Train",
        "Train this patient's adapter on their notes",
        "workspace",
        show=False,
    ),
    ActionSpec(
        "workspace.rollback_adapter",
        "alt+r",  # not f6/f7 (a TextArea's) nor ctrl+r (the browser's reload under serve)
        "rollback_adapter",
        "Roll back adapter",
        "Use this patient's previous adapter version (phyassist adapter rollback)",
        "workspace",
        show=False,
    ),
    ActionSpec(
        "workspace.compare",
        "alt+c",  # F8 is the Similar tab
        "compare",
        "Compare drafts",
        "Draft the question with the domain model and the patient's adapter, side by side",
        "workspace",
        show=False,
    ),
    # draft pane (active while the draft list has focus)
    ActionSpec("draft.edit", "e", "edit_item", "Edit", "Edit the selected item in place", "draft"),
    ActionSpec("draft.add", "a", "add_item", "Add", "Add an item after the selected one", "draft"),
    ActionSpec(
        "draft.delete",
        "d",
        "delete_item",
        "Delete",
        "Delete (or restore) the selected item",
        "draft",
    ),
    ActionSpec(
        "draft.comment",
        "c",
        "comment_item",
        "Comment",
        "Comment on the selected item to guide regeneration",
        "draft",
    ),
    ActionSpec(
        "draft.regenerate_item",
        "r",
        "regenerate_item",
        "Regen item",
        "Regenerate the selected item using its comments",
        "draft",
        short="Regen",
    ),
    ActionSpec(
        "draft.regenerate_all",
        "R",
        "regenerate_all",
        "Regen all",
        "Regenerate the whole draft using all comments",
        "draft",
    ),
    ActionSpec(
        "draft.save",
        "ctrl+s",
        "save_note",
        "Save note",
        "Save the draft into a new dated note",
        "draft",
    ),
    ActionSpec(
        "draft.open_citation",
        "o",
        "open_citation",
        "Sources",
        "Open what the selected item's [n] citation markers point to",
        "draft",
    ),
    # similar pane (knowledge query)
    ActionSpec(
        "similar.open",
        "enter",
        "open_entry",
        "Open",
        "Open the selected similar entry in full",
        "similar",
    ),
    ActionSpec(
        "similar.insert",
        "i",
        "insert_point",
        "Insert cited",
        "Insert the selected entry's point into the draft's advice, with its citation",
        "similar",
    ),
    ActionSpec(
        "similar.refresh",
        "r",  # not ctrl+r: the browser's reload under `phyassist serve`
        "refresh_similar",
        "Refresh",
        "Look up similar entries for the current statement again",
        "similar",
    ),
    # chat pane
    ActionSpec(
        "chat.copy",
        "ctrl+y",
        "copy_message",
        "Copy",
        "Copy the selected (or last) reply to the clipboard (OSC 52)",
        "chat",
    ),
    ActionSpec(
        "chat.clear",
        "ctrl+k",
        "clear_chat",
        "Clear chat",
        "Start a new conversation for this patient",
        "chat",
        show=False,
    ),
    # train screen
    ActionSpec(
        "train.cancel",
        "escape",
        "cancel_training",
        "Stop / close",
        "Stop training (the previous adapter stays active)",
        "train",
        palette=False,
    ),
)

_BY_ID = {spec.id: spec for spec in ACTIONS}


def bindings_for(scope: Scope) -> list[Binding]:
    """The ``BINDINGS`` list for the widget or screen that owns ``scope``."""
    return [spec.binding() for spec in ACTIONS if spec.scope == scope]


def specs_for(scopes: Iterable[Scope]) -> list[ActionSpec]:
    wanted = set(scopes)
    return [spec for spec in ACTIONS if spec.scope in wanted and spec.palette]


def spec(binding_id: str) -> ActionSpec:
    return _BY_ID[binding_id]


def keymap_from_settings(keymap: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """Split the user's keymap into the entries we know and the ids we do not.

    Unknown ids are reported back (the app shows them) rather than silently ignored, so a
    typo in ``settings.json`` does not look like a broken key.
    """
    known: dict[str, str] = {}
    unknown: list[str] = []
    for binding_id, keys in keymap.items():
        if binding_id in _BY_ID and isinstance(keys, str) and keys.strip():
            known[binding_id] = keys.strip()
        else:
            unknown.append(binding_id)
    return known, unknown
