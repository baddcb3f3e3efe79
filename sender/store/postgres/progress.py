"""Where a run stands, in PostgreSQL: counts per state, one message's record.

Counts are plain ``GROUP BY`` over current messages (``replaced_by IS NULL``) through
the ``(run, state, domain)`` index, read in one snapshot (a ``REPEATABLE READ``
transaction) where several statements must agree.
"""

from __future__ import annotations

import sender.store.sql as sql
from sender.store.common import SharedProgress
from sender.store.postgres.database import PostgresDatabase
from sender.store.records import DomainProgress
from sender.vocabulary import MessageState

__all__ = ["PostgresProgress"]


class PostgresProgress(SharedProgress, PostgresDatabase):
    """:class:`~sender.store.base.Progress` for :class:`~sender.store.postgres.PostgresStore`."""

    _ATTEMPTS = sql.SELECT_ATTEMPTS.format(order="id")
    _SKIPPED = sql.SELECT_SKIPPED.format(queued_hint="")
    _PROBLEMS = sql.SELECT_PROBLEMS.format(queued_hint="")

    async def counts(self, run_id: str, /) -> dict[MessageState, int]:
        """Messages per state; every state is present, zeros included (current messages)."""
        with self._errors():
            key, _ = await self._key(run_id)
            rows = await self._rows(
                "SELECT state, COUNT(*) FROM messages"
                " WHERE run = %s AND replaced_by IS NULL GROUP BY state",
                (key,),
            )
        counts = dict.fromkeys(MessageState, 0)
        counts.update((MessageState(state), int(count)) for state, count in rows)
        return counts

    async def domain_progress(self, run_id: str, /) -> list[DomainProgress]:
        """Per recipient domain, sorted by name: counts per state and the next deferred try.

        Skipped rows have no domain and are not listed; like :meth:`counts`, a message
        replaced by a corrected address is left out.
        """
        with self._errors():
            key, _ = await self._key(run_id)
            rows = await self._rows(
                "SELECT domain, state, COUNT(*),"
                " MIN(due_at) FILTER (WHERE state = 'deferred') FROM messages"
                " WHERE run = %s AND replaced_by IS NULL AND domain IS NOT NULL"
                " GROUP BY domain, state",
                (key,),
            )
        counts: dict[str, dict[MessageState, int]] = {}
        due: dict[str, float] = {}
        for domain, state, count, deferred in rows:
            counts.setdefault(domain, dict.fromkeys(MessageState, 0))[MessageState(state)] = int(
                count
            )
            if deferred is not None:
                due[domain] = float(deferred)
        return [
            DomainProgress(domain=domain, counts=counts[domain], next_attempt_at=due.get(domain))
            for domain in sorted(counts)
        ]
