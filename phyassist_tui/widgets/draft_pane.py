"""The drafted Analysis and Advice as an editable list.

Each row is one ``Item``. Edits happen in place (an input opens inside the row); edited
items show an inline diff of the model's original against the counselor's text, which is
exactly the pair kept for training. Regeneration and saving are requests to the screen,
which owns the model and the vault.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.message import Message
from textual.widgets import Input, Label, ListItem, ListView, Static

from engine.records import AnalysisDraft, Citation, Item
from phyassist_tui.bindings import bindings_for, specs_for
from phyassist_tui.focus import TextInput
from phyassist_tui.messages import (
    DraftChanged,
    RegenerateAllRequested,
    RegenerateItemRequested,
    SaveNoteRequested,
)
from phyassist_tui.widgets.text import clean, word_diff

EditMode = Literal["edit", "comment"]
_DRAFT_ACTIONS = frozenset(spec.action for spec in specs_for(["draft"]))
SECTION_TITLES = {
    "symptom_type": "Symptom Type",
    "reasons": "Reasons",
    "advice": "Advice",
    "unplaced": "Not placed by the parser",
}


MOVE_TARGETS = ("reasons", "advice")  # where an item can be moved (m)
UNDO_DEPTH = 10  # destructive steps (delete, regenerate) that u can take back


def unsaved_edits(draft: AnalysisDraft | None) -> int:
    """How many items the counselor changed (edited, added or deleted) in ``draft``."""
    if draft is None:
        return 0
    items = [draft.symptom_type, *draft.reasons, *draft.advice, *draft.unplaced]
    return sum(1 for i in items if i.edited or i.deleted or (i.added_by_counselor and i.text))


class SectionHeader(ListItem):
    """A section's title; selectable, so ``a`` adds to this section even when it is empty."""

    def __init__(self, section: str, empty: bool = False) -> None:
        super().__init__(classes="section-header")
        self.section = section
        self.empty = empty

    def compose(self) -> ComposeResult:
        title = SECTION_TITLES[self.section]
        if self.empty and self.section in MOVE_TARGETS:
            yield Label(
                Content.assemble(title, ("  (none; a adds one)", "dim italic")), markup=False
            )
        else:
            yield Label(title, markup=False)


class DraftList(ListView):
    """The draft's rows; Home/End/PgUp/PgDn move the selection, not just the view, so the
    next edit goes to the row that is shown as selected."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("home", "first", "First", show=False),
        Binding("end", "last", "Last", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
    ]

    def action_first(self) -> None:
        if len(self):
            self.index = 0

    def action_last(self) -> None:
        if len(self):
            self.index = len(self) - 1

    def action_page(self, direction: int) -> None:
        if not len(self):
            return
        step = max(1, self.scrollable_content_region.height // 2)
        current = self.index or 0
        self.index = max(0, min(len(self) - 1, current + direction * step))


class ItemEditor(TextInput):
    """The in-place editor; Enter keeps, Esc abandons."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "abandon", "Cancel edit", id="draft.editor_cancel")
    ]

    def __init__(self, mode: EditMode, value: str) -> None:
        placeholder = "Comment to guide regeneration" if mode == "comment" else "Item text"
        # the cursor goes to the end, nothing selected: the first key must not replace the text
        super().__init__(
            value=value,
            placeholder=placeholder,
            classes=f"editor {mode}",
            select_on_focus=False,
        )
        self.mode = mode
        self.cursor_position = len(value)

    def action_abandon(self) -> None:
        row = self.parent
        self.remove()
        if isinstance(row, ItemRow):
            row.editing = False
            row.post_message(ItemRow.EditAbandoned(row))


