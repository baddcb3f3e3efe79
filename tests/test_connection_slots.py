"""max_connections: the relay's open connections capped over every process that shares a
limiter (SMTP pools in one loop, worker processes, two ``sender run``\\ s), slots that a dead
holder cannot keep, and a pool without a cap that never asks the limiter.

The recording server counts the connections open at once, as the relay would see them.
Instances of a backend are separate connections to one state, as separate processes' are.
"""

from __future__ import annotations

import asyncio
import pickle
import secrets
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from sender.config import SmtpSettings
from sender.errors import ConfigurationError
from sender.models import DeliveryStatus, Envelope
from sender.pacing.limits import Limiter, MemoryLimiter
from sender.store.sqlite.limits import SqliteLimiter
from sender.testing import ManualClock, RecordingSMTPServer
from sender.transport import SmtpTransport
from sender.transport.smtp import LEASE_TTL
from tests.conftest import redis_url
from tests.helpers import sender_settings, smtp_url, two_runs_at_once

MESSAGE = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nhello\r\n"


def capped(server: RecordingSMTPServer, cap: int | None, **more: int) -> SmtpSettings:
    """The server's client settings with ``max_connections=cap``."""
    return replace(server.smtp_settings(**more), max_connections=cap)


def envelope(number: int) -> Envelope:
    return Envelope("a@example.org", (f"r{number}@example.org",))


async def send_many(transport: SmtpTransport, numbers: range) -> list[DeliveryStatus]:
    results = await asyncio.gather(
        *(transport.send(envelope(n), MESSAGE) for n in numbers),
    )
    return [result.status for (result,) in results]


async def free_slots(server: RecordingSMTPServer, limiter: Limiter, cap: int) -> int:
    """How many of the relay's ``cap`` slots a newcomer can lease now (then given back)."""
    key = f"conn:{server.host}:{server.port}"
    holders = [f"probe-{secrets.token_hex(4)}" for _ in range(cap)]
    taken = [
        holder
        for holder in holders
        if await limiter.lease(key, holder=holder, cap=cap, ttl=5.0, now=time.time())
    ]
    for holder in taken:
        await limiter.release(key, holder=holder)
    return len(taken)


async def test_two_pools_sharing_a_limiter_never_open_more_than_the_cap(
    smtp_server: RecordingSMTPServer, limiters: list[Limiter]
) -> None:
    """Two pools of 4, max_connections 2 between them, 60 messages at once, 3 a connection:
    the relay never sees more than 2 open, every message arrives, and the slots are free
    again once both pools are closed."""
    a, b, probe = limiters
    settings = capped(smtp_server, 2, pool_size=4, max_messages_per_connection=3)
    async with (
        SmtpTransport(settings, limiter=a) as first,
        SmtpTransport(settings, limiter=b) as second,
    ):
        statuses = await asyncio.gather(
            send_many(first, range(30)), send_many(second, range(30, 60))
        )
    assert [s for batch in statuses for s in batch] == [DeliveryStatus.ACCEPTED] * 60
    delivered = Counter(r for message in smtp_server.messages for r in message.recipients)
    assert set(delivered) == {f"r{n}@example.org" for n in range(60)}
    assert set(delivered.values()) == {1}
    assert smtp_server.connections_opened >= 20  # 3 a connection: slots changed hands
    assert smtp_server.most_open_connections <= 2
    assert await free_slots(smtp_server, probe, 2) == 2


async def test_without_a_cap_pools_open_what_their_size_allows(
    smtp_server: RecordingSMTPServer,
) -> None:
    """The same two pools without max_connections open up to 4 each, as before: the cap
    above is what held them to 2."""
    settings = capped(smtp_server, None, pool_size=4)
    async with SmtpTransport(settings) as first, SmtpTransport(settings) as second:
        await asyncio.gather(send_many(first, range(30)), send_many(second, range(30, 60)))
    assert len(smtp_server.messages) == 60
    assert smtp_server.most_open_connections > 2


