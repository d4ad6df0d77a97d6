"""One line under the workspace: the model (and adapter) in use, generation speed, vault."""

from __future__ import annotations

from textual.content import Content
from textual.reactive import reactive
from textual.widgets import Static


class StatusLine(Static):
    DEFAULT_CSS = """
    StatusLine {
        height: 1; background: $panel; color: $text-muted; padding: 0 1;
        text-wrap: nowrap; text-overflow: ellipsis;
    }
    """

    model_state: reactive[str] = reactive("loading")
    model_label: reactive[str] = reactive("")
    model_detail: reactive[str] = reactive("")
    activity: reactive[str] = reactive("")
    tokens_per_s: reactive[float | None] = reactive(None)

    def render(self) -> Content:
        if self.model_state == "ready":
            model = Content.from_markup("[b]model[/b] $label", label=self.model_label or "?")
        elif self.model_state == "failed":
            model = Content.from_markup(
                "[$text-error]model failed:[/] $detail", detail=self.model_detail
            )
        else:
            detail = f" ({self.model_detail})" if self.model_detail else ""
            model = Content(f"loading model…{detail}")
        parts = []  # what is happening first: at 80 columns the model's name may not fit
        if self.activity:
            parts.append(Content(self.activity))
        if self.tokens_per_s is not None:
            parts.append(Content(f"{self.tokens_per_s:.1f} tok/s"))
        parts.append(model)
        return Content(" · ").join(parts)
