"""The public API: every module's __all__ is honest and the package re-exports it."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import sender

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(sender.__path__, prefix="sender.")
    if info.name not in {"sender.__main__"}
)


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist_and_are_public(name: str) -> None:
    """Every name a module lists in __all__ exists there and has no leading underscore."""
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    for member in exported:
        assert hasattr(module, member), f"{name}.__all__ lists missing {member}"
        assert not member.startswith("_")


def type_checking_imports() -> dict[str, str]:
    """The names sender/__init__.py imports for type checkers, each with its module."""
    tree = ast.parse(Path(sender.__file__).read_text(encoding="utf-8"))
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom), ast.unparse(statement)
                assert statement.module is not None
                found.update(dict.fromkeys((a.name for a in statement.names), statement.module))
    return found


def test_package_exports_what_type_checkers_see() -> None:
    """sender.__all__, the names type checkers see and the names imported on use agree."""
    seen = type_checking_imports()
    assert sorted(seen) == sorted(sender.__all__)
    assert seen == sender._HOMES
    assert set(sender.__all__) <= set(dir(sender))


def test_unknown_name_is_an_attribute_error() -> None:
    """A name sender does not export raises AttributeError, so hasattr and getattr work."""
    assert not hasattr(sender, "NoSuchName")
    with pytest.raises(AttributeError, match="NoSuchName"):
        _ = sender.NoSuchName  # type: ignore[attr-defined]


def test_every_error_derives_from_sender_error() -> None:
    """All exported exception classes share the one root."""
    for name in sender.__all__:
        member = getattr(sender, name)
        if isinstance(member, type) and issubclass(member, Exception):
            assert issubclass(member, sender.SenderError)
