"""Public names a package imports on first use (PEP 562), from the modules that define them.

For ``sender`` and ``sender.transport``: a worker process imports them first, and should
not pay for the libraries that rarely used names bring in (httpx, dkimpy, icalendar...).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping, MutableMapping

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str,
    homes: Mapping[str, str],
    namespace: MutableMapping[str, object],
    public: Iterable[str],
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The package's ``__getattr__`` and ``__dir__``: a name of ``homes`` is imported from
    its module when first asked for and kept in ``namespace`` (the package's globals)."""
    names = frozenset(public)

    def import_on_use(name: str) -> object:
        module = homes.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value: object = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def listing() -> list[str]:
        return sorted({*namespace, *names})

    return import_on_use, listing
