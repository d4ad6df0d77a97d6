"""One line under the workspace: the model (and adapter) in use, generation speed, vault,
and each backup target's last successful backup (flagged when older than the set age)."""

from __future__ import annotations

from textual.content import Content
from textual.reactive import reactive
from textual.widgets import Static

BACKUP_REFRESH_S = 5.0  # state.json is rewritten by a detached sender; re-read it (a small file)


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
    backup: reactive[str] = reactive("")  # "nas: 3 h ago, usb: 2 d ago!" ('!' = too old)
    backup_stale: reactive[bool] = reactive(False)

    def on_mount(self) -> None:
        self.refresh_backup()
        self.set_interval(BACKUP_REFRESH_S, self.refresh_backup, name="backup-status")

    def refresh_backup(self) -> None:
        """Re-read the local backup state (no vault access; no patient data in it)."""
        settings = getattr(self.app, "settings", None)
        if settings is None:
            return
        from engine.backup.state import stale_targets, status_summary

        hours = settings.backup.warn_after_hours
        self.backup = status_summary(settings.data_dir, hours)
        self.backup_stale = bool(stale_targets(settings.data_dir, hours))

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
        if self.backup_stale:  # a warning comes before the model's name so it stays visible
            parts.append(Content.from_markup("[$text-warning]backup $b[/]", b=self.backup))
        if self.tokens_per_s is not None:
            parts.append(Content(f"{self.tokens_per_s:.1f} tok/s"))
        parts.append(model)
        if self.backup and not self.backup_stale:
            parts.append(Content(f"backup {self.backup}"))
        return Content(" · ").join(parts)
