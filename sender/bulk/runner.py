"""Durable bulk runs: every participant exactly once, on a schedule that spares their domains.

A run goes ingest → schedule → compose → send → record, and every step is a
store transaction, so a process killed at any moment loses nothing:

- Rows are stored (queued, or skipped with a reason) before anything is sent;
  ``ingested_through`` advances in the same transaction as the rows.
- A message is claimed (``sending``) only when a send slot is free, so at most
  ``concurrency`` messages are in flight; it becomes ``sent`` only after the
  server's 250, in its own commit. The checkpoint is the send, not the fetch.
- After a crash the next worker takes the run's lease and puts ``sending``
  rows back in the queue: those (at most ``concurrency``) may reach their
  recipient twice, with the same Message-ID; nobody is skipped.

Temporary failures are deferred with exponential backoff and retried by the
same run; permanent ones are recorded and never retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import random
import re
import secrets
import socket
from collections import Counter, deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from sender.addresses import address_key
from sender.bulk.workers import Skipped, WorkerPool, attempt
from sender.checks.validate import AddressCheck, Validator, Verdict
from sender.client import CalendarSend, Sender
from sender.clock import Clock, SystemClock
from sender.compose.mime import envelope_address
from sender.config import MAX_CONCURRENCY, BouncePolicy, SmtpSettings
from sender.errors import (
    ConfigurationError,
    InputError,
    RunBusy,
    SenderError,
    TemplateError,
    TemplateNotFound,
)
from sender.feedback.suppression import budget_reason, keep_refusal
from sender.models import TIMEOUT, DeliveryResult, DeliveryStatus, Participant
from sender.pacing.schedule import RateLimits, RetryPolicy, Scheduler
from sender.participants import CsvRow
from sender.store import (
    FINAL_STATES,
    MessageState,
    NewRow,
    OutboxMessage,
    Outcome,
    RunInfo,
    RunState,
    Store,
)
from sender.transport import SmtpTransport

__all__ = [
    "BulkRunner",
    "DryRun",
    "Progress",
    "RowChanges",
    "RowChecker",
    "RunReport",
    "RunSettings",
    "address_problem",
    "check_rows",
    "default_run_id",
    "numbered",
    "run_id_for",
    "run_list",
    "run_status",
    "transport_identity",
    "undeliverable",
]

log = logging.getLogger("sender.runs")

_LOCALE_TAG = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8}){0,3}$")


@dataclass(frozen=True, slots=True)
class RunSettings:
    """How a run behaves; the rate limits live in its :class:`~sender.pacing.schedule.Scheduler`."""

    template: str = "invitation"
    concurrency: int = 4  # messages in flight at once; at most the transport's pool size
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    batch_size: int = 1000  # rows per ingest transaction
    lease_ttl: float = 30.0  # seconds without a heartbeat before another worker may take over
    wait_for_retries: bool = False  # keep going until deferred messages are due (daemons)
    max_wait: float = 3600.0  # with wait_for_retries: the longest single wait
    workers: int = 1  # processes that compose and send (1: this one); see sender.bulk.workers
    calendar: CalendarSend | None = None  # every message carries this invitation or cancellation
    bounces: BouncePolicy = field(default_factory=BouncePolicy)
    force: bool = False  # send even though the bounce budget is spent (an operator's call)
    budget_interval: float = 2.0  # seconds between bounce-budget checks while sending
    # Timeouts in a row, per connection (x concurrency), before the run pauses with
    # "relay not answering": a relay that accepts and never answers trips it in minutes.
    relay_timeouts: int = 3
    # Send the rest of an existing run through the transport named in this invocation's
    # options["transport"], when it differs from the one the run was started with.
    switch_transport: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise ConfigurationError(
                f"concurrency must be 1 to {MAX_CONCURRENCY}, not {self.concurrency}",
                setting="concurrency",
            )
        if not 1 <= self.workers <= min(self.concurrency, 64):
            raise ConfigurationError(
                f"workers must be 1 to {min(self.concurrency, 64)} (at most concurrency)",
                setting="workers",
            )
        if self.batch_size < 1:
            raise ConfigurationError("batch_size must be at least 1", setting="batch_size")
        if not 0 < self.lease_ttl < math.inf:
            raise ConfigurationError("lease_ttl must be a positive number", setting="lease_ttl")
        if self.relay_timeouts < 1:
            raise ConfigurationError(
                f"relay_timeouts must be at least 1, not {self.relay_timeouts}",
                setting="relay_timeouts",
            )


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot for progress displays, cheap enough to take several times a second."""

    run_id: str
    total: int
    counts: Mapping[MessageState, int]
    rate: float  # messages finished per second, recently
    eta: float | None  # seconds, from the scheduler's limits
    elapsed: float
    slowest: str | None = None  # the domain (group) whose own limit sets the ETA, if one does

    @property
    def done(self) -> int:
        return sum(self.counts.get(state, 0) for state in FINAL_STATES)


