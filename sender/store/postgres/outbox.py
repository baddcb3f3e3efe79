"""The outbox in PostgreSQL: ingest, claims with ``FOR UPDATE SKIP LOCKED``, outcomes.

A claim is one statement for every domain asked: a ``MATERIALIZED`` CTE picks, per
domain, at most as many claimable rows as were asked for, in claim order, locking them
and skipping rows another worker has locked; the ``UPDATE`` joined to it moves exactly
those rows to ``sending`` and returns them. Materializing makes the pick run once, so
the statement never claims more than asked (a subquery under ``IN`` may be run again by
the planner). What counts as a duplicate and what an outcome may be are decided in
:mod:`sender.store.rules`, shared with every backend.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from psycopg import AsyncConnection

import sender.store.sql as sql
from sender.store.common import SharedOutbox, Transaction, new_event_id
from sender.store.postgres.database import MEMBER, PostgresDatabase, psycopg_marks
from sender.store.records import OutboxMessage, Outcome, login_values, participant_from_columns
from sender.store.rules import INTERRUPTED_REPLACED, claim_order, outcome_code, outcome_due

__all__ = ["PostgresOutbox"]

_CLAIM = f"""
WITH wanted AS (
    SELECT w.domain, w.n FROM unnest(%(domains)s::text[], %(counts)s::integer[]) AS w(domain, n)
     WHERE {sql.RECLAIMED.replace("?", "%(owner)s")}
), picked AS MATERIALIZED (
    SELECT c.id, c.due_at, c.priority
      FROM wanted w
     CROSS JOIN LATERAL (
            SELECT id, due_at, priority FROM messages
             WHERE run = %(run)s AND domain = w.domain
               AND due_at IS NOT NULL AND due_at <= %(now)s
             ORDER BY due_at, priority DESC, id
             LIMIT w.n
               FOR UPDATE SKIP LOCKED
           ) c
)
UPDATE messages m
   SET state = 'sending', attempts = m.attempts + 1, due_at = NULL,
       claimed_by = %(owner)s, claimed_at = %(now)s,
       first_attempt_at = COALESCE(m.first_attempt_at, %(now)s)
  FROM picked p
 WHERE m.id = p.id
RETURNING p.due_at, p.priority, m.id, m.row, m.domain,
          m.participant_id, m.email, m.name, m.course_id, m.locale, m.vars,
          m.template, m.attempts, m.first_attempt_at, m.message_id,
          (SELECT s.kind || ': ' || s.reason FROM suppressions s WHERE s.address = m.email_key),
          (SELECT u.how FROM unsubscribes u JOIN runs r ON r.id = m.run
            WHERE u.address = m.email_key AND u.stream = r.stream)
"""  # noqa: S608 - constant text, no input

# One statement per batch of outcomes: update the messages, log each attempt, and write
# the webhook event of each outcome that has one (sql.MESSAGE_EVENT's, in outcome order).
# Writing the events here rather than one INSERT per message halved the server's CPU.
_RECORD = f"""
WITH outcome AS (
    SELECT * FROM unnest(%s::bigint[], %s::text[], %s::double precision[],
                         %s::double precision[], %s::integer[], %s::text[], %s::text[],
                         %s::text[], %s::text[], %s::text[], %s::text[],
                         %s::double precision[], %s::double precision[], %s::text[])
        WITH ORDINALITY
        AS o(id, state, due_at, at, code, enhanced_status, reply_text, detail, message_id,
             login_digest, login_purpose, login_issued, login_expires, event_id, n)
), updated AS (
    UPDATE messages m
       SET state = o.state, due_at = o.due_at, last_attempt_at = o.at, code = o.code,
           enhanced_status = o.enhanced_status, reply_text = o.reply_text, detail = o.detail,
           message_id = COALESCE(m.message_id, o.message_id),
           login_digest = o.login_digest, login_purpose = o.login_purpose,
           login_issued = o.login_issued, login_expires = o.login_expires
      FROM outcome o
     WHERE m.id = o.id AND m.participant_id IS NOT NULL
       AND (%s::text IS NULL OR (m.state = 'sending' AND m.claimed_by = %s::text))
    RETURNING m.id, m.attempts, o.at, o.state, o.code, o.enhanced_status, o.reply_text,
              o.detail, o.event_id, o.n, m.run, m.participant_id, m.course_id,
              m.message_id, m.email
), events AS (
    {sql.HOOK_INSERT}
    SELECT u.event_id, 'message.' || u.state, u.at, NULL, r.run_id, u.participant_id,
           u.course_id, u.message_id, u.email, NULL
      FROM updated u JOIN runs r ON r.id = u.run
     WHERE u.state IN {sql.MESSAGE_EVENT_STATES}
     ORDER BY u.n
)
INSERT INTO attempts (message, number, at, state, code, enhanced_status, reply_text, detail)
SELECT id, attempts, at, state, code, enhanced_status, reply_text, detail FROM updated
RETURNING message
"""  # noqa: S608 - constant text, no input

# sql.INSERT_QUEUED for a batch, from one array per column.
_QUEUED_COLUMNS = ", ".join(sql.QUEUED_COLUMNS)
_INSERT_QUEUED = f"""
INSERT INTO messages (run, state, due_at, {_QUEUED_COLUMNS})
SELECT %s, 'queued', 0, q.* FROM unnest(
    %s::integer[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],
    %s::text[], %s::text[], %s::integer[], %s::text[]) AS q({_QUEUED_COLUMNS})
