"""Bounces, the suppression list and the budget's counts in SQLite.

Which bounces count is decided in :mod:`sender.store.rules` (a delivery forgives earlier
soft bounces; copies of one bounce count once; the budget counts addresses), so this
module only fetches the rows those rules read.
"""

from __future__ import annotations

from collections.abc import Collection

import sender.store.sql as sql
from sender.addresses import address_key
from sender.store.common import SharedFeedback, address_event
from sender.store.rules import unforgiven_bounces
from sender.store.sqlite.file import MEMBER, SqliteFile

__all__ = ["SqliteFeedback"]


class SqliteFeedback(SharedFeedback, SqliteFile):
    """:class:`~sender.store.base.Feedback` and :class:`~sender.store.base.Budget` in SQLite."""

    _OWNERS = sql.OWNERS.format(member=MEMBER.format(column="email_key"))
    _SUPPRESSED = sql.SUPPRESSED.format(member=MEMBER.format(column="address"))
    _UNSUBSCRIBED = sql.UNSUBSCRIBED.format(member=MEMBER.format(column="address"))

    async def count_bounces(
        self, address: str, /, *, reasons: Collection[str], since: float
    ) -> int:
        """How many bounces for ``reasons`` an address had since ``since``, after its last delivery.

        Counted by :func:`~sender.store.rules.unforgiven_bounces`.
        """
        address = address_key(address)
        with self._errors(), self._snapshot() as db:
            (delivered,) = db.execute(
                "SELECT MAX(last_attempt_at) FROM messages"
                " WHERE email_key = ? AND state = 'sent' AND state <> 'queued'",
                (address,),
            ).fetchone()
            rows = db.execute(
                "SELECT message, fingerprint, at, reason FROM bounces"
                " WHERE address = ? AND forged = 0 AND at >= ?",
                (address, since),
            ).fetchall()
        wanted = set(reasons)
        counted = [(message, fp, at) for message, fp, at, reason in rows if reason in wanted]
        return unforgiven_bounces(counted, delivered=delivered)

    async def suppress(self, address: str, /, *, kind: str, reason: str, now: float) -> bool:
        """Add to the suppression list (logged); False when it was there already.

        The list holds each address's canonical key, so every spelling is one entry.
        """
        address = address_key(address)
        with self._errors(), self._transaction() as db:
            cursor = db.execute(sql.SUPPRESS, (address, kind, reason, now))
            if cursor.rowcount != 1:
                return False
            db.execute(sql.LOG_SUPPRESSION, (address, "added", kind, reason, now))
            db.execute(sql.ADDRESS_EVENT, address_event(address, kind, reason, now))
            return True

    async def unsuppress(self, address: str, /, *, reason: str, now: float) -> bool:
        """Remove from the suppression list (logged with the reason); False when absent."""
        address = address_key(address)
        with self._errors(), self._transaction() as db:
            row = db.execute(sql.UNSUPPRESS, (address,)).fetchall()
            if not row:
                return False
            db.execute(sql.LOG_SUPPRESSION, (address, "removed", row[0][0], reason, now))
            return True
