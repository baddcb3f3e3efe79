"""The dispatcher: one run's sends, as named steps over one state object.

Each turn of :meth:`Dispatcher.run` does, in this order:

1. **record** what finished, in one store transaction, and only then free those send
   slots, so claimed-but-unrecorded messages (what a crash can duplicate) never exceed
   ``concurrency``; then **report** progress;
2. **check** why it might stop: :meth:`BulkRunner.stop`, a fatal error, a relay that
   stopped answering (the stall watch), a spent bounce budget or a complaint rate above
   the pause line for the run's stream; and which receiving
   providers are paused by a burst of sender-side refusals (their messages stay queued
   while the others go on);
3. **wake** deferred messages that have come due;
4. **claim** as many messages as there are free slots and scheduler permits, in one
   transaction, and **hand out** each to a send task (or record a suppressed one);
5. otherwise wait for a send to finish, look for more work, or sleep until a retry is due.

Beside the turns, :meth:`Dispatcher.keep_lease` renews the run's lease on its own timer,
when this worker holds the run alone; workers that share a run hold only their worker
lease (:class:`~sender.bulk.lease.WorkerLease`), and look at the run's state now and then
so that a run paused elsewhere stops here too.
The mutable books live in :class:`DispatchState`; why the run stopped early lives in
:class:`Halt`, which the runner turns into the run's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from sender.bulk.lease import WorkerLease
from sender.bulk.settings import RunSettings
from sender.bulk.status import Progress
from sender.bulk.workers import Skipped
from sender.clock import Clock
from sender.errors import RunBusy, SenderError
from sender.feedback.suppression import budget_reason, keep_refusal, paused_providers
from sender.models import TIMEOUT, DeliveryResult, DeliveryStatus, Participant
from sender.pacing.schedule import RetryPolicy, Scheduler
from sender.store import MessageState, OutboxMessage, Outcome, RunState, Store

__all__ = ["DispatchState", "Dispatcher", "Halt", "SendOne", "outcome_of"]

log = logging.getLogger("sender.runs")

SendOne = Callable[[OutboxMessage], Awaitable[DeliveryResult | Skipped]]
"""Composes and sends one claimed message: in this process, or through a worker."""


@dataclass(slots=True)
class Halt:
    """Why a run stopped claiming before its queue ran dry (all None: it did not)."""

    fatal: BaseException | None = None  # the transport or a worker failed; the lease was lost
    lease_lost: bool = False  # another worker holds the run now: leave its state alone
    budget: str | None = None  # the bounce budget is spent, or the complaint rate too high
    stalled: str | None = None  # the relay stopped answering
    providers: str | None = None  # only paused providers' messages were left (why)
    left: RunState | None = None  # the run was paused or finished elsewhere (a shared run)


@dataclass(slots=True)
class DispatchState:
    """The dispatcher's books for one invocation of a run; only its steps change them."""

    counts: Counter[MessageState]
    total: int
    free: int  # send slots whose message is recorded (or was never claimed)
    next_due: float | None  # when the earliest deferred message is due, as last read
    last_report: float
    last_budget: float
    running: int = 0  # sends not finished yet (their tasks may linger a moment after)
    in_flight: set[asyncio.Task[None]] = field(default_factory=set)
    finished: list[tuple[OutboxMessage, Outcome]] = field(default_factory=list)
    recent: deque[float] = field(default_factory=deque)  # when messages finished, last 10 s
    sent_now: int = 0
    first: Participant | None = None


