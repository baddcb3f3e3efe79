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

The parts: :mod:`~sender.bulk.ingest` stores the rows, :mod:`~sender.bulk.dispatcher`
claims, hands out and records the sends, :mod:`~sender.bulk.workers` composes and sends
in other processes, :mod:`~sender.bulk.status` shows a run. This module holds the run
itself: creating or resuming it, taking its lease, and the state it ends in.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from sender.bulk.dispatcher import Dispatcher, DispatchState, Halt
from sender.bulk.ingest import Ingest, RowChanges, Rows
from sender.bulk.lease import WorkerLease
from sender.bulk.settings import RunSettings
from sender.bulk.status import ENQUEUED, Progress, is_dead_local
from sender.bulk.workers import Skipped, WorkerPool, attempt
from sender.checks.validate import Validator
from sender.client import SendContext, Sender
from sender.clock import Clock, SystemClock
from sender.config import BouncePolicy, SesSettings, TransportSettings
from sender.errors import ConfigurationError, InputError, RunBusy, TemplateNotFound
from sender.feedback.suppression import budget_reason
from sender.models import DeliveryResult, Participant
from sender.pacing.schedule import RateLimits, Scheduler
from sender.store import MessageState, OutboxMessage, RunInfo, RunState, Store
from sender.transport import SmtpTransport

__all__ = [
    "CAPTURE_TRANSPORT",
    "BulkRunner",
    "Enqueued",
    "Progress",
    "RunReport",
    "RunSettings",
    "default_run_id",
    "reactivate_run",
    "run_id_for",
    "stop_run",
    "transport_identity",
]

log = logging.getLogger("sender.runs")

_PENDING = (MessageState.QUEUED, MessageState.DEFERRED, MessageState.SENDING)


@dataclass(frozen=True, slots=True)
class Enqueued:
    """A run stored by :meth:`BulkRunner.enqueue`, ready for the workers."""

    run: RunInfo
    counts: Mapping[MessageState, int]
    changes: RowChanges | None = None  # when rows were given for a run that had some already


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


CAPTURE_TRANSPORT = "capture"


def transport_identity(smtp: TransportSettings | None, /) -> str:
    """Which transport a run sends through, as stored in its ``options["transport"]``.

    The SMTP URL without its password (``smtp+starttls://lms@mail.example:587``), the
    ``ses://REGION[?...]`` URL (it holds no secret), or ``capture`` for the embedded
    capture server (``smtp`` None). Two settings with one identity reach the same server
    as the same user.
    """
    if smtp is None:
        return CAPTURE_TRANSPORT
    if isinstance(smtp, SesSettings):
        return smtp.redacted_url()
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


