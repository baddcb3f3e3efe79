"""The role methods both SQL backends share: one statement each, rows read by ``records``.

A backend gives these mixins four primitives (``_rows``, ``_row``, ``_write`` and
``_key``, each translating its driver's errors) and fills in the few statement texts
that differ by dialect as class constants; everything else here runs the same
:mod:`sender.store.sql` text on SQLite and PostgreSQL and builds the same records. What
needs a transaction, a claim or dialect-only SQL stays in the backend's own module; the
ingest runs here too, inside a transaction the backend opens and hands over as a
:class:`Transaction`.

SQLite's primitives are coroutines that never suspend, so a method here still holds the
event loop for one statement, as the SQLite backend's own methods do.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar, Protocol

import sender.store.sql as sql
from sender.addresses import address_key
from sender.models import LoginCode, Participant
from sender.store.records import (
    BOUNCE_COLUMNS,
    HOOK_DATA,
    RSVP_COLUMNS,
    Attempt,
    BounceRecord,
    DailySent,
    EventRecord,
    HookEndpoint,
    HookEvent,
    IngestResult,
    InvitationRecord,
    MessageRecord,
    NewRow,
    Outcome,
    RsvpRecord,
    RunInfo,
    Suppression,
    Unsubscribe,
    WorkerInfo,
    attempt_from_columns,
    bounce_from_columns,
    bounce_values,
    code_from_columns,
    code_values,
    event_from_columns,
    event_values,
    hook_event_from_columns,
    message_from_columns,
    participant_columns,
    participant_from_columns,
    problem_from_columns,
    rsvp_from_columns,
    run_from_columns,
    suppression_from_columns,
    unsubscribe_from_columns,
    worker_from_columns,
)
from sender.store.rules import (
    INTERRUPTED_REPLACED,
    IngestPlan,
    bounced_addresses,
    latest_invitations,
    plan_ingest,
    unencodable,
)
from sender.vocabulary import MessageState, RsvpOutcome, RunState, WebhookEvent

__all__ = [
    "SharedCodes",
    "SharedEvents",
    "SharedFeedback",
    "SharedOutbox",
    "SharedProgress",
    "SharedRedemptions",
    "SharedRuns",
    "SharedWebhooks",
    "SharedWorkers",
    "SqlBackend",
    "Transaction",
    "address_event",
    "new_event_id",
    "queued_values",
]


class Transaction(Protocol):
    """One open transaction of a backend, as the shared ingest drives it (``?`` marks)."""

    async def rows(self, statement: str, parameters: Sequence[object], /) -> list[Any]:
        """Every row the statement returns."""
        ...

    async def execute(self, statement: str, parameters: Sequence[object], /) -> None:
        """Run a statement that returns nothing."""
        ...

    async def insert_queued(self, key: int, values: Sequence[tuple[object, ...]], /) -> None:
        """:data:`sql.INSERT_QUEUED` for each of ``values``, in the backend's bulk form."""
        ...

    async def insert_skipped(
        self, key: int, template: str, skipped: Sequence[tuple[int, str, str]], /
    ) -> None:
        """Store skipped rows ``(row, email, reason)``; one already stored is left as it is."""
        ...


class SqlBackend:
    """What a backend gives the shared roles: statements run with errors translated."""

    __slots__ = ()

    async def _rows(self, statement: str, parameters: Sequence[object] = ()) -> list[Any]:
        """Every row one read returns."""
        raise NotImplementedError

    async def _row(self, statement: str, parameters: Sequence[object] = ()) -> Any:
        """The first row one read returns, or None."""
        raise NotImplementedError

    async def _write(self, statement: str, parameters: Sequence[object] = ()) -> int:
        """Run one statement that writes (its own transaction); how many rows it changed."""
        raise NotImplementedError

    async def _write_all(self, statements: Sequence[tuple[str, Sequence[object]]]) -> list[int]:
        """Run statements that write in one transaction; how many rows each changed."""
        raise NotImplementedError

    async def _write_rows(self, statement: str, parameters: Sequence[object] = ()) -> list[Any]:
        """Run one statement that writes (its own transaction) and returns rows; the rows."""
        raise NotImplementedError

    async def _key(self, run_id: str) -> tuple[int, str]:
        """The run's integer key and template; InputError (``run_id``) for an unknown run."""
        raise NotImplementedError

    def _bind_list(self, values: Sequence[str]) -> object:
        """``values`` as the one parameter of the backend's ``{member}`` test."""
        raise NotImplementedError

    async def _insert_once(
        self, table: str, columns: Sequence[str], values: Sequence[object]
    ) -> bool:
        """INSERT a record's values into ``columns``, unless a unique key has it already."""
        return await self._write(sql.insert_once(table, columns), tuple(values)) == 1


