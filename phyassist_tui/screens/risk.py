"""Risk flags, shown before any analysis: the counselor acknowledges them or goes back.

``engine.trust.risk.assess`` runs on the raw statement (rules, the sentence classifier and the
statement probe on the embedded model's hidden states; no generation) in the ``risk-check``
worker; :func:`warm_up_risk_classifier` loads the classifier and the probe a little after start-
up (with the probe off, the default, and the classifier loaded, the check runs at once). Each
flag is shown with its category, severity and the quoted sentence, the matched words
highlighted. The quote is client text: it is sanitized (no escape sequences or control
characters reach the terminal) and escaped with ``rich.markup.escape`` before it is put in
markup, so a statement cannot style or hide anything on this screen.

Use :func:`check_risk_then` from an event handler: rules at once and, where the settings
and the loaded model allow (``risk_model_check``), the model's yes/no per category in a
thread worker ("risk-check") first; then it shows the screen and calls back. The model can
confirm a rule flag or add one the rules missed; it never silences a rule flag.
:func:`confirm_risk` (from a worker, awaits the screen) and :func:`confirm_risk_then` are the
rules-only building blocks. The Session records the flags in the audit log as shown
(``risk_flagged``), then ``risk_acknowledged`` or ``risk_cancelled``, with categories,
severities and rule ids only, never the quote.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from rich.markup import escape
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Static
from textual.worker import get_current_worker

from engine.trust import risk_classifier, risk_probe
from engine.trust.risk import CATEGORY_LABELS, RiskFlag, assess, found_by, highest_severity
from engine.trust.sanitize import safe_terminal_text

if TYPE_CHECKING:
    from textual.app import App

    from phyassist_tui.ports import SessionPort

__all__ = [
    "RiskFlagScreen",
    "check_risk_then",
    "confirm_risk",
    "confirm_risk_then",
    "evidence_text",
    "flag_heading",
]

_SEVERITY_STYLE = {
    "high": "bold white on red",
    "medium": "bold black on yellow",
    "low": "bold black on cyan",
}
_SEVERITY_ZH = {"high": "高", "medium": "中", "low": "低"}
_PHRASE_STYLE = "bold reverse red"


def _clean(text: str) -> str:
    """Sanitized for the terminal, then escaped for Rich markup."""
    return escape(safe_terminal_text(text))


def flag_heading(flag: RiskFlag) -> Text:
    """``[HIGH 高] Suicide / self-harm · 自杀 / 自伤   (rule en.kill_self)``."""
    en, zh = CATEGORY_LABELS.get(flag.category, (flag.category, flag.category))
    style = _SEVERITY_STYLE.get(flag.severity, "bold")
    severity = f"{flag.severity.upper()} {_SEVERITY_ZH.get(flag.severity, '')}".strip()
    source = flag.rule or flag.source
    if flag.model_verdict is not None and flag.rule:
        source += f" · model: {'yes' if flag.model_verdict else 'no'}"
    markup = (
        f"[{style}] {_clean(severity)} [/] [bold]{_clean(en)} · {_clean(zh)}[/]"
        f"  [dim]({_clean(source)})[/]"
    )
    return Text.from_markup(markup)


def evidence_text(flag: RiskFlag) -> Text:
    """The quoted sentence with the matched words highlighted (sanitized, escaped)."""
    evidence = flag.evidence
    if not evidence:
        return Text.from_markup("[dim italic](no quoted words: flagged by the model)[/]")
    lo, hi = flag.phrase_start - flag.start, flag.phrase_end - flag.start
    if 0 <= lo < hi <= len(evidence):
        before, phrase, after = evidence[:lo], evidence[lo:hi], evidence[hi:]
        markup = f"“{_clean(before)}[{_PHRASE_STYLE}]{_clean(phrase)}[/]{_clean(after)}”"
    else:
        markup = f"“{_clean(evidence)}”"
    return Text.from_markup(markup)


class RiskFlagScreen(ModalScreen[bool]):
    """The flags of one statement; ``a`` acknowledges (True), Escape cancels (False)."""

    BINDINGS: ClassVar[list[Binding]] = [
        Binding("a", "answer(True)", "Acknowledge", id="risk.acknowledge"),
        Binding("escape", "answer(False)", "Cancel", id="risk.cancel"),
    ]
    DEFAULT_CSS = """
    RiskFlagScreen { align: center middle; }
    RiskFlagScreen > Vertical {
        width: 90; max-width: 100%; height: auto; max-height: 90%;
        border: heavy $error; background: $surface; padding: 1 2;
    }
    RiskFlagScreen #risk-title { text-style: bold; color: $error; }
    RiskFlagScreen #risk-flags { height: auto; max-height: 24; margin: 1 0; }
    RiskFlagScreen .risk-flag { height: auto; margin-bottom: 1; }
    RiskFlagScreen .risk-evidence { padding-left: 2; }
    RiskFlagScreen #risk-hint { color: $text-muted; }
    RiskFlagScreen Horizontal { height: auto; align-horizontal: right; margin-top: 1; }
    RiskFlagScreen Button { margin-left: 1; }
    """

    def __init__(self, flags: Sequence[RiskFlag], found_by: str = "") -> None:
        super().__init__()
        self.flags = list(flags)
        self.found_by = found_by  # "rules, the sentence classifier and Mixtral-…"

    def compose(self) -> ComposeResult:
        top = highest_severity(self.flags) or "low"
        count = len(self.flags)
        with Vertical():
            yield Static(
                Text(
                    f"Risk flags in this statement ({count}, highest: {top}) · "
                    f"本段陈述有风险提示（{count} 项）"
                ),
                id="risk-title",
            )
            with VerticalScroll(id="risk-flags"):
                for number, flag in enumerate(self.flags):
                    with Vertical(classes="risk-flag", id=f"risk-flag-{number}"):
                        yield Static(flag_heading(flag), classes="risk-heading")
                        yield Static(evidence_text(flag), classes="risk-evidence")
            yield Static(
                Text(
                    "Read the quoted words before you continue. The rules and the sentence "
                    "classifier miss some paraphrased risk: a statement without flags is not "
                    "a statement without risk. "
                    "请先阅读引文再继续。"
                    + (f"\nFound by {safe_terminal_text(self.found_by)}." if self.found_by else "")
                ),
                id="risk-hint",
            )
            with Horizontal():
                yield Button("Cancel (Esc)", id="risk-cancel")
                yield Button("Acknowledge and continue (a)", id="risk-ack", variant="error")

    def on_mount(self) -> None:
        self.query_one("#risk-cancel").focus()  # Enter alone must not acknowledge

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "risk-ack")

    def action_answer(self, acknowledged: bool) -> None:
        self.dismiss(acknowledged)


async def confirm_risk(
    app: App,
    session: SessionPort,
    patient_id: str | None,
    text: str,
    *,
    flags: list[RiskFlag] | None = None,
) -> bool:
    """True to go on with ``text``: no flags, or the counselor acknowledged them.

    Must run in a worker (it awaits the modal with ``push_screen_wait``). The Session
    audits the flags as shown, then acknowledged or cancelled."""
    flags = assess(text) if flags is None else flags
    if not flags:
        return True
    session.risk_shown(patient_id, flags)
    acknowledged = bool(await app.push_screen_wait(RiskFlagScreen(flags)))
    if acknowledged:
        session.risk_acknowledged(patient_id, flags)
    else:
        session.risk_cancelled(patient_id, flags)
    return acknowledged


def confirm_risk_then(
    app: App,
    session: SessionPort,
    patient_id: str | None,
    text: str,
    proceed: Callable[[], Any],
    *,
    cancelled: Callable[[], Any] | None = None,
    flags: list[RiskFlag] | None = None,
    found_by: str = "",
) -> bool:
    """Callback form for event handlers: runs ``proceed()`` at once when there are no flags
    (returns True), else shows the screen (returns False) and later calls ``proceed()`` after
    an acknowledgement or ``cancelled()`` after Escape (the Session audits all three).
    ``flags`` defaults to the rules' flags for ``text``."""
    flags = assess(text) if flags is None else flags
    if not flags:
        proceed()
        return True
    session.risk_shown(patient_id, flags)

    def _done(acknowledged: bool | None) -> None:
        if acknowledged:
            session.risk_acknowledged(patient_id, flags)
            proceed()
        else:
            session.risk_cancelled(patient_id, flags)
            if cancelled is not None:
                cancelled()

    app.push_screen(RiskFlagScreen(flags, found_by), _done)
    return False