class ItemRow(ListItem):
    """One item: number, text, inline diff when edited, comments."""

    @dataclass
    class EditAbandoned(Message):
        row: ItemRow

    def __init__(self, section: str, item: Item, number: int) -> None:
        super().__init__(classes="item-row")
        self.section = section
        self.item = item
        self.number = number
        self.editing = False
        self.streaming: str | None = None

    def compose(self) -> ComposeResult:
        # The number in its own column: a long item wraps under its text (a hanging indent),
        # and a Chinese item, one unbroken run to the wrapper, starts on the number's line.
        with Horizontal(classes="item-line"):
            yield Static(self.number_label(), classes="item-number", markup=False)
            yield Static(self.body(), classes="item-body", markup=False)

    def number_label(self) -> str:
        if self.section == "symptom_type" or self.streaming is not None:
            return ""
        return "✗ " if self.item.deleted else f"{self.number}. "

    def body(self) -> Content:
        item = self.item
        if self.streaming is not None:
            return Content.assemble(("⟳ ", "$accent"), clean(self.streaming).strip() or "…")
        text = clean(item.text).strip()  # the model's blank lines would leave a gap
        if not text and self.section == "symptom_type":  # the model named none
            return Content.assemble(("(none drafted; e writes one)", "dim italic"))
        text = text or "(empty)"
        if item.deleted:
            line = Content.assemble((text, "strike $text-muted"), (" deleted", "dim"))
        else:
            marker = " +" if item.added_by_counselor else (" ✎" if item.edited else "")
            line = Content.assemble(text, (marker, "$accent"))
        lines = [line]
        if item.edited and not item.deleted and item.draft is not None:
            lines.append(Content.assemble(("Δ ", "dim"), word_diff(item.draft, item.text)))
        lines.extend(
            Content.assemble(("» ", "$accent"), (clean(c), "italic")) for c in item.comments
        )
        return Content("\n").join(lines)

    def refresh_body(self) -> None:
        self.query_one(".item-number", Static).update(self.number_label())
        self.query_one(".item-body", Static).update(self.body())

    async def start_edit(self, mode: EditMode) -> ItemEditor:
        """Open the editor and focus it before the next key is handled.

        Awaiting the mount and focusing directly (not via ``focus()``'s deferred call) means
        keys typed right after ``e``/``c``/``a`` land in the editor, not on the list's
        one-letter bindings, even when the terminal delivers them in one burst.
        """
        self.editing = True
        editor = ItemEditor(mode, self.item.text if mode == "edit" else "")
        await self.mount(editor)
        self.screen.set_focus(editor)
        editor.action_end()  # the view shows the end of a long text, where the cursor is
        return editor