class SharedRuns(SqlBackend):
    """Most of :class:`~sender.store.base.Runs`: creating, reading and leasing runs."""

    __slots__ = ()

    async def create_run(
        self,
        run_id: str,
        /,
        *,
        template: str,
        source: str,
        now: float,
        options: Mapping[str, str | float | int | None] | None = None,
        event: tuple[str, int, str] | None = None,
        stream: str = "transactional",
    ) -> tuple[RunInfo, bool]:
        """Create the run, or return the existing one; the bool says whether it was new."""
        stored_options = json.dumps(dict(options or {}), sort_keys=True)
        uid, sequence, method = event if event is not None else (None, None, None)
        created = await self._write(
            sql.INSERT_RUN,
            (run_id, template, source, now, stored_options, uid, sequence, method, stream),
        )
        info = await self.get_run(run_id)
        if info is None:  # only a run deleted in between gets here
            raise KeyError(run_id)
        return info, created == 1

    async def get_run(self, run_id: str, /) -> RunInfo | None:
        row = await self._row(sql.SELECT_RUN + " WHERE run_id = ?", (run_id,))
        return None if row is None else run_from_columns(row)

    async def latest_run(self) -> RunInfo | None:
        """The most recently created run, for ``sender status`` without a run id."""
        latest = await self.runs(limit=1)
        return latest[0] if latest else None

    async def runs(self, *, limit: int = 100) -> list[RunInfo]:
        """The most recent runs first, at most ``limit`` (``sender status --all``)."""
        rows = await self._rows(sql.RECENT_RUNS, (limit,))
        return [run_from_columns(row) for row in rows]

    async def active_runs(self) -> list[RunInfo]:
        """Every run in state ``active``, the oldest first: what workers drain."""
        return [run_from_columns(row) for row in await self._rows(sql.ACTIVE_RUNS, ())]

    async def acquire_run(self, run_id: str, /, *, owner: str, now: float, ttl: float) -> bool:
        """Take the run's lease unless another owner's heartbeat is younger than ``ttl``."""
        key, _ = await self._key(run_id)
        return await self._write(sql.ACQUIRE_RUN, (owner, now, key, owner, now - ttl)) == 1

    async def heartbeat(self, run_id: str, /, *, owner: str, now: float) -> bool:
        """Renew the lease; False when ``owner`` no longer holds it (stop sending)."""
        key, _ = await self._key(run_id)
        return await self._write(sql.HEARTBEAT, (now, key, owner)) == 1

    async def release_run(self, run_id: str, /, *, owner: str) -> None:
        key, _ = await self._key(run_id)
        await self._write(sql.RELEASE_RUN, (key, owner))

    async def set_run_state(
        self, run_id: str, state: RunState, /, *, now: float, reason: str | None = None
    ) -> None:
        """Pausing keeps the first ``paused_since``; any other state clears both pause fields."""
        paused = state is RunState.PAUSED
        key, _ = await self._key(run_id)
        change = (
            sql.SET_RUN_STATE,
            (state.value, reason if paused else None, paused, now, now, key),
        )
        event = RUN_EVENTS.get(state)
        if event is None:
            await self._write(*change)
            return
        detail = json.dumps({"reason": reason}) if paused and reason else None
        await self._write_all(
            [(sql.RUN_EVENT, (new_event_id(), event.value, now, detail, key, state.value)), change]
        )


