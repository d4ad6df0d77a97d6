"""The engine never imports the TUI or textual: any front end (TUI, CLI, a server) builds on it.

Every ``engine/**/*.py`` is parsed, so imports inside functions (the lazy ones) count too, and
so do ``importlib.import_module("...")`` / ``__import__("...")`` with a literal name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import REPO

ENGINE = REPO / "engine"
FORBIDDEN = ("textual", "textual_plotext", "textual_serve", "phyassist_tui")


def _imported_names(tree: ast.AST) -> list[tuple[int, str]]:
    names: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            literal = isinstance(first, ast.Constant) and isinstance(first.value, str)
            if called in ("import_module", "__import__") and literal:
                names.append((node.lineno, first.value))
    return names


def forbidden_imports(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, name in _imported_names(tree):
            if name.split(".")[0] in FORBIDDEN:
                found.append(f"{path.relative_to(root.parent)}:{line} imports {name}")
    return found


def test_engine_imports_no_front_end() -> None:
    assert ENGINE.is_dir() and len(list(ENGINE.rglob("*.py"))) > 20
    assert forbidden_imports(ENGINE) == []


@pytest.mark.parametrize(
    "planted",
    [
        "import textual.app\n",
        "def later():\n    from phyassist_tui.widgets.text import clean\n",
        "import importlib\nimportlib.import_module('textual.widgets')\n",
        "class Late:\n    def go(self):\n        import phyassist_tui\n",
    ],
)
def test_a_planted_import_is_caught(tmp_path: Path, planted: str) -> None:
    """The check above can fail: the same scan finds an import planted in a copy of engine/."""
    import shutil

    copy = tmp_path / "engine"
    shutil.copytree(ENGINE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / "inference" / "prompts.py"
    target.write_text(target.read_text(encoding="utf-8") + "\n" + planted, encoding="utf-8")
    found = forbidden_imports(copy)
    assert len(found) == 1 and found[0].startswith("engine/inference/prompts.py:")
