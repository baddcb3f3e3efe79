"""The shared limits of processes on many hosts: two tables of the PostgreSQL outbox.

A decision is one short transaction: an ``INSERT … ON CONFLICT DO UPDATE … RETURNING``
that creates the keys' rows if need be, locks them (in key order, so two deciders never
deadlock) and returns their times; :func:`~sender.pacing.limits.gcra` decides; one
``UPDATE`` charges them if granted. Rows stay locked only for that round trip, so every
worker and web process on every host decides against the same ``tat``.
"""

from __future__ import annotations

from collections.abc import Sequence

from sender.pacing.limits import Grant, gcra
from sender.store.postgres.database import PostgresDatabase

__all__ = ["PostgresLimiter"]

_LOCK_KEYS = (
    "INSERT INTO limits (key, tat) SELECT key, 0 FROM unnest(%s::text[]) AS k(key) ORDER BY key"
    " ON CONFLICT (key) DO UPDATE SET key = excluded.key RETURNING key, tat, backoff"
)
_CHARGE = (
    "UPDATE limits SET tat = v.tat FROM unnest(%s::text[], %s::float8[]) AS v(key, tat)"
    " WHERE limits.key = v.key"
)
_SWAP_FROM_NONE = (  # a key with no row yet has no backoff either
    "INSERT INTO limits (key, tat, backoff) VALUES (%s, 0, %s)"
    " ON CONFLICT (key) DO UPDATE SET backoff = excluded.backoff"
    " WHERE limits.backoff IS NULL RETURNING backoff"
)
_SWAP = "UPDATE limits SET backoff = %s WHERE key = %s AND backoff = %s RETURNING backoff"
_LEASE = (
    "DELETE FROM limit_leases WHERE key = %s AND expires_at <= %s",
    "SELECT count(*) FROM limit_leases WHERE key = %s AND holder != %s",
    "INSERT INTO limit_leases (key, holder, expires_at) VALUES (%s, %s, %s)"
    " ON CONFLICT (key, holder) DO UPDATE SET expires_at = excluded.expires_at",
)


class PostgresLimiter(PostgresDatabase):
    """A :class:`~sender.pacing.limits.Limiter` in the outbox database at ``url``.

    A small pool of its own (the outbox's stays for the outbox); it connects and migrates
    on first use, as :class:`~sender.store.postgres.PostgresStore` does.
    """

    def __init__(self, url: str, /, *, max_size: int = 4) -> None:
        super().__init__(url, min_size=0, max_size=max_size)

    async def acquire(
        self, keys: Sequence[tuple[str, float]], /, *, now: float, force: bool = False
    ) -> Grant:
        names = [key for key, _ in keys]
        if not names:
            return Grant(())
        with self._errors():
            async with self._transaction() as conn:
                cursor = await conn.execute(_LOCK_KEYS, (names,))
                found = {key: (tat, backoff) for key, tat, backoff in await cursor.fetchall()}
                tats = [float(found[key][0]) for key in names]
                intervals = [interval for _, interval in keys]
                waits, charged = gcra(tats, intervals, now=now, force=force)
                if charged is not None:
                    await conn.execute(_CHARGE, (names, list(charged)))
        return Grant(waits, found[names[-1]][1])

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
        expire, count, take = _LEASE
        with self._errors():
            async with self._transaction() as conn:
                # One decider per key at a time: the count and the insert must agree.
                await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 7))", (key,))
                await conn.execute(expire, (key, now))
                cursor = await conn.execute(count, (key, holder))
                row = await cursor.fetchone()
                if row is not None and int(row[0]) >= cap:
                    return False
                await conn.execute(take, (key, holder, now + ttl))
        return True

    async def release(self, key: str, /, *, holder: str) -> None:
        await self._write("DELETE FROM limit_leases WHERE key = ? AND holder = ?", (key, holder))
