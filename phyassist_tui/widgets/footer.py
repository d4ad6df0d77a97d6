"""Footers: rebuilt once per burst of binding changes, and with the keys that matter first.

Textual's Footer lists keys from the focused widget outwards and cuts off what does not fit
on the right; at 80 columns that hid Generate, Save and Lock behind the draft's item keys.
``RankedFooter`` orders them by ``ActionSpec.footer_rank`` (``phyassist_tui.bindings``): Stop,
Generate, Save, Lock and Help first, then the keys of the pane in use, then the rest.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

from phyassist_tui.bindings import footer_rank


class CoalescedFooter(Footer):
    """Textual's Footer, rebuilt once per burst of binding changes, and only when the keys
    it shows changed.

    Textual's Footer schedules a full recompose (remove, make and style every key) after the
    next refresh each time the screen publishes its bindings: on every focus change, on
    ``refresh_bindings`` and when a screen appears (several in one frame), mostly with the
    same keys as before; on the unlock screen each passphrase attempt rebuilt it three times.
    Here a publish while a rebuild is pending adds nothing (the pending one reads the
    bindings when it runs), and a rebuild is skipped when the keys, their descriptions and
    whether each is enabled are what is shown already.
    """

    _recompose_pending = False
    _shown: tuple | None = None  # what the keys shown were made from

    def bindings_changed(self, screen: Screen) -> None:
        self._bindings_ready = True
        if not screen.app.app_focus:
            return
        if self.is_attached and screen is self.screen and not self._recompose_pending:
            self._recompose_pending = True
            self.call_after_refresh(self._recompose_if_changed)

    def _keys_shown(self) -> tuple:
        palette = self.app.COMMAND_PALETTE_BINDING
        return (
            self.show_command_palette,
            tuple(
                (key, b.action, b.description, b.key_display, b.group, enabled, tooltip)
                for key, (_node, b, enabled, tooltip) in self.screen.active_bindings.items()
                if b.show or key == palette
            ),
        )

    async def _recompose_if_changed(self) -> None:
        self._recompose_pending = False  # a change from now on needs a new one
        if not self.is_attached:
            return
        shown = self._keys_shown()
        if shown == self._shown:
            return
        self._shown = shown
        await self.recompose()


class RankedFooter(CoalescedFooter):
    def compose(self) -> ComposeResult:
        if not self._bindings_ready:
            return
        active = self.screen.active_bindings
        seen: dict[str, tuple] = {}
        for _node, binding, enabled, tooltip in active.values():
            if binding.show and binding.action not in seen:
                seen[binding.action] = (binding, enabled, tooltip)
        ordered = sorted(
            enumerate(seen.values()), key=lambda pair: (footer_rank(pair[1][0].action), pair[0])
        )
        for _index, (binding, enabled, tooltip) in ordered:
            yield FooterKey(
                binding.key,
                self.app.get_key_display(binding),
                binding.description,
                binding.action,
                disabled=not enabled,
                tooltip=tooltip,
            ).data_bind(compact=Footer.compact)
        if self.show_command_palette and self.app.ENABLE_COMMAND_PALETTE:
            palette = active.get(self.app.COMMAND_PALETTE_BINDING)
            if palette is not None:
                _node, binding, enabled, tooltip = palette
                yield FooterKey(
                    binding.key,
                    self.app.get_key_display(binding),
                    binding.description,
                    binding.action,
                    classes="-command-palette",
                    disabled=not enabled,
                    tooltip=binding.tooltip or binding.description,
                )
