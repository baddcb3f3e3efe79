"""The limits every process shares: one contract for the memory, SQLite, PostgreSQL and
Redis limiters, and two real ``sender run`` processes keeping one domain's limit.

Instances of a backend are separate connections to one state, as separate processes'
would be. Redis is the machine's own at 127.0.0.1:6379 (SENDER_TEST_REDIS names
another); a test that needs it fails, saying how to start it, when it is not reachable.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sender.errors import ConfigurationError
from sender.pacing.limits import Backoff, Limiter, MemoryLimiter, check_limits, gcra
from sender.pacing.schedule import RateLimits, Scheduler
from sender.store.limits import open_limiter
from sender.store.sqlite.limits import SqliteLimiter
from sender.testing import ManualClock, RecordingSMTPServer
from tests.conftest import BACKENDS, REDIS_URL, redis_url
from tests.helpers import (
    ARRIVAL_JITTER,
    arrivals,
    most_in_a_window,
    smtp_url,
    two_runs_at_once,
)


def key(name: str) -> str:
    """A key no other test (or xdist worker) shares: Redis and PostgreSQL outlive tests."""
    return f"{name}-{secrets.token_hex(6)}"


async def test_a_grant_charges_every_key_and_a_refusal_none(limiters: list[Limiter]) -> None:
    """Granted, the global and the domain key both move on; refused, neither does."""
    a, b, _ = limiters
    rate, domain = key("rate"), key("domain")
    assert (await a.acquire([(rate, 1.0), (domain, 10.0)], now=100.0)).granted
    refused = await b.acquire([(rate, 1.0), (domain, 10.0)], now=101.0)
    assert not refused.granted
    assert refused.waits == (0.0, pytest.approx(9.0))
    # The refusal charged nothing: the global key is still free for another domain.
    assert (await b.acquire([(rate, 1.0), (key("other"), 10.0)], now=101.0)).granted
    assert (await a.acquire([(rate, 1.0), (domain, 10.0)], now=110.0)).granted


async def test_a_forced_charge_pushes_the_key_back(limiters: list[Limiter]) -> None:
    """A priority send is charged without asking, and bulk to that key waits after it."""
    a, b, _ = limiters
    domain = key("domain")
    assert (await a.acquire([(domain, 5.0)], now=0.0)).granted
    assert (await b.acquire([(domain, 5.0)], now=1.0, force=True)).granted
    assert (await a.acquire([(domain, 5.0)], now=9.0)).wait == pytest.approx(1.0)


async def test_slots_are_capped_and_expire(limiters: list[Limiter]) -> None:
    """A connection slot is refused when all are held, renewed by its holder, and freed when
    its lease expires, so a holder that died never blocks the others."""
    a, b, c = limiters
    mx = key("mx")
    assert await a.lease(mx, holder="a", cap=2, ttl=30.0, now=0.0)
    assert await b.lease(mx, holder="b", cap=2, ttl=30.0, now=1.0)
    assert not await c.lease(mx, holder="c", cap=2, ttl=30.0, now=2.0)
    assert await a.lease(mx, holder="a", cap=2, ttl=30.0, now=20.0)  # renewed to 50
    assert await c.lease(mx, holder="c", cap=2, ttl=30.0, now=31.0)  # b died: expired at 31
    assert not await b.lease(mx, holder="b", cap=2, ttl=30.0, now=32.0)
    await c.release(mx, holder="c")
    assert await b.lease(mx, holder="b", cap=2, ttl=30.0, now=33.0)


async def test_the_backoff_is_swapped_only_from_what_is_stored(limiters: list[Limiter]) -> None:
    """Two processes changing a backoff at once: the second sees the first's and retries."""
    a, b, _ = limiters
    domain = key("domain")
    first, second = Backoff(30.0, 1.0, 301.0).encode(), Backoff(15.0, 2.0, 302.0).encode()
    assert await a.swap_backoff(domain, old=None, new=first) == first
    assert await b.swap_backoff(domain, old=None, new=second) == first
    assert await b.swap_backoff(domain, old=first, new=second) == second
    assert (await a.acquire([(domain, 1.0)], now=5.0)).backoff == second
    assert await a.swap_backoff(domain, old=second, new=None) is None


