"""Where a run stands, in SQLite: counts through the partial indexes, one message's record.

Counts are this backend's own SQL: the state index leaves queued rows out (ingest writes
one index fewer), so queued counts are claimable rows minus deferred ones, and messages
replaced by a corrected address are subtracted through their own small index.
"""

from __future__ import annotations

from sender.store.records import (
    Attempt,
    DomainProgress,
    MessageRecord,
    attempt_from_columns,
    message_from_columns,
    problem_from_columns,
)
from sender.store.sqlite.file import SqliteFile
from sender.vocabulary import MessageState

__all__ = ["SqliteProgress"]

# In MESSAGE_COLUMNS order: the message's columns, and its run's run_id.
_SELECT_MESSAGE = (
    "SELECT m.id, r.run_id, m.row, m.email, m.state, m.attempts, m.message_id, m.code,"
    " m.enhanced_status, m.reply_text, m.detail, m.due_at, m.participant_id, m.name"
    " FROM messages m JOIN runs r ON m.run = r.id"
)


class SqliteProgress(SqliteFile):
    """:class:`~sender.store.base.Progress` for :class:`~sender.store.sqlite.SqliteStore`."""

    async def counts(self, run_id: str, /) -> dict[MessageState, int]:
        """Messages per state; every state is present, zeros included.

        Current messages only: one replaced by a corrected address is left out.
        """
        with self._for_run(run_id) as (key, _), self._snapshot() as db:
            rows = db.execute(
                "SELECT state, COUNT(*) FROM messages"
                " WHERE run = ? AND state <> 'queued' GROUP BY state",
                (key,),
            ).fetchall()
            replaced = db.execute(
                "SELECT state, COUNT(*) FROM messages"
                " WHERE run = ? AND replaced_by IS NOT NULL GROUP BY state",
                (key,),
            ).fetchall()
            ((claimable,),) = db.execute(
                "SELECT COUNT(*) FROM messages WHERE run = ? AND due_at IS NOT NULL", (key,)
            ).fetchall()
        counts = dict.fromkeys(MessageState, 0)
        counts.update((MessageState(state), count) for state, count in rows)
        for state, count in replaced:
            counts[MessageState(state)] -= count
        counts[MessageState.QUEUED] = claimable - counts[MessageState.DEFERRED]
        return counts

    async def domain_progress(self, run_id: str, /) -> list[DomainProgress]:
        """Per recipient domain, sorted by name: counts per state and the next deferred try.

        Skipped rows have no domain and are not listed; like :meth:`counts`, a message
        replaced by a corrected address is left out.
        """
        with self._for_run(run_id) as (key, _), self._snapshot() as db:
            claimable = db.execute(
                "SELECT domain, COUNT(*) FROM messages"
                " WHERE run = ? AND due_at IS NOT NULL GROUP BY domain",
                (key,),
            ).fetchall()
            rows = db.execute(
                "SELECT state, domain, COUNT(*) FROM messages"
                " WHERE run = ? AND state <> 'queued' AND domain IS NOT NULL"
                " GROUP BY state, domain",
                (key,),
            ).fetchall()
            replaced = db.execute(
                "SELECT state, domain, COUNT(*) FROM messages"
                " WHERE run = ? AND replaced_by IS NOT NULL AND domain IS NOT NULL"
                " GROUP BY state, domain",
                (key,),
            ).fetchall()
            due = dict(
                db.execute(
                    "SELECT domain, MIN(due_at) FROM messages"
                    " WHERE run = ? AND state = 'deferred' AND state <> 'queued'"
                    " GROUP BY domain",
                    (key,),
                ).fetchall()
            )
        counts: dict[str, dict[MessageState, int]] = {}
        for state, domain, count in rows:
            counts.setdefault(domain, dict.fromkeys(MessageState, 0))[MessageState(state)] = count
        for state, domain, count in replaced:
            counts[domain][MessageState(state)] -= count
        counts = {domain: states for domain, states in counts.items() if any(states.values())}
        for domain, count in claimable:
            per_state = counts.setdefault(domain, dict.fromkeys(MessageState, 0))
            per_state[MessageState.QUEUED] = count - per_state[MessageState.DEFERRED]
        return [
            DomainProgress(domain=domain, counts=counts[domain], next_attempt_at=due.get(domain))
            for domain in sorted(counts)
        ]

    async def attempts(self, message_id: int, /) -> list[Attempt]:
        """The attempt log of one message, oldest first."""
        rows = self._all(
            "SELECT number, at, state, code, enhanced_status, reply_text, detail"
            " FROM attempts WHERE message = ? ORDER BY number, rowid",
            (message_id,),
        )
        return [attempt_from_columns(message_id, row) for row in rows]

    async def lookup(self, run_id: str, participant_id: str, /) -> MessageRecord | None:
        """The message of one participant in a run, if any."""
        with self._for_run(run_id) as (key, _):
            found = self._one(
                _SELECT_MESSAGE
                + " WHERE m.run = ? AND m.participant_id = ? AND m.replaced_by IS NULL"
                " ORDER BY m.id LIMIT 1",
                (key, participant_id),
            )
        return None if found is None else message_from_columns(found)

    async def skipped(self, run_id: str, /, *, limit: int = 1000) -> list[tuple[int, str, str]]:
        """Skipped rows as (row, email or '', reason), in row order.

        Both kinds: rows skipped when read (bad data, duplicates, undeliverable
        addresses) and messages skipped when composed at send time.
        """
        with self._for_run(run_id) as (key, _):
            rows = self._all(
                "SELECT row, email, COALESCE(skip_reason, detail, 'skipped') FROM messages"
                " WHERE run = ? AND state = 'skipped' AND state <> 'queued'"
                " ORDER BY row LIMIT ?",
                (key, limit),
            )
        return [(row, email or "", reason) for row, email, reason in rows]

    async def problems(
        self, run_id: str, /, *, limit: int = 1000
    ) -> list[tuple[int, str, MessageState, str]]:
        """Failed, deferred and suppressed rows as (row, email, state, last reply or detail)."""
        with self._for_run(run_id) as (key, _):
            rows = self._all(
                "SELECT row, email, state, code, enhanced_status, reply_text, detail"
                " FROM messages WHERE run = ? AND state <> 'queued'"
                " AND state IN ('failed', 'deferred', 'suppressed') AND replaced_by IS NULL"
                " ORDER BY row LIMIT ?",
                (key, limit),
            )
        return [problem_from_columns(row) for row in rows]

    async def message(self, message_id: int, /) -> MessageRecord | None:
        """One outbox message by its id (what a signed return path names; a BounceLog's)."""
        found = self._one(_SELECT_MESSAGE + " WHERE m.id = ?", (message_id,))
        return None if found is None else message_from_columns(found)
