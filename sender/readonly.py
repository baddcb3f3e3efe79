"""Read-only attributes written once: the public face of a value an object keeps to itself.

A server counts what it accepted, a sender shows the settings it was made with: the
object changes the value, callers only read it. A ``@property`` that just returns
``self._accepted`` says that in four lines; :class:`ReadOnly` says it in one, keeps the
type for mypy, and refuses assignment as a property without a setter does::

    class Server:
        accepted = ReadOnly[int]("_accepted", doc="Mails taken so far.")
        host = ReadOnly[str]("_server.host")  # a dotted path follows attributes
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any, Generic, Never, Self, TypeVar, overload

__all__ = ["ReadOnly"]

T = TypeVar("T")


class ReadOnly(Generic[T]):
    """An attribute that reads ``path`` on its instance and cannot be set or deleted."""

    def __init__(self, path: str, /, *, doc: str | None = None) -> None:
        self._get: Callable[[object], Any] = attrgetter(path)
        self._name = path
        self.__doc__ = doc

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> Self: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> T: ...

    def __get__(self, instance: object, owner: type | None = None) -> T | Self:
        if instance is None:
            return self
        value: T = self._get(instance)
        return value

    def __set__(self, instance: object, value: Never) -> Never:
        raise AttributeError(
            f"property {self._name!r} of {type(instance).__name__!r} object has no setter"
        )

    def __delete__(self, instance: object) -> Never:
        raise AttributeError(
            f"property {self._name!r} of {type(instance).__name__!r} object has no deleter"
        )
