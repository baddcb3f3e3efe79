"""The public API: every module's __all__ is honest and the package re-exports it."""

from __future__ import annotations

import importlib
import pkgutil

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


def test_package_exports_only_what_it_imports() -> None:
    """sender.__all__ names exactly the public names sender/__init__.py binds."""
    public = {name for name in vars(sender) if not name.startswith("_")}
    submodules = {info.name for info in pkgutil.iter_modules(sender.__path__)}
    assert set(sender.__all__) == public - submodules


def test_every_error_derives_from_sender_error() -> None:
    """All exported exception classes share the one root."""
    for name in sender.__all__:
        member = getattr(sender, name)
        if isinstance(member, type) and issubclass(member, Exception):
            assert issubclass(member, sender.SenderError)
