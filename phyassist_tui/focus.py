"""Where typed letters go: text fields versus command keys, and Enter that moves on.

In the draft list letters are commands (``e`` edits, ``d`` deletes); in a text field they are
text. A generation that ends while the counselor types must not move the focus from one to
the other (``is_text_field``), and a field whose Enter moves on to the next one must not
keep the letters typed right after it (``HandOffInput``), and a field's own editing keys
(Backspace, Ctrl+U, arrows) must act in order with the letters around them (``KeysInOrder``).
"""

from __future__ import annotations

from textual import events
from textual.events import Focus
from textual.widget import Widget
from textual.widgets import Input


def is_text_field(widget: object) -> bool:
    """Whether ``widget`` takes typed text (an Input, or a TextArea that can be edited)."""
    if isinstance(widget, Input):
        return True
    from textual.widgets import TextArea  # not on the launch path

    return isinstance(widget, TextArea) and not widget.read_only


def type_into(widget: Widget, character: str) -> None:
    """Insert ``character`` at the cursor of an Input or a TextArea."""
    if isinstance(widget, Input):
        widget.insert_text_at_cursor(character)
    elif is_text_field(widget):
        widget.insert(character)  # type: ignore[attr-defined]


async def run_own_binding(widget: Widget, event: events.Key) -> bool:
    """Run ``widget``'s own binding for ``event`` now; whether one took the key.

    Textual types a printable key in the field's ``_on_key`` but runs a bound key (Backspace,
    Ctrl+U, Left) only after the event has bubbled up to the app. In a burst (SSH delivering
    keys together, a fast typist on a busy machine) the letters queued behind the bound key
    are typed first: "ab<Backspace>c" became "ab", and Ctrl+U then new text in the draft's
    item editor erased the new text and the edit was lost. Upstream: Textualize/textual#6605.
    Priority bindings (the app's) were checked before the key reached the field, so running the
    field's own non-priority binding here is what the app would have run, only in order.
    """
    if event.is_printable:
        return False
    for binding in widget._bindings.key_to_bindings.get(event.key, ()):
        if not binding.priority and await widget.app.run_action(binding.action, widget):
            event.stop()
            event.prevent_default()
            return True
    return False


class KeysInOrder:
    """Mixin for an Input or a TextArea: its own bound keys act in order with typed letters."""

    async def _on_key(self, event: events.Key) -> None:
        if await run_own_binding(self, event):  # type: ignore[arg-type]
            return
        await super()._on_key(event)  # type: ignore[misc]


class TextInput(KeysInOrder, Input):
    """The app's one-line text field (see ``KeysInOrder``)."""


def text_area_class() -> type:
    """``TextField``: the app's TextArea (see ``KeysInOrder``), made on first use since
    TextArea is off the launch path."""
    global _TextField
    if _TextField is None:
        from textual.widgets import TextArea

        class TextField(KeysInOrder, TextArea):
            pass

        _TextField = TextField
    return _TextField


_TextField: type | None = None


class HandOffInput(TextInput):
    """An Input whose Enter moves the focus on to another field (``hand_off_to``, a selector).

    Keys typed in a burst (fast typing, a paste, SSH delivering them together) are queued
    for this field before the screen moves the focus, and Textual runs the Enter binding
    only after them, so the letters meant for the next field landed here. Here Enter is
    handled in order with the letters, and the letters after it go to the next field.
    """

    def __init__(self, *, hand_off_to: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.hand_off_to = hand_off_to
        self._moved_on = False

    def moves_on(self) -> bool:
        """Whether Enter moves on now (a subclass may decide by the screen's state)."""
        return True

    @property
    def next_field(self) -> Widget:
        return self.screen.query_one(self.hand_off_to)

    async def enter_after_moving_on(self) -> None:
        """Enter again, still queued here: it belongs to the next field too."""
        next_field = self.next_field
        if isinstance(next_field, Input):
            await next_field.action_submit()
        else:
            type_into(next_field, "\n")  # a new line in a TextArea

    def _on_focus(self, event: Focus) -> None:
        self._moved_on = False
        super()._on_focus(event)

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()  # not the binding as well (it would run after the queued letters)
            event.prevent_default()
            if self._moved_on:
                await self.enter_after_moving_on()
                return
            self._moved_on = self.moves_on()
            await self.action_submit()
            return
        if event.key == "tab" and self.moves_on():
            # Tab is the screen's focus_next binding, which runs after the letters queued
            # behind it here: move on now, in order, and pass those letters on (as for Enter)
            event.stop()
            event.prevent_default()
            if not self._moved_on:
                self._moved_on = True
                self.screen.set_focus(self.next_field)
            else:  # a second Tab of the burst belongs to the next field, in order
                pass_on(event, self.next_field)
            return
        if self._moved_on and (event.is_printable or self.screen.focused is not self):
            # every key still queued here came after the move: the next field's, in order
            event.stop()
            event.prevent_default()
            pass_on(event, self.next_field)
            return
        await super()._on_key(event)


def pass_on(event: events.Key, target: Widget) -> None:
    """Queue a copy of ``event`` for ``target``, behind the keys already passed to it."""
    copy = events.Key(event.key, event.character)
    target._forward_event(copy)


def is_command_key(key: str) -> bool:
    """Alt combinations are commands (Alt+C Compare, Alt+R roll back), never text.

    A terminal sends Alt+C as ESC c, which Textual reads as the key ``alt+c`` with the
    character "c": a TextArea or an Input typed the "c" and swallowed the command. The app
    drops the character of such keys before any widget sees them (``PhyAssistApp.on_event``)."""
    return key.startswith("alt+")


def hand_off_text_area_class() -> type:
    """``HandOffTextArea``: a TextArea whose Tab moves on in order with the letters typed.

    Made on first use (TextArea is off the launch path). Tab is the screen's ``focus_next``
    binding, which Textual runs after the keys already queued for this field: in a fast
    "text Tab text" burst the second text landed here. Here Tab moves the focus at once
    and the letters still queued here go to the field that has the focus now.
    """
    global _HandOffTextArea
    if _HandOffTextArea is not None:
        return _HandOffTextArea

    class HandOffTextArea(text_area_class()):
        _moved_to: Widget | None = None

        def _on_focus(self, event: Focus) -> None:
            self._moved_to = None
            super()._on_focus(event)

        def check_consume_key(self, key: str, character: str | None = None) -> bool:
            # Tab comes here (not to the screen's binding first), to be handled in order
            return key == "tab" or super().check_consume_key(key, character)

        async def _on_key(self, event: events.Key) -> None:
            target = self._moved_to
            if target is not None and target is not self:
                # keys queued here after the Tab: the field that has the focus takes them,
                # in order (its own Tab moves on again)
                event.stop()
                event.prevent_default()
                pass_on(event, target)
                return
            if event.key == "tab" and self.tab_behavior == "focus":
                event.stop()
                event.prevent_default()
                self.screen.focus_next()
                self._moved_to = self.screen.focused
                return
            await super()._on_key(event)

    _HandOffTextArea = HandOffTextArea
    return HandOffTextArea


_HandOffTextArea: type | None = None
