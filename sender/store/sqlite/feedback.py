"""Bounces, the suppression list and the budget's counts in SQLite.

Which bounces count is decided in :mod:`sender.store.rules` (a delivery forgives earlier
soft bounces; copies of one bounce count once; the budget counts addresses), so this
module only fetches the rows those rules read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sender.addresses import address_key
from sender.models import Participant
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
from sender.store.sqlite.file import SqliteFile

__all__ = ["SqliteFeedback"]

# Constants of this module and record fields, never input.
_SELECT_BOUNCES = f"SELECT {', '.join(BOUNCE_COLUMNS)} FROM bounces"  # noqa: S608
_SELECT_SUPPRESSIONS = f"SELECT {', '.join(SUPPRESSION_COLUMNS)} FROM suppressions"  # noqa: S608
_SELECT_OWNERS = (
    f"SELECT email_key, {', '.join(PARTICIPANT_COLUMNS)}"  # noqa: S608
    "  FROM messages WHERE participant_id IS NOT NULL"
    "   AND email_key IN (SELECT value FROM json_each(?)) ORDER BY id"
)
_LOG = "INSERT INTO suppression_log (address, action, kind, reason, at) VALUES (?, ?, ?, ?, ?)"


class SqliteFeedback(SqliteFile):
    """:class:`~sender.store.base.Feedback` and :class:`~sender.store.base.Budget` in SQLite."""

    # --- bounces ------------------------------------------------------------------------

    async def add_bounce(self, record: BounceRecord, /) -> bool:
        """Keep a bounce; False (nothing stored) when its fingerprint is already kept."""
        return self._insert_once("bounces", BOUNCE_COLUMNS, bounce_values(record))

    async def bounces(self, *, since: float | None = None) -> list[BounceRecord]:
        """Bounces kept since a time (all when None), oldest first."""
        rows = self._all(
            _SELECT_BOUNCES + " WHERE at >= ? ORDER BY at, id",
            (since if since is not None else float("-inf"),),
        )
        return [bounce_from_columns(row) for row in rows]

    async def count_bounces(self, address: str, /, *, kind: str, since: float) -> int:
        """How many bounces of ``kind`` an address had since ``since``, after its last delivery.

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
                "SELECT message, fingerprint, at FROM bounces"
                " WHERE address = ? AND kind = ? AND forged = 0 AND at >= ?",
                (address, kind, since),
            ).fetchall()
        return unforgiven_bounces(rows, delivered=delivered)

    async def participants_by_address(self, addresses: Sequence[str], /) -> dict[str, Participant]:
        """The participant each address last belonged to in any run, by address key."""
        if not addresses:
            return {}
        rows = self._all(_SELECT_OWNERS, (_address_list(addresses),))
        # the last one wins
        return {key: participant_from_columns(*person) for key, *person in rows}

    # --- the budget ---------------------------------------------------------------------

    async def hard_bounces_since(self, since: float, /) -> int:
        """Addresses that hard-bounced (not forged) since ``since`` (the ``bounces_at`` index).

        Counted by :func:`~sender.store.rules.bounced_addresses`.
        """
        rows = self._all(
            "SELECT address, message, fingerprint"
            " FROM bounces WHERE kind = 'hard' AND at >= ? AND forged = 0",
            (since,),
        )
        return bounced_addresses(rows)

    async def sent_since(self, since: float, /) -> int:
        """Messages accepted since ``since``; a scan of the attempt log, so ask sparingly."""
        return int(
            self._value("SELECT COUNT(*) FROM attempts WHERE state = 'sent' AND at >= ?", (since,))
        )

    # --- the suppression list -----------------------------------------------------------

    async def suppress(self, address: str, /, *, kind: str, reason: str, now: float) -> bool:
        """Add to the suppression list (logged); False when it was there already.

        The list holds each address's canonical key, so every spelling is one entry.
        """
        address = address_key(address)
        with self._errors(), self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO suppressions (address, kind, reason, since) VALUES (?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (address, kind, reason, now),
            )
            if cursor.rowcount != 1:
                return False
            db.execute(_LOG, (address, "added", kind, reason, now))
            return True

    async def unsuppress(self, address: str, /, *, reason: str, now: float) -> bool:
        """Remove from the suppression list (logged with the reason); False when absent."""
        address = address_key(address)
        with self._errors(), self._transaction() as db:
            row = db.execute(
                "DELETE FROM suppressions WHERE address = ? RETURNING kind", (address,)
            ).fetchall()
            if not row:
                return False
            db.execute(_LOG, (address, "removed", row[0][0], reason, now))
            return True

    async def suppressed(self, addresses: Sequence[str], /) -> dict[str, Suppression]:
        """The suppressed ones among ``addresses`` (compared by canonical key), by key."""
        if not addresses:
            return {}
        rows = self._all(
            _SELECT_SUPPRESSIONS  # noqa: S608 (constants)
            + " WHERE address IN (SELECT value FROM json_each(?))",
            (_address_list(addresses),),
        )
        return {row[0]: suppression_from_columns(row) for row in rows}

    async def suppressions(self) -> list[Suppression]:
        rows = self._all(_SELECT_SUPPRESSIONS + " ORDER BY since")
        return [suppression_from_columns(row) for row in rows]


def _address_list(addresses: Sequence[str]) -> str:
    """Addresses as a JSON array for ``json_each``: their canonical keys, each once."""
    return json.dumps(sorted({address_key(address) for address in addresses}))
