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
    web_key: str = ""  # the key in a browser (``phyassist serve``) where ``key`` is the browser's
    footer_rank: int = 50  # lower comes first in the Footer (which cuts off on the right)

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
        "app.quit",
        "ctrl+q",
        "quit",
        "Quit",
        "Save the draft, lock and quit",
        "app",
        priority=True,
        footer_rank=90,
    ),
    ActionSpec("app.lock", "ctrl+l", "lock", "Lock", "Lock the vault now", "app", footer_rank=3),
    ActionSpec(
        "app.help",
        "f1",
        "help",
        "Help",
        "How to use PhyAssist: the flow from patient to trained adapter, and every key",
        "app",
        footer_rank=4,
    ),
    ActionSpec(
        "app.theme", "f9", "change_theme", "Theme", "Pick a colour theme", "app", show=False
    ),
    ActionSpec(
        "app.backup",
        # palette first (Ctrl+P "Back up now"); F8 is the workspace's. Not Alt+B: a terminal
        # sends it as ESC b, which Textual reads as Ctrl+Left (word left), so it never arrived
        "alt+s",
        "backup_now",
        "Back up now",
        "Send an encrypted snapshot of the vault to every backup target (in the background)",
        "app",
        show=False,
    ),
    ActionSpec(
        "app.risk_probe",
        "alt+k",
        "toggle_risk_probe",
        "Risk check: statement probe on/off",
        "Also read each statement whole with the embedded model's probe: more indirect risk "
        "found, more false flags (off by default; SECURITY.md)",
        "app",
        show=False,
    ),
    # workspace
    ActionSpec(
        "workspace.new_patient",
        "ctrl+n,f6",
        "new_patient",
        "New patient",
        "Create a patient with the five basic-information fields",
        "workspace",
        web_key="f6",  # a browser opens a new window on Ctrl+N
        footer_rank=20,
    ),
    ActionSpec(
        "workspace.search",
        "ctrl+f",
        "focus_search",
        "Search",
        "Search patients by name",
        "workspace",
        footer_rank=21,
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
        footer_rank=1,
    ),
    ActionSpec(
        "workspace.cancel",
        "escape",
        "cancel_generation",
        "Stop",
        "Stop the running generation and keep what came",
        "workspace",
        footer_rank=0,
    ),
    ActionSpec(
        "workspace.train",
        "ctrl+t,f7",
        "train",
        "Train",
        "Train this patient's adapter on their notes",
        "workspace",
        show=False,
        web_key="f7",  # a browser opens a new tab on Ctrl+T
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
    ActionSpec(
        "draft.add",
        "a",
        "add_item",
        "Add",
        "Add an item to the selected section (after the selected item)",
        "draft",
    ),
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
        short="Regen all",
        footer_rank=60,
    ),
    ActionSpec(
        "draft.move",
        "m",
        "move_item",
        "Move item",
        "Move the selected item to another section (e.g. an unplaced line to Advice)",
        "draft",
        show=False,
    ),
    ActionSpec(
        "draft.undo",
        "u",
        "undo",
        "Undo",
        "Take back the last delete, move or regeneration of the draft",
        "draft",
        show=False,  # in the Help (F1) and the palette; the Footer keeps room for Save
    ),
    ActionSpec(
        "draft.save",
        "ctrl+s",
        "save_note",
        "Save note",
        "Save the draft into a new dated note",
        "draft",
        short="Save",
        footer_rank=2,
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
    # patient list
    ActionSpec(
        "patients.open",
        "enter",
        "open_patient",
        "Open",
        "Open the highlighted patient",
        "patients",
        show=False,
        palette=False,  # the palette opens patients by name (Ctrl+F)
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
        # over the chat box's own Ctrl+K (delete to the end), which took it whenever the box
        # had the focus, that is almost always in the Chat tab
        priority=True,
    ),
    # records (the Notes tab)
    ActionSpec(
        "workspace.edit_basic",
        "alt+i",  # also in the F10 menu; F8 is kept for the coming Similar tab
        "edit_basic",
        "Edit basic info",
        "Correct the open patient's name and basic information",
        "workspace",
        show=False,
    ),
    ActionSpec(
        "workspace.notes_menu",
        "f10",
        "note_actions",
        "Correct the record",
        "Amend a saved note (earlier versions kept), see its history, delete it, or edit the "
        "basic information",
        "workspace",
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
    ActionSpec(
        "train.lock",
        "ctrl+l",
        "app.lock",
        "Lock",
        "Lock the vault (asks first: locking stops the training)",
        "train",
        palette=False,
    ),
)

_BY_ID = {spec.id: spec for spec in ACTIONS}


def footer_rank(action: str) -> int:
    """Where an action's key goes in the Footer (unknown actions after ours)."""
    ranks = [spec.footer_rank for spec in ACTIONS if spec.action == action]
    return min(ranks) if ranks else 70


def web_keymap(user_keymap: Mapping[str, str]) -> dict[str, str]:
    """Keys for a browser: the browser-safe key first (it is the one hints show), the
    terminal key kept as well; what the counselor remapped in settings is left alone."""
    keymap = {}
    for spec in ACTIONS:
        if spec.web_key and spec.id not in user_keymap:
            others = [k.strip() for k in spec.key.split(",") if k.strip() != spec.web_key]
            keymap[spec.id] = ",".join([spec.web_key, *others])
    return keymap


def key_display(app: object, binding_id: str) -> str:
    """The key of a binding as the counselor sees it: as remapped in settings (or for a
    browser), the first of its keys, F-keys as printed on the keyboard (``F6``)."""
    keymap = getattr(app, "_keymap", {}) or {}
    key = keymap.get(binding_id, _BY_ID[binding_id].key).split(",")[0].strip()
    return pretty_key(key)


def pretty_key(key: str) -> str:
    """``ctrl+n`` -> ``Ctrl+N``, ``f6`` -> ``F6``, ``escape`` -> ``Esc``; a lone letter as
    typed, ``r`` -> ``r`` and ``R`` -> ``Shift+R`` (both showed as "R" in the help, where
    r regenerates one item and R the whole draft)."""
    if len(key) == 1 and key.isalpha():
        return f"Shift+{key}" if key.isupper() else key
    names = {"escape": "Esc", "enter": "Enter", "tab": "Tab", "ctrl": "Ctrl", "alt": "Alt"}
    parts = []
    for part in key.split("+"):
        if part in names:
            parts.append(names[part])
        elif len(part) == 1 or (part[:1] == "f" and part[1:].isdigit()):
            parts.append(part.upper())
        else:
            parts.append(part.capitalize())
    return "+".join(parts)


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
