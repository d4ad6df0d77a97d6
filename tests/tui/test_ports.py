"""The port is complete: the real classes implement every member the TUI relies on.

``SessionPort`` (what the TUI calls) against ``engine.session.Session``; ``ModelBackend``
(what the Session calls) against the real ``Assistant`` and the tests' ``FakeAssistant``.
Same member names, same parameters: a member added to a protocol and missing from one
implementation, or a parameter renamed on one side, fails here rather than in a
``getattr`` probe at run time.
"""

from __future__ import annotations

import inspect

import pytest

from engine.session import ModelBackend, Session
from phyassist_tui.ports import SessionPort

from .conftest import FakeAssistant


def _members(protocol: type) -> dict[str, object]:
    names = set()
    for klass in protocol.__mro__:
        if klass in (object,) or klass.__name__ in ("Protocol", "Generic"):
            continue
        names |= {n for n in vars(klass) if not n.startswith("_")}
        names |= set(getattr(klass, "__annotations__", {}))
    return {n: getattr(protocol, n, None) for n in sorted(names)}


def _params(fn: object) -> list[tuple[str, object]]:
    if isinstance(fn, property):
        return [("<property>", None)]
    signature = inspect.signature(fn)  # type: ignore[arg-type]
    return [(p.name, p.kind) for p in signature.parameters.values()]


def _check(protocol: type, implementation: type, instance: object | None = None) -> None:
    members = _members(protocol)
    assert members, protocol
    for name, declared in members.items():
        present = hasattr(implementation, name) or (
            instance is not None and hasattr(instance, name)
        )
        assert present, f"{implementation.__name__} lacks {name}"
        if not callable(declared) or isinstance(declared, property):
            continue
        actual = getattr(implementation, name)
        assert callable(actual), f"{implementation.__name__}.{name} is not callable"
        assert _params(actual) == _params(declared), f"{implementation.__name__}.{name}"
        assert inspect.iscoroutinefunction(actual) == inspect.iscoroutinefunction(declared), name


def test_the_session_implements_the_tui_port_in_full(settings) -> None:
    _check(SessionPort, Session, Session(settings))
    assert isinstance(Session(settings), SessionPort)


@pytest.mark.parametrize("implementation", ["Assistant", "FakeAssistant"])
def test_the_model_backend_is_implemented_in_full(implementation: str, settings) -> None:
    if implementation == "Assistant":
        from engine.inference.assistant import Assistant

        _check(ModelBackend, Assistant, Assistant(settings))
    else:
        _check(ModelBackend, FakeAssistant, FakeAssistant())
        assert isinstance(FakeAssistant(), ModelBackend)


def test_a_missing_or_renamed_member_is_caught(settings) -> None:
    """The check itself can fail."""

    class NoRiskCheck(Session):
        pass

    NoRiskCheck.check_risk = None  # type: ignore[assignment]
    with pytest.raises(AssertionError, match="check_risk"):
        _check(SessionPort, NoRiskCheck)

    class Renamed(Session):
        def save_note(self, pid: str, note):  # type: ignore[override]
            return super().save_note(pid, note)

    with pytest.raises(AssertionError, match="save_note"):
        _check(SessionPort, Renamed)
