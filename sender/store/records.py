"""The outbox's records, and the one mapping between them and a row of columns.

Every backend stores the same fields in the same columns, so the mapping lives here once:
a backend's SQL selects the columns in the order the ``*_COLUMNS`` constants give, and the
functions below build the records (``participant_from_columns`` is the one place a stored
participant comes back, with its locale defaulted). Writing goes the other way through
``participant_columns``, ``event_values`` and ``bounce_values``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sender.addresses import address_key
from sender.models import LoginCode, Participant, Positional, SmtpReply
from sender.vocabulary import MessageState, RunState

__all__ = [
    "BOUNCE_COLUMNS",
    "CODE_COLUMNS",
    "EVENT_COLUMNS",
    "HOOK_COLUMNS",
    "HOOK_DATA",
    "MESSAGE_COLUMNS",
    "PARTICIPANT_COLUMNS",
    "RSVP_COLUMNS",
    "RUN_COLUMNS",
    "SUPPRESSION_COLUMNS",
    "UNSUBSCRIBE_COLUMNS",
    "WORKER_COLUMNS",
    "Attempt",
    "BounceRecord",
    "DailySent",
    "DomainProgress",
    "EventRecord",
    "HookEndpoint",
    "HookEvent",
    "IngestResult",
    "InvitationRecord",
    "MessageRecord",
    "NewRow",
    "OutboxMessage",
    "Outcome",
    "RsvpRecord",
    "RunInfo",
    "Suppression",
    "Unsubscribe",
    "WorkerInfo",
    "attempt_from_columns",
    "bounce_from_columns",
    "bounce_values",
    "code_from_columns",
    "code_values",
    "event_from_columns",
    "event_values",
    "hook_event_from_columns",
    "login_values",
    "message_from_columns",
    "participant_columns",
    "participant_from_columns",
    "problem_from_columns",
    "reply_from_columns",
    "rsvp_from_columns",
    "run_from_columns",
    "suppression_from_columns",
    "unsubscribe_from_columns",
    "worker_from_columns",
]


@dataclass(frozen=True, slots=True)
class RunInfo:
    """One bulk run as stored."""

    run_id: str
    template: str
    source: str  # where the rows came from: a CSV path, or "library"
    created_at: float
    state: RunState = RunState.ACTIVE
    paused_reason: str | None = None
    paused_since: float | None = None
    ingested_through: int = 0  # highest input row number stored; resume ingests after it
    ingest_complete: bool = False
    owner: str | None = None  # the worker holding the run's lease ("host:pid")
    heartbeat_at: float | None = None
    # How the run was started (rate limits, concurrency), so a resume sends the same way.
    options: Mapping[str, str | float | int | None] = field(default_factory=dict)
    event_uid: str | None = None  # set for a run that sends a calendar event's mail
    sequence: int | None = None  # that mail's SEQUENCE
    method: str | None = None  # "REQUEST" or "CANCEL"
    stream: str = "transactional"  # its template's stream (sender.vocabulary.Stream)


@dataclass(frozen=True, slots=True)
class NewRow:
    """One input row for :meth:`Store.add_rows`: a participant, or the reason it was skipped."""

    row: int  # the input's row number (CSV: the line it starts on)
    participant: Participant | None
    skip_reason: str | None = None  # set when participant is None
    email: str | None = None  # what the row said, for skipped rows
    priority: int = 0  # higher leaves first within a domain
    replaces: bool = False  # a corrected address for a participant already in the run


@dataclass(frozen=True, slots=True)
class IngestResult:
    queued: int
    skipped: int
    duplicates: tuple[tuple[int, int], ...] = ()  # (row, row of the first occurrence)
    corrected: int = 0  # participants given a corrected address (rows with ``replaces``)


@dataclass(frozen=True, slots=True)
class OutboxMessage(Positional):
    """A claimed message: everything needed to compose and send it."""

    id: int
    run_id: str
    row: int
    participant: Participant
    template: str
    domain: str
    attempts: int  # including the current one
    first_attempt_at: float | None
    message_id: str | None  # kept across attempts, so a resend carries the same Message-ID
    suppressed: str | None = None  # why the address is on the suppression list, if it is
    unsubscribed: str | None = None  # how it left the run's stream, if it did


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one attempt, as the engine records it."""

    state: MessageState  # SENT, DEFERRED, FAILED, SUPPRESSED or SKIPPED (unrenderable)
    at: float
    reply: SmtpReply | None = None
    detail: str = ""
    next_attempt_at: float | None = None  # for DEFERRED
    message_id: str | None = None
    code: LoginCode | None = field(default=None, repr=False)  # kept with a SENT outcome


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """Where one participant's message of a run stands: what an LMS shows next to a name."""

    id: int
    run_id: str
    row: int
    email: str
    state: MessageState
    attempts: int
    message_id: str | None
    last_reply: SmtpReply | None
    detail: str
    next_attempt_at: float | None
    participant_id: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    message_id: int
    number: int
    at: float
    state: MessageState
    reply: SmtpReply | None
    detail: str


