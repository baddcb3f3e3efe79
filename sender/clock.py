"""Time and sleeping, injected so tests never patch the clock."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    """Where sender reads the time and waits. ``sender.testing.ManualClock`` is one for tests."""

    def now(self) -> float:
        """Seconds since the Unix epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards, for rates and timeouts."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    async def idle(self, seconds: float) -> None:
        """Wait ``seconds`` as a background timer does (a lease renewal): let time pass.

        The system clock sleeps. A manual clock returns once others have moved
        it that far, and never moves it itself, as :meth:`sleep` does.
        """
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def idle(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