@dataclass(frozen=True, slots=True)
class RunReport:
    """What a run (or this invocation of it) did, and what is left."""

    run: RunInfo
    counts: Mapping[MessageState, int]
    elapsed: float
    sent_now: int
    requeued: int  # messages that were in flight when a previous worker died
    next_attempt_at: float | None
    first_sent: Participant | None
    changes: RowChanges | None = None  # when rows were given for a run that had some already
    retried: int = 0  # failed and deferred messages queued again (``retry_failed``)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True, slots=True)
class RowChanges:
    """What rows given again to a run (an edited CSV, run again) changed, by participant id.

    ``new`` participants were queued and ``corrected`` ones (same id, another address) get
    a message at the new address; ``unchanged`` ones (a changed name or extra column
    included) get nothing; ``removed`` ones, in the run but no longer in the rows, keep
    whatever they were sent or are still due: nothing is cancelled.
    """

    new: int = 0
    corrected: int = 0
    removed: int = 0
    unchanged: int = 0

    def describe(self) -> str:
        return (
            f"{self.new} new, {self.corrected} address corrected, "
            f"{self.removed} removed from the file, {self.unchanged} unchanged"
        )


CAPTURE_TRANSPORT = "capture"


def transport_identity(smtp: SmtpSettings | None, /) -> str:
    """Which transport a run sends through, as stored in its ``options["transport"]``.

    The SMTP URL without its password (``smtp+starttls://lms@mail.example:587``), or
    ``capture`` for the embedded capture server (``smtp`` None). Two settings with one
    identity reach the same server as the same user.
    """
    if smtp is None:
        return CAPTURE_TRANSPORT
    scheme = smtp.redacted_url().partition("://")[0]
    user = f"{quote(smtp.username, safe='')}@" if smtp.username else ""
    return f"{scheme}://{user}{smtp.address.lower()}"


def run_id_for(path: Path, template: str, /) -> str:
    """A run id from the file's resolved path and the template, not from its contents.

    The same CSV run again, edited or not, is the same run: it sends to added rows and
    corrected addresses only (:class:`RowChanges`).
    """
    key = f"{template}\x00{path.resolve()}".encode(errors="surrogateescape")
    return "r-" + hashlib.sha256(key).hexdigest()[:12]


async def default_run_id(store: Store, path: Path, template: str, /) -> str:
    """:func:`run_id_for`, unless a run an older sender named from the file's contents is
    the file's run: then that one, found by path and template, so upgrading never sends a
    file again."""
    run_id = run_id_for(path, template)
    if await store.get_run(run_id) is not None:
        return run_id
    source = str(await asyncio.to_thread(path.resolve))
    for run in await store.runs(limit=1000):  # newest first
        if run.source == source and run.template == template and run.event_uid is None:
            return run.run_id
    return run_id


class RowChecker:
    """Finds rows that cannot become a message, before they are queued.

    Cheap per row (address and locale syntax). The template is trial-rendered
    once per locale and column set while that succeeds, since rows of one file
    share their columns; a failure is never cached, because it may come from
    this row's values (a NUL in its course name), and one row's problem must
    never be reported for another row. Rows with bad values that get past the
    cached trial are skipped when they are composed, with their own reason.
    """

    def __init__(
        self, sender: Sender, template: str, *, calendar: CalendarSend | None = None
    ) -> None:
        self._sender = sender
        self._template = template
        self._calendar = calendar
        self._rendered: set[tuple[str, frozenset[str]]] = set()

    def problem(self, participant: Participant) -> str | None:
        """Why this participant's row cannot be sent, or None."""
        try:
            envelope_address(participant.email, field="email")
        except InputError as exc:
            return str(exc)
        if not _LOCALE_TAG.match(participant.locale):
            return f"field 'locale': unknown locale {participant.locale!r}"
        locale = self._sender.renderer.resolve_locale(self._template, participant.locale)
        key = (locale, frozenset(participant.vars))
        if key in self._rendered:
            return None
        try:
            self._sender.compose(participant, template=self._template, calendar=self._calendar)
        except (InputError, TemplateError) as exc:
            return str(exc)  # this row's problem: not remembered for the next row
        self._rendered.add(key)
        return None


def _is_dead_local(owner: str | None) -> bool:
    """True when ``owner`` ("host:pid/runner") is a process on this host that no longer exists.

    A SIGKILLed worker leaves a fresh heartbeat behind; waiting out the lease
    would be pointless when we can see that the process is gone.
    """
    if owner is None:
        return True
    host, _, pid = owner.partition("/")[0].rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


Rows = Iterable[CsvRow | Participant] | AsyncIterable[Participant]
"""What a run reads: CSV rows, or participants from the library (sync or async)."""


