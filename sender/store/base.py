"""The outbox's contract, as roles: each caller asks for the part of the store it uses.

A :class:`Store` is what makes bulk runs durable. It is the union of small role protocols,
each readable on one screen, so a function says what it needs (``budget_reason`` takes a
:class:`Budget`, the bounce rules a :class:`Feedback`) and a test double or a new backend
knows what it must provide. ``SqliteStore`` implements them all; a PostgreSQL store shared
by several worker processes can replace it without changing callers. Every state change
that two workers could race on is a single atomic statement (claim = conditional update),
never read-then-write.

- :class:`Runs`: the bulk engine, invitations, ``sender status`` and ``resume``;
- :class:`Workers`: each claiming process's lease, and taking back a dead one's claims;
- :class:`Outbox`: the bulk engine's ingest, claims, outcomes and retries;
- :class:`Progress`: status and reports, counts, problems, one participant's message;
- :class:`EventLog`: invitations: events as last sent, who was invited, RSVP answers;
- :class:`BounceLog` and :class:`SuppressionList` (together :class:`Feedback`): the
  bounce rules, the clean-up report, and every send's check of whom not to write to;
- :class:`Budget`: what the bounce budget and the complaint-rate guard count before they
  pause bulk sending;
- :class:`Unsubscribes`: who left which stream (one-click unsubscribe), checked by every
  later send of that stream;
- :class:`Redemptions`: one-time tokens (``login`` links, the landing page's
  assertions) redeemed atomically, kept as digests until they expire;
- :class:`LoginCodes`: the keyed hashes of the login codes mailed (a sent outcome keeps its
  message's on the message's row), and each address's tries, counted atomically;
- :class:`Webhooks`: the events for the LMS's webhooks, each written in the transaction
  of the change it reports (an attempt's outcome, a bounce, a suppression, a run paused
  or finished), so none is lost and none is told of a change that rolled back.

Message states (:class:`~sender.vocabulary.MessageState`) are drawn in
:mod:`sender.vocabulary`; ``sent``, ``failed``, ``suppressed`` and ``skipped`` are final
until an operator acts (``reset_failed`` for ``sender retry``).

Calendar invitations ride on runs: a run created with an ``event_uid`` sends that
event's REQUEST or CANCEL at one SEQUENCE, so what each attendee was sent is simply
the ``sent`` messages of the event's runs (:meth:`EventLog.invitations`), with no
bookkeeping of its own. The event as last sent (:class:`EventRecord`) and every RSVP
answer read back (:class:`RsvpRecord`, stale and refused ones included) are kept too.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Protocol

from sender.models import LoginCode, Participant
from sender.store.records import (
    Attempt,
    BounceRecord,
    DailySent,
    DomainProgress,
    EventRecord,
    HookEndpoint,
    HookEvent,
    IngestResult,
    InvitationRecord,
    MessageRecord,
    NewRow,
    OutboxMessage,
    Outcome,
    RsvpRecord,
    RunInfo,
    Suppression,
    Unsubscribe,
    WorkerInfo,
)
from sender.vocabulary import MessageState, RunState

__all__ = [
    "Attempt",
    "BounceLog",
    "BounceRecord",
    "Budget",
    "DailySent",
    "DomainProgress",
    "EventLog",
    "EventRecord",
    "Feedback",
    "HookEndpoint",
    "HookEvent",
    "IngestResult",
    "InvitationRecord",
    "LoginCode",
    "LoginCodes",
    "MessageRecord",
    "NewRow",
    "Outbox",
    "OutboxMessage",
    "Outcome",
    "Progress",
    "Redemptions",
    "RsvpRecord",
    "RunInfo",
    "Runs",
    "Store",
    "Suppression",
    "SuppressionList",
    "Unsubscribe",
    "Unsubscribes",
    "Volume",
    "Webhooks",
    "WorkerInfo",
    "Workers",
]  # the roles, and the records they speak in: what ``sender.store`` re-exports


class Runs(Protocol):
    """Runs: created once, leased to one worker at a time, paused and resumed."""

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
        """Create the run, or return the existing one; the bool says whether it was new.

        ``options`` are stored only when the run is new: a resume reads them back.
        ``event`` is (UID, SEQUENCE, method) for a run that sends calendar mail.
        ``stream`` is its template's: its claims skip the stream's unsubscribes.
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

    async def active_runs(self) -> list[RunInfo]:
        """Every run in state ``active``, the oldest first: what ``sender worker`` drains."""
        ...

    async def set_run_state(
        self, run_id: str, state: RunState, /, *, now: float, reason: str | None = None
    ) -> None: ...

    async def acquire_run(self, run_id: str, /, *, owner: str, now: float, ttl: float) -> bool:
        """Take the run's lease unless another owner's heartbeat is younger than ``ttl``."""
        ...

    async def heartbeat(self, run_id: str, /, *, owner: str, now: float) -> bool:
        """Renew the lease; False when ``owner`` has lost it and must stop sending."""
        ...

    async def release_run(self, run_id: str, /, *, owner: str) -> None: ...