class SharedWorkers(SqlBackend):
    """:class:`~sender.store.base.Workers`: leases of the processes that claim, and taking back.

    Taking back follows :meth:`requeue_stale <sender.store.base.Outbox.requeue_stale>`'s
    rules (the statements of :data:`sql.REQUEUE_CLAIMS`), for the claims of chosen owners
    instead of a whole run.
    """

    __slots__ = ()

    async def register_worker(
        self, owner: str, /, *, host: str, pid: int, now: float, ttl: float = 30.0
    ) -> None:
        """Start (or restart) ``owner``'s lease of ``ttl`` seconds, its heartbeat at ``now``."""
        await self._write(sql.REGISTER_WORKER, (owner, host, pid, now, now, ttl))

    async def worker_heartbeat(self, owner: str, /, *, now: float) -> bool:
        """Renew the lease; False when it was taken back (or never registered): stop claiming."""
        return await self._write(sql.WORKER_HEARTBEAT, (now, owner)) == 1

    async def workers(self, now: float, /) -> list[WorkerInfo]:
        """The workers holding a lease at ``now`` (a heartbeat within its ttl), latest first."""
        rows = await self._rows(
            sql.WORKERS + " WHERE heartbeat_at + ttl >= ? AND reclaimed_at IS NULL"
            " ORDER BY heartbeat_at DESC, owner",
            (now,),
        )
        return [worker_from_columns(row) for row in rows]

    async def release_worker(self, owner: str, /) -> int:
        """End ``owner``'s lease and put its claims back, as never started; how many.

        Called once the worker's in-flight messages are recorded, so what it still holds
        was never sent: back to the front of the queue with the attempt uncounted. One
        replaced by a corrected address since is failed, as requeue_stale does.
        """
        replaced, _ = sql.REQUEUE_CLAIMS
        _, unclaimed, _ = await self._write_all(
            [
                (replaced.format(claims=sql.OWN_CLAIMS), (INTERRUPTED_REPLACED, owner)),
                (sql.UNCLAIM, (owner,)),
                (sql.RELEASE_WORKER, (owner,)),
            ]
        )
        return unclaimed

    async def reclaim_worker(self, owner: str, /, *, now: float) -> int:
        """Take back one worker's lease and claims at once (its process is known to be gone).

        As :meth:`reclaim_expired` does for an expired one: the attempt counted.
        """
        replaced, requeue = (
            statement.format(claims=sql.OWN_CLAIMS) for statement in sql.REQUEUE_CLAIMS
        )
        _, failed, requeued = await self._write_all(
            [
                (sql.RECLAIM_WORKER, (now, owner)),
                (replaced, (INTERRUPTED_REPLACED, owner)),
                (requeue, (owner,)),
            ]
        )
        return failed + requeued

    async def reclaim_expired(self, *, now: float) -> int:
        """Take back the claims no live worker holds (no heartbeat within its ttl); how many.

        One transaction: the expired workers are stamped (their heartbeat is refused from
        now on, and an outcome they report late is dropped by ``record``), and their
        ``sending`` claims are put back by requeue_stale's rules, the attempt counted (it
        may have reached the server). A worker that heartbeats keeps its claims, however
        long its sends take. Leases taken back a day ago are forgotten.
        """
        replaced, requeue = (
            statement.format(claims=sql.EXPIRED_CLAIMS) for statement in sql.REQUEUE_CLAIMS
        )
        _, failed, requeued, _ = await self._write_all(
            [
                (sql.RECLAIM_WORKERS, (now, now)),
                (replaced, (INTERRUPTED_REPLACED, now)),
                (requeue, (now,)),
                (sql.FORGET_WORKERS, (now - sql.FORGET_AFTER,)),
            ]
        )
        return failed + requeued


