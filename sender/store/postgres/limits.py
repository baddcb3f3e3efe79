"""The shared limits of processes on many hosts: two tables of the PostgreSQL outbox.

A decision is one statement in autocommit, a call of ``limits_acquire`` (a function of the
schema, version 4: :mod:`sender.store.postgres.schema`): it locks the keys (advisory locks,
in one order, so two deciders never deadlock), reads their times, decides by the rule of
:func:`~sender.pacing.limits.gcra` and charges every key or none, in one round trip with no
``BEGIN``/``COMMIT``. Its commit does not wait for the WAL flush, which cost more than the
decision itself: a server crash may forget the last fraction of a second of charges, so a
key may let one message through early once after a crash. A connection slot is one call
too (``limits_lease``, durable); a backoff is a compare-and-swap in a short transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

from sender.pacing.limits import Grant
from sender.store.postgres.database import PostgresDatabase

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
    on first use, as :class:`~sender.store.postgres.PostgresStore` does. Decisions asked one
    at a time (a scheduler asks before each message) go over a connection kept for them.
    """

    def __init__(self, url: str, /, *, max_size: int = 4) -> None:
        super().__init__(url, min_size=0, max_size=max_size)

    async def acquire(
        self, keys: Sequence[tuple[str, float]], /, *, now: float, force: bool = False
    ) -> Grant:
        if not keys:
            return Grant(())
        names = [key for key, _ in keys]
        intervals = [float(interval) for _, interval in keys]
        # Sent again if the kept connection was dropped: a key charged twice only slows.
        waits, backoff = await self._row_kept(_ACQUIRE, (names, intervals, float(now), force))
        return Grant(tuple(waits), backoff)

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
