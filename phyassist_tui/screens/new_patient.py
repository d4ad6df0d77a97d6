"""The intake form: a name and the five basic-information fields, validated."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static, TextArea

from engine.records import BASIC_FIELDS, BasicInfo
from phyassist_tui.focus import HandOffInput, hand_off_text_area_class
from phyassist_tui.widgets.text import clean


class NewPatientScreen(ModalScreen[tuple[str, BasicInfo] | None]):
    """Returns ``(name, BasicInfo)`` or ``None`` when cancelled; saving is the caller's job."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "create", "Create", id="new_patient.create"),
        Binding("escape", "cancel", "Cancel", id="new_patient.cancel"),
    ]
    AUTO_FOCUS = "#name"
    DEFAULT_CSS = """
    NewPatientScreen { align: center middle; }
    NewPatientScreen > #form {
        width: 96; max-width: 100%; height: 100%; max-height: 40;
        border: round $primary; background: $surface;
    }
    NewPatientScreen #form-name { height: auto; padding: 0 1; }
    NewPatientScreen #form-scroll { height: 1fr; padding: 0 1; }
    NewPatientScreen Label { margin-top: 1; color: $text-primary; }
    NewPatientScreen TextArea { height: 4; }
    NewPatientScreen #form-error { color: $text-error; height: auto; padding: 0 1; }
    NewPatientScreen #form-buttons { height: auto; align-horizontal: right; padding: 0 1; }
    NewPatientScreen Button { margin-left: 1; }
    """

    def __init__(
        self,
        *,
        max_name: int,
        max_field: int,
        initial: tuple[str, BasicInfo] | None = None,
    ) -> None:
        """``initial``: the name and basic information to correct (the form then edits)."""
        super().__init__()
        self.max_name = max_name
        self.max_field = max_field
        self.initial = initial

    def compose(self) -> ComposeResult:
        with Vertical(id="form") as form:
            name, basic = self.initial or ("", BasicInfo())
            verb = "saves" if self.initial else "creates"
            form.border_title = (
                f"{'Edit basic information' if self.initial else 'New patient'}"
                f" · Ctrl+S {verb} · Esc cancels"
            )
            # the name stays above the scrolling fields: focusing it scrolled the form down
            # two rows before, hiding "Name (required)"
            with Vertical(id="form-name"):
                yield Label("Name (required)")
                yield HandOffInput(
                    value=clean(name),
                    hand_off_to="#field-demographics",
                    placeholder="Name or pseudonym",
                    id="name",
                    max_length=self.max_name,
                )
            with VerticalScroll(id="form-scroll"):
                for field, (english, chinese) in BASIC_FIELDS.items():
                    yield Label(f"{english} / {chinese}")
                    yield hand_off_text_area_class()(
                        clean(getattr(basic, field)), id=f"field-{field}", soft_wrap=True
                    )
            yield Static("", id="form-error", markup=False)
            with Horizontal(id="form-buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Save" if self.initial else "Create", id="create", variant="primary")

    def validate_form(self) -> tuple[str, BasicInfo] | str:
        """The form's values, or a message saying what to fix."""
        name = " ".join(clean(self.query_one("#name", Input).value).split())
        if not name:
            return "A name (or pseudonym) is required."
        if len(name) > self.max_name:
            return f"The name is longer than {self.max_name} characters."
        values: dict[str, str] = {}
        for field, (english, _chinese) in BASIC_FIELDS.items():
            text = clean(self.query_one(f"#field-{field}", TextArea).text).strip()
            if len(text) > self.max_field:
                return f"{english} is longer than {self.max_field} characters."
            values[field] = text
        return name, BasicInfo(**values)

    @on(Button.Pressed, "#create")
    def action_create(self) -> None:
        result = self.validate_form()
        if isinstance(result, str):
            self.query_one("#form-error", Static).update(result)
            return
        self.dismiss(result)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted, "#name")
    def _name_done(self) -> None:
        # the first field itself, not focus_next: that is the scrolling container around the
        # fields, and the letters typed after Enter were lost there
        self.set_focus(self.query_one("#field-demographics"))