class SharedOutbox(SqlBackend):
    """The reads of :class:`~sender.store.base.Outbox` and the ingest; claims are each backend's."""

    __slots__ = ()

    _ADDRESSES_OF: ClassVar[str]  # sql.ADDRESSES_OF with the backend's {member}
    _NEXT_ATTEMPT: ClassVar[str]  # sql.NEXT_ATTEMPT with the backend's {queued_hint}
    _INGESTED_ROWS: ClassVar[str]  # sql.INGESTED_ROWS with the backend's {member}
    _CURRENT_MESSAGE: ClassVar[str]  # sql.CURRENT_MESSAGE with the backend's {lock}
    # Advance the run's ingested_through and ingest_complete (row, complete, key): the
    # larger of old and new, in the backend's words for it.
    _INGESTED_THROUGH: ClassVar[str]

    def _ingesting(self, key: int, /) -> AbstractAsyncContextManager[Transaction]:
        """The one transaction ``add_rows`` runs in, with the driver's errors translated."""
        raise NotImplementedError

    async def add_rows(
        self, run_id: str, rows: Sequence[NewRow], /, *, complete: bool = False
    ) -> IngestResult:
        """:meth:`Outbox.add_rows <sender.store.base.Outbox.add_rows>` in one transaction.

        Duplicates are :func:`~sender.store.rules.plan_ingest`'s to find; the unique
        participant key (current messages only) backs it. The result counts only what
        this call stored.
        """
        ordered = sorted(rows, key=lambda r: r.row)
        key, template = await self._key(run_id)
        try:
            async with self._ingesting(key) as tx:
                plan, corrected = await self._ingest(tx, key, template, ordered)
                await tx.insert_skipped(key, template, plan.skipped)
                await tx.execute(
                    self._INGESTED_THROUGH, (ordered[-1].row if ordered else 0, int(complete), key)
                )
        except UnicodeEncodeError:
            raise unencodable(ordered) from None
        return IngestResult(
            queued=len(plan.queued),
            skipped=len(plan.skipped),
            duplicates=tuple(plan.duplicates),
            corrected=corrected,
        )

    async def _ingest(
        self, tx: Transaction, key: int, template: str, ordered: Sequence[NewRow]
    ) -> tuple[IngestPlan, int]:
        """Store a batch sorted by row, but for its skipped rows; the plan and corrections.

        Corrected addresses first, then :func:`~sender.store.rules.plan_ingest` decides
        the rest from what the run holds, and its queued rows are inserted.
        """
        corrections = [r for r in ordered if r.replaces and r.participant is not None]
        corrected = 0
        for new in corrections:
            corrected += await self._correct(tx, key, template, new)
        rest = [r for r in ordered if r not in corrections]
        ids = [r.participant.participant_id for r in rest if r.participant is not None]
        first_row: dict[str, int] = {}
        if ids:
            first_row.update(
                await tx.rows(self._INGESTED_ROWS, (key, template, self._bind_list(ids)))
            )
        stored_skips: list[int] = []
        if rest:
            stored_skips = [
                row for (row,) in await tx.rows(sql.STORED_SKIPS, (key, rest[0].row, rest[-1].row))
            ]
        plan = plan_ingest(rest, first_row=first_row, stored_skips=stored_skips)
        await tx.insert_queued(
            key, [queued_values(template, new, person) for new, person in plan.queued]
        )
        return plan, corrected

    async def _correct(self, tx: Transaction, key: int, template: str, new: NewRow) -> bool:
        """Give the participant of ``new`` its corrected address; False when none to correct.

        A message not sent yet takes the new address in place; one sent (or failed) is
        kept as it was, replaced by a new queued message.
        """
        person = new.participant
        if person is None:
            return False
        found = await tx.rows(self._CURRENT_MESSAGE, (key, person.participant_id, template))
        values = queued_values(template, new, person)
        if not found:
            await tx.execute(sql.INSERT_QUEUED, (key, *values))
            return False
        id_, state, email = found[0]
        if email == person.email:
            return False  # corrected already (a resumed ingest)
        if state in (MessageState.QUEUED, MessageState.DEFERRED):
            await tx.execute(sql.CORRECT_ADDRESS, (new.row, *values[3:], id_))
            return True
        await tx.execute(sql.MARK_REPLACED, (0, id_))
        ((new_id,),) = await tx.rows(sql.INSERT_QUEUED + " RETURNING id", (key, *values))
        await tx.execute(sql.MARK_REPLACED, (new_id, id_))
        return True

    async def addresses_of(self, run_id: str, participant_ids: Sequence[str], /) -> dict[str, str]:
        """The address of each participant's current message in the run, for those it has."""
        if not participant_ids:
            return {}
        key, template = await self._key(run_id)
        rows = await self._rows(
            self._ADDRESSES_OF, (key, template, self._bind_list(list(participant_ids)))
        )
        return {pid: email for pid, email in rows}

    async def participant_count(self, run_id: str, /) -> int:
        """How many participants the run has a message for (skipped rows not counted)."""
        key, template = await self._key(run_id)
        (count,) = await self._row(sql.PARTICIPANT_COUNT, (key, template))
        return int(count)

    async def pending_domains(self, run_id: str, /, *, now: float) -> dict[str, int]:
        """Domains with claimable messages now (queued, or deferred and due), with counts."""
        key, _ = await self._key(run_id)
        rows = await self._rows(sql.PENDING_DOMAINS, (key, now))
        return {domain: int(count) for domain, count in rows}

    async def record(
        self, message_id: int, outcome: Outcome, /, *, owner: str | None = None
    ) -> bool:
        """Store an attempt's outcome and append it to the attempt log, in one transaction.

        The first Message-ID recorded sticks. Raises ValueError for an outcome
        that is not SENT, DEFERRED (with ``next_attempt_at``), FAILED or
        SUPPRESSED, and KeyError for an unknown message; then nothing is stored.
        With ``owner``, False (nothing stored) when that owner's claim was taken back.
        """
        return not await self.record_many([(message_id, outcome)], owner=owner)

    async def record_many(
        self, outcomes: Sequence[tuple[int, Outcome]], /, *, owner: str | None = None
    ) -> list[int]:
        """Each backend writes this one itself: it is one transaction in its own dialect."""
        raise NotImplementedError

    async def next_attempt_at(self, run_id: str, /) -> float | None:
        """The earliest time a deferred message of the run becomes due."""
        key, _ = await self._key(run_id)
        (due,) = await self._row(self._NEXT_ATTEMPT, (key,))
        return None if due is None else float(due)


