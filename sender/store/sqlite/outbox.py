"""The outbox in SQLite: ingest, claims by conditional update, outcomes, retries.

Claims are this backend's own SQL (``UPDATE … WHERE id = (SELECT … LIMIT 1) RETURNING``);
what counts as a duplicate and what an outcome may be are decided in
:mod:`sender.store.rules`, shared with every backend.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import sender.store.sql as sql
from sender.store.common import SharedOutbox, Transaction, new_event_id
from sender.store.records import (
    OutboxMessage,
    Outcome,
    login_values,
    participant_from_columns,
)
from sender.store.rules import INTERRUPTED_REPLACED, outcome_code, outcome_due
from sender.store.sqlite.file import MEMBER, NOT_QUEUED, SqliteFile

__all__ = ["SqliteOutbox"]

_CLAIM = f"""
UPDATE messages
   SET state = 'sending', attempts = attempts + 1, due_at = NULL,
       claimed_by = ?, claimed_at = ?, first_attempt_at = COALESCE(first_attempt_at, ?)
 WHERE id = (SELECT id FROM messages
              WHERE run = ? AND domain = ? AND due_at IS NOT NULL AND due_at <= ?
                AND {sql.RECLAIMED}
              ORDER BY due_at, priority DESC, id
              LIMIT 1)
RETURNING id, row, participant_id, email, name, course_id, locale, vars,
          template, attempts, first_attempt_at, message_id,
          (SELECT kind || ': ' || reason FROM suppressions
            WHERE address = COALESCE(email_key, address_key(email))),
          (SELECT u.how FROM unsubscribes u JOIN runs r ON r.id = messages.run
            WHERE u.address = COALESCE(email_key, address_key(email)) AND u.stream = r.stream)
"""  # noqa: S608 - constant text, no input

# Both take the same parameters, so record_many binds each outcome once for both.
# The login code a sent message carried goes on its row (?9-?12): no write of its own.
_RECORD = """
UPDATE messages
   SET state = ?1, due_at = ?2, last_attempt_at = ?3, code = ?4, enhanced_status = ?5,
       reply_text = ?6, detail = ?7, message_id = COALESCE(message_id, ?8),
       login_digest = ?9, login_purpose = ?10, login_issued = ?11, login_expires = ?12
 WHERE id = ?13 AND participant_id IS NOT NULL