async def test_a_throttle_in_one_process_slows_the_other(limiters: list[Limiter]) -> None:
    """A 451 seen by one scheduler halves the domain's rate for another sharing the limiter,
    and both are back at the configured rate after the cooldown."""
    clock = ManualClock()
    limits = RateLimits(global_per_second=None, domain_per_minute=60.0, spacing_margin=0.0)
    one = Scheduler(limits, clock=clock, limiter=limiters[0])
    other = Scheduler(limits, clock=clock, limiter=limiters[1])
    domain = f"{key('d')}.example"
    one.add_pending(domain, 3)
    other.add_pending(domain, 3)
    assert await one.next_bulk() == domain
    await one.learn(domain, 451)
    start = clock.monotonic()
    assert await other.next_bulk() == domain
    waited = clock.monotonic() - start
    assert waited >= 2.0 - 1e-6  # the halved rate: 30/min, one message per 2 s
    assert [s.per_minute for s in other.snapshot()] == [30.0]
    clock.advance(limits.cooldown + 5)
    assert await other.next_bulk() == domain
    assert [s.per_minute for s in other.snapshot()] == [60.0]


def limiters_of(name: str, folder: Path) -> list[Limiter]:
    """Three limiters of backend ``name`` on one fresh shared state (memory: one instance)."""
    if name == "memory":
        return [MemoryLimiter()] * 3
    if name == "sqlite":
        return [SqliteLimiter(folder / "limits.sqlite3") for _ in range(3)]
    if name == "postgres":
        return [open_limiter("store", store=POSTGRES_URL[0]) for _ in range(3)]
    return [open_limiter(REDIS_URL, store="sqlite:///unused") for _ in range(3)]


STEPS = st.lists(
    st.tuples(st.integers(min_value=0, max_value=2), st.floats(min_value=0.0, max_value=0.7)),
    min_size=1,
    max_size=60,
)