@dataclass(frozen=True, slots=True)
class DomainProgress:
    domain: str
    counts: Mapping[MessageState, int] = field(default_factory=dict)
    next_attempt_at: float | None = None


@dataclass(frozen=True, slots=True)
class DailySent:
    """Messages accepted for one recipient domain on one UTC day (``day``: days since 1970)."""

    day: int
    domain: str
    sent: int

    @property
    def date(self) -> str:
        """The day as ``YYYY-MM-DD`` (UTC)."""
        return datetime.fromtimestamp(self.day * 86_400, UTC).date().isoformat()


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A calendar event as last sent: its SEQUENCE, what it looked like, whether cancelled."""

    uid: str
    course_id: str
    sequence: int  # the highest SEQUENCE sent for the event
    fingerprint: str  # of what attendees see; a new one means an update is due
    event: str  # the event as JSON, so the next update can say what changed
    cancelled: bool = False
    changes: tuple[str, ...] = ()  # what the update at ``sequence`` changed ("time", ...)
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class InvitationRecord:
    """What one attendee of an event was last sent (from the ``sent`` messages of its runs)."""

    uid: str
    participant: Participant
    sequence: int  # the highest SEQUENCE sent to them
    method: str  # "REQUEST" or "CANCEL": the method of that last message
    sent_at: float | None


@dataclass(frozen=True, slots=True)
class RsvpRecord:
    """One answer read back from a reply, and what was made of it.

    ``outcome`` is a :class:`~sender.vocabulary.RsvpOutcome` value (only ``recorded``
    counts); every answer is kept, with ``reason``.
    """

    uid: str
    attendee: str  # lower-cased address
    partstat: str  # ACCEPTED, DECLINED, TENTATIVE, ...
    sequence: int
    received_at: float
    outcome: str
    dtstamp: float | None = None
    comment: str = ""
    source: str = ""  # where the reply came from: a file, "mbox#3", "inbound"
    reason: str = ""
    participant_id: str | None = None


@dataclass(frozen=True, slots=True)
class BounceRecord:
    """One bounce (or complaint, or auto-reply) as kept, and whom it was about."""

    fingerprint: str  # identifies the bounce, so ingesting it twice keeps it once
    address: str | None  # as kept: the canonical key (sender.addresses.address_key)
    kind: str  # hard, soft, autoreply, complaint, unknown
    status: str | None
    diagnostic: str
    reason: str
    at: float
    source: str = ""
    message: int | None = None  # the outbox message a signed return path named
    participant_id: str | None = None
    forged: bool = False  # the return path's signature did not verify: changes nothing


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """An address that left a stream: later mail of that stream skips it."""

    address: str  # the canonical key (sender.addresses.address_key)
    stream: str
    at: float
    how: str  # "one-click" (RFC 8058 POST), "page" (the button), "mailto"
    participant_id: str | None = None


@dataclass(frozen=True, slots=True)
class Suppression:
    """An address sender will not write to, and why."""

    address: str  # the canonical key (sender.addresses.address_key): every spelling
    kind: str  # hard, complaint, soft, manual
    reason: str
    since: float


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A process that claims messages, and its lease: alive while its heartbeat is fresh."""

    owner: str  # what its claims record as claimed_by
    host: str
    pid: int
    started_at: float  # when it registered
    heartbeat_at: float  # its last renewal
    reclaimed_at: float | None = None  # its lease expired and its claims were taken back
    ttl: float = 30.0  # its own lease's: others take its claims back only after this long


# --- columns -------------------------------------------------------------------------------
# Each names the columns a backend selects, in the order the matching function reads them.


@dataclass(frozen=True, slots=True)
class HookEvent:
    """One event the outbox keeps for the webhooks: what happened, when, and the ids an
    LMS joins on (never a token or a message body)."""

    id: int  # the outbox's order: deliveries go out oldest first
    event_id: str  # the ``webhook-id`` of every delivery of it, retries included
    type: str  # a sender.vocabulary.WebhookEvent
    at: float
    data: Mapping[str, str | None]

    def body(self) -> bytes:
        """The JSON a receiver gets: ``{"type", "timestamp", "data"}``."""
        stamp = datetime.fromtimestamp(self.at, UTC).isoformat(timespec="milliseconds")
        data = {k: v for k, v in self.data.items() if v is not None}
        document = {"type": self.type, "timestamp": stamp.replace("+00:00", "Z"), "data": data}
        return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class HookEndpoint:
    """One webhook endpoint as the outbox knows it: disabled or not, and its deliveries."""

    url: str
    disabled_at: float | None
    disabled_reason: str | None
    pending: int
    delivered: int
    failed: int