class DraftPane(Vertical):
    """The editable draft; posts ``DraftChanged`` after every change (for the autosave)."""

    BINDINGS = bindings_for("draft")

    DEFAULT_CSS = """
    DraftPane { height: 1fr; }
    DraftPane > #draft-empty { padding: 1 2; color: $text-muted; }
    DraftPane > #draft-caveat { height: auto; padding: 0 1; color: $warning; display: none; }
    DraftPane > ListView { height: 1fr; }
    DraftPane .section-header { color: $text-primary; text-style: bold; background: $boost; }
    DraftPane .item-row { padding: 0 1; }
    DraftPane .item-line { height: auto; }
    DraftPane .item-number { width: auto; }
    DraftPane .item-body { width: 1fr; }
    DraftPane ItemEditor { margin: 0 0 0 2; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.draft: AnalysisDraft | None = None
        self.busy = False  # a regeneration is streaming
        self.undo_stack: list[tuple[str, AnalysisDraft]] = []  # (what was done, draft before)
        self.caveat = ""  # the warning shown above the items (show_caveat)

    def compose(self) -> ComposeResult:
        from phyassist_tui.bindings import key_display

        yield Static(
            "No draft yet. Write the counseling question "
            f"({key_display(self.app, 'workspace.show_analysis')}) and press "
            f"{key_display(self.app, 'workspace.generate')}.",
            id="draft-empty",
        )
        yield Static("", id="draft-caveat", markup=False)
        yield DraftList(id="draft-items")

    def on_mount(self) -> None:
        self.query_one(ListView).display = False

    # -- building ------------------------------------------------------------------------------
    async def load(self, draft: AnalysisDraft | None, focus_item: str | None = None) -> None:
        """Show ``draft`` (or the empty hint); keeps the cursor on ``focus_item`` if given."""
        self.draft = draft
        listing = self.query_one(ListView)
        self.query_one("#draft-empty").display = draft is None
        listing.display = draft is not None
        keep = focus_item or self.selected_item_id
        await listing.clear()
        if draft is None:
            self.undo_stack.clear()  # saved or another patient: nothing left to take back
            self.show_caveat("")
            return
        rows: list[ListItem] = []
        for section in ("symptom_type", "reasons", "advice", "unplaced"):
            items = [draft.symptom_type] if section == "symptom_type" else getattr(draft, section)
            if section == "unplaced" and not items:
                continue
            rows.append(SectionHeader(section, empty=not items))
            number = 0
            for item in items:
                number += 0 if item.deleted else 1
                rows.append(ItemRow(section, item, number))
        await listing.extend(rows)
        index = next(
            (i for i, r in enumerate(rows) if isinstance(r, ItemRow) and r.item.id == keep),
            1,
        )
        listing.index = index

    def show_caveat(self, text: str) -> None:
        """A warning that stays above the items while it holds (a quote that is not the
        statement's words): a notification is gone in seconds, the draft stays."""
        self.caveat = text
        note = self.query_one("#draft-caveat", Static)
        note.update(f"⚠ {text}" if text else "")
        note.display = bool(text)

    @property
    def selected_row(self) -> ItemRow | None:
        row = self.query_one(ListView).highlighted_child
        return row if isinstance(row, ItemRow) else None

    def target_row(self, verb: str) -> ItemRow | None:
        """The row an item command acts on. On the Symptom Type heading that is its one item;
        on another heading there is none, and the counselor is told why nothing happened
        (Home selects the first heading: ``e`` there used to do nothing, silently)."""
        row = self.query_one(ListView).highlighted_child
        if isinstance(row, ItemRow):
            return row
        if isinstance(row, SectionHeader) and self.draft is not None:
            if row.section == "symptom_type":
                return next((r for r in self.query(ItemRow) if r.section == "symptom_type"), None)
            self.notify(f"Select an item to {verb} (↑/↓); on a heading, a adds one.")
        return None

    @property
    def selected_section(self) -> str | None:
        """The section of the selected row, or of the selected section header."""
        row = self.query_one(ListView).highlighted_child
        return getattr(row, "section", None)

    @property
    def selected_item_id(self) -> str | None:
        row = self.selected_row
        return row.item.id if row else None

    def row_for(self, item_id: str) -> ItemRow | None:
        for row in self.query(ItemRow):
            if row.item.id == item_id:
                return row
        return None

    def focus_list(self) -> None:
        self.query_one(ListView).focus()

    def _changed(self) -> None:
        if self.draft is not None:
            self.post_message(DraftChanged(self.draft))

    @property
    def editing(self) -> bool:
        return any(row.editing for row in self.query(ItemRow))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "undo" and not self.busy and not self.editing:
            return True  # also after a regeneration replaced the draft
        # While an editor is open its letters are text, never list commands (keys typed in
        # a burst right after 'e' may still be on their way through the list). Hidden, not
        # greyed: at 80 columns the Footer then has room for Esc (Stop) during generation.
        return not (action in _DRAFT_ACTIONS and (self.draft is None or self.busy or self.editing))

    # -- actions -------------------------------------------------------------------------------
    async def action_edit_item(self) -> None:
        row = self.target_row("edit")
        if row is None or row.editing:
            return
        if row.item.deleted:
            self.notify("Restore the item (d) before editing it.", severity="warning")
            return
        await row.start_edit("edit")

    async def action_comment_item(self) -> None:
        row = self.target_row("comment on")
        if row is not None and not row.editing:
            await row.start_edit("comment")

    async def action_add_item(self) -> None:
        if self.draft is None:
            return
        row = self.selected_row
        section = self.selected_section
        section = section if section in MOVE_TARGETS else "reasons"
        items: list[Item] = getattr(self.draft, section)
        new = Item(text="", draft=None)
        position = len(items)
        if row is None:  # on the section's header: the new item comes first
            position = 0
        elif row.section == section:
            position = next(i for i, it in enumerate(items) if it.id == row.item.id) + 1
        items.insert(position, new)
        await self.load(self.draft, focus_item=new.id)
        added = self.row_for(new.id)
        if added is not None:
            await added.start_edit("edit")

    async def action_delete_item(self) -> None:
        row = self.target_row("delete")
        if row is None or self.draft is None:
            return
        if row.section == "symptom_type":
            self.notify(
                "The symptom type cannot be deleted; edit it instead (e).", severity="warning"
            )
            return
        self.remember("delete")
        items: list[Item] = getattr(self.draft, row.section)
        if row.item.added_by_counselor:
            items.remove(row.item)
        else:
            row.item.deleted = not row.item.deleted
        await self.load(self.draft, focus_item=row.item.id)
        self._changed()

    def action_regenerate_item(self) -> None:
        row = self.target_row("regenerate")
        if row is None:
            return
        if row.item.deleted:
            self.notify("Restore the item (d) before regenerating it.", severity="warning")
            return
        self.post_message(RegenerateItemRequested(row.section, row.item.id))

    def action_regenerate_all(self) -> None:
        edits = unsaved_edits(self.draft)
        if not edits:
            self.post_message(RegenerateAllRequested())
            return
        from phyassist_tui.screens.confirm import ConfirmScreen

        def answer(yes: bool | None) -> None:
            if yes:
                self.post_message(RegenerateAllRequested())

        self.app.push_screen(
            ConfirmScreen(
                f"Regenerating replaces the whole draft, with your {edits} edit"
                f"{'s' if edits != 1 else ''}. Comments guide the new draft; u undoes it. "
                "Regenerate?",
                yes="Regenerate",
                no="Keep",
            ),
            answer,
        )

    async def action_move_item(self) -> None:
        """Move the selected item into another section (e.g. an unplaced line into Advice)."""
        row = self.selected_row
        if row is None or self.draft is None or row.section == "symptom_type":
            self.notify("Select a reason, advice or unplaced item to move.", severity="warning")
            return
        targets = [s for s in MOVE_TARGETS if s != row.section]
        from phyassist_tui.screens.choose import ChooseScreen

        async def chosen(target: str | None) -> None:
            if target is None or self.draft is None:
                return
            self.remember("move")
            getattr(self.draft, row.section).remove(row.item)
            getattr(self.draft, target).append(row.item)
            await self.load(self.draft, focus_item=row.item.id)
            self._changed()

        self.app.push_screen(
            ChooseScreen("Move the item to", [(t, SECTION_TITLES[t]) for t in targets]),
            chosen,
        )

    def remember(self, what: str) -> None:
        """Keep the draft as it is now, so ``u`` can take back the step about to happen."""
        if self.draft is None:
            return
        self.undo_stack.append((what, self.draft.model_copy(deep=True)))
        del self.undo_stack[:-UNDO_DEPTH]

    async def action_undo(self) -> None:
        if not self.undo_stack:
            self.notify("Nothing to undo.", severity="warning")
            return
        what, before = self.undo_stack.pop()
        keep = self.selected_item_id
        await self.load(before, focus_item=keep)
        self._changed()
        self.notify(f"Undone: {what}.")

    def action_save_note(self) -> None:
        if self.draft is not None:
            self.post_message(SaveNoteRequested(self.draft))

    # -- citations (knowledge query) -----------------------------------------------------------
    async def add_cited_item(self, text: str, citation: Citation) -> bool:
        """Append ``text`` to the advice with a ``[n]`` marker citing ``citation``; the item
        counts as the counselor's (no model draft). False when there is no draft."""
        if self.draft is None:
            return False
        known = {c.key: c.marker for c in self.draft.citations}
        marker = known.get(citation.key)
        if marker is None:
            numbers = [int(c.marker) for c in self.draft.citations if c.marker.isdigit()]
            marker = str(max(numbers, default=0) + 1)
            self.draft.citations.append(citation.model_copy(update={"marker": marker}))
        item = Item(text=f"{text.strip()} [{marker}]", draft=None)
        self.draft.advice.append(item)
        await self.load(self.draft, focus_item=item.id)
        self._changed()
        return True

    def action_open_citation(self) -> None:
        from engine.knowledge.grounding import markers_in
        from phyassist_tui.screens.entry import EntryScreen

        row = self.selected_row
        if row is None or self.draft is None:
            return
        by_marker = {c.marker: c for c in self.draft.citations}
        cited = [by_marker[m] for m in dict.fromkeys(markers_in(row.item.text)) if m in by_marker]
        if not cited:
            self.notify("This item cites nothing.", severity="information")
            return
        session = self.app.session

        def full(citation: Citation) -> str:
            entry = session.knowledge_entry(citation.key)  # None until the index was read
            if entry is not None:
                return entry.text
            if citation.passage:
                return citation.passage
            if citation.source == "note":
                return "(That case is no longer in the index: deleted, or the index not read yet.)"
            return ""

        body = "\n\n".join(f"[{c.marker}] {c.label}\n{full(c)}" for c in cited)
        self.app.push_screen(EntryScreen("Sources of this item", row.item.text, body))

    # -- in-place editor -----------------------------------------------------------------------
    @on(Input.Submitted, "ItemEditor")
    async def _editor_done(self, event: Input.Submitted) -> None:
        event.stop()
        editor = event.input
        assert isinstance(editor, ItemEditor)
        row = editor.parent
        if not isinstance(row, ItemRow):
            return
        value = clean(event.value).strip()
        if editor.mode == "comment":
            if value:
                row.item.comments.append(value)
        elif value:
            row.item.text = value
        elif row.section == "symptom_type":
            if row.item.text:
                self.notify(
                    "The symptom type cannot be empty; it is unchanged.", severity="warning"
                )
        elif row.item.added_by_counselor and not row.item.text:
            await self._drop_empty(row)
            return
        else:
            self.notify("An item cannot be empty; delete it instead (d).", severity="warning")
        row.editing = False
        await editor.remove()
        row.refresh_body()
        self.focus_list()
        self._changed()

    @on(ItemRow.EditAbandoned)
    async def _editor_abandoned(self, event: ItemRow.EditAbandoned) -> None:
        event.stop()
        row = event.row
        if (
            row
            and row.section != "symptom_type"  # one fixed item, never dropped
            and row.item.added_by_counselor
            and not row.item.text
        ):
            await self._drop_empty(row)
        self.focus_list()

    async def _drop_empty(self, row: ItemRow) -> None:
        assert self.draft is not None
        getattr(self.draft, row.section).remove(row.item)
        await self.load(self.draft)
        self.focus_list()