class Workers(Protocol):
    """Worker leases: every process that claims holds one, renewed on its own timer.

    A worker whose heartbeat is older than the ttl is presumed dead and its claims are
    taken back (:meth:`reclaim_expired`), never earlier: a slow but live worker keeps its
    claims. An outcome its old owner reports after that is dropped by
    :meth:`Outbox.record_many`, so a message is recorded once. Delivery is at least
    once: a dead worker's in-flight messages may be sent again, with the same Message-ID.
    """

    async def register_worker(
        self, owner: str, /, *, host: str, pid: int, now: float, ttl: float = 30.0
    ) -> None:
        """Start (or restart) ``owner``'s lease; ``owner`` is what its claims are made as.

        ``ttl`` is the lease's own: whoever reclaims judges it by this, not by its own.
        """
        ...

    async def worker_heartbeat(self, owner: str, /, *, now: float) -> bool:
        """Renew the lease; False when it was taken back: stop claiming and sending."""
        ...

    async def workers(self, now: float, /) -> list[WorkerInfo]:
        """The workers holding a lease at ``now`` (heartbeat within its ttl), latest first."""
        ...

    async def release_worker(self, owner: str, /) -> int:
        """End the lease; put its claims back as never started (attempt uncounted); how many.

        For a worker stopping gracefully, once its in-flight outcomes are recorded.
        """
        ...

    async def reclaim_worker(self, owner: str, /, *, now: float) -> int:
        """:meth:`reclaim_expired` for one worker now, whose process is known to be gone
        (a process of this host that no longer exists); how many claims went back."""
        ...

    async def reclaim_expired(self, *, now: float) -> int:
        """Put back the ``sending`` claims no live worker holds: its heartbeat is older than
        ttl, its lease was taken back, or it never had one (a claim from before leases).

        By :meth:`Outbox.requeue_stale`'s rules (the attempt counted; a message whose
        address was corrected since is failed); returns how many claims were taken back.
        """
        ...


class Outbox(Protocol):
    """The messages of a run: stored once at ingest, claimed, sent, recorded."""

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

        The message says whether its address is suppressed, or unsubscribed from the
        run's stream (checked in the same statement), so the engine records it as such
        instead of sending.
        """
        ...

    async def claim_many(
        self, run_id: str, domains: Sequence[str], /, *, now: float, owner: str
    ) -> list[OutboxMessage | None]:
        """One :meth:`claim` per entry of ``domains`` (repeats allowed) in one transaction.

        The list is aligned with ``domains``; None where that domain had nothing left.
        """
        ...

    async def record(
        self, message_id: int, outcome: Outcome, /, *, owner: str | None = None
    ) -> bool:
        """Store an attempt's outcome and append it to the attempt log, in one transaction.

        With ``owner``, only while the message is still ``sending`` by that owner: a claim
        taken back (:meth:`Workers.reclaim_expired`) is not recorded, and False says so.
        """
        ...

    async def record_many(
        self, outcomes: Sequence[tuple[int, Outcome]], /, *, owner: str | None = None
    ) -> list[int]:
        """:meth:`record` for several messages in one transaction: one commit, not one each.

        Returns the message ids whose outcome was dropped (``owner`` no longer held
        the claim); the others are recorded all the same.
        """
        ...

    async def next_attempt_at(self, run_id: str, /) -> float | None:
        """The earliest time a deferred message of the run becomes due."""
        ...

    async def reset_failed(self, run_id: str, /, *, now: float) -> int:
        """``failed`` and ``deferred`` back to ``queued`` for ``sender retry``; never ``sent``."""
        ...


class Progress(Protocol):
    """Where a run's messages stand, for status, reports and an LMS."""

    async def counts(self, run_id: str, /) -> dict[MessageState, int]: ...

    async def domain_progress(self, run_id: str, /) -> list[DomainProgress]: ...

    async def lookup(self, run_id: str, participant_id: str, /) -> MessageRecord | None:
        """The message of one participant in a run (for the run's template), if any."""
        ...

    async def attempts(self, message_id: int, /) -> list[Attempt]: ...

    async def skipped(self, run_id: str, /, *, limit: int = 1000) -> list[tuple[int, str, str]]:
        """Skipped rows as (row, email or '', reason), in row order."""
        ...

    async def problems(
        self, run_id: str, /, *, limit: int = 1000
    ) -> list[tuple[int, str, MessageState, str]]:
        """Failed, deferred and suppressed rows as (row, email, state, last reply or detail)."""
        ...


