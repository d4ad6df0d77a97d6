"""The Footer with the keys that matter first.

Textual's Footer lists keys from the focused widget outwards and cuts off what does not fit
on the right; at 80 columns that hid Generate, Save and Lock behind the draft's item keys.
This one orders them by ``ActionSpec.footer_rank`` (``phyassist_tui.bindings``): Stop,
Generate, Save, Lock and Help first, then the keys of the pane in use, then the rest.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

from phyassist_tui.bindings import footer_rank


class RankedFooter(Footer):
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