# What an event says, column by column; rows without a message leave the message's ones NULL.
HOOK_DATA = ("run_id", "participant_id", "course_id", "message_id", "email", "detail")
HOOK_COLUMNS = ("id", "event_id", "type", "at", *HOOK_DATA)


def hook_event_from_columns(row: Sequence[Any], /) -> HookEvent:
    data = {name: str(row[4 + i]) for i, name in enumerate(HOOK_DATA[:-1]) if row[4 + i]}
    detail = json.loads(row[-1]) if row[-1] else {}
    data.update({str(k): str(v) for k, v in detail.items() if v is not None})
    return HookEvent(int(row[0]), str(row[1]), str(row[2]), float(row[3]), data)


PARTICIPANT_COLUMNS = ("participant_id", "email", "name", "course_id", "locale", "vars")
RUN_COLUMNS = (
    "run_id", "template", "source", "created_at", "state", "paused_reason", "paused_since",
    "ingested_through", "ingest_complete", "owner", "heartbeat_at", "options",
    "event_uid", "sequence", "method", "stream",
)  # fmt: skip
# The message's own columns, then its run's run_id as "run_id".
MESSAGE_COLUMNS = (
    "id", "run_id", "row", "email", "state", "attempts", "message_id", "code",
    "enhanced_status", "reply_text", "detail", "due_at", "participant_id", "name",
)  # fmt: skip
EVENT_COLUMNS = (
    "uid", "course_id", "sequence", "fingerprint", "event", "cancelled", "changes", "updated_at",
)  # fmt: skip
RSVP_COLUMNS = tuple(RsvpRecord.__dataclass_fields__)
BOUNCE_COLUMNS = tuple(BounceRecord.__dataclass_fields__)
SUPPRESSION_COLUMNS = tuple(Suppression.__dataclass_fields__)
UNSUBSCRIBE_COLUMNS = tuple(Unsubscribe.__dataclass_fields__)
WORKER_COLUMNS = tuple(WorkerInfo.__dataclass_fields__)
CODE_COLUMNS = tuple(LoginCode.__dataclass_fields__)


def participant_columns(person: Participant, /) -> tuple[str, str, str, str, str, str | None]:
    """The participant as ``PARTICIPANT_COLUMNS`` stores it (``vars`` as compact JSON)."""
    variables = None
    if person.vars:
        variables = json.dumps(dict(person.vars), separators=(",", ":"), ensure_ascii=False)
    return (
        person.participant_id,
        person.email,
        person.name,
        person.course_id,
        person.locale,
        variables,
    )


def participant_from_columns(
    participant_id: str,
    email: str,
    name: str,
    course_id: str,
    locale: str | None,
    variables: str | None,
    /,
) -> Participant:
    """A stored participant as it was ingested; a row without a locale reads as ``en``."""
    return Participant(
        email=email,
        name=name,
        participant_id=participant_id,
        course_id=course_id,
        locale=locale or "en",
        vars=json.loads(variables) if variables else {},
    )


def reply_from_columns(
    code: int | None, enhanced: str | None, text: str | None
) -> SmtpReply | None:
    """The last SMTP reply as stored in ``code, enhanced_status, reply_text``; None if none."""
    return None if code is None else SmtpReply(code, enhanced, text or "")


def run_from_columns(row: Sequence[Any], /) -> RunInfo:
    (
        run_id,
        template,
        source,
        created_at,
        state,
        paused_reason,
        paused_since,
        ingested_through,
        ingest_complete,
        owner,
        heartbeat_at,
        options,
        event_uid,
        sequence,
        method,
        stream,
    ) = row
    return RunInfo(
        run_id=str(run_id),
        template=str(template),
        source=str(source),
        created_at=float(created_at),
        state=RunState(state),
        paused_reason=paused_reason,
        paused_since=paused_since,
        ingested_through=int(ingested_through),
        ingest_complete=bool(ingest_complete),
        owner=owner,
        heartbeat_at=heartbeat_at,
        options=json.loads(options) if options else {},
        event_uid=event_uid,
        sequence=sequence,
        method=method,
        stream=str(stream),
    )


def message_from_columns(row: Sequence[Any], /) -> MessageRecord:
    (id_, run_id, number, email, state, attempts, message_id, code, enhanced, text, detail, due) = (
        row[:12]
    )
    state = MessageState(state)
    return MessageRecord(
        id=id_,
        run_id=run_id,
        row=number,
        email=email or "",
        state=state,
        attempts=attempts,
        message_id=message_id,
        last_reply=reply_from_columns(code, enhanced, text),
        detail=detail or "",
        next_attempt_at=due if state is MessageState.DEFERRED else None,
        participant_id=row[12],
        name=row[13],
    )