class EventLog(Protocol):
    """Calendar events as last sent, who was invited, and the answers read back."""

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


class BounceLog(Protocol):
    """Bounces as kept, and whom they were about."""

    async def add_bounce(self, record: BounceRecord, /) -> bool:
        """Keep a bounce; False (nothing stored) when its fingerprint is already kept."""
        ...

    async def bounces(
        self, *, since: float | None = None, reasons: Collection[str] | None = None
    ) -> list[BounceRecord]:
        """Bounces kept since a time (all when None), oldest first; only ``reasons`` if given."""
        ...

    async def count_bounces(
        self, address: str, /, *, reasons: Collection[str], since: float
    ) -> int:
        """How many bounces for ``reasons`` an address had since ``since``, after its last delivery.

        A message sent to the address after a bounce resets the count (soft bounces
        are forgiven once mail gets through). Addresses compare by canonical key, and
        copies of one bounce count once: at most one per outbox message.
        """
        ...

    async def message(self, message_id: int, /) -> MessageRecord | None:
        """One outbox message by its id (what a signed return path names)."""
        ...

    async def participants_by_address(self, addresses: Sequence[str], /) -> dict[str, Participant]:
        """The participant each address last belonged to in any run, by address key."""
        ...


class SuppressionList(Protocol):
    """Addresses sender will not write to, each by its canonical key."""

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


class Budget(Protocol):
    """What the bounce budget counts in its sliding window."""

    async def hard_bounces_since(self, since: float, /) -> int:
        """Addresses with a hard bounce (not forged) since ``since``: the budget's count.

        Distinct addresses (by canonical key), so copies of one bounce, or many
        bounces for one address, count once.
        """
        ...

    async def sent_since(self, since: float, /) -> int:
        """Messages accepted by the server since ``since``: the bounce rate's denominator."""
        ...

    async def complaints_by_stream(self, since: float, /) -> dict[str, tuple[int, int]]:
        """``{stream: (delivered, complaints)}`` for the outbox's messages since ``since``,
        every stream that sent or had a complaint; ``{}`` when there was no complaint
        (then the deliveries are not counted at all).

        Complaints count once per message, and only those whose return path named an
        outbox message (not forged): the others cannot be told to a stream.
        """
        ...


class Unsubscribes(Protocol):
    """Who left which stream; later mail of that stream skips them, other streams do not."""

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
        """Keep the unsubscribe, and its ``address.unsubscribed`` event in the same
        transaction; False (nothing changed) when the address had left already."""
        ...

    async def unsubscribed(
        self, addresses: Sequence[str], /, *, stream: str
    ) -> dict[str, Unsubscribe]:
        """The ones among ``addresses`` that left ``stream``, by canonical key."""
        ...

    async def unsubscribes(self) -> list[Unsubscribe]:
        """Every unsubscribe, the oldest first."""
        ...


class Volume(Protocol):
    """What the Gmail bulk-sender estimate reads: mail sent per day and still to send, by domain.

    Both are asked rarely (``sender doctor``, the health page) and use no index of their
    own: they scan the attempt log since ``since`` and the unfinished messages.
    """

    async def sent_per_day(self, domains: Sequence[str], /, *, since: float) -> list[DailySent]:
        """Messages accepted since ``since`` to each of ``domains``, per UTC day.

        From the attempt log, so a message re-sent after a crash counts each time it was
        accepted, as receivers count it. Sorted by day, then domain; days with none left out.
        """
        ...

    async def pending_to(self, domains: Sequence[str], /) -> dict[str, int]:
        """Messages still to send (queued, deferred or in flight) to each of ``domains``.

        Current messages of runs that are not done (paused ones included: they may
        resume); domains with none are left out.
        """
        ...


