"""Pilot tests of the Chat tab: streaming, copying, stopping, limits.

On a real vault (engine.vault.store) and the fake engine.
"""

from __future__ import annotations

import pytest
from textual.widgets import Input

from phyassist_tui.widgets.chat_pane import ChatBubble
from tests.tui.fakes import (
    CHAT_REPLY,
    FakeAssistant,
    open_patient,
    read_only,
    type_text,
    wait_for,
)

pytestmark = pytest.mark.anyio


# -- chat -------------------------------------------------------------------------------------
async def chat_once(pilot, name: str = "Sun"):
    """Open ``name``, ask one question in the Chat tab and wait for the reply; the screen."""
    screen = await open_patient(pilot, name)
    await pilot.press("f5")
    await type_text(pilot, "How to start?")
    await pilot.press("enter")
    await wait_for(
        pilot, lambda: screen.generating is None and len(screen.history) == 2, what="chat reply"
    )
    return screen


async def test_chat_streams_copies_and_persists(make_app, vault, settings, fake):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await chat_once(pilot)
        bubbles = list(screen.query(ChatBubble))
        assert [b.role for b in bubbles] == ["user", "assistant"]
        assert bubbles[1].text == CHAT_REPLY
        await pilot.press("ctrl+y")
        assert app.clipboard == CHAT_REPLY
        await pilot.pause(0.3)
    store = read_only(settings)
    try:
        sun = next(s for s in store.list_patients() if s.name == "Sun")
        from engine.vault.chat import load_history

        history = load_history(store, sun.id)
        assert [m.role for m in history] == ["user", "assistant"]
    finally:
        store.close()


async def test_chat_message_over_the_limit_is_given_back(make_app, vault, settings, fake):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_patient(pilot, "Sun")
        await pilot.press("f5")
        huge = "话" * (settings.limits.max_statement_chars + 1)
        await type_text(pilot, huge)
        await pilot.press("enter")
        await pilot.pause(0.1)
        assert screen.query_one("#chat-input", Input).value == huge  # nothing lost
        assert screen.history == [] and screen.generating is None
        assert not [c for c in fake.calls if c.name == "stream_chat"]
        assert any("limit" in n.message for n in app._notifications)


async def chat_then_stop(pilot, fake: FakeAssistant, message: str):
    """Open Sun, send ``message`` in Chat, press Esc once the reply is under way."""
    screen = await open_patient(pilot, "Sun")
    await pilot.press("f5")
    await type_text(pilot, message)
    await pilot.press("enter")
    await wait_for(pilot, lambda: fake.paused.is_set())
    await pilot.press("escape")
    await wait_for(pilot, lambda: screen.generating is None)
    return screen


async def test_chat_escape_stops_reply(make_app, vault):
    fake = FakeAssistant(pause_after=2)
    app = make_app(assistant=fake)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await chat_then_stop(pilot, fake, "Hi")
        reply = list(screen.query(ChatBubble))[-1].text
        assert reply.startswith("Consider asking") and reply.endswith("[stopped]")


async def test_stop_drops_a_character_cut_in_half(make_app, vault):
    """Stopped mid-character, the engine flushes U+FFFD; it must not reach the chat."""
    import threading

    from engine.inference.stream import TextStream

    class HalfCharAssistant(FakeAssistant):
        def stream_chat(self, patient, history, message, *, cancel: threading.Event):
            def chunks():
                yield "最新"
                self.paused.set()
                cancel.wait(5)
                yield "\ufffd"  # what the streamer flushes when stopped mid-character

            return TextStream(chunks())

    fake = HalfCharAssistant()
    app = make_app(assistant=fake)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await chat_then_stop(pilot, fake, "下次先问什么？")
        assert list(screen.query(ChatBubble))[-1].text == "最新 [stopped]"
        assert screen.history[-1].content == "最新 [stopped]"


async def test_ctrl_k_in_the_chat_box_asks_then_starts_a_new_conversation(
    make_app, vault, settings, fake
):
    """Found in tmux: Ctrl+K (new conversation) did nothing in the Chat tab, because the chat
    box had the focus and its own Ctrl+K (delete to the end) took the key. It now reaches the
    chat, and asks first: the conversation is deleted."""
    from phyassist_tui.screens.confirm import ConfirmScreen

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await chat_once(pilot)
        box = screen.query_one("#chat-input", Input)
        await type_text(pilot, "draft")
        await pilot.press("home")
        assert app.focused is box
        await pilot.press("ctrl+k")
        confirm = await wait_for(
            pilot, lambda: isinstance(app.screen, ConfirmScreen) and app.screen
        )
        assert "2 messages" in confirm.question
        await pilot.press("n")  # keep
        await pilot.pause(0.2)
        assert len(screen.history) == 2 and box.value == "draft"
        await pilot.press("ctrl+k")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: screen.history == [] and not list(screen.query(ChatBubble)))
        await pilot.pause(0.3)
    store = read_only(settings)
    try:
        from engine.vault.chat import load_history

        sun = next(s for s in store.list_patients() if s.name == "Sun")
        assert load_history(store, sun.id) == []
    finally:
        store.close()
