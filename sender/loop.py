"""The event loop that sender's own processes (the CLI, bulk workers) run on, and how
a bulk worker process sets up Python's garbage collector."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable

__all__ = ["fast_loop", "settle_gc"]

# Allocations between young-generation collections (Python's default: 700).
_YOUNG_THRESHOLD = 50_000


def fast_loop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when installed (a default dependency on Linux and macOS), else asyncio's.

    For ``asyncio.Runner(loop_factory=...)``: None means asyncio's default.
    """
    try:
        import uvloop  # absent on Windows: looked up when a process starts
    except ImportError:
        return None
    return uvloop.new_event_loop


def settle_gc() -> None:
    """For a process that has built what it keeps and now works message by message.

    What exists now (modules, templates, the sender) is moved out of the collector's
    reach (``gc.freeze``), and young collections run every 50,000 allocations, not 700:
    a message's objects are freed by reference counting, not by the collector, which
    otherwise ran every few messages to find nothing (about 3% of a bulk run in bench/bulk.py).
    """
    gc.freeze()
    gc.set_threshold(_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
