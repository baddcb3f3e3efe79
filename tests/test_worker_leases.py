"""A bulk runner holds a worker lease while it sends, and records only the claims it holds."""

from __future__ import annotations

import asyncio
import email
import os
import socket

import pytest

from sender import Participant, Sender
from sender.bulk.lease import WorkerLease
from sender.bulk.runner import BulkRunner, RunReport, RunSettings
from sender.errors import RunBusy
from sender.pacing.schedule import Scheduler
from sender.store import MessageState, SqliteStore
from sender.testing import ManualClock, RecordingSMTPServer, Stage
from sender.transport import SmtpTransport
from tests.helpers import UNLIMITED, sender_settings, until

T0 = 1_800_000_000.0


def runner_for(server: RecordingSMTPServer, store: SqliteStore, clock: ManualClock) -> BulkRunner:
    transport = SmtpTransport(server.smtp_settings(pool_size=1, timeout=10.0), clock=clock)
    return BulkRunner(
        Sender(sender_settings(), transport=transport, clock=clock),
        store,
        RunSettings(concurrency=1, lease_ttl=30.0),
        scheduler=Scheduler(UNLIMITED, clock=clock),
        clock=clock,
    )


async def sending_slowly(
    server: RecordingSMTPServer, store: SqliteStore, run_id: str
) -> tuple[BulkRunner, asyncio.Task[RunReport], asyncio.Event]:
    """A run of one participant whose send is under way: its MAIL FROM is answered once the
    returned event is set."""
    gate = server.hold(Stage.MAIL, times=1)
    runner = runner_for(server, store, ManualClock(now=T0))
    people = [Participant("ada@d.example", "Ada", "p-1", "PY101")]
    task = asyncio.create_task(runner.run(run_id, people))
    await until(lambda: server.connections_opened >= 1)
    return runner, task, gate


async def test_a_runner_holds_a_worker_lease_while_it_sends(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """While a run sends, its runner is a listed worker (host, pid); afterwards it is not."""
    runner, task, gate = await sending_slowly(smtp_server, store, "r-worker")
    (worker,) = await store.workers(T0)
    assert (worker.owner, worker.host, worker.pid) == (
        runner.owner,
        socket.gethostname(),
        os.getpid(),
    )
    gate.set()
    report = await task
    await runner.sender.aclose()
    assert report.counts[MessageState.SENT] == 1
    assert await store.workers(T0) == []


async def test_a_claim_taken_back_is_recorded_once_and_resent_with_its_message_id(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """A worker presumed dead mid-send stops; the next one re-sends with the same Message-ID.

    The first copy got through too (at least once), but its outcome is not recorded:
    one attempt in the log, by the worker that holds the claim now.
    """
    runner, task, gate = await sending_slowly(smtp_server, store, "r-taken")
    assert await store.reclaim_expired(now=T0 + 100) == 1  # as another worker would
    gate.set()
    with pytest.raises(RunBusy, match="lease was taken back"):
        await task
    await runner.sender.aclose()
    assert len(smtp_server.messages) == 1
    message = await store.lookup("r-taken", "p-1")
    assert message is not None
    assert message.state is MessageState.QUEUED  # nobody's claim: the next worker's to send

    again = runner_for(smtp_server, store, ManualClock(now=T0 + 101))
    report = await again.run("r-taken")
    await again.sender.aclose()
    assert report.counts[MessageState.SENT] == 1
    assert len(smtp_server.messages) == 2
    ids = {email.message_from_bytes(m.data)["Message-ID"] for m in smtp_server.messages}
    assert len(ids) == 1
    attempts = await store.attempts(message.id)
    assert [(a.number, a.state) for a in attempts] == [(2, MessageState.SENT)]


async def test_a_shorter_ttl_elsewhere_never_takes_back_a_live_workers_claims(
    store: SqliteStore,
) -> None:
    """A worker whose lease runs 30 s and beat 5 s ago keeps its claims, even when another
    worker (started with --lease-ttl 1) takes back what it thinks expired."""
    runner = BulkRunner(
        Sender(sender_settings()),
        store,
        RunSettings(lease_ttl=30.0),
        scheduler=Scheduler(UNLIMITED),
    )
    people = [Participant("ada@d.example", "Ada", "p-1", "PY101")]
    await runner.enqueue("r-ttl", people)
    await store.register_worker("slow:1/a", host="elsewhere", pid=1, now=T0)
    (claimed,) = await store.claim_many("r-ttl", ["d.example"], now=T0, owner="slow:1/a")
    assert claimed is not None
    fast = WorkerLease(store, "fast:2/b", clock=ManualClock(now=T0 + 5), ttl=1.0)
    async with fast:
        pass
    assert (await store.counts("r-ttl"))[MessageState.SENDING] == 1
    assert await store.worker_heartbeat("slow:1/a", now=T0 + 6)