def problem_from_columns(row: Sequence[Any], /) -> tuple[int, str, MessageState, str]:
    """A problem row from ``row, email, state, code, enhanced_status, reply_text, detail``.

    What :meth:`Progress.problems` lists: the last reply when there was one, else the detail.
    """
    number, email, state, code, enhanced, text, detail = row
    reply = reply_from_columns(code, enhanced, text)
    return (number, email, MessageState(state), (detail or "") if reply is None else str(reply))


def attempt_from_columns(message_id: int, row: Sequence[Any], /) -> Attempt:
    """One attempt from ``number, at, state, code, enhanced_status, reply_text, detail``."""
    number, at, state, code, enhanced, text, detail = row
    return Attempt(
        message_id=message_id,
        number=number,
        at=at,
        state=MessageState(state),
        reply=reply_from_columns(code, enhanced, text),
        detail=detail,
    )


def event_values(record: EventRecord, /) -> tuple[object, ...]:
    """The event as ``EVENT_COLUMNS`` stores it (``changes`` comma-separated)."""
    return (
        record.uid,
        record.course_id,
        record.sequence,
        record.fingerprint,
        record.event,
        int(record.cancelled),
        ",".join(record.changes),
        record.updated_at,
    )


def event_from_columns(row: Sequence[Any], /) -> EventRecord:
    return EventRecord(
        uid=row[0],
        course_id=row[1],
        sequence=int(row[2]),
        fingerprint=row[3],
        event=row[4],
        cancelled=bool(row[5]),
        changes=tuple(change for change in str(row[6]).split(",") if change),
        updated_at=float(row[7]),
    )


def rsvp_from_columns(row: Sequence[Any], /) -> RsvpRecord:
    uid, attendee, partstat, sequence, received_at, outcome, *rest = row
    return RsvpRecord(uid, attendee, partstat, int(sequence), float(received_at), outcome, *rest)


def bounce_values(record: BounceRecord, /) -> tuple[object, ...]:
    """The bounce as ``BOUNCE_COLUMNS`` stores it: its address as the canonical key."""
    return (
        record.fingerprint,
        address_key(record.address) if record.address else None,
        record.kind,
        record.status,
        record.diagnostic,
        record.reason,
        record.at,
        record.source,
        record.message,
        record.participant_id,
        int(record.forged),
    )


def bounce_from_columns(row: Sequence[Any], /) -> BounceRecord:
    fingerprint, address, kind, status, diagnostic, reason, at, source, message, pid, forged = row
    return BounceRecord(
        fingerprint,
        address,
        kind,
        status,
        diagnostic,
        reason,
        at,
        source,
        message,
        pid,
        bool(forged),
    )


def suppression_from_columns(row: Sequence[Any], /) -> Suppression:
    address, kind, reason, since = row
    return Suppression(address, kind, reason, since)


def unsubscribe_from_columns(row: Sequence[Any], /) -> Unsubscribe:
    address, stream, at, how, participant_id = row
    return Unsubscribe(str(address), str(stream), float(at), str(how), participant_id)


def worker_from_columns(row: Sequence[Any], /) -> WorkerInfo:
    owner, host, pid, started_at, heartbeat_at, reclaimed_at, ttl = row
    return WorkerInfo(
        owner=str(owner),
        host=str(host),
        pid=int(pid),
        started_at=float(started_at),
        heartbeat_at=float(heartbeat_at),
        reclaimed_at=None if reclaimed_at is None else float(reclaimed_at),
        ttl=float(ttl),
    )


def code_values(record: LoginCode, /) -> tuple[object, ...]:
    """A login code's record as ``CODE_COLUMNS`` stores it."""
    return tuple(getattr(record, column) for column in CODE_COLUMNS)


def login_values(record: LoginCode, /) -> tuple[str, str, float, float]:
    """A run's sent message keeps its login code on its own row: digest, purpose, issued,
    expires.

    The rest of the record is the row's already (the address key, the participant and
    course; a run's links have no ``next``).
    """
    return (record.digest, record.purpose, record.issued_at, record.expires_at)


def code_from_columns(row: Sequence[Any], /) -> LoginCode:
    address, digest, participant_id, course_id, purpose, next_path, issued, expires = row
    return LoginCode(
        address=str(address),
        digest=str(digest),
        participant_id=str(participant_id),
        course_id=str(course_id),
        purpose=str(purpose),
        next=None if next_path is None else str(next_path),
        issued_at=float(issued),
        expires_at=float(expires),
    )