async def numbered(rows: Rows, /) -> AsyncIterable[CsvRow]:
    """Library input (participants, sync or async) numbered from 1, like CSV rows."""
    if isinstance(rows, AsyncIterable):
        number = 0
        async for participant in rows:
            number += 1
            yield CsvRow(number, participant, None, participant.email)
        return
    for number, item in enumerate(rows, start=1):
        if isinstance(item, Participant):
            yield CsvRow(number, item, None, item.email)
        else:
            yield item


class BulkRunner:
    """Runs bulk sends through a :class:`Sender`, durably, in a :class:`Store`.

    While a runner is attached, the sender's single sends (``sender.send``)
    take the priority lane of the same scheduler, ahead of bulk work.
    """

    def __init__(
        self,
        sender: Sender,
        store: Store,
        settings: RunSettings | None = None,
        /,
        *,
        scheduler: Scheduler | None = None,
        clock: Clock | None = None,
        owner: str | None = None,
        rng: random.Random | None = None,
        validator: Validator | None = None,
    ) -> None:
        self.sender = sender
        self.validator = validator  # pre-flight address checks at ingest
        self.store = store
        self.settings = settings or RunSettings()
        self.scheduler = scheduler or sender.scheduler or Scheduler(RateLimits(), clock=clock)
        sender.scheduler = self.scheduler
        if sender.suppression is None:  # single sends check the same list
            sender.suppression = store
        if sender.store is None:  # ... and keep their refusals as bounces, as runs do
            sender.store, sender.bounce_policy = store, self.settings.bounces
        if self.settings.bounces.pause_single_sends:
            policy, clock_now = self.settings.bounces, (clock or SystemClock()).now

            async def guard() -> str | None:
                return await budget_reason(store, policy=policy, now=clock_now())

            sender.send_guard = guard
        self._clock = clock or SystemClock()
        # One name per runner, not per process: two runners in one process (an LMS
        # starting the same run twice) must not both hold its lease.
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}/{secrets.token_hex(4)}"
        self._rng = rng or random.Random()  # noqa: S311 - retry jitter, not secrets
        self._stop = asyncio.Event()
        self._fatal: BaseException | None = None
        self._lease_lost = False
        self._pool: WorkerPool | None = None
        self._budget: str | None = None  # why the bounce budget paused the run
        self._wake: asyncio.Event | None = None  # the dispatcher's: something changed
        self._timeouts = 0  # sends in a row that timed out without a word from the relay
        self._stalled: str | None = None  # why the relay paused the run

    def stop(self) -> None:
        """Finish what is in flight and return; the run stays resumable (Ctrl-C does this)."""
        self._stop.set()
        if self._wake is not None:
            self._wake.set()  # the dispatcher looks at once, not when a send finishes

    async def _keep_lease(self, run_id: str) -> None:
        """Renew the run's lease every third of ``lease_ttl`` while the run is held.

        A timer of its own, on the injected clock: a slow server holds up sends,
        never the lease, so a live run is never taken over. When another worker
        took the run after all, this one stops sending; that one re-sends what was
        in flight here.
        """
        interval = self.settings.lease_ttl / 3
        while True:
            await self._clock.idle(interval)
            try:
                held = await self.store.heartbeat(run_id, owner=self.owner, now=self._clock.now())
            except SenderError as exc:  # a busy or failing outbox: try again next time
                log.warning("run %s: could not renew the lease: %s", run_id, exc)
                continue
            if not held:
                self._fatal = RunBusy(f"run {run_id}: another worker took over the run")
                self._lease_lost = True
                self.stop()
                return

    # --- ingest ------------------------------------------------------------------------

    async def ingest(self, run: RunInfo, rows: Rows, /) -> RowChanges | None:
        """Store rows not stored yet, in batches; what changed when the run had rows already.

        A fresh run stores every row. A run that has rows (its file run again, perhaps
        edited, or an ingest cut short by a crash) is matched by participant id instead
        of row number (:meth:`reconcile`). A calendar event's run resumes by row number.
        """
        if run.event_uid is None and (run.ingested_through or run.ingest_complete):
            return await self.reconcile(run, rows)
        checker = RowChecker(self.sender, run.template, calendar=self.settings.calendar)
        batch: list[NewRow] = []
        async for row in numbered(rows):
            if row.row <= run.ingested_through:
                continue
            batch.append(self._new_row(row, checker))
            if len(batch) >= self.settings.batch_size:
                await self.store.add_rows(run.run_id, await self._preflight(batch))
                batch = []
                await asyncio.sleep(0)
        await self.store.add_rows(run.run_id, await self._preflight(batch), complete=True)
        return None

    async def reconcile(self, run: RunInfo, rows: Rows, /) -> RowChanges:
        """Rows given again to a run, matched by participant id: store only what is new.

        A participant id not in the run is queued; one whose address changed gets a
        message at the new address; any other change (name, extra columns) sends nothing.
        Each batch is one transaction and a batch stored twice changes nothing, so a
        crash in between loses nothing: running again picks up what is left. Keeps the
        row number of each participant id seen (memory grows with the file).
        """
        checker = RowChecker(self.sender, run.template, calendar=self.settings.calendar)
        before = await self.store.participant_count(run.run_id)
        first_row: dict[str, int] = {}
        new = corrected = unchanged = 0
        batch: list[NewRow] = []

        async def store(*, complete: bool) -> None:
            nonlocal new, corrected, unchanged, batch
            ids = [r.participant.participant_id for r in batch if r.participant is not None]
            stored = await self.store.addresses_of(run.run_id, ids)
            changed: list[NewRow] = []
            for item in batch:
                person = item.participant
                if person is None:
                    changed.append(item)  # a skipped row: stored once per row number
                elif person.participant_id not in stored:
                    new += 1
                    changed.append(item)
                elif address_key(stored[person.participant_id]) != address_key(person.email):
                    corrected += 1
                    changed.append(dataclasses.replace(item, replaces=True))
                else:
                    unchanged += 1
            checked = await self._preflight(changed)
            await self.store.add_rows(run.run_id, checked, complete=complete)
            batch = []

        async for row in numbered(rows):
            item = self._new_row(row, checker)
            if item.participant is not None:
                first = first_row.setdefault(item.participant.participant_id, row.row)
                if first != row.row:
                    reason = f"duplicate of row {first}"
                    item = NewRow(row.row, None, skip_reason=reason, email=item.participant.email)
            batch.append(item)
            if len(batch) >= self.settings.batch_size:
                await store(complete=False)
                await asyncio.sleep(0)
        await store(complete=True)
        removed = max(before - corrected - unchanged, 0)
        return RowChanges(new=new, corrected=corrected, removed=removed, unchanged=unchanged)

    async def _preflight(self, batch: list[NewRow]) -> list[NewRow]:
        """With a validator: rows whose address cannot be delivered become skipped rows.

        Each distinct domain is looked up once (the resolver caches), so a batch
        after the first costs little; DNS that does not answer never skips anyone.
        """
        if self.validator is None:
            return batch
        invalid = await undeliverable(
            self.validator, [new.participant.email for new in batch if new.participant]
        )
        result = []
        for new in batch:
            email = new.participant.email if new.participant is not None else None
            if email is not None and email in invalid:
                new = NewRow(new.row, None, skip_reason=invalid[email], email=email)
            result.append(new)
        return result

    @staticmethod
    def _new_row(row: CsvRow, checker: RowChecker) -> NewRow:
        if row.participant is None:
            reason = str(row.error) if row.error else "unreadable row"
            return NewRow(row.row, None, skip_reason=reason, email=row.email)
        problem = checker.problem(row.participant)
        if problem is not None:
            return NewRow(row.row, None, skip_reason=problem, email=row.participant.email)
        return NewRow(row.row, row.participant)

    # --- running -----------------------------------------------------------------------

    async def _keep_transport(self, run: RunInfo, given: object, /) -> None:
        """A run goes on through the transport it was started with, or switches on purpose."""
        stored = run.options.get("transport")
        if not isinstance(given, str) or given == stored:
            return
        if stored is None and given == CAPTURE_TRANSPORT and not self.settings.switch_transport:
            # A run from before transports were kept may have been started with --smtp.
            raise ConfigurationError(
                f"run {run.run_id} was started by an older sender, which did not record its "
                "transport: give the SMTP server it was started with (--smtp or "
                "SENDER_SMTP_URL), or send the rest to the capture server on purpose with "
                "--switch-transport (RunSettings.switch_transport)",
                setting="transport",
            )
        if isinstance(stored, str) and not self.settings.switch_transport:
            raise ConfigurationError(
                f"run {run.run_id} sends through {stored}, not {given}: give it that "
                f"transport again, or move it on purpose with `sender resume {run.run_id} "
                "--switch-transport` (RunSettings.switch_transport)",
                setting="transport",
            )
        await self.store.update_run_options(run.run_id, {"transport": given})

    async def run(
        self,
        run_id: str,
        /,
        rows: Rows | None = None,
        *,
        source: str = "library",
        options: Mapping[str, str | float | int | None] | None = None,
        event: tuple[str, int, str] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        progress_interval: float = 0.5,
        retry_failed: bool = False,
    ) -> RunReport:
        """Ingest ``rows`` (if given) and send until nothing is due; resumable at any point.

        ``retry_failed`` (``sender retry``) queues the run's failed and deferred messages
        again once the lease is held, after every check that may refuse the run, so a
        refused retry leaves the run as it was.

        Raises :class:`~sender.errors.RunBusy` if another live worker holds the run, and
        :class:`~sender.errors.TemplateNotFound` (before any run is stored) for an unknown
        template. ``options`` are stored with a new run; ``options["transport"]`` (see
        :func:`transport_identity`) must match the stored one of an existing run unless
        ``settings.switch_transport``, else :class:`~sender.errors.ConfigurationError`.
        """
        template = self.settings.template
        if not self.sender.renderer.locales(template):
            raise TemplateNotFound(f"no template named {template!r}", template=template)
        started = self._clock.monotonic()
        now = self._clock.now()
        run, created = await self.store.create_run(
            run_id,
            template=self.settings.template,
            source=source,
            now=now,
            options=options,
            event=event,
        )
        if not created:
            await self._keep_transport(run, (options or {}).get("transport"))
        if not await self.store.acquire_run(
            run_id, owner=self.owner, now=now, ttl=self.settings.lease_ttl
        ):
            current = await self.store.get_run(run_id)
            holder = current.owner if current else None
            if not (
                _is_dead_local(holder)
                and await self.store.acquire_run(run_id, owner=self.owner, now=now, ttl=0)
            ):
                raise RunBusy(
                    f"run {run_id} is being sent by {holder}; try again later", owner=holder
                )
        requeued = retried = 0
        keeper = asyncio.create_task(self._keep_lease(run_id))
        try:
            if retry_failed:
                retried = await self.store.reset_failed(run_id, now=self._clock.now())
            requeued = await self.store.requeue_stale(run_id)
            if requeued:
                log.warning("run %s: %d message(s) were in flight at a crash", run_id, requeued)
            changes = None
            if rows is not None and not (run.ingest_complete and run.event_uid is not None):
                changes = await self.ingest(run, rows)
            self._budget = None
            self._timeouts, self._stalled = 0, None
            if not self.settings.force:
                self._budget = await budget_reason(
                    self.store, policy=self.settings.bounces, now=self._clock.now()
                )
            sent_now, first = 0, None
            if self._budget is None:
                await self.store.set_run_state(run_id, RunState.ACTIVE, now=self._clock.now())
                async with self._workers():
                    sent_now, first = await self._send_all(
                        run_id, on_progress, progress_interval, started
                    )
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            if not self._lease_lost:  # the new owner's in-flight messages are not ours
                await self.store.requeue_stale(run_id)  # claimed but unsent: back in the queue
                await self.store.release_run(run_id, owner=self.owner)
        if self._lease_lost and self._fatal is not None:
            raise self._fatal  # the run is someone else's now: leave its state alone
        counts = await self.store.counts(run_id)
        next_at = await self.store.next_attempt_at(run_id)
        pending = counts.get(MessageState.QUEUED, 0) + counts.get(MessageState.DEFERRED, 0)
        now = self._clock.now()
        if self._fatal is not None:
            await self.store.set_run_state(
                run_id, RunState.PAUSED, now=now, reason=str(self._fatal)
            )
            raise self._fatal
        if not pending:
            await self.store.set_run_state(run_id, RunState.DONE, now=now)
        elif self._budget is not None:
            log.warning("run %s paused: %s", run_id, self._budget)
            await self.store.set_run_state(run_id, RunState.PAUSED, now=now, reason=self._budget)
        elif self._stalled is not None:
            log.warning("run %s paused: %s", run_id, self._stalled)
            await self.store.set_run_state(run_id, RunState.PAUSED, now=now, reason=self._stalled)
        elif self._stop.is_set():
            await self.store.set_run_state(run_id, RunState.PAUSED, now=now, reason="interrupted")
        final = await self.store.get_run(run_id)
        if final is None:
            raise InputError(f"run {run_id} disappeared from the outbox", field="run_id")
        return RunReport(
            run=final,
            counts=counts,
            elapsed=self._clock.monotonic() - started,
            sent_now=sent_now,
            requeued=requeued,
            next_attempt_at=next_at,
            first_sent=first,
            changes=changes,
            retried=retried,
        )

    async def _send_all(
        self,
        run_id: str,
        on_progress: Callable[[Progress], None] | None,
        interval: float,
        started: float,
    ) -> tuple[int, Participant | None]:
        """The dispatcher: record what finished, claim for free slots, repeat.

        Both happen in batches, one store transaction each, because a commit
        per message would cap a run at a few hundred messages a second. A send
        slot is freed only once its outcome is committed, so claimed-but-not-
        recorded messages (what a crash can duplicate) never exceed
        ``concurrency``.
        """
        store, scheduler, clock = self.store, self.scheduler, self._clock
        counts = Counter(await store.counts(run_id))
        total = sum(counts.values())
        scheduler.set_pending(await store.pending_domains(run_id, now=clock.now()))
        free = self.settings.concurrency
        running = 0  # sends not finished yet (their tasks may linger a moment after)
        in_flight: set[asyncio.Task[None]] = set()
        finished: list[tuple[OutboxMessage, Outcome]] = []
        wake = asyncio.Event()
        sent_now = 0
        first: Participant | None = None
        recent: deque[float] = deque()
        last_report = last_budget = clock.monotonic()
        self._wake = wake
        next_due: float | None = await store.next_attempt_at(run_id)

        def report(force: bool = False) -> None:
            nonlocal last_report
            moment = clock.monotonic()
            if on_progress is None or (not force and moment - last_report < interval):
                return
            last_report = moment
            while recent and recent[0] < moment - 10:
                recent.popleft()
            window = min(10.0, moment - started) or 1.0
            on_progress(
                Progress(
                    run_id=run_id,
                    total=total,
                    counts=dict(counts),
                    rate=len(recent) / window,
                    eta=scheduler.eta(),
                    elapsed=moment - started,
                    slowest=scheduler.eta_bottleneck(),
                )
            )

        async def one(message: OutboxMessage) -> None:
            nonlocal running
            try:
                outcome = await self._attempt(message)
            except SenderError as exc:  # the transport itself is unusable: stop the run
                self._fatal = exc
                self._stop.set()
                outcome = None
            finally:
                running -= 1
            if outcome is not None:
                finished.append((message, outcome))
            wake.set()

        async def permit_or_wake() -> list[str]:
            """Wait for a bulk permit, but come back early when a send finishes."""
            permit = asyncio.ensure_future(scheduler.next_bulk())
            woken = asyncio.ensure_future(wake.wait())
            await asyncio.wait({permit, woken}, return_when=asyncio.FIRST_COMPLETED)
            woken.cancel()
            if permit.done():
                domain = permit.result()
                return [domain] if domain is not None else []
            permit.cancel()  # a cancelled wait consumes no permit
            with contextlib.suppress(asyncio.CancelledError):
                await permit
            return []

        async def flush() -> None:
            """Record what finished in one transaction, then free those slots."""
            nonlocal free, sent_now, first, next_due
            batch = list(finished)
            finished.clear()
            await store.record_many([(message.id, outcome) for message, outcome in batch])
            free += len(batch)
            moment = clock.monotonic()
            for message, outcome in batch:
                # It left the queue or the deferred pile. An earlier attempt does not prove
                # which: `retry` and a crash put messages that were tried back as queued.
                was_deferred = message.attempts > 1 and counts[MessageState.DEFERRED] > 0
                counts[MessageState.DEFERRED if was_deferred else MessageState.QUEUED] -= 1
                counts[outcome.state] += 1
                recent.append(moment)
                if outcome.state is MessageState.SENT:
                    sent_now += 1
                    first = first or message.participant
                elif outcome.state is MessageState.DEFERRED and outcome.next_attempt_at:
                    due = outcome.next_attempt_at
                    next_due = due if next_due is None else min(next_due, due)

        while True:
            # Cleared before looking at `finished`: a send that ends after this sets it again.
            wake.clear()
            if finished:
                await flush()
                report()
            if self._stop.is_set() or self._stalled is not None:
                break  # what is in flight finishes; nothing more is claimed
            if clock.monotonic() - last_budget > self.settings.budget_interval:
                last_budget = clock.monotonic()
                if not self.settings.force:
                    self._budget = await budget_reason(
                        store, policy=self.settings.bounces, now=clock.now()
                    )
                    if self._budget is not None:
                        break  # what is in flight finishes; nothing more is claimed
            if next_due is not None and next_due <= clock.now():
                scheduler.set_pending(await store.pending_domains(run_id, now=clock.now()))
                next_due = await store.next_attempt_at(run_id)
            if free and scheduler.pending():
                domains: list[str] = []
                while len(domains) < free and (domain := scheduler.try_next_bulk()):
                    domains.append(domain)
                if not domains:
                    domains = await permit_or_wake()
                if domains:
                    claimed = await store.claim_many(
                        run_id, domains, now=clock.now(), owner=self.owner
                    )
                    for claimed_message in claimed:
                        if claimed_message is None:
                            continue  # the count was stale: someone else took it
                        free -= 1
                        if claimed_message.suppressed is not None:  # never sent; recorded
                            finished.append((claimed_message, _suppressed(claimed_message, clock)))
                            wake.set()
                            continue
                        running += 1
                        task = asyncio.create_task(one(claimed_message))
                        in_flight.add(task)
                        task.add_done_callback(in_flight.discard)
                continue
            if running:
                await wake.wait()
                continue
            pending = await store.pending_domains(run_id, now=clock.now())
            if pending:
                scheduler.set_pending(pending)
                continue
            next_due = await store.next_attempt_at(run_id)
            if next_due is None or not self.settings.wait_for_retries:
                break
            report(force=True)
            await clock.sleep(min(max(next_due - clock.now(), 0.0), self.settings.max_wait))
        if in_flight:
            await asyncio.gather(*in_flight)
        if finished:
            await flush()
        report(force=True)
        return sent_now, first

    @contextlib.asynccontextmanager
    async def _workers(self) -> AsyncIterator[None]:
        """With ``settings.workers > 1``, worker processes compose and send for this run."""
        if self.settings.workers == 1:
            yield
            return
        transport = self.sender.transport
        if not isinstance(transport, SmtpTransport):
            raise ConfigurationError(
                "workers > 1 needs an SMTP transport the workers can reach", setting="workers"
            )
        async with WorkerPool(
            self.sender.settings,
            transport.settings,
            workers=self.settings.workers,
            concurrency=self.settings.concurrency,
            calendar=self.settings.calendar,
        ) as pool:
            self._pool = pool
            try:
                yield
            finally:
                self._pool = None

    async def _attempt(self, message: OutboxMessage) -> Outcome:
        """Compose and send one claimed message; turn whatever happens into an outcome."""
        if self._pool is not None:
            result = await self._pool.attempt(message)
        else:
            result = await attempt(self.sender, message, calendar=self.settings.calendar)
        if isinstance(result, Skipped):
            return Outcome(MessageState.SKIPPED, at=self._clock.now(), detail=result.reason)
        self._watch_relay(result)
        self.scheduler.feedback(
            message.participant.domain, result.reply.code if result.reply else None
        )
        await keep_refusal(  # refused at RCPT or DATA: a bounce like a DSN, once per message
            self.store,
            result,
            key=f"m{message.id}",
            message=message.id,
            policy=self.settings.bounces,
            now=self._clock.now(),
        )
        return self._outcome(message, result)

    def _watch_relay(self, result: DeliveryResult) -> None:
        """Count timeouts in a row; when every connection keeps timing out, pause the run.

        Any reply from the server (even a refusal) shows the relay is there and starts
        the count again. The reason names the relay's host and port, never a login.
        """
        if result.reply is not None or result.status is DeliveryStatus.ACCEPTED:
            self._timeouts = 0
            return
        if result.detail != TIMEOUT:
            return  # a refused or lost connection says nothing about a silent relay
        self._timeouts += 1
        if self._stalled is None and self._timeouts >= (
            self.settings.relay_timeouts * self.settings.concurrency
        ):
            self._stalled = (
                f"relay not answering: {self._timeouts} timeouts in a row at "
                f"{_relay_address(self.sender.transport)}; resume once it answers"
            )
            if self._wake is not None:
                self._wake.set()

    def _outcome(self, message: OutboxMessage, result: DeliveryResult) -> Outcome:
        now = self._clock.now()
        common = {
            "at": now,
            "reply": result.reply,
            "detail": result.detail,
            "message_id": result.message_id,
        }
        if result.status is DeliveryStatus.ACCEPTED:
            return Outcome(MessageState.SENT, **common)  # type: ignore[arg-type]
        if result.status is DeliveryStatus.PERMANENT:
            return Outcome(MessageState.FAILED, **common)  # type: ignore[arg-type]
        if result.status is DeliveryStatus.SUPPRESSED:
            return Outcome(MessageState.SUPPRESSED, **common)  # type: ignore[arg-type]
        next_at = self.settings.retry.next_attempt_at(
            attempts=message.attempts,
            first_attempt_at=message.first_attempt_at or now,
            now=now,
            rng=self._rng,
        )
        if next_at is None:
            detail = f"gave up after {message.attempts} attempt(s): {result.describe()}"
            return Outcome(
                MessageState.FAILED,
                at=now,
                reply=result.reply,
                detail=detail,
                message_id=result.message_id,
            )
        return Outcome(MessageState.DEFERRED, next_attempt_at=next_at, **common)  # type: ignore[arg-type]