async def test_a_pool_without_a_cap_never_asks_the_limiter(
    smtp_server: RecordingSMTPServer, tmp_path: Path
) -> None:
    """A limiter that fails on any call (its file cannot be created) changes nothing for a
    pool without max_connections; with a cap, the same limiter's error is the send's."""
    (tmp_path / "file").write_text("not a folder")
    broken = SqliteLimiter(tmp_path / "file" / "limits.sqlite3")
    async with SmtpTransport(capped(smtp_server, None), limiter=broken) as transport:
        assert await send_many(transport, range(5)) == [DeliveryStatus.ACCEPTED] * 5
        assert transport.limiter is None
    async with SmtpTransport(capped(smtp_server, 1), limiter=broken) as transport:
        with pytest.raises(ConfigurationError, match="limits"):
            await transport.send(envelope(9), MESSAGE)
    assert len(smtp_server.messages) == 5


async def test_a_cap_without_a_limiter_holds_for_the_pool_alone(
    smtp_server: RecordingSMTPServer,
) -> None:
    """max_connections 1 on a pool of 4 with no limiter to share: one connection at a time."""
    async with SmtpTransport(capped(smtp_server, 1, pool_size=4)) as transport:
        assert await send_many(transport, range(12)) == [DeliveryStatus.ACCEPTED] * 12
    assert smtp_server.most_open_connections == 1


async def test_a_dead_holders_slot_is_free_once_its_lease_expires(
    smtp_server: RecordingSMTPServer, limiters: list[Limiter]
) -> None:
    """A process that took the only slot and died (never gave it back) delays a send until
    its lease expires, and no longer: then the send takes the slot and is delivered."""
    dead, alive, _ = limiters
    clock = ManualClock()
    key = f"conn:{smtp_server.host}:{smtp_server.port}"
    assert await dead.lease(key, holder="dead-process#1", cap=1, ttl=30.0, now=clock.now())
    start = clock.now()
    try:
        async with SmtpTransport(capped(smtp_server, 1), limiter=alive, clock=clock) as transport:
            (result,) = await transport.send(envelope(1), MESSAGE)
            waited = clock.now() - start
    finally:
        await dead.release(key, holder="dead-process#1")  # Redis and PostgreSQL outlive tests
    assert result.status is DeliveryStatus.ACCEPTED
    assert 30.0 <= waited < 31.0
    assert len(smtp_server.messages) == 1


async def test_a_send_waiting_for_a_slot_takes_its_pools_connection_when_it_frees(
    smtp_server: RecordingSMTPServer, limiters: list[Limiter]
) -> None:
    """Another holder keeps one of 2 slots: 20 sends at once through a pool of 4 share the
    one connection they can have, each taking it as the one before is done with it."""
    other, a, _ = limiters
    key = f"conn:{smtp_server.host}:{smtp_server.port}"
    assert await other.lease(key, holder="other-process#1", cap=2, ttl=600.0, now=time.time())
    try:
        async with SmtpTransport(capped(smtp_server, 2, pool_size=4), limiter=a) as pool:
            assert await send_many(pool, range(20)) == [DeliveryStatus.ACCEPTED] * 20
            assert pool.connections_opened == 1
    finally:
        await other.release(key, holder="other-process#1")
    assert smtp_server.most_open_connections == 1


async def test_a_connection_that_outlives_the_ttl_keeps_its_slot(
    smtp_server: RecordingSMTPServer, limiters: list[Limiter]
) -> None:
    """A connection used every 5 s for twice LEASE_TTL is renewed all along: a newcomer
    never finds its slot free, and after the pool closes, it does."""
    a, probe, _ = limiters
    clock = ManualClock()
    key = f"conn:{smtp_server.host}:{smtp_server.port}"
    steps = int(2 * LEASE_TTL / 5)
    settings = capped(smtp_server, 1, max_messages_per_connection=steps + 1)
    async with SmtpTransport(settings, limiter=a, clock=clock) as transport:
        for number in range(steps):
            assert await send_many(transport, range(number, number + 1)) == [
                DeliveryStatus.ACCEPTED
            ]
            clock.advance(5.0)
            await clock.settle()  # the pool's renewal has had its turn, as it would in 5 s
            newcomer = await probe.lease(key, holder="newcomer", cap=1, ttl=5.0, now=clock.now())
            assert not newcomer, f"the slot was free after {clock.monotonic()} s"
        assert transport.connections_opened == 1
    assert await probe.lease(key, holder="newcomer", cap=1, ttl=5.0, now=clock.now())
    await probe.release(key, holder="newcomer")


