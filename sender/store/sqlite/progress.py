"""Where a run stands, in SQLite: counts through the partial indexes, one message's record.

Counts are this backend's own SQL: the state index leaves queued rows out (ingest writes
one index fewer), so queued counts are claimable rows minus deferred ones, and messages
replaced by a corrected address are subtracted through their own small index.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Literal

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
            rows, replaced, ((claimable,),) = _tallies(db, key, by="")
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
            rows, replaced, claimable = _tallies(db, key, by="domain")
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


def _tallies(
    db: sqlite3.Connection, key: int, /, *, by: Literal["", "domain"]
) -> tuple[list[Any], list[Any], list[Any]]:
    """The run's counts through the partial indexes, per state and ``by`` ("" or "domain").

    Rows not queued (``state, [by,] count``), those of them replaced by a corrected
    address (the same), and claimable rows (``[by,] count``). Grouped by domain, rows
    without one (skipped rows) are left out.
    """
    group, has_domain = (f", {by}", f" AND {by} IS NOT NULL") if by else ("", "")
    return (
        db.execute(
            f"SELECT state{group}, COUNT(*) FROM messages"  # noqa: S608 (constants)
            f" WHERE run = ? AND state <> 'queued'{has_domain} GROUP BY state{group}",
            (key,),
        ).fetchall(),
        db.execute(
            f"SELECT state{group}, COUNT(*) FROM messages"  # noqa: S608 (constants)
            f" WHERE run = ? AND replaced_by IS NOT NULL{has_domain} GROUP BY state{group}",
            (key,),
        ).fetchall(),
        db.execute(
            f"SELECT {by}{group and ','} COUNT(*) FROM messages"  # noqa: S608 (constants)
            f" WHERE run = ? AND due_at IS NOT NULL{group and ' GROUP BY ' + by}",
            (key,),
        ).fetchall(),
    )