def _relay_address(transport: object) -> str:
    """``host:port`` of an SMTP transport, for messages: never its login or password."""
    return transport.settings.address if isinstance(transport, SmtpTransport) else "the transport"


def _suppressed(message: OutboxMessage, clock: Clock) -> Outcome:
    detail = f"suppressed ({message.suppressed})"
    return Outcome(MessageState.SUPPRESSED, at=clock.now(), detail=detail)


def address_problem(check: AddressCheck, /) -> str | None:
    """The reason a run skips a row whose address the checks call invalid; None otherwise."""
    if check.verdict is not Verdict.INVALID:
        return None
    hint = f" (did you mean {check.suggestion}?)" if check.suggestion else ""
    return f"field 'email': {check.reason}{hint}"


async def undeliverable(validator: Validator, emails: Iterable[str], /) -> dict[str, str]:
    """The addresses a run would skip before queueing, each with its :func:`address_problem`.

    Each distinct domain is looked up once; DNS that does not answer skips nobody.
    """
    given = list(dict.fromkeys(emails))
    checks = await validator.check_many(given)
    return {
        email: reason
        for email, check in zip(given, checks, strict=True)
        if (reason := address_problem(check)) is not None
    }


@dataclass(frozen=True, slots=True)
class DryRun:
    """What ``sender run --dry-run`` found: which rows would be sent, which skipped and why."""

    ok: int
    skipped: tuple[tuple[int, str, str], ...]  # (row, email, reason)
    fallbacks: Mapping[str, int]  # requested locale -> rows rendered in another locale