async def test_an_idle_connection_gives_its_slot_to_a_process_waiting_for_it(
    smtp_server: RecordingSMTPServer, limiters: list[Limiter]
) -> None:
    """With one slot: a pool that sent keeps its idle connection warm while nobody waits;
    once another pool waits for the slot, the idle connection is closed and the other's
    send goes through, and the same happens the other way round."""
    a, b, _ = limiters
    clock = ManualClock()
    settings = capped(smtp_server, 1)
    async with (
        SmtpTransport(settings, limiter=a, clock=clock) as first,
        SmtpTransport(settings, limiter=b, clock=clock) as second,
    ):
        assert await send_many(first, range(1)) == [DeliveryStatus.ACCEPTED]
        clock.advance(LEASE_TTL / 2)  # nobody waits: the connection stays open, idle
        await clock.settle()
        assert await send_many(first, range(1, 2)) == [DeliveryStatus.ACCEPTED]
        assert first.connections_opened == 1
        assert await send_many(second, range(2, 3)) == [DeliveryStatus.ACCEPTED]
        assert await send_many(first, range(3, 4)) == [DeliveryStatus.ACCEPTED]
    assert (first.connections_opened, second.connections_opened) == (2, 1)
    assert smtp_server.most_open_connections == 1
    assert len(smtp_server.messages) == 4


def test_limiters_reopen_in_another_process_but_memory_refuses(tmp_path: Path) -> None:
    """A store or Redis limiter pickles as where it lives (a worker process reopens it);
    a memory limiter cannot be shared, so a worker pool with a cap refuses it."""
    from sender.bulk.workers import WorkerPool
    from sender.pacing.redis_limits import RedisLimiter

    copy = pickle.loads(pickle.dumps(SqliteLimiter(tmp_path / "limits.sqlite3")))  # noqa: S301
    assert isinstance(copy, SqliteLimiter)
    assert copy.path == tmp_path / "limits.sqlite3"
    assert isinstance(pickle.loads(pickle.dumps(RedisLimiter(redis_url()))), RedisLimiter)  # noqa: S301
    settings = SmtpSettings("127.0.0.1", 2525, max_connections=2)
    for limiter in (MemoryLimiter(), None):
        with pytest.raises(ConfigurationError, match="max_connections"):
            WorkerPool(sender_settings(), settings, workers=2, concurrency=4, limiter=limiter)
    WorkerPool(sender_settings(), replace(settings, max_connections=None), workers=2, concurrency=4)


@pytest.mark.slow
async def test_two_runs_with_workers_keep_the_cap_between_them(
    smtp_server: RecordingSMTPServer, workdir: Path
) -> None:
    """Two `sender run`s at once from one home, two worker processes each and concurrency
    8, through an smtp URL with max_connections=2: the relay never sees more than 2
    connections open, and every participant gets one message."""
    smtp = smtp_url(smtp_server) + "?max_connections=2&max_messages_per_connection=5"
    await two_runs_at_once(
        workdir,
        smtp,
        *("--rate", "0", "--domain-rate", "0", "--concurrency", "8", "--workers", "2"),
        rows=40,
        seconds=120,
    )
    delivered = Counter(r for message in smtp_server.messages for r in message.recipients)
    assert len(delivered) == 80
    assert set(delivered.values()) == {1}
    assert smtp_server.most_open_connections <= 2