def check_risk_then(
    owner: Any,
    patient_id: str | None,
    text: str,
    proceed: Callable[[], Any],
    *,
    cancelled: Callable[[], Any] | None = None,
    checking: Callable[[str], Any] | None = None,
) -> None:
    """:func:`confirm_risk_then` with the model check where it applies.

    ``owner`` is the widget or screen that owns the worker; its ``app.session`` checks.
    Without a model check (off, embedded model, model still loading) this is
    :func:`confirm_risk_then` with the rules' flags, at once. Otherwise the check runs in
    the exclusive thread worker ``risk-check`` (``checking`` is told, e.g. to show it in the
    status line); cancelling that worker (Esc) calls ``cancelled``.
    """
    app = owner.app
    session: SessionPort = app.session
    why = session.risk_model_refusal()
    if why is not None:
        if risk_classifier.is_loaded() and not risk_probe.enabled():  # milliseconds
            flags = assess(text)
            label = found_by(model_not_asked=why)
            confirm_risk_then(
                app,
                session,
                patient_id,
                text,
                proceed,
                cancelled=cancelled,
                flags=flags,
                found_by=label,
            )
            return
        if checking is not None and risk_probe.enabled():
            checking("checking for risk…")  # the probe's first load takes seconds; Esc stops
        _classify_in_worker(owner, patient_id, text, proceed, cancelled, why)
        return
    if checking is not None:
        checking("checking for risk with the model…")

    def work() -> None:
        worker = get_current_worker()
        check = session.check_risk(text)
        if worker.is_cancelled:
            if cancelled is not None:
                app.call_from_thread(cancelled)
            return
        app.call_from_thread(
            confirm_risk_then,
            app,
            session,
            patient_id,
            text,
            proceed,
            cancelled=cancelled,
            flags=check.flags,
            found_by=check.found_by,
        )

    owner.run_worker(work, thread=True, name="risk-check", group="risk-check", exclusive=True)