def check_rows(
    sender: Sender,
    rows: Iterable[CsvRow],
    /,
    *,
    template: str,
    calendar: CalendarSend | None = None,
    undeliverable: Mapping[str, str] | None = None,
) -> DryRun:
    """Render and check every row as a real run would, without storing or sending.

    The one row check that ``run --dry-run`` and ``validate`` share: unreadable rows,
    address and locale syntax, template problems (this row's values included) and
    duplicate participant ids. ``undeliverable`` (address -> reason, from
    :func:`undeliverable`) adds the address checks a run does when mail really leaves.
    """
    checker = RowChecker(sender, template, calendar=calendar)
    ok = 0
    skipped: list[tuple[int, str, str]] = []
    fallbacks: Counter[str] = Counter()
    seen: dict[tuple[str, str], int] = {}
    for row in rows:
        participant = row.participant
        if participant is None:
            skipped.append((row.row, row.email or "", str(row.error)))
            continue
        problem = checker.problem(participant)
        if problem is None and undeliverable:
            problem = undeliverable.get(participant.email)
        key = (participant.participant_id, template)
        if problem is None and key in seen:
            problem = f"duplicate of row {seen[key]}"
        if problem is None:
            try:
                composed = sender.compose(participant, template=template, calendar=calendar)
            except (InputError, TemplateError) as exc:
                problem = str(exc)
            else:
                if composed.rendered.locale != participant.locale.lower():
                    fallbacks[participant.locale] += 1
        if problem is not None:
            skipped.append((row.row, participant.email, problem))
            continue
        seen[key] = row.row
        ok += 1
    return DryRun(ok=ok, skipped=tuple(skipped), fallbacks=dict(fallbacks))


