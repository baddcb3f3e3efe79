"""Bounces, the suppression list and the budget's counts in PostgreSQL.

Which bounces count is decided in :mod:`sender.store.rules`, so this module only fetches
the rows those rules read.
"""

from __future__ import annotations

from collections.abc import Collection

import sender.store.sql as sql
from sender.addresses import address_key
from sender.store.common import SharedFeedback, address_event
from sender.store.postgres.database import MEMBER, PostgresDatabase, psycopg_marks
from sender.store.rules import unforgiven_bounces

__all__ = ["PostgresFeedback"]

_SUPPRESS = psycopg_marks(sql.SUPPRESS)
_UNSUPPRESS = psycopg_marks(sql.UNSUPPRESS)
_LOG_SUPPRESSION = psycopg_marks(sql.LOG_SUPPRESSION)
_ADDRESS_EVENT = psycopg_marks(sql.ADDRESS_EVENT)


class PostgresFeedback(SharedFeedback, PostgresDatabase):
    """:class:`~sender.store.base.Feedback` and :class:`~sender.store.base.Budget`."""

    _OWNERS = sql.OWNERS.format(member=MEMBER.format(column="email_key"))
    _SUPPRESSED = sql.SUPPRESSED.format(member=MEMBER.format(column="address"))
    _UNSUBSCRIBED = sql.UNSUBSCRIBED.format(member=MEMBER.format(column="address"))

    async def count_bounces(
        self, address: str, /, *, reasons: Collection[str], since: float
    ) -> int:
        """How many bounces for ``reasons`` an address had since ``since``, after its last delivery.

        Counted by :func:`~sender.store.rules.unforgiven_bounces`, from one snapshot.
        """
        address = address_key(address)
        with self._errors():
            rows = await self._rows(
                "SELECT b.message, b.fingerprint, b.at, d.delivered FROM"
                " (SELECT MAX(last_attempt_at) AS delivered FROM messages"
                "   WHERE email_key = %s AND state = 'sent') d"
                " LEFT JOIN bounces b ON b.address = %s AND b.reason = ANY(%s::text[])"
                "  AND b.forged = 0 AND b.at >= %s",
                (address, address, sorted(set(reasons)), since),
            )
        delivered = rows[0][3] if rows else None
        bounces = [(message, fp, at) for message, fp, at, _ in rows if fp is not None]
        return unforgiven_bounces(bounces, delivered=delivered)

    async def suppress(self, address: str, /, *, kind: str, reason: str, now: float) -> bool:
        """Add to the suppression list (logged); False when it was there already."""
        address = address_key(address)
        with self._errors():
            async with self._transaction() as db:
                cursor = await db.execute(_SUPPRESS, (address, kind, reason, now))
                if cursor.rowcount != 1:
                    return False
                await db.execute(_LOG_SUPPRESSION, (address, "added", kind, reason, now))
                await db.execute(_ADDRESS_EVENT, address_event(address, kind, reason, now))
                return True

    async def unsuppress(self, address: str, /, *, reason: str, now: float) -> bool:
        """Remove from the suppression list (logged with the reason); False when absent."""
        address = address_key(address)
        with self._errors():
            async with self._transaction() as db:
                cursor = await db.execute(_UNSUPPRESS, (address,))
                row = await cursor.fetchone()
                if row is None:
                    return False
                await db.execute(_LOG_SUPPRESSION, (address, "removed", row[0], reason, now))
                return True