@pytest.mark.parametrize("name", BACKENDS)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=STEPS, interval=st.sampled_from([0.25, 1.0, 1.7]))
def test_no_sliding_window_exceeds_the_limit_across_processes(
    name: str,
    steps: list[tuple[int, float]],
    interval: float,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Three limiters asking at arbitrary moments never grant more than one message per
    interval for a key, so no window of any length holds more than the limit."""

    async def scenario() -> list[float]:
        made = limiters_of(name, tmp_path_factory.mktemp("limits"))
        rate, domain = key("rate"), key("domain")
        granted: list[float] = []
        now = 1_000.0
        try:
            for index, step in steps:
                now += step
                grant = await made[index].acquire(
                    [(rate, interval / 4), (domain, interval)], now=now
                )
                if grant.granted:
                    granted.append(now)
        finally:
            for limiter in set(made):
                await limiter.aclose()
        return granted

    granted = asyncio.run(scenario())
    for window in (interval, 3 * interval, 10 * interval):
        limit = round(window / interval)
        assert most_in_a_window(granted, window - 1e-6) <= limit
    assert all(b - a >= interval - 1e-6 for a, b in itertools.pairwise(granted))


# One decision's inputs: each key's stored time (None: never asked) and interval, which
# stored time the clock is near, how near (half the time within a few nanoseconds, where
# the 1e-9 s tolerance decides), and force.
DECISIONS = st.tuples(
    st.lists(
        st.tuples(
            st.none() | st.floats(min_value=0.0, max_value=10_000.0),
            st.floats(min_value=0.0, max_value=100.0),
        ),
        min_size=1,
        max_size=3,
    ),
    st.integers(min_value=0, max_value=2),
    st.sampled_from([-2e-9, -1e-9, -5e-10, 0.0, 5e-10, 1e-9, 2e-9])
    | st.floats(min_value=-100.0, max_value=100.0),
    st.booleans(),
)


@pytest.mark.parametrize("name", BACKENDS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=DECISIONS)
def test_every_backend_decides_exactly_as_gcra(
    name: str,
    case: tuple[list[tuple[float | None, float]], int, float, bool],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Whatever the keys' stored times, intervals, clock and force, a backend answers the
    waits gcra() gives and stores the times it charges, to the last bit: PostgreSQL's
    limits_acquire and Redis's script are copies of that one rule."""
    stored, near, offset, force = case
    anchors = [tat for tat, _ in stored if tat is not None] or [0.0]
    now = max(0.0, anchors[near % len(anchors)] + offset)
    intervals = [interval for _, interval in stored]
    expected_waits, charged = gcra(
        [0.0 if tat is None else tat for tat, _ in stored], intervals, now=now, force=force
    )
    after = charged or tuple(0.0 if tat is None else tat for tat, _ in stored)

    async def scenario() -> tuple[tuple[float, ...], list[tuple[float, ...]]]:
        limiter = limiters_of(name, tmp_path_factory.mktemp("gcra"))[0]
        names = [key(f"k{index}") for index in range(len(stored))]
        try:
            for name_, (tat, _) in zip(names, stored, strict=True):
                if tat is not None:  # charged at 0 by its own interval: stored exactly
                    await limiter.acquire([(name_, tat)], now=0.0, force=True)
            grant = await limiter.acquire(
                list(zip(names, intervals, strict=True)), now=now, force=force
            )
            # A probe at 0 with no interval charges nothing and waits exactly the stored time.
            probes = [(await limiter.acquire([(n, 0.0)], now=0.0)).waits for n in names]
        finally:
            await limiter.aclose()
        return grant.waits, probes

    waits, probes = asyncio.run(scenario())
    assert waits == expected_waits
    assert probes == [(tat if tat > 1e-9 else 0.0,) for tat in after]


@pytest.mark.parametrize("name", BACKENDS)
def test_deciders_asking_in_opposite_orders_grant_once_and_never_deadlock(
    name: str, tmp_path: Path
) -> None:
    """Eight tasks on three limiters asking at one moment for the same two keys, half of
    them in the other order: exactly one is granted, and none waits on another for ever."""

    async def scenario() -> int:
        made = limiters_of(name, tmp_path)
        a, b = key("a"), key("b")
        orders = [[(a, 10.0), (b, 10.0)], [(b, 10.0), (a, 10.0)]]

        async def ask(task: int) -> int:
            limiter, granted = made[task % len(made)], 0
            for attempt in range(10):
                grant = await limiter.acquire(orders[(task + attempt) % 2], now=1_000.0)
                granted += grant.granted
            return granted

        try:
            counts = await asyncio.wait_for(asyncio.gather(*(ask(t) for t in range(8))), 60)
        finally:
            for limiter in set(made):
                await limiter.aclose()
        return sum(counts)

    assert asyncio.run(scenario()) == 1


async def test_a_postgres_limiter_decides_on_after_the_server_cut_its_connections(
    postgres_database: Callable[[str], str],
) -> None:
    """A server restart or an idle timeout costs no decision: the next one connects again,
    and what was charged before still counts."""
    import psycopg

    from sender.store.postgres.limits import PostgresLimiter

    url = postgres_database("cut")
    limiter = PostgresLimiter(url, max_size=1)
    rate = key("rate")
    try:
        assert (await limiter.acquire([(rate, 1.0)], now=10.0)).granted
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        refused = await limiter.acquire([(rate, 1.0)], now=10.5)
        assert refused.waits == (pytest.approx(0.5),)
        assert (await limiter.acquire([(rate, 1.0)], now=11.0)).granted
    finally:
        await limiter.aclose()


POSTGRES_URL: list[str] = []


@pytest.fixture(autouse=True)
def _reachable(request: pytest.FixtureRequest) -> None:
    """The property test builds its limiters itself: make sure their servers are up first."""
    name = getattr(request.node, "callspec", None)
    param = name.params.get("name") if name is not None else None
    if param == "postgres":
        url = request.getfixturevalue("postgres_url")
        POSTGRES_URL[:] = [url]
    elif param == "redis":
        redis_url()


def test_the_setting_names_the_store_or_redis() -> None:
    """``limits`` is ``store`` or a Redis URL; anything else is refused naming the setting,
    without its password."""
    assert check_limits(" Store ") == "store"
    assert check_limits("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    with pytest.raises(ConfigurationError) as caught:
        check_limits("memcached://u:hunter2@cache.example/0")
    assert caught.value.setting == "limits"
    assert "hunter2" not in str(caught.value)


def test_the_store_limits_of_a_sqlite_outbox_are_a_file_beside_it(tmp_path: Path) -> None:
    """A SQLite outbox's limits are limits.sqlite3 in its folder, created on first use."""
    limiter = open_limiter("store", store=f"sqlite:///{tmp_path}/outbox.sqlite3")
    assert isinstance(limiter, SqliteLimiter)
    assert limiter.path == tmp_path / "limits.sqlite3"
    assert not limiter.path.exists()


def test_limiters_opening_a_new_limits_file_at_once_all_decide(tmp_path: Path) -> None:
    """Eight limiters (threads, each its own connection, as processes would be) released
    at once onto a limits file nobody made yet all get their answer, and exactly two get
    the two slots; forty fresh files in turn.

    Before the file was born WAL, each opener switched it, and two switching at once
    deadlock: SQLite answers one of them "database is locked" at once, without waiting,
    and a `sender run` starting beside another died of it.
    """
    for round_ in range(40):
        path = tmp_path / f"fresh-{round_}" / "limits.sqlite3"
        barrier = threading.Barrier(8)

        def first_use(n: int, path: Path = path, barrier: threading.Barrier = barrier) -> bool:
            limiter = SqliteLimiter(path)
            barrier.wait()
            try:
                return asyncio.run(
                    limiter.lease("slot", holder=f"h{n}", cap=2, ttl=60.0, now=1_000.0)
                )
            finally:
                limiter.close()

        with ThreadPoolExecutor(max_workers=8) as pool:
            leased = list(pool.map(first_use, range(8)))
        assert sorted(leased) == [False] * 6 + [True] * 2
        assert path.read_bytes()[18:20] == b"\x02\x02"  # the header's WAL versions


async def test_a_limits_file_an_older_sender_left_is_taken_as_it_is(tmp_path: Path) -> None:
    """An empty limits file (an older sender made the file, then its tables on first
    use) gets its tables and WAL mode when opened, and decides."""
    path = tmp_path / "limits.sqlite3"
    path.touch()
    limiter = SqliteLimiter(path)
    try:
        assert await limiter.lease("slot", holder="a", cap=1, ttl=60.0, now=1_000.0)
        assert not await limiter.lease("slot", holder="b", cap=1, ttl=60.0, now=1_000.0)
    finally:
        limiter.close()
    assert path.read_bytes()[18:20] == b"\x02\x02"


@pytest.mark.slow
async def test_two_runs_from_one_home_keep_one_domains_limit(
    smtp_server: RecordingSMTPServer, workdir: Path
) -> None:
    """Two `sender run`s at once from one home, 30 participants each at one domain, at
    1200/min: no second holds more than 24 and no 2 s more than 40 between them (the
    issue's 60/min, 12 in 10 s, twenty times faster; windows counted ARRIVAL_JITTER short),
    and every participant gets one message. Each run alone would send at 20/s: without the
    shared limit the two send 40 in a second."""
    async with arrivals(smtp_server) as seen:
        await two_runs_at_once(
            workdir,
            smtp_url(smtp_server),
            *("--domain-rate", "1200/min", "--rate", "0"),
            rows=30,
            seconds=60,
        )
    delivered = Counter(r for message in smtp_server.messages for r in message.recipients)
    assert len(delivered) == 60
    assert set(delivered.values()) == {1}
    times = [moment for moment, _ in seen]
    assert most_in_a_window(times, 1.0 - ARRIVAL_JITTER) <= 24
    assert most_in_a_window(times, 2.0 - ARRIVAL_JITTER) <= 40
