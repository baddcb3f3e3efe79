"""The shared limits of processes on many hosts: two tables of the PostgreSQL outbox.

Each call is one statement in autocommit, a function of the schema (version 4,
:mod:`sender.store.postgres.schema`), so a decision costs one round trip and no
``BEGIN``/``COMMIT``: ``limits_acquire`` locks the keys (advisory locks, in one order, so two
deciders never deadlock), reads their times, decides by :func:`~sender.pacing.limits.gcra`'s
rule and charges every key or none, then commits without waiting for the WAL flush. A
charge lost in a server crash is at most a fraction of a second of decisions, so a key may
grant one message early once after a crash: a flush per message would cost more than the
decision itself. ``limits_lease`` takes a connection slot the same way, durably.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import AsyncConnection

from sender.errors import ConfigurationError
from sender.pacing.limits import Grant
from sender.store.postgres.database import CONNECT_TIMEOUT, PostgresDatabase, psycopg_marks

__all__ = ["PostgresLimiter"]

_ACQUIRE = "SELECT waits, backoff FROM limits_acquire(%s::text[], %s::float8[], %s::float8, %s)"
_SWAP_FROM_NONE = (  # a key with no row yet has no backoff either
    "INSERT INTO limits (key, tat, backoff) VALUES (%s, 0, %s)"
    " ON CONFLICT (key) DO UPDATE SET backoff = excluded.backoff"
    " WHERE limits.backoff IS NULL RETURNING backoff"
)
_SWAP = "UPDATE limits SET backoff = %s WHERE key = %s AND backoff = %s RETURNING backoff"
_LEASE = "SELECT limits_lease(%s, %s, %s, %s::float8, %s::float8)"


class PostgresLimiter(PostgresDatabase):
    """A :class:`~sender.pacing.limits.Limiter` in the outbox database at ``url``.

    A small pool of its own (the outbox's stays for the outbox); it connects and migrates
    on first use, as :class:`~sender.store.postgres.PostgresStore` does. Decisions asked
    one at a time (a scheduler asks before each message) go over one connection kept for
    them, since a pool checkout costs a tenth of a decision; one asked while another is
    on its way takes a pooled connection.
    """

    def __init__(self, url: str, /, *, max_size: int = 4) -> None:
        super().__init__(url, min_size=0, max_size=max_size)
        self._decider: AsyncConnection[Any] | None = None
        self._deciding = False

    async def acquire(
        self, keys: Sequence[tuple[str, float]], /, *, now: float, force: bool = False
    ) -> Grant:
        if not keys:
            return Grant(())
        names = [key for key, _ in keys]
        intervals = [float(interval) for _, interval in keys]
        parameters = (names, intervals, float(now), force)
        if self._deciding:
            waits, backoff = await self._row(_ACQUIRE, parameters)
        else:
            self._deciding = True
            try:
                waits, backoff = await self._decide(parameters)
            finally:
                self._deciding = False
        return Grant(tuple(waits), backoff)

    async def _decide(self, parameters: Sequence[object]) -> Any:
        """One decision over the decisions' own connection, connected on first use."""
        with self._errors():
            conn = self._decider
            if conn is not None and not conn.closed:
                try:
                    return await _ask(conn, parameters)
                except psycopg.OperationalError:
                    # Dropped while kept (a server restart, an idle timeout): once more on
                    # a new connection. Had the server charged already, the second charge
                    # only slows sending; it never lets more through.
                    self._decider = None
                    await conn.close()
            await self._open()  # migrated, and refused once closed
            conn = await psycopg.AsyncConnection.connect(
                self._url,
                autocommit=True,
                prepare_threshold=None,
                connect_timeout=int(CONNECT_TIMEOUT),
            )
            if self._closed:  # closed while connecting
                await conn.close()
                raise ConfigurationError(f"store {self._name} is closed", setting="store")
            self._decider = conn
            return await _ask(conn, parameters)

    async def swap_backoff(self, key: str, /, *, old: str | None, new: str | None) -> str | None:
        with self._errors():
            async with self._transaction() as conn:
                if old is None:
                    cursor = await conn.execute(_SWAP_FROM_NONE, (key, new))
                else:
                    cursor = await conn.execute(_SWAP, (new, key, old))
                if await cursor.fetchone() is not None:
                    return new
                cursor = await conn.execute("SELECT backoff FROM limits WHERE key = %s", (key,))
                row = await cursor.fetchone()
        return None if row is None else row[0]

    async def lease(self, key: str, /, *, holder: str, cap: int, ttl: float, now: float) -> bool:
        row = await self._row(_LEASE, (key, holder, cap, now + ttl, now))
        return bool(row[0])

    async def release(self, key: str, /, *, holder: str) -> None:
        await self._write("DELETE FROM limit_leases WHERE key = ? AND holder = ?", (key, holder))

    async def aclose(self) -> None:
        """Close the decisions' connection and the pool. Idempotent."""
        self._closed = True
        decider, self._decider = self._decider, None
        if decider is not None:
            with self._errors():
                await decider.close()
        await super().aclose()


async def _ask(conn: AsyncConnection[Any], parameters: Sequence[object]) -> Any:
    cursor = await conn.execute(psycopg_marks(_ACQUIRE), parameters)
    return await cursor.fetchone()