SKIPPED_LISTED = 100
"""How many skipped rows (with reasons) a status lists; ``counts["skipped"]`` has them all."""


def _shown_state(run: RunInfo, /, *, now: float, lease_ttl: float) -> tuple[str, bool]:
    """(the state to show, whether a live process holds the run)."""
    alive = (
        run.owner is not None
        and not _is_dead_local(run.owner)
        and run.heartbeat_at is not None
        and now - run.heartbeat_at < lease_ttl
    )
    state = run.state.value
    if run.state is RunState.ACTIVE and not alive:
        # Its owner died (or hangs), or stopped on an error, without pausing or finishing it.
        state = "interrupted"
    return state, alive


async def run_list(
    store: Store, /, *, now: float, limit: int = 100, lease_ttl: float = RunSettings().lease_ttl
) -> list[dict[str, object]]:
    """The most recent runs (``sender status --all``): id, template, state, counts, created."""
    listed: list[dict[str, object]] = []
    for run in await store.runs(limit=limit):
        counts = await store.counts(run.run_id)
        state, _alive = _shown_state(run, now=now, lease_ttl=lease_ttl)
        listed.append(
            {
                "run_id": run.run_id,
                "template": run.template,
                "source": run.source,
                "state": state,
                "paused_reason": run.paused_reason,
                "created_at": run.created_at,
                "total": sum(counts.values()),
                "counts": {s.value: counts.get(s, 0) for s in MessageState},
            }
        )
    return listed


