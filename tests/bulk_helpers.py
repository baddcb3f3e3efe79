"""What the bulk-run test modules share: participants across domains and locales, a runner
against a recording SMTP server, and who received what."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping, Sequence

from sender import Participant, Sender, SenderSettings
from sender.bulk.runner import BulkRunner, RunReport, RunSettings
from sender.pacing.schedule import RateLimits, Scheduler
from sender.store import MessageState, RunInfo, RunState, SqliteStore
from sender.testing import ManualClock, RecordingSMTPServer
from sender.transport import SmtpTransport
from tests.helpers import UNLIMITED, sender_settings

__all__ = [
    "assert_paused_and_unsent",
    "at_most",
    "bulk_runner",
    "people",
    "recipients",
    "run_once",
    "started_run",
]


def people(count: int, *, domains: int = 3) -> list[Participant]:
    """``count`` participants spread over ``domains`` domains, in en, nb, sv and ja in turn."""
    return [
        Participant(
            f"user{i}@d{i % domains}.example",
            f"User {i}",
            f"p-{i}",
            "PY101",
            ("en", "nb", "sv", "ja")[i % 4],
        )
        for i in range(count)
    ]


def at_most(per_second: float) -> RateLimits:
    """Only a global rate: a run of a few hundred lasts long enough to interrupt it."""
    return RateLimits(global_per_second=per_second, domain_per_minute=None)


def bulk_runner(
    server: RecordingSMTPServer,
    store: SqliteStore,
    *,
    settings: SenderSettings | None = None,
    limits: RateLimits = UNLIMITED,
    clock: ManualClock | None = None,
    concurrency: int = 4,
    smtp: Mapping[str, object] | None = None,
    **run: object,
) -> BulkRunner:
    """A runner sending to ``server`` with a pool of ``concurrency``; ``run`` sets RunSettings."""
    transport = SmtpTransport(
        server.smtp_settings(pool_size=concurrency, **(smtp or {})),  # type: ignore[arg-type]
        clock=clock,
    )
    sender = Sender(settings or sender_settings(), transport=transport, clock=clock)
    return BulkRunner(
        sender,
        store,
        RunSettings(concurrency=concurrency, **run),  # type: ignore[arg-type]
        scheduler=Scheduler(limits, clock=clock),
        clock=clock,
    )


async def run_once(
    server: RecordingSMTPServer,
    store: SqliteStore,
    run_id: str,
    group: Sequence[Participant] | None = None,
    **runner: object,
) -> RunReport:
    """A fresh :func:`bulk_runner` (``runner`` its options) sends ``group`` as ``run_id`` (or
    resumes it), then closes its sender."""
    fresh = bulk_runner(server, store, **runner)  # type: ignore[arg-type]
    try:
        return await fresh.run(run_id, group)
    finally:
        await fresh.sender.aclose()


async def started_run(
    runner: BulkRunner,
    server: RecordingSMTPServer,
    run_id: str,
    group: Sequence[Participant],
    *,
    messages: int,
    within: float = 30,
) -> asyncio.Task[RunReport]:
    """``runner`` sending ``group`` as ``run_id`` in the background, once ``server`` has received
    ``messages`` messages (``within`` seconds at most): the run is in full flow."""
    task = asyncio.create_task(runner.run(run_id, group))
    async with asyncio.timeout(within):
        await server.wait_for_messages(messages)
    return task


def recipients(server: RecordingSMTPServer) -> Counter[str]:
    """How many messages each address received."""
    return Counter(r for m in server.messages for r in m.recipients)


async def assert_paused_and_unsent(
    store: SqliteStore, server: RecordingSMTPServer, run_id: str, *, queued: int
) -> tuple[RunInfo, Mapping[MessageState, int]]:
    """The run is paused with all ``queued`` messages still queued, and the server got nothing."""
    run = await store.get_run(run_id)
    assert run is not None
    assert run.state is RunState.PAUSED
    counts = await store.counts(run_id)
    assert counts[MessageState.QUEUED] == queued
    assert server.messages == ()
    return run, counts
