"""The worker loop (`sender worker`'s library half): which runs it sends, and how it stops."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence

import pytest

from sender import Participant, Sender
from sender.bulk.drain import Drain, DrainReport
from sender.bulk.runner import BulkRunner, RunSettings
from sender.errors import ConfigurationError
from sender.pacing.schedule import Scheduler
from sender.store import MessageState, RunInfo, RunState, SqliteStore
from sender.testing import RecordingSMTPServer, Stage
from sender.transport import SmtpTransport
from tests.helpers import UNLIMITED, sender_settings, until


def people(prefix: str, count: int) -> list[Participant]:
    return [
        Participant(f"{prefix}{i}@d{i % 2}.example", f"P {i}", f"{prefix}-{i}", "PY101")
        for i in range(count)
    ]


class Senders:
    """Runners over one transport to ``server``, as ``sender worker`` makes them."""

    def __init__(self, server: RecordingSMTPServer, store: SqliteStore) -> None:
        self.sender = Sender(
            sender_settings(), transport=SmtpTransport(server.smtp_settings(pool_size=4))
        )
        self.store = store
        self.refuse: set[str] = set()
        self.asked: Counter[str] = Counter()

    def runner(self, owner: str = "test:1/x", *, concurrency: int = 4) -> BulkRunner:
        return BulkRunner(
            self.sender,
            self.store,
            RunSettings(concurrency=concurrency, lease_ttl=3.0),
            scheduler=Scheduler(UNLIMITED),
            owner=owner,
        )

    async def runner_for(self, run: RunInfo, owner: str) -> BulkRunner:
        self.asked[run.run_id] += 1
        if run.run_id in self.refuse:
            raise ConfigurationError(f"no password for run {run.run_id}'s server")
        return self.runner(owner)


async def enqueue(senders: Senders, run_id: str, group: Sequence[Participant]) -> None:
    await senders.runner("enqueuer:1/y").enqueue(run_id, group)


def drain(senders: Senders, *, exit_when_idle: bool = True) -> Drain:
    return Drain(
        senders.store,
        senders.runner_for,
        owner="host:1/drain-a",
        ttl=3.0,
        exit_when_idle=exit_when_idle,
        poll=0.05,
        turn=0.2,
    )


async def test_a_worker_sends_every_active_run_and_leaves_paused_ones(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """Two enqueued runs are both sent and done; a paused run is not touched."""
    senders = Senders(smtp_server, store)
    await enqueue(senders, "r-a", people("a", 12))
    await enqueue(senders, "r-b", people("b", 5))
    await enqueue(senders, "r-paused", people("c", 3))
    await store.set_run_state("r-paused", RunState.PAUSED, now=0.0, reason="by hand")
    report = await asyncio.wait_for(drain(senders).run(), 30)
    await senders.sender.aclose()
    assert report.sent == {"r-a": 12, "r-b": 5}
    assert sorted(report.finished) == ["r-a", "r-b"]
    assert len(smtp_server.messages) == 17
    for run_id, state in (("r-a", RunState.DONE), ("r-b", RunState.DONE)):
        info = await store.get_run(run_id)
        assert info is not None
        assert info.state is state
    assert (await store.counts("r-paused"))[MessageState.QUEUED] == 3


async def test_a_run_this_worker_cannot_send_is_left_for_another(
    smtp_server: RecordingSMTPServer, store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A run whose transport this worker cannot use is logged once and left queued; the
    other runs are sent, and the worker still exits when idle."""
    senders = Senders(smtp_server, store)
    senders.refuse.add("r-other")
    await enqueue(senders, "r-other", people("o", 3))
    await enqueue(senders, "r-mine", people("m", 4))
    report = await asyncio.wait_for(drain(senders).run(), 30)
    await senders.sender.aclose()
    assert report.sent == {"r-mine": 4}
    assert (await store.counts("r-other"))[MessageState.QUEUED] == 3
    refused = [r for r in caplog.records if "cannot send it" in r.getMessage()]
    assert len(refused) == 1
    assert "r-other" in refused[0].getMessage()