class Webhooks(Protocol):
    """The webhook outbox. Besides the events written with the changes they report
    (``message.sent``/``deferred``/``failed`` by :meth:`Outbox.record_many`,
    ``message.bounced``/``complained`` by :meth:`BounceLog.add_bounce`,
    ``address.suppressed`` by :meth:`SuppressionList.suppress`, ``run.paused`` and
    ``run.finished`` by :meth:`Runs.set_run_state`), a caller may add one of its own."""

    async def add_hook_event(
        self, type_: str, data: Mapping[str, str | None], /, *, now: float
    ) -> HookEvent:
        """Keep one event (``rsvp.answered``, a test event) with a new ``event_id``."""
        ...

    async def hook_events(self, *, after: int = 0, limit: int = 100) -> list[HookEvent]:
        """Events with ``id`` above ``after``, oldest first, at most ``limit``."""
        ...

    async def hook_fan_out(self, endpoint: str, types: Sequence[str], /, *, now: float) -> int:
        """Give ``endpoint`` (its URL) a pending delivery of each event of ``types`` it has
        not been given, from the last three days; how many. Not while it is disabled."""
        ...

    async def claim_hook_deliveries(
        self, endpoint: str, /, *, now: float, until: float, limit: int
    ) -> list[tuple[HookEvent, int]]:
        """Take up to ``limit`` of its due deliveries, oldest first, held until ``until``;
        each with the attempts made so far. A delivery another process took is left."""
        ...

    async def hook_delivered(self, endpoint: str, event: int, /, *, status: int) -> None: ...

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
        """Count a failed attempt; due again at ``due_at``, or given up when None."""
        ...

    async def disable_hook_endpoint(self, endpoint: str, /, *, now: float, reason: str) -> None:
        """No deliveries to ``endpoint`` until :meth:`replay_hook_events` (it answered 410)."""
        ...

    async def replay_hook_events(self, endpoint: str, /, *, since: float, now: float) -> int:
        """Enable ``endpoint`` and make its deliveries of events since ``since`` due now,
        delivered or given up alike; how many."""
        ...

    async def prune_hook_events(self, *, before: float) -> int:
        """Forget events from before ``before`` and their finished deliveries (a pending
        delivery keeps its event); how many events went."""
        ...

    async def hook_endpoints(self) -> list[HookEndpoint]:
        """Every endpoint the outbox has delivered to, with its counts by state."""
        ...


class Redemptions(Protocol):
    """One-time tokens, redeemed once across every process sharing the store.

    The store keeps only a digest of each token (the caller hashes it), with the time
    until which it must be remembered; a redemption also prunes the rows past theirs.
    """

    async def redeem_once(
        self, digest: str, /, *, kind: str, expires_at: float, now: float
    ) -> bool:
        """Record ``digest`` as redeemed: True the first time, False if it already was
        (one atomic insert, so of two racing callers exactly one gets True)."""
        ...

    async def is_redeemed(self, digest: str, /, *, now: float) -> bool:
        """Whether ``digest`` was redeemed and is still remembered (changes nothing)."""
        ...

    async def prune_redemptions(self, *, now: float) -> int:
        """Forget digests whose ``expires_at`` is past; how many went."""
        ...


class LoginCodes(Protocol):
    """Login codes as kept (keyed hashes only) and each address's tries at guessing one.

    :meth:`Outbox.record_many` keeps the code of a ``sent`` outcome on the message's own
    row, in the statement that records it (no write of its own on the bulk path); a
    single send keeps its code here (:meth:`keep_codes`) once the server accepted it.
    """

    async def keep_codes(self, codes: Sequence[LoginCode], /) -> None:
        """Keep these codes' records; one kept already (same address and hash) stays."""
        ...

    async def login_codes(self, address: str, /, *, now: float) -> list[LoginCode]:
        """The codes mailed to ``address`` (its canonical key) that have not expired at
        ``now``: single sends' and runs' alike (a run's have no ``next``)."""
        ...

    async def code_try(
        self, address: str, /, *, now: float, window: float, limit: int
    ) -> float | None:
        """Count one try at a code for ``address``, atomically, in whichever process.

        None lets the try go on. Once ``limit`` tries were counted without a ``window``
        long pause between them, every further try is refused: the answer is the time
        the lock ends, ``window`` after the try that reached the limit. A try that
        finds the right code clears the count (:meth:`code_accepted`).
        """
        ...

    async def code_accepted(self, address: str, /) -> None:
        """The right code was given for ``address``: its tries start over."""
        ...

    async def prune_codes(self, *, before: float) -> int:
        """Forget codes that expired before ``before``, and tries last counted a day before
        it (a lock lasts minutes); how many codes went."""
        ...


class Feedback(BounceLog, SuppressionList, Protocol):
    """What the bounce rules read and write: the bounces kept, and the suppression list."""


class Store(
    Runs,
    Workers,
    Outbox,
    Progress,
    EventLog,
    BounceLog,
    SuppressionList,
    Budget,
    Unsubscribes,
    Volume,
    Webhooks,
    Redemptions,
    LoginCodes,
    Protocol,
):
    """Durable outbox: every role in one. All times are Unix seconds from the engine's clock."""

    async def aclose(self) -> None: ...