class SharedProgress(SqlBackend):
    """:class:`~sender.store.base.Progress` but its counts, which are each backend's SQL."""

    __slots__ = ()

    _ATTEMPTS: ClassVar[str]  # sql.SELECT_ATTEMPTS with the backend's {order}
    _SKIPPED: ClassVar[str]  # sql.SELECT_SKIPPED with the backend's {queued_hint}
    _PROBLEMS: ClassVar[str]  # sql.SELECT_PROBLEMS with the backend's {queued_hint}

    async def attempts(self, message_id: int, /) -> list[Attempt]:
        """The attempt log of one message, oldest first."""
        rows = await self._rows(self._ATTEMPTS, (message_id,))
        return [attempt_from_columns(message_id, row) for row in rows]

    async def lookup(self, run_id: str, participant_id: str, /) -> MessageRecord | None:
        """The message of one participant in a run, if any."""
        key, _ = await self._key(run_id)
        found = await self._row(
            sql.SELECT_MESSAGE
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
        key, _ = await self._key(run_id)
        rows = await self._rows(self._SKIPPED, (key, limit))
        return [(row, email or "", reason) for row, email, reason in rows]

    async def problems(
        self, run_id: str, /, *, limit: int = 1000
    ) -> list[tuple[int, str, MessageState, str]]:
        """Failed, deferred and suppressed rows as (row, email, state, last reply or detail)."""
        key, _ = await self._key(run_id)
        rows = await self._rows(self._PROBLEMS, (key, limit))
        return [problem_from_columns(row) for row in rows]

    async def message(self, message_id: int, /) -> MessageRecord | None:
        """One outbox message by its id (what a signed return path names; a BounceLog's)."""
        found = await self._row(sql.SELECT_MESSAGE + " WHERE m.id = ?", (message_id,))
        return None if found is None else message_from_columns(found)


class SharedEvents(SqlBackend):
    """:class:`~sender.store.base.EventLog`: events, RSVPs, invitations from sent messages."""

    __slots__ = ()

    _INVITED: ClassVar[str]  # sql.SELECT_INVITED with the backend's {queued_hint}

    async def save_event(self, record: EventRecord, /) -> None:
        """Insert or replace the event's record: the one statement that writes ``events``."""
        await self._write(sql.SAVE_EVENT, event_values(record))

    async def get_event(self, uid: str, /) -> EventRecord | None:
        row = await self._row(sql.SELECT_EVENT + " WHERE uid = ?", (uid,))
        return None if row is None else event_from_columns(row)

    async def events(self) -> list[EventRecord]:
        """Every event sent, the most recently changed first."""
        rows = await self._rows(sql.SELECT_EVENT + " ORDER BY updated_at DESC, uid")
        return [event_from_columns(row) for row in rows]

    async def invitations(self, uid: str, /) -> list[InvitationRecord]:
        """Every participant sent a message of the event, with the last SEQUENCE and method.

        Derived from the ``sent`` messages of the event's runs; for each participant
        the message of the highest SEQUENCE wins (a CANCEL after a REQUEST, say).
        """
        return latest_invitations(uid, await self._rows(self._INVITED, (uid,)))

    async def add_rsvp(self, record: RsvpRecord, /) -> bool:
        """Keep an answer; False (and nothing stored) when the same answer is already kept.

        An answer that counts also keeps its ``rsvp.answered`` event, in the same transaction.
        """
        keep = (
            sql.insert_once("rsvps", RSVP_COLUMNS),
            tuple(getattr(record, column) for column in RSVP_COLUMNS),
        )
        if record.outcome != RsvpOutcome.RECORDED:
            return await self._write(*keep) == 1
        same = (record.uid, record.attendee, record.sequence, record.partstat)
        key = json.dumps([*same, record.dtstamp, record.comment])
        detail = {"event_uid": record.uid, "partstat": record.partstat, "sequence": record.sequence}
        event = (
            new_event_id(),
            WebhookEvent.RSVP_ANSWERED.value,
            record.received_at,
            "rsvp:" + hashlib.sha256(key.encode()).hexdigest(),
            record.participant_id,
            record.attendee,
            json.dumps(detail),
        )
        counts = await self._write_all([keep, (sql.RSVP_EVENT, event)])
        return counts[0] == 1

    async def rsvps(self, uid: str | None = None, /) -> list[RsvpRecord]:
        """Answers in the order they were received, of one event or of all."""
        rows = (
            await self._rows(sql.SELECT_RSVP + " WHERE uid = ? ORDER BY id", (uid,))
            if uid is not None
            else await self._rows(sql.SELECT_RSVP + " ORDER BY id")
        )
        return [rsvp_from_columns(row) for row in rows]


class SharedFeedback(SqlBackend):
    """The reads of :class:`~sender.store.base.Feedback` and :class:`~sender.store.base.Budget`.

    Which bounces count is decided in :mod:`sender.store.rules`; the backends keep what
    needs a transaction (suppressing, and the snapshot ``count_bounces`` reads).
    """

    __slots__ = ()

    _OWNERS: ClassVar[str]  # sql.OWNERS with the backend's {member}
    _SUPPRESSED: ClassVar[str]  # sql.SUPPRESSED with the backend's {member}

    async def add_bounce(self, record: BounceRecord, /) -> bool:
        """Keep a bounce; False (nothing stored) when its fingerprint is already kept.

        A hard or soft bounce or a complaint that is not forged also keeps its webhook
        event (``message.bounced``, ``message.complained``), in the same transaction.
        """
        keep = (sql.insert_once("bounces", BOUNCE_COLUMNS), bounce_values(record))
        event = BOUNCE_EVENTS.get(record.kind)
        if event is None or record.forged:
            return await self._write(*keep) == 1
        detail = json.dumps({"kind": record.kind, "reason": record.reason, "status": record.status})
        counts = await self._write_all(
            [
                keep,
                (
                    sql.BOUNCE_EVENT,
                    (
                        new_event_id(),
                        event.value,
                        record.at,
                        f"bounce:{record.fingerprint}",
                        record.participant_id,
                        record.address,
                        detail,
                        record.message,
                    ),
                ),
            ]
        )
        return counts[0] == 1

    async def bounces(
        self, *, since: float | None = None, reasons: Collection[str] | None = None
    ) -> list[BounceRecord]:
        """Bounces kept since a time (all when None), oldest first; only ``reasons`` if given.

        With ``reasons`` the ``bounces_reason`` index answers, so a short window is cheap.
        """
        start = since if since is not None else float("-inf")
        if reasons is None:
            rows = await self._rows(sql.SELECT_BOUNCES + " WHERE at >= ? ORDER BY at, id", (start,))
        elif not reasons:
            return []
        else:
            wanted = sorted(set(reasons))
            marks = ", ".join("?" * len(wanted))
            rows = await self._rows(
                sql.SELECT_BOUNCES + f" WHERE reason IN ({marks}) AND at >= ? ORDER BY at, id",
                (*wanted, start),
            )
        return [bounce_from_columns(row) for row in rows]

    async def participants_by_address(self, addresses: Sequence[str], /) -> dict[str, Participant]:
        """The participant each address last belonged to in any run, by address key."""
        if not addresses:
            return {}
        rows = await self._rows(self._OWNERS, (self._bind_list(_address_keys(addresses)),))
        # the last one wins
        return {key: participant_from_columns(*person) for key, *person in rows}

    async def hard_bounces_since(self, since: float, /) -> int:
        """Addresses that hard-bounced (not forged) since ``since`` (the ``bounces_at`` index).

        Counted by :func:`~sender.store.rules.bounced_addresses`.
        """
        return bounced_addresses(await self._rows(sql.HARD_BOUNCES, (since,)))

    async def sent_since(self, since: float, /) -> int:
        """Messages accepted since ``since``, from the attempt log: ask sparingly."""
        (sent,) = await self._row(sql.SENT_SINCE, (since,))
        return int(sent)

    async def complaints_by_stream(self, since: float, /) -> dict[str, tuple[int, int]]:
        """``{stream: (delivered, complaints)}`` since ``since``: ``{}`` without a complaint.

        The deliveries (from the attempt log) are counted only when there was a complaint.
        """
        complaints = {
            str(stream): int(n)
            for stream, n in await self._rows(sql.COMPLAINTS_BY_STREAM, (since,))
            if n
        }
        if not complaints:
            return {}
        sent = {str(stream): int(n) for stream, n in await self._rows(sql.SENT_BY_STREAM, (since,))}
        return {s: (sent.get(s, 0), complaints.get(s, 0)) for s in sorted({*sent, *complaints})}

    _UNSUBSCRIBED: ClassVar[str]  # sql.UNSUBSCRIBED with the backend's {member}

    async def unsubscribe(
        self,
        address: str,
        /,
        *,
        stream: str,
        how: str,
        now: float,
        participant_id: str | None = None,
    ) -> bool:
        """Keep the unsubscribe and its ``address.unsubscribed`` event in one transaction."""
        key = address_key(address)
        detail = json.dumps({"stream": stream, "how": how})
        counts = await self._write_all(
            [
                (sql.UNSUBSCRIBE, (key, stream, now, how, participant_id)),
                (
                    sql.UNSUBSCRIBE_EVENT,
                    (new_event_id(), f"unsubscribe:{stream}:{key}", detail, key, stream, now),
                ),
            ]
        )
        return counts[0] == 1

    async def unsubscribed(
        self, addresses: Sequence[str], /, *, stream: str
    ) -> dict[str, Unsubscribe]:
        """The ones among ``addresses`` that left ``stream`` (by canonical key), by key."""
        if not addresses:
            return {}
        rows = await self._rows(
            self._UNSUBSCRIBED, (stream, self._bind_list(_address_keys(addresses)))
        )
        return {row[0]: unsubscribe_from_columns(row) for row in rows}

    async def unsubscribes(self) -> list[Unsubscribe]:
        rows = await self._rows(sql.UNSUBSCRIBES + " ORDER BY at")
        return [unsubscribe_from_columns(row) for row in rows]

    _SENT_PER_DAY: ClassVar[str]  # sql.SENT_PER_DAY with the backend's day and membership
    _PENDING_TO: ClassVar[str]  # sql.PENDING_TO with the backend's membership test

    async def sent_per_day(self, domains: Sequence[str], /, *, since: float) -> list[DailySent]:
        if not domains:
            return []
        rows = await self._rows(self._SENT_PER_DAY, (since, self._bind_list(sorted(set(domains)))))
        return [DailySent(int(day), domain, int(sent)) for day, domain, sent in rows]

    async def pending_to(self, domains: Sequence[str], /) -> dict[str, int]:
        if not domains:
            return {}
        rows = await self._rows(self._PENDING_TO, (self._bind_list(sorted(set(domains))),))
        return {domain: int(count) for domain, count in rows}

    async def suppressed(self, addresses: Sequence[str], /) -> dict[str, Suppression]:
        """The suppressed ones among ``addresses`` (compared by canonical key), by key."""
        if not addresses:
            return {}
        rows = await self._rows(self._SUPPRESSED, (self._bind_list(_address_keys(addresses)),))
        return {row[0]: suppression_from_columns(row) for row in rows}

    async def suppressions(self) -> list[Suppression]:
        rows = await self._rows(sql.SELECT_SUPPRESSIONS + " ORDER BY since")
        return [suppression_from_columns(row) for row in rows]


class SharedWebhooks(SqlBackend):
    """:class:`~sender.store.base.Webhooks`: adding an event of one's own, reading them."""

    __slots__ = ()

    async def add_hook_event(
        self, type_: str, data: Mapping[str, str | None], /, *, now: float
    ) -> HookEvent:
        event_id = new_event_id()
        detail = {k: v for k, v in data.items() if k not in HOOK_DATA}
        columns = [data.get(name) for name in HOOK_DATA[:-1]]
        await self._write(
            sql.ADD_EVENT, (event_id, type_, now, *columns, json.dumps(detail) if detail else None)
        )
        row = await self._row(sql.EVENT_BY_ID, (event_id,))
        return hook_event_from_columns(row)

    async def hook_events(self, *, after: int = 0, limit: int = 100) -> list[HookEvent]:
        rows = await self._rows(sql.HOOK_EVENTS, (after, limit))
        return [hook_event_from_columns(row) for row in rows]

    _FAN_OUT: ClassVar[str]  # sql.FAN_OUT with the backend's membership test

    async def hook_fan_out(self, endpoint: str, types: Sequence[str], /, *, now: float) -> int:
        (last,) = await self._row(sql.LAST_EVENT)
        counts = await self._write_all(
            [
                (sql.ENSURE_ENDPOINT, (endpoint,)),
                (self._FAN_OUT, (endpoint, last, now - HOOK_HORIZON, self._bind_list(types))),
                (sql.ADVANCE, (last, endpoint, last)),
            ]
        )
        return max(counts[1], 0)

    async def claim_hook_deliveries(
        self, endpoint: str, /, *, now: float, until: float, limit: int
    ) -> list[tuple[HookEvent, int]]:
        claimed = []
        for event, attempts in await self._rows(sql.DUE_DELIVERIES, (endpoint, now, limit)):
            if await self._write(sql.CLAIM_DELIVERY, (until, endpoint, event, now)) == 1:
                row = await self._row(sql.EVENT_BY_KEY, (event,))
                claimed.append((hook_event_from_columns(row), int(attempts)))
        return claimed

    async def hook_delivered(self, endpoint: str, event: int, /, *, status: int) -> None:
        await self._write(sql.DELIVERED, (status, endpoint, event))

    async def hook_retry(
        self,
        endpoint: str,
        event: int,
        /,
        *,
        due_at: float | None,
        status: int | None,
        error: str | None,
    ) -> None:
        state = "pending" if due_at is not None else "failed"
        await self._write(sql.RETRY_DELIVERY, (due_at, state, status, error, endpoint, event))

    async def disable_hook_endpoint(self, endpoint: str, /, *, now: float, reason: str) -> None:
        await self._write(sql.DISABLE_ENDPOINT, (now, reason, endpoint))

    async def replay_hook_events(self, endpoint: str, /, *, since: float, now: float) -> int:
        counts = await self._write_all(
            [
                (sql.ENSURE_ENDPOINT, (endpoint,)),
                (sql.ENABLE_ENDPOINT, (endpoint,)),
                (sql.REPLAY, (now, endpoint, since)),
            ]
        )
        return counts[2]

    async def prune_hook_events(self, *, before: float) -> int:
        counts = await self._write_all(
            [(sql.PRUNE_DELIVERIES, (before,)), (sql.PRUNE_EVENTS, (before,))]
        )
        return counts[1]

    async def hook_endpoints(self) -> list[HookEndpoint]:
        return [
            HookEndpoint(
                url=str(url),
                disabled_at=None if disabled is None else float(disabled),
                disabled_reason=reason,
                pending=int(pending or 0),
                delivered=int(delivered or 0),
                failed=int(failed or 0),
            )
            for url, disabled, reason, pending, delivered, failed in await self._rows(
                sql.HOOK_ENDPOINTS
            )
        ]


class SharedRedemptions(SqlBackend):
    """:class:`~sender.store.base.Redemptions`: one insert that only the first caller wins."""

    __slots__ = ()

    async def redeem_once(
        self, digest: str, /, *, kind: str, expires_at: float, now: float
    ) -> bool:
        counts = await self._write_all(
            [
                (sql.PRUNE_REDEMPTIONS, (now,)),
                (sql.REDEEM, (digest, kind, expires_at, now)),
            ]
        )
        return counts[1] == 1

    async def is_redeemed(self, digest: str, /, *, now: float) -> bool:
        return await self._row(sql.REDEEMED, (digest, now)) is not None

    async def prune_redemptions(self, *, now: float) -> int:
        return await self._write(sql.PRUNE_REDEMPTIONS, (now,))


class SharedCodes(SqlBackend):
    """:class:`~sender.store.base.LoginCodes`: the same statements on both backends.

    A try is counted by one upsert (``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``),
    which SQLite runs under its one writer and PostgreSQL under the row's lock, so
    concurrent tries from any number of processes each get their own count.
    """

    __slots__ = ()

    async def keep_codes(self, codes: Sequence[LoginCode], /) -> None:
        if codes:
            await self._write_all([(sql.KEEP_CODE, code_values(code)) for code in codes])

    async def login_codes(self, address: str, /, *, now: float) -> list[LoginCode]:
        rows = await self._rows(sql.LOGIN_CODES, (address, now, address, now))
        return [code_from_columns(row) for row in rows]

    async def code_try(
        self, address: str, /, *, now: float, window: float, limit: int
    ) -> float | None:
        start = now - window
        rows = await self._write_rows(sql.CODE_TRY, (address, now, start, start, limit))
        tries, last_at = rows[0]
        return None if int(tries) <= limit else float(last_at) + window

    async def code_accepted(self, address: str, /) -> None:
        await self._write(sql.CODE_ACCEPTED, (address,))

    async def prune_codes(self, *, before: float) -> int:
        counts = await self._write_all(
            [(sql.PRUNE_CODES, (before,)), (sql.PRUNE_CODE_TRIES, (before - CODE_TRY_MEMORY,))]
        )
        return counts[0]


CODE_TRY_MEMORY = 86_400.0  # seconds tries are remembered past ``before`` (locks are shorter)
HOOK_HORIZON = 3 * 86_400.0  # seconds: older events are not given to a new endpoint
RUN_EVENTS = {RunState.PAUSED: WebhookEvent.RUN_PAUSED, RunState.DONE: WebhookEvent.RUN_FINISHED}
BOUNCE_EVENTS = {
    "hard": WebhookEvent.MESSAGE_BOUNCED,
    "soft": WebhookEvent.MESSAGE_BOUNCED,
    "complaint": WebhookEvent.MESSAGE_COMPLAINED,
}


def address_event(address: str, kind: str, reason: str, now: float) -> tuple[object, ...]:
    """:data:`sql.ADDRESS_EVENT`'s values: ``address.suppressed`` for ``address``."""
    detail = json.dumps({"kind": kind, "reason": reason})
    return (new_event_id(), WebhookEvent.ADDRESS_SUPPRESSED.value, now, address, detail)


def new_event_id() -> str:
    """A ``webhook-id``: the millisecond it was made, then 80 random bits, so two stores
    (or a restored one) never reuse one.

    Leading with the time makes ids sort by creation, and the unique index on them grow
    at its end: random ids put every event on a page of its own, one more page written a
    message (a 20,000-message run wrote 14% fewer bytes to its outbox with these).
    """
    return f"msg_{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


def queued_values(template: str, new: NewRow, person: Participant, /) -> tuple[object, ...]:
    """One queued row's values in :data:`sql.QUEUED_COLUMNS` order."""
    return (
        new.row,
        template,
        *participant_columns(person),
        person.domain,
        new.priority,
        address_key(person.email),
    )


def _address_keys(addresses: Sequence[str]) -> list[str]:
    """The canonical keys of ``addresses``, each once."""
    return sorted({address_key(address) for address in addresses})