"""

_LOG_ATTEMPT = """
INSERT INTO attempts (message, number, at, state, code, enhanced_status, reply_text, detail)
SELECT id, attempts, ?3, ?1, ?4, ?5, ?6, ?7 FROM messages WHERE id = ?13
"""

_NO_CODE = (None, None, None, None)

_INSERT_SKIPPED = """
INSERT INTO messages (run, row, email, skip_reason, template, state)
VALUES (?, ?, ?, ?, ?, 'skipped')
ON CONFLICT DO NOTHING
"""


class SqliteOutbox(SharedOutbox, SqliteFile):
    """:class:`~sender.store.base.Outbox` for :class:`~sender.store.sqlite.SqliteStore`."""

    _ADDRESSES_OF = sql.ADDRESSES_OF.format(member=MEMBER.format(column="participant_id"))
    _NEXT_ATTEMPT = sql.NEXT_ATTEMPT.format(queued_hint=NOT_QUEUED)

    _INGESTED_ROWS = sql.INGESTED_ROWS.format(member=MEMBER.format(column="participant_id"))
    _CURRENT_MESSAGE = sql.CURRENT_MESSAGE.format(lock="")

    _INGESTED_THROUGH = (
        "UPDATE runs SET ingested_through = MAX(ingested_through, ?),"
        " ingest_complete = MAX(ingest_complete, ?) WHERE id = ?"
    )

    @asynccontextmanager
    async def _ingesting(self, key: int, /) -> AsyncIterator[Transaction]:
        with self._errors(), self._transaction() as db:
            yield _Transaction(db)

    # --- sending --------------------------------------------------------------------------

    async def requeue_stale(self, run_id: str, /) -> int:
        """Put ``sending`` rows back to ``queued`` (after a crash); returns how many.

        They go to the front (``due_at`` 0). Their ``attempts`` stay counted: the
        crashed attempt may have reached the server. One replaced by a corrected
        address since is never sent to the old address again: it is marked failed.
        """
        with self._for_run(run_id) as (key, _), self._transaction() as db:
            db.execute(
                "UPDATE messages SET state = 'failed', due_at = NULL, detail = ?"
                " WHERE run = ? AND state = 'sending' AND state <> 'queued'"
                " AND replaced_by IS NOT NULL",
                (INTERRUPTED_REPLACED, key),
            )
            cursor = db.execute(
                "UPDATE messages SET state = 'queued', due_at = 0"
                " WHERE run = ? AND state = 'sending' AND state <> 'queued'"
                " AND replaced_by IS NULL",
                (key,),
            )
        return cursor.rowcount

    async def claim(
        self, run_id: str, domain: str, /, *, now: float, owner: str
    ) -> OutboxMessage | None:
        with self._for_run(run_id) as (key, _), self._writing() as db:
            return self._claim(db, run_id, key, domain, now, owner)

    async def claim_many(
        self, run_id: str, domains: Sequence[str], /, *, now: float, owner: str
    ) -> list[OutboxMessage | None]:
        """:meth:`Outbox.claim_many <sender.store.base.Outbox.claim_many>` in one transaction."""
        with self._for_run(run_id) as (key, _), self._transaction() as db:
            return [self._claim(db, run_id, key, domain, now, owner) for domain in domains]

    @staticmethod
    def _claim(
        db: sqlite3.Connection, run_id: str, key: int, domain: str, now: float, owner: str
    ) -> OutboxMessage | None:
        # fetchall, not fetchone: outside a transaction the statement commits when it is done.
        rows = db.execute(_CLAIM, (owner, now, now, key, domain, now, owner)).fetchall()
        if not rows:
            return None
        id_, row, *person, template, attempts, first_attempt_at, message_id = rows[0][:-2]
        suppressed, unsubscribed = rows[0][-2:]
        return OutboxMessage(
            id=id_,
            run_id=run_id,
            row=row,
            participant=participant_from_columns(*person),
            template=template,
            domain=domain,
            attempts=attempts,
            first_attempt_at=first_attempt_at,
            message_id=message_id,
            suppressed=suppressed,
            unsubscribed=unsubscribed,
        )

    async def record_many(
        self, outcomes: Sequence[tuple[int, Outcome]], /, *, owner: str | None = None
    ) -> list[int]:
        """:meth:`record` for several messages in one transaction: one commit, not one each.

        All or nothing for errors: one bad outcome or unknown message stores none of them.
        With ``owner``, an outcome for a claim that owner no longer holds (a second one
        for the same claim included) is dropped, and its id returned; the rest are stored.
        """
        updates = []
        for message_id, outcome in outcomes:
            due = outcome_due(outcome)
            code = outcome_code(outcome)
            reply = outcome.reply
            updates.append(
                (
                    outcome.state.value,
                    due,
                    outcome.at,
                    reply.code if reply else None,
                    reply.enhanced_status if reply else None,
                    reply.text if reply else None,
                    outcome.detail,
                    outcome.message_id,
                    *(login_values(code) if code is not None else _NO_CODE),
                    message_id,
                )
            )
        if not updates:
            return []
        ids = [update[-1] for update in updates]
        dropped: list[int] = []
        with self._errors(), self._transaction() as db:
            if owner is not None:
                held = {
                    id_
                    for (id_,) in db.execute(
                        "SELECT id FROM messages WHERE state = 'sending' AND claimed_by = ?"
                        " AND id IN (SELECT value FROM json_each(?))",
                        (owner, json.dumps(ids)),
                    )
                }
                kept = []
                for update in updates:
                    if update[-1] in held:
                        held.discard(update[-1])  # one outcome per claim
                        kept.append(update)
                    else:
                        dropped.append(update[-1])
                updates = kept
            cursor = db.executemany(_RECORD, updates)
            if cursor.rowcount != len(updates) or dropped:
                found = {
                    id_
                    for (id_,) in db.execute(
                        "SELECT id FROM messages WHERE participant_id IS NOT NULL"
                        " AND id IN (SELECT value FROM json_each(?))",
                        (json.dumps(ids),),
                    )
                }
                unknown = [id_ for id_ in ids if id_ not in found]
                if unknown:
                    raise KeyError(unknown[0])  # rolls the transaction back
            db.executemany(_LOG_ATTEMPT, updates)
            db.executemany(sql.MESSAGE_EVENT, [(new_event_id(), update[-1]) for update in updates])
        return dropped

    async def reset_failed(self, run_id: str, /, *, now: float) -> int:
        """``failed`` and ``deferred`` back to ``queued`` for ``sender retry``; never ``sent``.

        Also makes the run active again. ``attempts`` and ``first_attempt_at`` are kept.
        A message replaced by a corrected address stays as it was: its address is wrong.
        """
        with self._for_run(run_id) as (key, _), self._transaction() as db:
            cursor = db.execute(
                "UPDATE messages SET state = 'queued', due_at = ?"
                " WHERE run = ? AND state IN ('failed', 'deferred') AND state <> 'queued'"
                " AND replaced_by IS NULL",
                (now, key),
            )
            db.execute(sql.RESET_RUN, (key,))
        return cursor.rowcount


class _Transaction:
    """The shared ingest's :class:`~sender.store.common.Transaction` over sqlite3.

    Coroutines that never suspend: the ingest holds the write lock and the event loop.
    """

    __slots__ = ("_db",)

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    async def rows(self, statement: str, parameters: Sequence[object], /) -> list[Any]:
        return self._db.execute(statement, parameters).fetchall()

    async def execute(self, statement: str, parameters: Sequence[object], /) -> None:
        self._db.execute(statement, parameters)

    async def insert_queued(self, key: int, values: Sequence[tuple[object, ...]], /) -> None:
        self._db.executemany(sql.INSERT_QUEUED, [(key, *row) for row in values])

    async def insert_skipped(
        self, key: int, template: str, skipped: Sequence[tuple[int, str, str]], /
    ) -> None:
        self._db.executemany(_INSERT_SKIPPED, [(key, *row, template) for row in skipped])