""".encode()  # noqa: S608 (constants)

_INSERT_SKIPPED = """
INSERT INTO messages (run, state, template, row, email, skip_reason)
SELECT %s, 'skipped', %s, s.* FROM unnest(%s::integer[], %s::text[], %s::text[])
    AS s(row, email, skip_reason)
ON CONFLICT DO NOTHING
"""

_RESET_RUN = psycopg_marks(sql.RESET_RUN)


class PostgresOutbox(SharedOutbox, PostgresDatabase):
    """:class:`~sender.store.base.Outbox` for :class:`~sender.store.postgres.PostgresStore`."""

    _ADDRESSES_OF = sql.ADDRESSES_OF.format(member=MEMBER.format(column="participant_id"))
    _NEXT_ATTEMPT = sql.NEXT_ATTEMPT.format(queued_hint="")
    _INGESTED_ROWS = sql.INGESTED_ROWS.format(member=MEMBER.format(column="participant_id"))
    _CURRENT_MESSAGE = sql.CURRENT_MESSAGE.format(lock=" FOR UPDATE")

    _INGESTED_THROUGH = (
        "UPDATE runs SET ingested_through = GREATEST(ingested_through, ?),"
        " ingest_complete = GREATEST(ingest_complete, ?) WHERE id = ?"
    )

    @asynccontextmanager
    async def _ingesting(self, key: int, /) -> AsyncIterator[Transaction]:
        """Takes the run's row lock first, so two processes ingesting one run take turns."""
        with self._errors():
            async with self._transaction() as db:
                await db.execute("SELECT 1 FROM runs WHERE id = %s FOR UPDATE", (key,))
                yield _Transaction(db)

    # --- sending --------------------------------------------------------------------------

    async def requeue_stale(self, run_id: str, /) -> int:
        """Put ``sending`` rows back to ``queued`` (after a crash); returns how many.

        They go to the front (``due_at`` 0), ``attempts`` still counted; one replaced by
        a corrected address since is marked failed, never sent to the old address.
        """
        with self._errors():
            key, _ = await self._key(run_id)
            async with self._transaction() as db:
                await db.execute(
                    "UPDATE messages SET state = 'failed', due_at = NULL, detail = %s"
                    " WHERE run = %s AND state = 'sending' AND replaced_by IS NOT NULL",
                    (INTERRUPTED_REPLACED, key),
                )
                cursor = await db.execute(
                    "UPDATE messages SET state = 'queued', due_at = 0"
                    " WHERE run = %s AND state = 'sending' AND replaced_by IS NULL",
                    (key,),
                )
                return cursor.rowcount

    async def claim(
        self, run_id: str, domain: str, /, *, now: float, owner: str
    ) -> OutboxMessage | None:
        (claimed,) = await self.claim_many(run_id, [domain], now=now, owner=owner)
        return claimed

    async def claim_many(
        self, run_id: str, domains: Sequence[str], /, *, now: float, owner: str
    ) -> list[OutboxMessage | None]:
        """:meth:`Outbox.claim_many <sender.store.base.Outbox.claim_many>` in one statement."""
        if not domains:
            return []
        wanted = Counter(domains)
        with self._errors():
            key, _ = await self._key(run_id)
            rows = await self._rows(
                _CLAIM,
                {
                    "domains": list(wanted),
                    "counts": list(wanted.values()),
                    "run": key,
                    "now": now,
                    "owner": owner,
                },
            )
        by_domain: dict[str, list[OutboxMessage]] = {}
        rows.sort(key=lambda r: claim_order(*r[:3]))
        for _due, _priority, id_, row, domain, *rest in rows:
            *person, template, attempts, first_attempt_at, message_id, suppressed, unsub = rest
            by_domain.setdefault(domain, []).append(
                OutboxMessage(
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
                    unsubscribed=unsub,
                )
            )
        for claimed in by_domain.values():
            claimed.reverse()  # pop() from the end hands them out in claim order
        return [by_domain[d].pop() if by_domain.get(d) else None for d in domains]

    async def record_many(
        self, outcomes: Sequence[tuple[int, Outcome]], /, *, owner: str | None = None
    ) -> list[int]:
        """:meth:`record` for several messages in one statement; errors: all or nothing.

        With ``owner``, an outcome for a claim that owner no longer holds (a second one
        for the same claim included) is dropped, and its id returned; the rest are stored.
        """
        columns: list[list[object]] = [[] for _ in range(14)]
        for message_id, outcome in outcomes:
            due = outcome_due(outcome)
            code = outcome_code(outcome)  # kept on the message's row, in the same statement
            reply = outcome.reply
            values = (
                message_id,
                outcome.state.value,
                due,
                outcome.at,
                reply.code if reply else None,
                reply.enhanced_status if reply else None,
                reply.text if reply else None,
                outcome.detail,
                outcome.message_id,
                *(login_values(code) if code is not None else (None, None, None, None)),
                new_event_id(),  # used only if the outcome is recorded and has an event
            )
            for column, value in zip(columns, values, strict=True):
                column.append(value)
        ids = [message_id for message_id, _ in outcomes]
        if not ids:
            return []
        with self._errors():
            async with self._transaction() as db:
                if len(set(ids)) == len(ids):
                    batches = [columns]
                else:  # one message twice: each outcome in turn, as SQLite records them
                    batches = [[[column[i]] for column in columns] for i in range(len(ids))]
                recorded: list[object] = []
                for batch in batches:
                    cursor = await db.execute(_RECORD, [*batch, owner, owner])
                    recorded.extend(row[0] for row in await cursor.fetchall())
                if len(recorded) == len(ids):
                    return []
                cursor = await db.execute(
                    "SELECT id FROM messages WHERE participant_id IS NOT NULL AND id = ANY(%s)",
                    (ids,),
                )
                found = {row[0] for row in await cursor.fetchall()}
                unknown = [id_ for id_ in ids if id_ not in found]
                if unknown:
                    raise KeyError(unknown[0])  # rolls the transaction back
                left = Counter(recorded)
                dropped: list[int] = []
                for id_ in ids:
                    if left[id_]:
                        left[id_] -= 1
                    else:
                        dropped.append(id_)
                return dropped

    async def reset_failed(self, run_id: str, /, *, now: float) -> int:
        """``failed`` and ``deferred`` back to ``queued`` for ``sender retry``; never ``sent``.

        Also makes the run active again. ``attempts`` and ``first_attempt_at`` are kept.
        A message replaced by a corrected address stays as it was: its address is wrong.
        """
        with self._errors():
            key, _ = await self._key(run_id)
            async with self._transaction() as db:
                cursor = await db.execute(
                    "UPDATE messages SET state = 'queued', due_at = %s"
                    " WHERE run = %s AND state IN ('failed', 'deferred') AND replaced_by IS NULL",
                    (now, key),
                )
                await db.execute(_RESET_RUN, (key,))
                return cursor.rowcount


class _Transaction:
    """The shared ingest's :class:`~sender.store.common.Transaction` over psycopg."""

    __slots__ = ("_db",)

    def __init__(self, db: AsyncConnection[Any]) -> None:
        self._db = db

    async def rows(self, statement: str, parameters: Sequence[object], /) -> list[Any]:
        cursor = await self._db.execute(psycopg_marks(statement), parameters)
        return await cursor.fetchall()

    async def execute(self, statement: str, parameters: Sequence[object], /) -> None:
        await self._db.execute(psycopg_marks(statement), parameters)

    async def insert_queued(self, key: int, values: Sequence[tuple[object, ...]], /) -> None:
        """One statement for the batch (arrays, not a round trip per row)."""
        if values:
            columns = [list(column) for column in zip(*values, strict=True)]
            await self._db.execute(_INSERT_QUEUED, (key, *columns))

    async def insert_skipped(
        self, key: int, template: str, skipped: Sequence[tuple[int, str, str]], /
    ) -> None:
        if skipped:
            rows, emails, reasons = zip(*skipped, strict=True)
            await self._db.execute(
                _INSERT_SKIPPED, (key, template, list(rows), list(emails), list(reasons))
            )