class Dispatcher:
    """Claims, hands out and records one run's messages until nothing is due or it must stop.

    Made by :class:`~sender.bulk.runner.BulkRunner` once it holds the run's lease; ``stop``
    is the runner's own event (:meth:`BulkRunner.stop` sets it), ``send`` composes and
    sends one message, and ``relay`` names the server (``host:port``) for the stall reason.
    ``lease`` is the worker's lease, asked again when a claim or an outcome is refused;
    ``shared`` says other workers may claim in the run too.
    """

    def __init__(
        self,
        run_id: str,
        /,
        *,
        store: Store,
        scheduler: Scheduler,
        clock: Clock,
        settings: RunSettings,
        owner: str,
        send: SendOne,
        stop: asyncio.Event,
        relay: str,
        rng: random.Random,
        lease: WorkerLease,
        shared: bool = False,
        on_progress: Callable[[Progress], None] | None = None,
        progress_interval: float = 0.5,
        started: float = 0.0,
        stream: str | None = None,
        domains: Mapping[str, str] | None = None,
    ) -> None:
        self.run_id = run_id
        self._stream = stream  # the run's: its complaint rate is judged with the budget
        self._domains = dict(domains or {})  # each stream's sending domain
        self.halt = Halt()
        self._store = store
        self._scheduler = scheduler
        self._clock = clock
        self._settings = settings
        self._owner = owner
        self._send = send
        self._stop = stop
        self._relay = relay
        self._rng = rng
        self._lease = lease
        self._shared = shared
        self._on_progress = on_progress
        self._interval = progress_interval
        self._started = started
        self._wake = asyncio.Event()  # something changed: look again now
        self._timeouts = 0  # sends in a row that timed out without a word from the relay
        self._groups = scheduler.limits.effective_groups()
        self.paused: dict[str, str] = {}  # provider -> why bulk mail to it is paused
        self._held: set[str] = set()  # paused providers that had messages waiting

    def wake(self) -> None:
        """Look at once (a stop, a stall), not when the next send finishes."""
        self._wake.set()

    def lose_lease(self, why: str, /) -> None:
        """Stop claiming at once: the run or this worker's lease is someone else's now.

        What is in flight finishes, but its outcomes are the new owner's to record.
        """
        self.halt.fatal = RunBusy(f"run {self.run_id}: {why}")
        self.halt.lease_lost = True
        self._stop.set()
        self._wake.set()

    async def _still_held(self) -> bool:
        """Whether this worker still holds its lease; if not, stop (:meth:`lose_lease`)."""
        if await self._lease.check():
            return True
        self.lose_lease("this worker's lease was taken back; another worker sends the rest")
        return False

    # --- the loop ------------------------------------------------------------------------

    async def run(self) -> DispatchState:
        """Send until nothing is due (or, with ``wait_for_retries``, until nothing is left).

        Records and claims happen in batches, one store transaction each, because a
        commit per message would cap a run at a few hundred messages a second.
        """
        state = await self._open()
        while True:
            # Cleared before looking at `finished`: a send that ends after this sets it again.
            self._wake.clear()
            if state.finished:
                await self._record(state)
                self._report(state)
            if self._stopping() or await self._budget_spent(state):
                break  # what is in flight finishes; nothing more is claimed
            await self._wake_due(state)
            if state.free and self._scheduler.pending():
                await self._claim(state)
                continue
            if state.running:
                await self._wake.wait()
                continue
            if await self._find_pending():
                continue
            if not await self._wait_for_retry(state):
                break
        if state.in_flight:
            await asyncio.gather(*state.in_flight)
        if state.finished:
            await self._record(state)
        if self._held:
            self.halt.providers = "; ".join(self.paused[p] for p in sorted(self._held))
        self._report(state, force=True)
        return state

    async def _open(self) -> DispatchState:
        counts = Counter(await self._store.counts(self.run_id))
        await self._check_providers()
        self._scheduler.set_pending(await self._pending())
        moment = self._clock.monotonic()
        return DispatchState(
            counts=counts,
            total=sum(counts.values()),
            free=self._settings.concurrency,
            next_due=await self._store.next_attempt_at(self.run_id),
            last_report=moment,
            last_budget=moment,
        )

    def _stopping(self) -> bool:
        return self._stop.is_set() or self.halt.stalled is not None

    async def _wake_due(self, state: DispatchState) -> None:
        """Deferred messages whose time has come go back to the scheduler."""
        if state.next_due is None or state.next_due > self._clock.now():
            return
        self._scheduler.set_pending(await self._pending())
        state.next_due = await self._store.next_attempt_at(self.run_id)

    async def _find_pending(self) -> bool:
        """Whether the store has due messages the scheduler does not know of yet."""
        pending = await self._pending()
        if pending:
            self._scheduler.set_pending(pending)
        return bool(pending)

    async def _pending(self) -> dict[str, int]:
        """Due messages per domain, but for providers paused by sender-side refusals."""
        pending = await self._store.pending_domains(self.run_id, now=self._clock.now())
        if not self.paused:
            return pending
        kept = {}
        for domain, count in pending.items():
            provider = self._scheduler.group(domain)
            if provider in self.paused:
                self._held.add(provider)
            else:
                kept[domain] = count
        return kept

    async def _check_providers(self) -> None:
        """Which providers a burst of sender-side refusals pauses now (none with ``force``).

        A provider whose pause lifted is dropped from the held ones; its messages come
        back with the next look at pending work.
        """
        if self._settings.force:
            return
        paused = await paused_providers(
            self._store, policy=self._settings.bounces, now=self._clock.now(), groups=self._groups
        )
        for provider in paused.keys() - self.paused.keys():
            log.warning("run %s: %s", self.run_id, paused[provider])
        self._held &= paused.keys()
        if paused.keys() != self.paused.keys():
            self.paused = paused
            self._scheduler.set_pending(await self._pending())
        self.paused = paused

    async def _wait_for_retry(self, state: DispatchState) -> bool:
        """Sleep until the next deferred message is due; False when the run is over for now."""
        state.next_due = await self._store.next_attempt_at(self.run_id)
        if state.next_due is None or not self._settings.wait_for_retries:
            return False
        self._report(state, force=True)
        wait = min(max(state.next_due - self._clock.now(), 0.0), self._settings.max_wait)
        await self._clock.sleep(wait)
        return True

    # --- claim and hand out ----------------------------------------------------------------

    async def _claim(self, state: DispatchState) -> None:
        """Claim a message per free slot the scheduler grants a domain for; hand each out."""
        domains: list[str] = []
        while len(domains) < state.free and (domain := self._scheduler.try_next_bulk()):
            domains.append(domain)
        if not domains:
            domains = await self._permit_or_wake()
        if not domains:
            return
        now = self._clock.now()
        claimed = await self._store.claim_many(self.run_id, domains, now=now, owner=self._owner)
        if not any(claimed) and not await self._still_held():
            return  # refused because this worker's lease was taken back
        if not all(claimed):
            # Another worker took what the counts promised: read them again, or every
            # stale count would spend a permit of the shared limits on nothing.
            self._scheduler.set_pending(await self._store.pending_domains(self.run_id, now=now))
        for message in claimed:
            if message is None:
                continue  # the count was stale: someone else took it
            state.free -= 1
            if message.suppressed is not None:  # never sent; recorded
                detail = f"suppressed ({message.suppressed})"
                outcome = Outcome(MessageState.SUPPRESSED, at=self._clock.now(), detail=detail)
                state.finished.append((message, outcome))
                self._wake.set()
                continue
            if message.unsubscribed is not None:  # left the run's stream: never sent
                detail = f"unsubscribed ({message.unsubscribed})"
                outcome = Outcome(MessageState.UNSUBSCRIBED, at=self._clock.now(), detail=detail)
                state.finished.append((message, outcome))
                self._wake.set()
                continue
            self._hand_out(state, message)

    async def _permit_or_wake(self) -> list[str]:
        """Wait for a bulk permit, but come back early when a send finishes."""
        permit = asyncio.ensure_future(self._scheduler.next_bulk())
        woken = asyncio.ensure_future(self._wake.wait())
        await asyncio.wait({permit, woken}, return_when=asyncio.FIRST_COMPLETED)
        woken.cancel()
        if permit.done():
            domain = permit.result()
            return [domain] if domain is not None else []
        permit.cancel()  # a cancelled wait consumes no permit
        with contextlib.suppress(asyncio.CancelledError):
            await permit
        return []

    def _hand_out(self, state: DispatchState, message: OutboxMessage) -> None:
        state.running += 1
        task = asyncio.create_task(self._send_one(state, message))
        state.in_flight.add(task)
        task.add_done_callback(state.in_flight.discard)

    async def _send_one(self, state: DispatchState, message: OutboxMessage) -> None:
        outcome: Outcome | None = None
        try:
            outcome = await self._attempt(message)
        except SenderError as exc:  # the transport itself is unusable: stop the run
            self.halt.fatal = exc
            self._stop.set()
        finally:
            state.running -= 1
        if outcome is not None:
            state.finished.append((message, outcome))
        self._wake.set()

    async def _attempt(self, message: OutboxMessage) -> Outcome:
        """Compose and send one claimed message; turn whatever happens into an outcome."""
        result = await self._send(message)
        if isinstance(result, Skipped):
            return Outcome(MessageState.SKIPPED, at=self._clock.now(), detail=result.reason)
        self._watch_relay(result)
        await self._scheduler.learn(
            message.participant.domain, result.reply.code if result.reply else None
        )
        await keep_refusal(  # refused at RCPT or DATA: a bounce like a DSN, once per message
            self._store,
            result,
            key=f"m{message.id}",
            message=message.id,
            policy=self._settings.bounces,
            now=self._clock.now(),
        )
        return outcome_of(
            message, result, retry=self._settings.retry, rng=self._rng, now=self._clock.now()
        )

    # --- record and report -----------------------------------------------------------------

    async def _record(self, state: DispatchState) -> None:
        """Record what finished in one transaction, then free those slots.

        Recorded as this worker's claims: an outcome whose claim was taken back (this
        worker's lease had expired) is dropped by the store, and left out of the books.
        """
        batch = list(state.finished)
        state.finished.clear()
        dropped = set(
            await self._store.record_many(
                [(message.id, outcome) for message, outcome in batch], owner=self._owner
            )
        )
        state.free += len(batch)
        if dropped:
            log.warning(
                "run %s: %d outcome(s) not recorded: their claims were taken back",
                self.run_id,
                len(dropped),
            )
            await self._still_held()
        moment = self._clock.monotonic()
        counts = state.counts
        for message, outcome in batch:
            if message.id in dropped:
                continue
            # It left the queue or the deferred pile. An earlier attempt does not prove
            # which: `retry` and a crash put messages that were tried back as queued.
            was_deferred = message.attempts > 1 and counts[MessageState.DEFERRED] > 0
            counts[MessageState.DEFERRED if was_deferred else MessageState.QUEUED] -= 1
            counts[outcome.state] += 1
            state.recent.append(moment)
            if outcome.state is MessageState.SENT:
                state.sent_now += 1
                state.first = state.first or message.participant
            elif outcome.state is MessageState.DEFERRED and outcome.next_attempt_at:
                due = outcome.next_attempt_at
                state.next_due = due if state.next_due is None else min(state.next_due, due)

    def _report(self, state: DispatchState, *, force: bool = False) -> None:
        moment = self._clock.monotonic()
        if self._on_progress is None or (not force and moment - state.last_report < self._interval):
            return
        state.last_report = moment
        while state.recent and state.recent[0] < moment - 10:
            state.recent.popleft()
        window = min(10.0, moment - self._started) or 1.0
        self._on_progress(
            Progress(
                run_id=self.run_id,
                total=state.total,
                counts=dict(state.counts),
                rate=len(state.recent) / window,
                eta=self._scheduler.eta(),
                elapsed=moment - self._started,
                slowest=self._scheduler.eta_bottleneck(),
            )
        )

    # --- why it might stop -----------------------------------------------------------------

    async def budget_spent(self) -> bool:
        """Whether the bounce budget is spent (never with ``force``); why goes in ``halt``."""
        if self._settings.force:
            return False
        reason = await budget_reason(
            self._store,
            policy=self._settings.bounces,
            now=self._clock.now(),
            stream=self._stream,
            domains=self._domains,
        )
        self.halt.budget = reason
        return reason is not None

    async def _budget_spent(self, state: DispatchState) -> bool:
        """:meth:`budget_spent`, asked at most every ``budget_interval`` seconds.

        The run's state is read then too: paused by an operator (the admin pages' Stop)
        or another worker, it stops here as well.
        """
        if self._clock.monotonic() - state.last_budget <= self._settings.budget_interval:
            return False
        state.last_budget = self._clock.monotonic()
        await self._check_providers()
        run = await self._store.get_run(self.run_id)
        if (
            run is None
            or run.state is RunState.PAUSED
            or (self._shared and run.state is not RunState.ACTIVE)
        ):
            self.halt.left = run.state if run is not None else RunState.DONE
            return True
        return await self.budget_spent()

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
        limit = self._settings.relay_timeouts * self._settings.concurrency
        if self.halt.stalled is None and self._timeouts >= limit:
            self.halt.stalled = (
                f"relay not answering: {self._timeouts} timeouts in a row at "
                f"{self._relay}; resume once it answers"
            )
            self._wake.set()

    async def keep_lease(self) -> None:
        """Renew the run's lease every third of ``lease_ttl`` while the run is held alone.

        A timer of its own, on the injected clock: a slow server holds up sends,
        never the lease, so a live run is never taken over. When another worker
        took the run after all, this one stops sending; that one re-sends what was
        in flight here.
        """
        interval = self._settings.lease_ttl / 3
        while True:
            await self._clock.idle(interval)
            try:
                now = self._clock.now()
                held = await self._store.heartbeat(self.run_id, owner=self._owner, now=now)
            except SenderError as exc:  # a busy or failing outbox: try again next time
                log.warning("run %s: could not renew the lease: %s", self.run_id, exc)
                continue
            if not held:
                self.lose_lease("another worker took over the run")
                return


def outcome_of(
    message: OutboxMessage,
    result: DeliveryResult,
    /,
    *,
    retry: RetryPolicy,
    rng: random.Random,
    now: float,
) -> Outcome:
    """What a send's result makes of the message: sent, failed, suppressed or deferred.

    A temporary failure is deferred by ``retry``'s backoff, or failed once it gives up.
    A sent message keeps the login code it carried; the others' codes were never read.
    """
    common = {
        "at": now,
        "reply": result.reply,
        "detail": result.detail,
        "message_id": result.message_id,
    }
    if result.status is DeliveryStatus.ACCEPTED:
        return Outcome(MessageState.SENT, code=result.code, **common)  # type: ignore[arg-type]
    if result.status is DeliveryStatus.PERMANENT:
        return Outcome(MessageState.FAILED, **common)  # type: ignore[arg-type]
    if result.status is DeliveryStatus.SUPPRESSED:
        return Outcome(MessageState.SUPPRESSED, **common)  # type: ignore[arg-type]
    next_at = retry.next_attempt_at(
        attempts=message.attempts,
        first_attempt_at=message.first_attempt_at or now,
        now=now,
        rng=rng,
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