async def test_a_run_held_by_sender_run_is_left_to_it(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """While a live process holds a run's lease alone, workers do not send it."""
    senders = Senders(smtp_server, store)
    await enqueue(senders, "r-held", people("h", 3))
    assert await store.acquire_run("r-held", owner="elsewhere:1/z", now=time.time(), ttl=3.0)
    report = await asyncio.wait_for(drain(senders).run(), 30)
    assert report.sent == {}
    assert not smtp_server.messages
    await store.release_run("r-held", owner="elsewhere:1/z")
    report = await asyncio.wait_for(drain(senders).run(), 30)
    await senders.sender.aclose()
    assert report.sent == {"r-held": 3}


async def test_stop_finishes_in_flight_sends_and_puts_unstarted_claims_back(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """Stopping mid-run: what was in flight is recorded sent, nothing stays `sending`, the
    run stays active for other workers, and a second worker sends the rest once."""
    senders = Senders(smtp_server, store)
    smtp_server.delay(Stage.DATA, 0.1)
    await enqueue(senders, "r-stop", people("s", 30))
    first = drain(senders, exit_when_idle=False)
    task = asyncio.create_task(first.run())
    await until(lambda: len(smtp_server.messages) >= 4)
    first.stop()
    report: DrainReport = await asyncio.wait_for(task, 30)
    counts = await store.counts("r-stop")
    assert counts[MessageState.SENDING] == 0
    assert counts[MessageState.SENT] == report.sent_now == len(smtp_server.messages)
    info = await store.get_run("r-stop")
    assert info is not None
    assert info.state is RunState.ACTIVE
    await asyncio.wait_for(drain(senders).run(), 30)
    await senders.sender.aclose()
    delivered = Counter(r for m in smtp_server.messages for r in m.recipients)
    assert len(delivered) == 30
    assert set(delivered.values()) == {1}


async def test_a_worker_whose_lease_was_taken_back_goes_on_under_a_new_one(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """Its lease taken back mid-run (as another worker would, after a stall), the worker
    stops sending under it, registers a new lease, and finishes the run: every participant
    gets the message, the one taken back possibly twice, recorded once."""
    senders = Senders(smtp_server, store)
    gate = smtp_server.hold(Stage.DATA, times=1)
    await enqueue(senders, "r-lost", people("l", 6))
    worker = drain(senders)
    task = asyncio.create_task(worker.run())
    await until(lambda: smtp_server.connections_opened >= 1)
    (lease,) = await store.workers(time.time())
    assert await store.reclaim_worker(lease.owner, now=time.time()) >= 1
    gate.set()
    report = await asyncio.wait_for(task, 30)
    await senders.sender.aclose()
    assert report.leases == 2
    counts = await store.counts("r-lost")
    assert counts[MessageState.SENT] == 6
    delivered = Counter(r for m in smtp_server.messages for r in m.recipients)
    assert len(delivered) == 6
    assert sum(delivered.values()) - 6 <= 4  # at most what it had in flight


async def test_a_stop_while_the_worker_prepares_a_run_sends_nothing_of_it(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """SIGTERM while the worker is still making a run's runner (opening its transport,
    starting its processes) is not lost: the worker returns without sending that run."""
    senders = Senders(smtp_server, store)
    await enqueue(senders, "r-late-stop", people("t", 20))

    async def stopped_meanwhile(run: RunInfo, owner: str) -> BulkRunner:
        worker.stop()  # the signal arrives while the runner is being made
        return await senders.runner_for(run, owner)

    worker = Drain(store, stopped_meanwhile, owner="host:1/drain-s", ttl=3.0, poll=0.05)
    report = await asyncio.wait_for(worker.run(), 30)
    await senders.sender.aclose()
    assert report.sent_now == 0
    assert not smtp_server.messages
    counts = await store.counts("r-late-stop")
    assert counts[MessageState.QUEUED] == 20


async def test_a_run_paused_by_a_failed_transport_keeps_no_claim_of_a_live_worker(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """A transport failure pauses the run; the message whose send failed is not left
    `sending` under the worker, which lives on: resumed, the run is sent in full."""
    senders = Senders(smtp_server, store)
    smtp_server.reply(Stage.MAIL, "530 5.7.0 Authentication required", times=1)
    await enqueue(senders, "r-fatal", people("f", 3))
    worker = drain(senders, exit_when_idle=False)
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(200):  # bounded: 10 s for the run to pause and its claim to go back
            info = await store.get_run("r-fatal")
            sending = (await store.counts("r-fatal"))[MessageState.SENDING]
            if info is not None and info.state is RunState.PAUSED and not sending:
                break
            await asyncio.sleep(0.05)
        assert info is not None
        assert info.state is RunState.PAUSED
        assert sending == 0
        resumed = await asyncio.wait_for(senders.runner("resumer:1/r").run("r-fatal"), 30)
        assert resumed.counts[MessageState.SENT] == 3
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
        await senders.sender.aclose()
