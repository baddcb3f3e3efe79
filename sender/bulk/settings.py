"""How a bulk run behaves: one frozen record that the runner, ingest and dispatcher all read.

It sits below them so each part reads the same settings without importing the runner.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, field

from sender.compose.composer import CalendarSend
from sender.compose.event import CalendarMethod, stored_event
from sender.config import MAX_CONCURRENCY, BouncePolicy
from sender.errors import ConfigurationError, InputError
from sender.pacing.schedule import RetryPolicy
from sender.store import RunInfo

__all__ = ["RUN_ID_MAX", "RunSettings", "calendar_of", "check_run_id"]

RUN_ID_MAX = 200  # characters in a run id; it is shown in tables, logs and hints


def check_run_id(value: str, /) -> str:
    """A run id as given: printable text, not blank, at most :data:`RUN_ID_MAX` characters.

    Refused before any run exists (``--run-id``, the HTTP API's ``run_id``); the message
    never echoes the control characters it found.
    """
    if not value.strip():
        problem = "must not be empty or blank"
    elif any(unicodedata.category(char) in ("Cc", "Zl", "Zp") for char in value):
        problem = "must not contain control characters or line breaks"
    elif len(value) > RUN_ID_MAX:
        problem = f"must be at most {RUN_ID_MAX} characters (it has {len(value)})"
    else:
        return value
    raise InputError(f"the run id {problem}", field="run_id")


@dataclass(frozen=True, slots=True)
class RunSettings:
    """How a run behaves; the rate limits live in its :class:`~sender.pacing.schedule.Scheduler`."""

    template: str = "invitation"
    concurrency: int = 4  # messages in flight at once; at most the transport's pool size
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    batch_size: int = 1000  # rows per ingest transaction
    lease_ttl: float = 30.0  # seconds without a heartbeat before another worker may take over
    wait_for_retries: bool = False  # keep going until deferred messages are due (daemons)
    max_wait: float = 3600.0  # with wait_for_retries: the longest single wait
    workers: int = 1  # processes that compose and send (1: this one); see sender.bulk.workers
    calendar: CalendarSend | None = None  # every message carries this invitation or cancellation
    bounces: BouncePolicy = field(default_factory=BouncePolicy)
    force: bool = False  # send even though the bounce budget is spent (an operator's call)
    budget_interval: float = 2.0  # seconds between bounce-budget checks while sending
    # Timeouts in a row, per connection (x concurrency), before the run pauses with
    # "relay not answering": a relay that accepts and never answers trips it in minutes.
    relay_timeouts: int = 3
    # Send the rest of an existing run through the transport named in this invocation's
    # options["transport"], when it differs from the one the run was started with.
    switch_transport: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise ConfigurationError(
                f"concurrency must be 1 to {MAX_CONCURRENCY}, not {self.concurrency}",
                setting="concurrency",
            )
        if not 1 <= self.workers <= min(self.concurrency, 64):
            raise ConfigurationError(
                f"workers must be 1 to {min(self.concurrency, 64)} (at most concurrency)",
                setting="workers",
            )
        if self.batch_size < 1:
            raise ConfigurationError("batch_size must be at least 1", setting="batch_size")
        if not 0 < self.lease_ttl < math.inf:
            raise ConfigurationError("lease_ttl must be a positive number", setting="lease_ttl")
        if self.relay_timeouts < 1:
            raise ConfigurationError(
                f"relay_timeouts must be at least 1, not {self.relay_timeouts}",
                setting="relay_timeouts",
            )


def calendar_of(run: RunInfo, /) -> CalendarSend | None:
    """The calendar mail a stored run sends, so ``sender resume`` sends the same one."""
    if run.event_uid is None or run.sequence is None or run.method is None:
        return None
    stored = run.options.get("event")
    if not isinstance(stored, str):
        raise InputError(
            f"run {run.run_id} names event {run.event_uid} but not its details", field="run_id"
        )
    changes = run.options.get("changes")
    return CalendarSend(
        stored_event(stored, uid=run.event_uid),
        CalendarMethod(run.method),
        run.sequence,
        tuple(c for c in str(changes or "").split(",") if c),
    )
