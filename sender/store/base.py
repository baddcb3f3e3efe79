"""The outbox's contract: runs, one message row per recipient, and an attempt log.

A :class:`Store` is what makes bulk runs durable. The engine (``sender.bulk.runner``)
only ever talks to this Protocol, so a PostgreSQL store shared by several
worker processes can replace the embedded SQLite one without changing callers.
Every state change that two workers could race on is a single atomic
statement (claim = conditional update), never read-then-write.

Message states::

    queued ──claim──▶ sending ──▶ sent
      ▲                  │
      │                  ├──▶ deferred ──(due)──▶ claimable again
      │                  ├──▶ failed        (permanent, or retries exhausted)
      └──requeue_stale───┘──▶ suppressed    (never sent; bounce handling)
    skipped                                 (bad input; recorded at ingest)

``sent``, ``failed``, ``suppressed`` and ``skipped`` are final until an operator
acts (``reset_failed`` for ``sender retry``).

Calendar invitations ride on runs: a run created with an ``event_uid`` sends that
event's REQUEST or CANCEL at one SEQUENCE, so what each attendee was sent is simply
the ``sent`` messages of the event's runs (:meth:`Store.invitations`), with no
bookkeeping of its own. The event as last sent (:class:`EventRecord`) and every RSVP
answer read back (:class:`RsvpRecord`, stale and refused ones included) are kept too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from sender.models import Participant, SmtpReply

__all__ = [
    "FINAL_STATES",
    "Attempt",
    "BounceRecord",
    "DomainProgress",
    "EventRecord",
    "IngestResult",
    "InvitationRecord",
    "MessageRecord",
    "MessageState",
    "NewRow",
    "OutboxMessage",
    "Outcome",
    "RsvpRecord",
    "RunInfo",
    "RunState",
    "Store",
    "Suppression",
]


class MessageState(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    SKIPPED = "skipped"


FINAL_STATES = frozenset(
    {MessageState.SENT, MessageState.FAILED, MessageState.SUPPRESSED, MessageState.SKIPPED}
)


class RunState(StrEnum):
    ACTIVE = "active"  # has work to do (or is doing it)
    PAUSED = "paused"  # stopped on purpose; ``paused_reason`` says why
    DONE = "done"  # nothing left but final states


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
class OutboxMessage:
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


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one attempt, as the engine records it."""

    state: MessageState  # SENT, DEFERRED, FAILED, SUPPRESSED or SKIPPED (unrenderable)
    at: float
    reply: SmtpReply | None = None
    detail: str = ""
    next_attempt_at: float | None = None  # for DEFERRED
    message_id: str | None = None


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

    ``outcome`` is ``recorded`` (it counts), ``stale`` (answers an older SEQUENCE),
    ``unknown_event``, ``not_invited``, ``sender_mismatch`` (From is not the
    attendee) or ``unauthenticated`` (nothing vouches for the From: no aligned DKIM
    signature, no trusted relay's DMARC pass); every one is kept, with ``reason``.
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
class Suppression:
    """An address sender will not write to, and why."""

    address: str  # the canonical key (sender.addresses.address_key): every spelling
    kind: str  # hard, complaint, soft, manual
    reason: str
    since: float


class Store(Protocol):
    """Durable outbox. All times are Unix seconds from the engine's clock."""

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
    ) -> tuple[RunInfo, bool]:
        """Create the run, or return the existing one; the bool says whether it was new.

        ``options`` are stored only when the run is new: a resume reads them back.
        ``event`` is (UID, SEQUENCE, method) for a run that sends calendar mail.
        """
        ...

    async def update_run_options(
        self, run_id: str, options: Mapping[str, str | float | int | None], /
    ) -> None:
        """Merge ``options`` into the run's stored ones (a run switched to another transport)."""
        ...

    async def get_run(self, run_id: str, /) -> RunInfo | None: ...

    async def latest_run(self) -> RunInfo | None: ...

    async def runs(self, *, limit: int = 100) -> list[RunInfo]:
        """The most recent runs first, at most ``limit`` (``sender status --all``)."""
        ...

    async def add_rows(
        self, run_id: str, rows: Sequence[NewRow], /, *, complete: bool = False
    ) -> IngestResult:
        """Store rows in one transaction and advance ``ingested_through`` with them.

        Idempotent: the key is (run, participant id, template). A participant
        already in the run from *another* row is recorded as a skipped duplicate
        naming that row; the same row stored again (a resumed ingest) is ignored.
        A row with ``replaces`` gives a participant of the run a corrected address:
        a message not sent yet is changed in place; a final one (sent, failed, ...)
        stays as it was (its address, history and bounces), and a new queued message
        becomes the participant's message (what :meth:`lookup` returns).
        """
        ...

    async def addresses_of(self, run_id: str, participant_ids: Sequence[str], /) -> dict[str, str]:
        """The address of each participant's current message in the run, for those it has."""
        ...

    async def participant_count(self, run_id: str, /) -> int:
        """How many participants the run has a message for (skipped rows not counted)."""
        ...

    async def acquire_run(self, run_id: str, /, *, owner: str, now: float, ttl: float) -> bool:
        """Take the run's lease unless another owner's heartbeat is younger than ``ttl``."""
        ...

    async def heartbeat(self, run_id: str, /, *, owner: str, now: float) -> bool:
        """Renew the lease; False when ``owner`` has lost it and must stop sending."""
        ...

    async def release_run(self, run_id: str, /, *, owner: str) -> None: ...

    async def requeue_stale(self, run_id: str, /) -> int:
        """Put ``sending`` rows back to ``queued`` (after a crash); returns how many."""
        ...

    async def pending_domains(self, run_id: str, /, *, now: float) -> dict[str, int]:
        """Domains with claimable messages now (queued, or deferred and due), with counts."""
        ...

    async def claim(
        self, run_id: str, domain: str, /, *, now: float, owner: str
    ) -> OutboxMessage | None:
        """Atomically move one claimable message of ``domain`` to ``sending``.

        The message says whether its address is suppressed (checked in the same
        statement), so the engine records it as such instead of sending.
        """
        ...

    async def record(self, message_id: int, outcome: Outcome, /) -> None:
        """Store an attempt's outcome and append it to the attempt log, in one transaction."""
        ...

    async def claim_many(
        self, run_id: str, domains: Sequence[str], /, *, now: float, owner: str
    ) -> list[OutboxMessage | None]:
        """One :meth:`claim` per entry of ``domains`` (repeats allowed) in one transaction.

        The list is aligned with ``domains``; None where that domain had nothing left.
        """
        ...

    async def record_many(self, outcomes: Sequence[tuple[int, Outcome]], /) -> None:
        """:meth:`record` for several messages in one transaction: one commit, not one each."""
        ...

    async def next_attempt_at(self, run_id: str, /) -> float | None:
        """The earliest time a deferred message of the run becomes due."""
        ...

    async def counts(self, run_id: str, /) -> dict[MessageState, int]: ...

    async def domain_progress(self, run_id: str, /) -> list[DomainProgress]: ...

    async def set_run_state(
        self, run_id: str, state: RunState, /, *, now: float, reason: str | None = None
    ) -> None: ...

    async def reset_failed(self, run_id: str, /, *, now: float) -> int:
        """``failed`` and ``deferred`` back to ``queued`` for ``sender retry``; never ``sent``."""
        ...

    async def attempts(self, message_id: int, /) -> list[Attempt]: ...

    async def lookup(self, run_id: str, participant_id: str, /) -> MessageRecord | None:
        """The message of one participant in a run (for the run's template), if any."""
        ...

    async def skipped(self, run_id: str, /, *, limit: int = 1000) -> list[tuple[int, str, str]]:
        """Skipped rows as (row, email or '', reason), in row order."""
        ...

    async def problems(
        self, run_id: str, /, *, limit: int = 1000
    ) -> list[tuple[int, str, MessageState, str]]:
        """Failed, deferred and suppressed rows as (row, email, state, last reply or detail)."""
        ...

    # --- calendar events -------------------------------------------------------------

    async def save_event(self, record: EventRecord, /) -> None:
        """Insert or replace the event's record."""
        ...

    async def get_event(self, uid: str, /) -> EventRecord | None: ...

    async def events(self) -> list[EventRecord]:
        """Every event sent, the most recently changed first."""
        ...

    async def invitations(self, uid: str, /) -> list[InvitationRecord]:
        """Every participant sent a message of the event, with the last SEQUENCE and method."""
        ...

    async def add_rsvp(self, record: RsvpRecord, /) -> bool:
        """Keep an answer; False (and nothing stored) when the same answer is already kept."""
        ...

    async def rsvps(self, uid: str | None = None, /) -> list[RsvpRecord]:
        """Answers in the order they were received, of one event or of all."""
        ...

    # --- bounces and suppression -------------------------------------------------------

    async def add_bounce(self, record: BounceRecord, /) -> bool:
        """Keep a bounce; False (nothing stored) when its fingerprint is already kept."""
        ...

    async def bounces(self, *, since: float | None = None) -> list[BounceRecord]:
        """Bounces kept since a time (all when None), oldest first."""
        ...

    async def count_bounces(self, address: str, /, *, kind: str, since: float) -> int:
        """How many bounces of ``kind`` an address had since ``since``, after its last delivery.

        A message sent to the address after a bounce resets the count (soft bounces
        are forgiven once mail gets through). Addresses compare by canonical key, and
        copies of one bounce count once: at most one per outbox message.
        """
        ...

    async def hard_bounces_since(self, since: float, /) -> int:
        """Addresses with a hard bounce (not forged) since ``since``: the budget's count.

        Distinct addresses (by canonical key), so copies of one bounce, or many
        bounces for one address, count once.
        """
        ...

    async def sent_since(self, since: float, /) -> int:
        """Messages accepted by the server since ``since``: the bounce rate's denominator."""
        ...

    async def message(self, message_id: int, /) -> MessageRecord | None:
        """One outbox message by its id (what a signed return path names)."""
        ...

    async def participants_by_address(self, addresses: Sequence[str], /) -> dict[str, Participant]:
        """The participant each address last belonged to in any run, by address key."""
        ...

    async def suppress(self, address: str, /, *, kind: str, reason: str, now: float) -> bool:
        """Add to the suppression list (logged); False when it was there already."""
        ...

    async def unsuppress(self, address: str, /, *, reason: str, now: float) -> bool:
        """Remove from the suppression list (logged with the reason); False when absent."""
        ...

    async def suppressed(self, addresses: Sequence[str], /) -> dict[str, Suppression]:
        """The suppressed ones among ``addresses``, compared and returned by canonical key."""
        ...

    async def suppressions(self) -> list[Suppression]: ...

    async def aclose(self) -> None: ...
