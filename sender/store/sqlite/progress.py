"""Where a run stands, in SQLite: counts through the partial indexes, one message's record.

Counts are this backend's own SQL: the state index leaves queued rows out (ingest writes
one index fewer), so queued counts are claimable rows minus deferred ones, and messages
replaced by a corrected address are subtracted through their own small index.
"""

from __future__ import annotations

import sender.store.sql as sql
from sender.store.common import SharedProgress
from sender.store.records import DomainProgress
from sender.store.sqlite.file import NOT_QUEUED, SqliteFile
from sender.vocabulary import MessageState

__all__ = ["SqliteProgress"]


class SqliteProgress(SharedProgress, SqliteFile):
    """:class:`~sender.store.base.Progress` for :class:`~sender.store.sqlite.SqliteStore`."""

    _ATTEMPTS = sql.SELECT_ATTEMPTS.format(order="rowid")
    _SKIPPED = sql.SELECT_SKIPPED.format(queued_hint=NOT_QUEUED)
    _PROBLEMS = sql.SELECT_PROBLEMS.format(queued_hint=NOT_QUEUED)

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