async def run_status(
    store: Store,
    run_id: str | None = None,
    /,
    *,
    now: float,
    lease_ttl: float = RunSettings().lease_ttl,
) -> dict[str, object]:
    """Everything ``sender status`` shows, as plain data (the ``--json`` output).

    ``state`` is ``interrupted`` for an active run whose owner is gone: a process
    on this host that no longer exists, or no lease renewal within ``lease_ttl``.

    ``skipped`` lists the first :data:`SKIPPED_LISTED` skipped rows as ``{row, email,
    reason}``, both those skipped when read and those skipped when composed.
    """
    run = await store.get_run(run_id) if run_id else await store.latest_run()
    if run is None:
        raise InputError(f"no run named {run_id!r}" if run_id else "no runs yet", field="run_id")
    counts = await store.counts(run.run_id)
    domains = await store.domain_progress(run.run_id)
    next_at = await store.next_attempt_at(run.run_id)
    state, alive = _shown_state(run, now=now, lease_ttl=lease_ttl)
    return {
        "run_id": run.run_id,
        "template": run.template,
        "source": run.source,
        "created_at": run.created_at,
        "state": state,
        "running": alive,
        "owner": run.owner if alive else None,
        "paused_reason": run.paused_reason,
        "paused_since": run.paused_since,
        "ingest_complete": run.ingest_complete,
        "options": dict(run.options),
        "total": sum(counts.values()),
        "counts": {state.value: counts.get(state, 0) for state in MessageState},
        "next_attempt_at": next_at,
        "skipped": [
            {"row": row, "email": email, "reason": reason}
            for row, email, reason in await store.skipped(run.run_id, limit=SKIPPED_LISTED)
        ],
        "domains": [
            {
                "domain": progress.domain,
                "counts": {state.value: n for state, n in progress.counts.items() if n},
                "next_attempt_at": progress.next_attempt_at,
            }
            for progress in domains
        ],
    }
