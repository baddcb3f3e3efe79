"""Bounces, the suppression list and the budget's counts in PostgreSQL.

Which bounces count is decided in :mod:`sender.store.rules`, so this module only fetches
the rows those rules read.
"""

from __future__ import annotations

from collections.abc import Sequence

from sender.addresses import address_key
from sender.models import Participant
from sender.store.postgres.database import PostgresDatabase
from sender.store.records import (
    BOUNCE_COLUMNS,
    PARTICIPANT_COLUMNS,
    SUPPRESSION_COLUMNS,
    BounceRecord,
    Suppression,
    bounce_from_columns,
    bounce_values,
    participant_from_columns,
    suppression_from_columns,
)
from sender.store.rules import bounced_addresses, unforgiven_bounces

__all__ = ["PostgresFeedback"]

# Constants of this module and record fields, never input.
_SELECT_BOUNCES = f"SELECT {', '.join(BOUNCE_COLUMNS)} FROM bounces"  # noqa: S608
_SELECT_SUPPRESSIONS = f"SELECT {', '.join(SUPPRESSION_COLUMNS)} FROM suppressions"  # noqa: S608
_SELECT_OWNERS = (
    f"SELECT email_key, {', '.join(PARTICIPANT_COLUMNS)}"  # noqa: S608
    "  FROM messages WHERE participant_id IS NOT NULL"
    "   AND email_key = ANY(%s::text[]) ORDER BY id"
)
_LOG = "INSERT INTO suppression_log (address, action, kind, reason, at) VALUES (%s, %s, %s, %s, %s)"


class PostgresFeedback(PostgresDatabase):
    """:class:`~sender.store.base.Feedback` and :class:`~sender.store.base.Budget`."""

    # --- bounces ------------------------------------------------------------------------

    async def add_bounce(self, record: BounceRecord, /) -> bool:
        """Keep a bounce; False (nothing stored) when its fingerprint is already kept."""
        return await self._insert_once("bounces", BOUNCE_COLUMNS, bounce_values(record))

    async def bounces(self, *, since: float | None = None) -> list[BounceRecord]:
        """Bounces kept since a time (all when None), oldest first."""
        with self._errors():
            rows = await self._fetchall(
                _SELECT_BOUNCES + " WHERE at >= %s ORDER BY at, id",
                (since if since is not None else float("-inf"),),
            )
        return [bounce_from_columns(row) for row in rows]

    async def count_bounces(self, address: str, /, *, kind: str, since: float) -> int:
        """How many bounces of ``kind`` an address had since ``since``, after its last delivery.

        Counted by :func:`~sender.store.rules.unforgiven_bounces`, from one snapshot.
        """
        address = address_key(address)
        with self._errors():
            rows = await self._fetchall(
                "SELECT b.message, b.fingerprint, b.at, d.delivered FROM"
                " (SELECT MAX(last_attempt_at) AS delivered FROM messages"
                "   WHERE email_key = %s AND state = 'sent') d"
                " LEFT JOIN bounces b ON b.address = %s AND b.kind = %s AND b.forged = 0"
                "  AND b.at >= %s",
                (address, address, kind, since),
            )
        delivered = rows[0][3] if rows else None
        bounces = [(message, fp, at) for message, fp, at, _ in rows if fp is not None]
        return unforgiven_bounces(bounces, delivered=delivered)

    async def participants_by_address(self, addresses: Sequence[str], /) -> dict[str, Participant]:
        """The participant each address last belonged to in any run, by address key."""
        if not addresses:
            return {}
        with self._errors():
            rows = await self._fetchall(_SELECT_OWNERS, (_address_list(addresses),))
        # the last one wins
        return {key: participant_from_columns(*person) for key, *person in rows}

    # --- the budget ---------------------------------------------------------------------

    async def hard_bounces_since(self, since: float, /) -> int:
        """Addresses that hard-bounced (not forged) since ``since`` (the ``bounces_at`` index).

        Counted by :func:`~sender.store.rules.bounced_addresses`.
        """
        with self._errors():
            rows = await self._fetchall(
                "SELECT address, message, fingerprint"
                " FROM bounces WHERE kind = 'hard' AND at >= %s AND forged = 0",
                (since,),
            )
        return bounced_addresses(rows)

    async def sent_since(self, since: float, /) -> int:
        """Messages accepted since ``since`` (the attempt log's partial index of sends)."""
        with self._errors():
            (sent,) = await self._fetchone(
                "SELECT COUNT(*) FROM attempts WHERE state = 'sent' AND at >= %s", (since,)
            )
        return int(sent)

    # --- the suppression list -----------------------------------------------------------

    async def suppress(self, address: str, /, *, kind: str, reason: str, now: float) -> bool:
        """Add to the suppression list (logged); False when it was there already."""
        address = address_key(address)
        with self._errors():
            async with self._transaction() as db:
                cursor = await db.execute(
                    "INSERT INTO suppressions (address, kind, reason, since)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (address, kind, reason, now),
                )
                if cursor.rowcount != 1:
                    return False
                await db.execute(_LOG, (address, "added", kind, reason, now))
                return True

    async def unsuppress(self, address: str, /, *, reason: str, now: float) -> bool:
        """Remove from the suppression list (logged with the reason); False when absent."""
        address = address_key(address)
        with self._errors():
            async with self._transaction() as db:
                cursor = await db.execute(
                    "DELETE FROM suppressions WHERE address = %s RETURNING kind", (address,)
                )
                row = await cursor.fetchone()
                if row is None:
                    return False
                await db.execute(_LOG, (address, "removed", row[0], reason, now))
                return True

    async def suppressed(self, addresses: Sequence[str], /) -> dict[str, Suppression]:
        """The suppressed ones among ``addresses`` (compared by canonical key), by key."""
        if not addresses:
            return {}
        with self._errors():
            rows = await self._fetchall(
                _SELECT_SUPPRESSIONS + " WHERE address = ANY(%s::text[])",
                (_address_list(addresses),),
            )
        return {row[0]: suppression_from_columns(row) for row in rows}

    async def suppressions(self) -> list[Suppression]:
        with self._errors():
            rows = await self._fetchall(_SELECT_SUPPRESSIONS + " ORDER BY since")
        return [suppression_from_columns(row) for row in rows]


def _address_list(addresses: Sequence[str]) -> list[str]:
    """The canonical keys of ``addresses``, each once."""
    return sorted({address_key(address) for address in addresses})
