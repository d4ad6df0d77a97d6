"""Free conversation with the model about the open patient."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Input, Static

from engine.records import ChatMessage
from phyassist_tui.bindings import bindings_for
from phyassist_tui.focus import TextInput
from phyassist_tui.messages import ChatSubmitted
from phyassist_tui.widgets.text import clean, plain

ROLE_TITLES = {"user": "You", "assistant": "PhyAssist", "system": "System"}


class ChatBubble(Static, can_focus=True):
    """One message; focus it (Tab / click) and press Ctrl+Y to copy it."""

    DEFAULT_CSS = """
    ChatBubble { border: round $primary-muted; padding: 0 1; margin: 0 0 0 0; height: auto; }
    ChatBubble.user { border: round $secondary-muted; }
    ChatBubble:focus { border: round $accent; }
    """

    def __init__(self, role: str, text: str) -> None:
        super().__init__(plain(text), classes=role, markup=False)
        self.role = role
        self.text = clean(text)
        self.border_title = ROLE_TITLES.get(role, role)

    def set_text(self, text: str) -> None:
        self.text = clean(text)
        self.update(plain(self.text or "…"))


class ChatPane(Vertical):
    BINDINGS = bindings_for("chat")

    DEFAULT_CSS = """
    ChatPane { height: 1fr; }
    ChatPane > #chat-log { height: 1fr; }
    ChatPane > #chat-empty { color: $text-muted; padding: 0 1; height: auto; }
    """

    def compose(self) -> ComposeResult:
        yield Static("Ask anything about this patient; the record is the context.", id="chat-empty")
        yield VerticalScroll(id="chat-log")
        yield TextInput(placeholder="Message (Enter sends, Esc stops the reply)", id="chat-input")

    def on_mount(self) -> None:
        self.query_one("#chat-log").anchor()

    async def show_history(self, history: list[ChatMessage]) -> None:
        log = self.query_one("#chat-log", VerticalScroll)
        await log.remove_children()
        await log.mount_all([ChatBubble(m.role, m.content) for m in history if m.role != "system"])
        self.query_one("#chat-empty").display = not history
        log.anchor()

    async def add_bubble(self, role: str, text: str) -> ChatBubble:
        bubble = ChatBubble(role, text)
        self.query_one("#chat-empty").display = False
        await self.query_one("#chat-log").mount(bubble)
        return bubble

    @property
    def last_bubble(self) -> ChatBubble | None:
        bubbles = self.query(ChatBubble)
        return bubbles.last() if bubbles else None

    @on(Input.Submitted, "#chat-input")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = clean(event.value).strip()
        if text:
            event.input.value = ""
            self.post_message(ChatSubmitted(text))

    def give_back(self, text: str) -> None:
        """Put a message that could not be sent back into the box (before what was typed since)."""
        box = self.query_one("#chat-input", Input)
        if box.value.startswith(text):
            return
        box.value = f"{text} {box.value}".strip() if box.value else text
        box.cursor_position = len(box.value)

    def action_copy_message(self) -> None:
        focused = self.screen.focused
        if isinstance(focused, ChatBubble):
            bubble: ChatBubble | None = focused
        else:
            replies = [b for b in self.query(ChatBubble) if b.role == "assistant"]
            bubble = replies[-1] if replies else None
        if bubble is None or not bubble.text:
            self.notify("No message to copy yet.", severity="warning")
            return
        self.app.copy_to_clipboard(bubble.text)
        self.notify(f"Copied {len(bubble.text)} characters (OSC 52).")

    async def action_clear_chat(self) -> None:
        await self.screen.run_action("clear_chat")