class BulkRunner:
    """Runs bulk sends through a :class:`Sender`, durably, in a :class:`Store`.

    The sender given is never changed. :attr:`sender` is a sender of the runner's own,
    sharing its composer and transport, whose single sends (``runner.sender.send``)
    take the priority lane of the run's scheduler, ahead of bulk work, check the
    store's suppression list, keep refusals as bounces, and (with
    ``bounces.pause_single_sends``) wait while the bounce budget is spent.
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
        pool: WorkerPool | None = None,
    ) -> None:
        self.validator = validator  # pre-flight address checks at ingest
        self.store = store
        self.settings = settings or RunSettings()
        self.scheduler = scheduler or sender.scheduler or Scheduler(RateLimits(), clock=clock)
        self._clock = clock or SystemClock()
        self.sender = sender.with_context(self._single_sends(sender, clock))
        # One name per runner, not per process: two runners in one process (an LMS
        # starting the same run twice) must not both hold its lease.
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}/{secrets.token_hex(4)}"
        self._rng = rng or random.Random()  # noqa: S311 - retry jitter, not secrets
        self._stop = asyncio.Event()
        self._pool: WorkerPool | None = pool  # given: kept open by the caller across runs
        self._given_pool = pool is not None
        self._current: Dispatcher | None = None  # the run being sent, while it is

    def _single_sends(self, sender: Sender, clock: Clock | None) -> SendContext:
        """What this runner's :attr:`sender` answers to: the run's scheduler, store and policy.

        A suppression list or bounce store the given sender has is kept; the store fills in
        what it lacks, so single sends check the same list and keep refusals as runs do.
        """
        given, store, policy = sender.send_context, self.store, self.settings.bounces
        guard = None
        if policy.pause_single_sends:
            now = (clock or SystemClock()).now

            async def guard() -> str | None:
                return await budget_reason(store, policy=policy, now=now())

        keeps_bounces = given.store is not None
        return SendContext(
            scheduler=self.scheduler,
            suppression=given.suppression if given.suppression is not None else store,
            store=given.store if keeps_bounces else store,
            bounce_policy=given.bounce_policy if keeps_bounces else policy,
            guard=guard if guard is not None else given.guard,
        )

    def stop(self) -> None:
        """Finish what is in flight and return; the run stays resumable (Ctrl-C does this)."""
        self._stop.set()
        if self._current is not None:
            self._current.wake()  # the dispatcher looks at once, not when a send finishes

    # --- ingest ------------------------------------------------------------------------

    async def ingest(self, run: RunInfo, rows: Rows, /) -> RowChanges | None:
        """Store the rows not stored yet (:meth:`Ingest.ingest`); what changed, if any."""
        return await self._ingest().ingest(run, rows)

    async def reconcile(self, run: RunInfo, rows: Rows, /) -> RowChanges:
        """Rows given again to a run, matched by participant id (:meth:`Ingest.reconcile`)."""
        return await self._ingest().reconcile(run, rows)

    def _ingest(self) -> Ingest:
        return Ingest(self.sender, self.store, self.settings, validator=self.validator)

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
            stream=self.sender.renderer.stream(template).value,
        )
        if not created:
            await self._keep_transport(run, (options or {}).get("transport"))
        await self._take_lease(run_id, now=now)
        changes, sent_now, first, retried = None, 0, None, 0
        try:
            async with self._lease() as lease:
                requeued = lease.reclaimed
                dispatcher = self._dispatcher(
                    run_id, lease, on_progress, progress_interval, started
                )
                halt = dispatcher.halt
                keeper = asyncio.create_task(dispatcher.keep_lease())
                forget = lease.on_lost(
                    lambda: dispatcher.lose_lease(
                        "this worker's lease was taken back; another worker sends the rest"
                    )
                )
                try:
                    if retry_failed:
                        retried = await self.store.reset_failed(run_id, now=self._clock.now())
                    # The worker processes start while the rows are stored.
                    async with self._workers():
                        if rows is not None and not (
                            run.ingest_complete and run.event_uid is not None
                        ):
                            changes = await self.ingest(run, rows)
                        if not await dispatcher.budget_spent():
                            await self.store.set_run_state(
                                run_id, RunState.ACTIVE, now=self._clock.now()
                            )
                            books = await self._dispatch(dispatcher)
                            sent_now, first = books.sent_now, books.first
                finally:
                    forget()
                    keeper.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await keeper
        finally:
            # After the worker lease ended, which put back what it claimed but never sent.
            # A run another worker took over is not ours to release: the store knows.
            await self.store.release_run(run_id, owner=self.owner)
        if halt.lease_lost and halt.fatal is not None:
            raise halt.fatal  # the run is someone else's now: leave its state alone
        counts = await self.store.counts(run_id)
        next_at = await self.store.next_attempt_at(run_id)
        await self._settle(run_id, counts, halt)
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

    async def enqueue(
        self,
        run_id: str,
        /,
        rows: Rows,
        *,
        source: str = "library",
        options: Mapping[str, str | float | int | None] | None = None,
        event: tuple[str, int, str] | None = None,
    ) -> Enqueued:
        """Store the run and its rows, ready for any worker, and return without sending.

        ``sender worker`` processes (or :meth:`join`) send it. The run's lease is held
        while its rows are stored, so no worker starts on half a file; given again
        (an edited file), only what changed is queued, as :meth:`run` does. Raises as
        :meth:`run` does before anything is sent.
        """
        template = self.settings.template
        if not self.sender.renderer.locales(template):
            raise TemplateNotFound(f"no template named {template!r}", template=template)
        now = self._clock.now()
        run, created = await self.store.create_run(
            run_id,
            template=template,
            source=source,
            now=now,
            options={**(options or {}), ENQUEUED: 1},
            event=event,
            stream=self.sender.renderer.stream(template).value,
        )
        if not created:
            await self._keep_transport(run, (options or {}).get("transport"))
        await self._take_lease(run_id, now=now)
        try:
            changes = None
            if not (run.ingest_complete and run.event_uid is not None):
                changes = await self.ingest(run, rows)
            await self.store.set_run_state(run_id, RunState.ACTIVE, now=self._clock.now())
        finally:
            await self.store.release_run(run_id, owner=self.owner)
        final = await self.store.get_run(run_id)
        if final is None:
            raise InputError(f"run {run_id} disappeared from the outbox", field="run_id")
        return Enqueued(final, await self.store.counts(run_id), changes)

    async def join(
        self,
        run_id: str,
        /,
        *,
        lease: WorkerLease,
        on_progress: Callable[[Progress], None] | None = None,
        progress_interval: float = 0.5,
    ) -> RunReport:
        """Send the run's due messages alongside any other workers, until none is due.

        What ``sender worker`` does for each active run: no run lease, only ``lease``
        (this worker's, held by the caller across runs), so any number of workers on any
        host share the run through the store's claims. :meth:`stop` ends it early and
        leaves the run active for the others. The run ends ``done`` once nothing is left
        in it, or ``paused`` with the reason (a spent budget, a relay that stopped
        answering, a transport that failed: then that error is raised).
        """
        run = await self.store.get_run(run_id)
        if run is None:
            raise InputError(f"no run named {run_id!r}", field="run_id")
        started = self._clock.monotonic()
        dispatcher = self._dispatcher(
            run_id, lease, on_progress, progress_interval, started, shared=True
        )
        forget = lease.on_lost(
            lambda: dispatcher.lose_lease(
                "this worker's lease was taken back; another worker sends the rest"
            )
        )
        sent_now, first = 0, None
        try:
            if not await dispatcher.budget_spent():
                async with self._workers():
                    books = await self._dispatch(dispatcher)
                sent_now, first = books.sent_now, books.first
        finally:
            forget()
        counts = await self.store.counts(run_id)
        if not dispatcher.halt.lease_lost and dispatcher.halt.left is None:
            await self._settle(run_id, counts, dispatcher.halt, shared=run)
        final = await self.store.get_run(run_id)
        return RunReport(
            run=final or run,
            counts=counts,
            elapsed=self._clock.monotonic() - started,
            sent_now=sent_now,
            requeued=0,
            next_attempt_at=await self.store.next_attempt_at(run_id),
            first_sent=first,
        )

    async def _take_lease(self, run_id: str, /, *, now: float) -> None:
        """Hold the run's lease, taking it from a dead owner on this host; else RunBusy."""
        if await self.store.acquire_run(
            run_id, owner=self.owner, now=now, ttl=self.settings.lease_ttl
        ):
            return
        current = await self.store.get_run(run_id)
        holder = current.owner if current else None
        if not (
            is_dead_local(holder)
            and await self.store.acquire_run(run_id, owner=self.owner, now=now, ttl=0)
        ):
            raise RunBusy(f"run {run_id} is being sent by {holder}; try again later", owner=holder)

    async def _settle(
        self,
        run_id: str,
        counts: Mapping[MessageState, int],
        halt: Halt,
        *,
        shared: RunInfo | None = None,
    ) -> None:
        """The state this invocation leaves the run in: done, or paused with the reason.

        A fatal error pauses the run and is raised; a run stopped with nothing pending is
        done. A ``shared`` run (:meth:`join`) is done only once all its rows are stored,
        and stopping this worker leaves it active for the others.
        """
        # Messages another worker is sending are not done yet either: it records them.
        pending = sum(counts.get(state, 0) for state in _PENDING)
        now = self._clock.now()
        if halt.fatal is not None:
            await self.store.set_run_state(run_id, RunState.PAUSED, now=now, reason=str(halt.fatal))
            raise halt.fatal
        if not pending and (shared is None or shared.ingest_complete):
            await self.store.set_run_state(run_id, RunState.DONE, now=now)
            return
        reason = halt.budget or halt.stalled or halt.providers
        if reason is not None:
            log.warning("run %s paused: %s", run_id, reason)
        elif self._stop.is_set() and shared is None:
            reason = "interrupted"
        if reason is not None:
            await self.store.set_run_state(run_id, RunState.PAUSED, now=now, reason=reason)

    def _lease(self) -> WorkerLease:
        return WorkerLease(self.store, self.owner, clock=self._clock, ttl=self.settings.lease_ttl)

    async def _dispatch(self, dispatcher: Dispatcher, /) -> DispatchState:
        """Send through the dispatcher, inside :meth:`_workers`."""
        if self._pool is not None:
            await self._pool.ready()
        self._current = dispatcher
        try:
            return await dispatcher.run()
        finally:
            self._current = None

    def _dispatcher(
        self,
        run_id: str,
        lease: WorkerLease,
        on_progress: Callable[[Progress], None] | None,
        progress_interval: float,
        started: float,
        *,
        shared: bool = False,
    ) -> Dispatcher:
        return Dispatcher(
            run_id,
            store=self.store,
            scheduler=self.scheduler,
            clock=self._clock,
            settings=self.settings,
            owner=self.owner,
            send=self._send_one,
            stop=self._stop,
            relay=_relay_address(self.sender.transport),
            rng=self._rng,
            lease=lease,
            shared=shared,
            on_progress=on_progress,
            progress_interval=progress_interval,
            started=started,
            stream=self.sender.renderer.stream(self.settings.template).value,
            domains=self.sender.settings.sending_domains(),
        )

    async def _send_one(self, message: OutboxMessage, /) -> DeliveryResult | Skipped:
        """Compose and send one claimed message: through the worker pool, or in this process."""
        if self._pool is not None:
            return await self._pool.attempt(message)
        return await attempt(self.sender, message, calendar=self.settings.calendar)

    @contextlib.asynccontextmanager
    async def _workers(self) -> AsyncIterator[None]:
        """With ``settings.workers > 1``, worker processes compose and send for this run
        (the pool given to the runner, or one of its own for this run). Its own pool's
        processes are spawned on entry; :meth:`_dispatch` waits until they are ready."""
        if self.settings.workers == 1 or self._given_pool:
            yield
            return
        transport = self.sender.transport
        if not isinstance(transport, SmtpTransport):
            raise ConfigurationError(
                "workers > 1 needs an SMTP transport the workers can reach", setting="workers"
            )
        pool = WorkerPool(
            self.sender.settings,
            transport.settings,
            workers=self.settings.workers,
            concurrency=self.settings.concurrency,
            calendar=self.settings.calendar,
            limiter=transport.limiter,
        )
        try:
            await pool.spawn()
            self._pool = pool
            yield
        finally:
            self._pool = None
            await pool.aclose()


def _relay_address(transport: object) -> str:
    """``host:port`` of an SMTP transport, for messages: never its login or password."""
    return transport.settings.address if isinstance(transport, SmtpTransport) else "the transport"


async def stop_run(store: Store, run_id: str, /, *, reason: str, now: float) -> RunInfo:
    """Pause an active run by hand (the admin pages' Stop), saying why.

    Every process sending it stops at its next look at the run's state (within the
    settings' ``budget_interval``), letting what is in flight finish; nothing is lost,
    and :func:`reactivate_run` or ``sender resume`` goes on. A run that is done or
    already paused is refused, with the reason.
    """
    run = await store.get_run(run_id)
    if run is None:
        raise InputError(f"no run named {run_id!r}", field="run_id")
    if run.state is not RunState.ACTIVE:
        why = f" ({run.paused_reason})" if run.paused_reason else ""
        raise InputError(f"run {run_id} is {run.state.value}{why}, not active", field="run_id")
    await store.set_run_state(run_id, RunState.PAUSED, now=now, reason=reason)
    return await store.get_run(run_id) or run


async def reactivate_run(
    store: Store, run_id: str, /, *, policy: BouncePolicy, now: float
) -> RunInfo:
    """Make a paused run active again, for the workers that drain the outbox (``sender
    serve``'s own, ``sender worker``) to send: the admin pages' Resume.

    Refused while the bounce budget is still spent (clean up first, or ``sender resume
    --force``), and for a run not fully read from its CSV (``sender resume`` reads the
    rest).
    """
    run = await store.get_run(run_id)
    if run is None:
        raise InputError(f"no run named {run_id!r}", field="run_id")
    if run.state is not RunState.PAUSED:
        raise InputError(f"run {run_id} is {run.state.value}, not paused", field="run_id")
    if not run.ingest_complete and run.event_uid is None:
        raise InputError(
            f"run {run_id} was not fully read from {run.source}: `sender resume {run_id}` "
            "reads the rest and sends it",
            field="run_id",
        )
    spent = await budget_reason(store, policy=policy, now=now)
    if spent is not None:
        raise InputError(
            f"the run stays paused: {spent} (or `sender resume {run_id} --force`)",
            field="run_id",
        )
    await store.set_run_state(run_id, RunState.ACTIVE, now=now)
    return await store.get_run(run_id) or run
