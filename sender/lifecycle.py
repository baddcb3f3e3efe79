"""``async with`` written once, for everything sender opens and must close.

Servers, pools, stores and senders all share one shape: ``async with`` opens the thing
(if it needs opening at all) and leaving the block closes it, even on error. Subclasses
say how to open (:meth:`start`, by default nothing: most resources open lazily) and how
to close (:meth:`aclose`).
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["AsyncResource"]


class AsyncResource:
    """Base for anything used as ``async with thing: ...`` that ends in :meth:`aclose`."""

    __slots__ = ()

    async def start(self) -> None:
        """Open what must be open before use; resources that open lazily need nothing."""

    async def aclose(self) -> None:
        """Release what :meth:`start` (or first use) opened; safe to call twice."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
