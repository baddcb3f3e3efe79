"""The event loop that sender's own processes (the CLI, bulk workers) run on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["fast_loop"]


def fast_loop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when installed (a default dependency on Linux and macOS), else asyncio's.

    For ``asyncio.Runner(loop_factory=...)``: None means asyncio's default.
    """
    try:
        import uvloop  # absent on Windows: looked up when a process starts
    except ImportError:
        return None
    return uvloop.new_event_loop
