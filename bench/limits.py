"""Cost of one shared rate-limit decision: in memory, SQLite, PostgreSQL and Redis.

Run from the repository root (PostgreSQL at 127.0.0.1:5432 and Redis at 127.0.0.1:6379,
as the tests use them)::

    python bench/limits.py [--decisions 2000] [--tasks 8] [--rounds 3]

A decision is what the scheduler asks before each message: ``acquire`` of the global key
and one domain group's key together (GCRA, charged both or neither), with intervals short
enough that nearly every decision is granted (concurrent tasks may read the clock out of
order and be told to wait a microsecond: a decision all the same). Each backend
runs ``--decisions`` of them one after another (one sender waiting on each answer), then
the same spread over ``--tasks`` concurrent tasks (a dispatcher with several connections in
flight). Backends run interleaved, ``--rounds`` times; the figure is the median, and the
ratio is against the in-memory limiter of the same round. ``postgres-2stmt`` is the
PostgreSQL decision before schema version 4 (a transaction of two statements, committed
with a WAL flush), kept here as the baseline of ``postgres``; the last line is their ratio.
PostgreSQL gets a database of its own, dropped afterwards; Redis keys carry a random prefix
and are deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from sender.pacing.limits import Grant, Limiter, MemoryLimiter, gcra
from sender.pacing.redis_limits import RedisLimiter
from sender.store.postgres.limits import PostgresLimiter
from sender.store.sqlite.limits import SqliteLimiter

ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/0"
INTERVAL = 1e-9  # seconds per message: every decision is granted


class TwoStatementLimiter(PostgresLimiter):
    """The decision as it was before schema version 4: lock and read the keys' rows, decide
    in Python, charge them, in one transaction over a pooled connection."""

    async def acquire(
        self, keys: Sequence[tuple[str, float]], /, *, now: float, force: bool = False
    ) -> Grant:
        names = [key for key, _ in keys]
        with self._errors():
            async with self._transaction() as conn:
                cursor = await conn.execute(
                    "INSERT INTO limits (key, tat) SELECT key, 0"
                    " FROM unnest(%s::text[]) AS k(key) ORDER BY key ON CONFLICT (key)"
                    " DO UPDATE SET key = excluded.key RETURNING key, tat, backoff",
                    (names,),
                )
                found = {key: (tat, backoff) for key, tat, backoff in await cursor.fetchall()}
                tats = [float(found[key][0]) for key in names]
                waits, charged = gcra(tats, [i for _, i in keys], now=now, force=force)
                if charged is not None:
                    await conn.execute(
                        "UPDATE limits SET tat = v.tat FROM unnest(%s::text[], %s::float8[])"
                        " AS v(key, tat) WHERE limits.key = v.key",
                        (names, list(charged)),
                    )
        return Grant(waits, found[names[-1]][1])


async def decide(limiter: Limiter, prefix: str, count: int, tasks: int) -> float:
    """Decisions per second for ``count`` decisions over ``tasks`` concurrent tasks."""
    keys = [(f"{prefix}rate", INTERVAL), (f"{prefix}domain:firma.example", INTERVAL)]

    async def one_task(n: int) -> None:
        for _ in range(n):
            await limiter.acquire(keys, now=time.time())  # a refusal is a decision too

    started = time.perf_counter()
    await asyncio.gather(*(one_task(count // tasks) for _ in range(tasks)))
    return (count // tasks * tasks) / (time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=2000)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    database = f"sender_bench_{secrets.token_hex(4)}"
    prefix = f"bench:{secrets.token_hex(4)}:"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    folder = tempfile.TemporaryDirectory()
    limiters: dict[str, Limiter] = {
        "memory": MemoryLimiter(),
        "sqlite": SqliteLimiter(Path(folder.name) / "limits.sqlite3"),
        "postgres": PostgresLimiter(f"postgresql://postgres@127.0.0.1:5432/{database}"),
        "postgres-2stmt": TwoStatementLimiter(f"postgresql://postgres@127.0.0.1:5432/{database}"),
        "redis": RedisLimiter(REDIS),
    }
    results: dict[tuple[str, int], list[float]] = {}
    ratios: dict[tuple[str, int], list[float]] = {}
    try:
        for limiter in limiters.values():  # connect, migrate, load scripts before timing
            await decide(limiter, prefix, 8, 1)
        for _ in range(args.rounds):
            for tasks in (1, args.tasks):
                base = await decide(limiters["memory"], prefix, args.decisions, tasks)
                for name, limiter in limiters.items():
                    rate = (
                        base
                        if name == "memory"
                        else await decide(limiter, prefix, args.decisions, tasks)
                    )
                    results.setdefault((name, tasks), []).append(rate)
                    ratios.setdefault((name, tasks), []).append(rate / base)
    finally:
        for limiter in limiters.values():
            await limiter.aclose()
        await cleanup_redis(prefix)
        folder.cleanup()
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    print(f"{args.decisions} decisions per figure, median of {args.rounds} rounds")
    print(f"{'backend':<14} {'tasks':>5} {'decisions/s':>12} {'vs memory':>10}")
    for (name, tasks), rates in sorted(results.items(), key=lambda item: (item[0][1], item[0][0])):
        ratio = statistics.median(ratios[name, tasks])
        print(f"{name:<14} {tasks:>5} {statistics.median(rates):>12,.0f} {ratio:>10.4f}")
    for tasks in (1, args.tasks):
        gain = statistics.median(
            new / old
            for new, old in zip(
                results["postgres", tasks], results["postgres-2stmt", tasks], strict=True
            )
        )
        print(f"postgres vs postgres-2stmt, {tasks} task(s): {gain:.2f}x")


async def cleanup_redis(prefix: str) -> None:
    """Delete the keys this run made (only its own prefix)."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(REDIS)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