def _classify_in_worker(
    owner: Any,
    patient_id: str | None,
    text: str,
    proceed: Callable[[], Any],
    cancelled: Callable[[], Any] | None,
    why: str,
) -> None:
    """Rules + sentence classifier in the ``risk-check`` worker, for the first check when
    the classifier is not loaded yet (a second of loading must not freeze the screen);
    ``why`` says why the model is not asked."""
    app = owner.app

    def work() -> None:
        worker = get_current_worker()
        flags = assess(text)
        label = found_by(model_not_asked=why)
        if worker.is_cancelled:
            if cancelled is not None:
                app.call_from_thread(cancelled)
            return
        app.call_from_thread(
            confirm_risk_then,
            app,
            app.session,
            patient_id,
            text,
            proceed,
            cancelled=cancelled,
            flags=flags,
            found_by=label,
        )

    owner.run_worker(work, thread=True, name="risk-check", group="risk-check", exclusive=True)


def warm_up_risk_classifier(app: Any) -> None:
    """Load the sentence classifier and the statement probe in a worker (called a little
    after start-up)."""
    if risk_classifier.is_loaded() and (risk_probe.is_loaded() or not risk_probe.enabled()):
        return
    app.run_worker(
        _warm_up_checks,
        name="warm-risk",
        group="warm-risk",
        exclusive=True,
        thread=True,
        exit_on_error=False,
    )


def _warm_up_checks() -> None:
    risk_classifier.warm_up()
    risk_probe.warm_up()  # the embedded model's private copy (a few seconds)
