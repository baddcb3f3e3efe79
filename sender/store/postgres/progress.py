"""Where a run stands, in PostgreSQL: counts per state, one message's record.

Counts are plain ``GROUP BY`` over current messages (``replaced_by IS NULL``) through
the ``(run, state, domain)`` index, read in one snapshot (a ``REPEATABLE READ``
transaction) where several statements must agree.
"""

from __future__ import annotations

from sender.store.postgres.database import PostgresDatabase
from sender.store.records import (
    Attempt,
    DomainProgress,
    MessageRecord,
    attempt_from_columns,
    message_from_columns,
    problem_from_columns,
)
from sender.store.rules import PROBLEM_STATES
from sender.vocabulary import MessageState

__all__ = ["PostgresProgress"]

# In MESSAGE_COLUMNS order: the message's columns, and its run's run_id.
_SELECT_MESSAGE = (
    "SELECT m.id, r.run_id, m.row, m.email, m.state, m.attempts, m.message_id, m.code,"
    " m.enhanced_status, m.reply_text, m.detail, m.due_at, m.participant_id, m.name"
    " FROM messages m JOIN runs r ON m.run = r.id"
)


class PostgresProgress(PostgresDatabase):
    """:class:`~sender.store.base.Progress` for :class:`~sender.store.postgres.PostgresStore`."""

    async def counts(self, run_id: str, /) -> dict[MessageState, int]:
        """Messages per state; every state is present, zeros included (current messages)."""
        with self._errors():
            key, _ = await self._run(run_id)
            rows = await self._fetchall(
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
            key, _ = await self._run(run_id)
            rows = await self._fetchall(
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

    async def attempts(self, message_id: int, /) -> list[Attempt]:
        """The attempt log of one message, oldest first."""
        with self._errors():
            rows = await self._fetchall(
                "SELECT number, at, state, code, enhanced_status, reply_text, detail"
                " FROM attempts WHERE message = %s ORDER BY number, id",
                (message_id,),
            )
        return [attempt_from_columns(message_id, row) for row in rows]

    async def lookup(self, run_id: str, participant_id: str, /) -> MessageRecord | None:
        """The message of one participant in a run, if any."""
        with self._errors():
            key, _ = await self._run(run_id)
            found = await self._fetchone(
                _SELECT_MESSAGE
                + " WHERE m.run = %s AND m.participant_id = %s AND m.replaced_by IS NULL"
                " ORDER BY m.id LIMIT 1",
                (key, participant_id),
            )
        return None if found is None else message_from_columns(found)

    async def skipped(self, run_id: str, /, *, limit: int = 1000) -> list[tuple[int, str, str]]:
        """Skipped rows as (row, email or '', reason), in row order: at ingest or when composed."""
        with self._errors():
            key, _ = await self._run(run_id)
            rows = await self._fetchall(
                "SELECT row, email, COALESCE(skip_reason, detail, 'skipped') FROM messages"
                " WHERE run = %s AND state = 'skipped' ORDER BY row LIMIT %s",
                (key, limit),
            )
        return [(row, email or "", reason) for row, email, reason in rows]

    async def problems(
        self, run_id: str, /, *, limit: int = 1000
    ) -> list[tuple[int, str, MessageState, str]]:
        """Failed, deferred and suppressed rows as (row, email, state, last reply or detail)."""
        with self._errors():
            key, _ = await self._run(run_id)
            rows = await self._fetchall(
                "SELECT row, email, state, code, enhanced_status, reply_text, detail"
                " FROM messages WHERE run = %s AND state = ANY(%s::text[])"
                " AND replaced_by IS NULL ORDER BY row LIMIT %s",
                (key, [state.value for state in PROBLEM_STATES], limit),
            )
        return [problem_from_columns(row) for row in rows]

    async def message(self, message_id: int, /) -> MessageRecord | None:
        """One outbox message by its id (what a signed return path names; a BounceLog's)."""
        with self._errors():
            found = await self._fetchone(_SELECT_MESSAGE + " WHERE m.id = %s", (message_id,))
        return None if found is None else message_from_columns(found)
