"""A worker that drains the shared outbox: every active run, beside any number of others.

``sender worker`` is this loop. It holds one worker lease (:class:`WorkerLease`) for as
long as it runs, and, turn by turn, looks for active runs with messages due and sends
them (:meth:`BulkRunner.join`), a slice of time each when several are waiting, so a big
run never starves a small one. Other workers, on this host or others, do the same: the
store's claims keep them from sending one message twice, and the shared limiter keeps
every domain's limit between them.

A run another process holds alone (``sender run``, ``sender resume``, an enqueue still
storing its rows) is left to it. A run this worker cannot send (its transport needs a
password this worker lacks) is logged once and left for a worker that can.

Stopping (:meth:`Drain.stop`, which SIGTERM calls) lets in-flight messages finish and
puts unstarted claims back. A lease taken back (the worker stalled past the ttl) stops
what it was doing; the worker then goes on under a new lease, its old claims being
someone else's to send. A send that failed pauses its run, and the worker ends its lease
and takes it again, which puts the failed claim back for whoever resumes the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sender.bulk.lease import WorkerLease
from sender.bulk.runner import BulkRunner, RunReport
from sender.bulk.status import is_dead_local
from sender.clock import Clock, SystemClock
from sender.errors import SenderError
from sender.store import MessageState, RunInfo, RunState, Store

__all__ = ["Drain", "DrainReport", "RunnerFor"]

log = logging.getLogger("sender.runs")

RunnerFor = Callable[[RunInfo, str], Awaitable[BulkRunner | None]]
"""Makes the runner that sends one run (its transport, limits, settings) as the worker
named by the second argument (its ``owner``); None: skip the run."""


@dataclass(slots=True)
class DrainReport:
    """What a worker did: messages sent and runs finished, per run id."""

    sent: dict[str, int] = field(default_factory=dict)
    finished: list[str] = field(default_factory=list)
    leases: int = 0  # leases held: a new one after one was taken back or a send failed

    @property
    def sent_now(self) -> int:
        return sum(self.sent.values())


class Drain:
    """Sends what every active run in ``store`` has due, until stopped (or idle).

    ``runner_for`` builds the :class:`BulkRunner` for a run each time the worker takes it
    up. ``owner`` names the worker (``host:pid/token``); ``ttl`` is its lease's. With
    ``exit_when_idle`` it returns once no active run has a message due or in flight.
    ``turn`` is how long one run keeps the worker while others wait; ``poll`` how long an
    idle worker waits before it looks again.
    """

    def __init__(
        self,
        store: Store,
        runner_for: RunnerFor,
        /,
        *,
        owner: str,
        ttl: float = 30.0,
        exit_when_idle: bool = False,
        poll: float = 1.0,
        turn: float = 10.0,
        clock: Clock | None = None,
    ) -> None:
        self._store = store
        self._runner_for = runner_for
        self._owner = owner
        self._ttl = ttl
        self._exit_when_idle = exit_when_idle
        self._poll = poll
        self._slice = turn
        self._clock = clock or SystemClock()
        self._stopped = asyncio.Event()
        self._current: BulkRunner | None = None
        self._refused: set[str] = set()  # runs this worker could not send, logged once

    def stop(self) -> None:
        """Finish what is in flight, put unstarted claims back, and return (SIGTERM)."""
        self._stopped.set()
        if self._current is not None:
            self._current.stop()

    async def run(self) -> DrainReport:
        """Drain until stopped, or until idle with ``exit_when_idle``."""
        report = DrainReport()
        owner = self._owner
        while not self._stopped.is_set():
            async with WorkerLease(self._store, owner, clock=self._clock, ttl=self._ttl) as lease:
                report.leases += 1
                failed = await self._turns(lease, report)
                if self._stopped.is_set() or not (lease.lost or failed):
                    break
            if lease.lost:
                owner = f"{self._owner}.{secrets.token_hex(2)}"
                log.warning("worker goes on under a new lease, as %s", owner)
            else:  # a send failed: never a hot loop when it fails again at once
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), self._poll)
        return report

    async def _turns(self, lease: WorkerLease, report: DrainReport) -> bool:
        """Turns until stopped, idle or the lease is lost; True after a failed send.

        A send that failed (its run is paused) leaves its claim unrecorded: ending the
        lease puts it back, where a resumed run or another worker finds it.
        """
        while not self._stopped.is_set() and not lease.lost:
            due = await self._due_runs()
            worked = False
            for run in due:
                if self._stopped.is_set() or lease.lost:
                    return False
                sent = await self._send(run, lease, report, others_waiting=len(due) > 1)
                if sent is None:
                    return True
                worked = sent or worked
            if worked:
                continue
            if self._exit_when_idle and await self._idle():
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self._poll)
        return False

    async def _due_runs(self) -> list[RunInfo]:
        """Active runs with a message due now that no other process holds alone."""
        now = self._clock.now()
        due = []
        for run in await self._store.active_runs():
            if self._held_elsewhere(run, now):
                continue
            if await self._store.pending_domains(run.run_id, now=now):
                due.append(run)
        return due

    def _held_elsewhere(self, run: RunInfo, now: float, /) -> bool:
        if run.owner is None or run.heartbeat_at is None:
            return False
        return run.heartbeat_at >= now - self._ttl and not is_dead_local(run.owner)

    async def _idle(self) -> bool:
        """Nothing due (the caller looked) and nothing in flight in any active run.

        Another worker's claims are waited for: if it dies, they come back to the queue
        once its lease expires, and this worker sends them.
        """
        for run in await self._store.active_runs():
            if (await self._store.counts(run.run_id)).get(MessageState.SENDING, 0):
                return False
        return True

    async def _send(
        self, run: RunInfo, lease: WorkerLease, report: DrainReport, *, others_waiting: bool
    ) -> bool | None:
        """Send the run's due messages; False when this worker cannot send it (or was
        stopped meanwhile), None when a send failed and paused the run."""
        try:
            runner = await self._runner_for(run, lease.owner)
        except SenderError as exc:
            if run.run_id not in self._refused:
                self._refused.add(run.run_id)
                log.error("run %s: this worker cannot send it: %s", run.run_id, exc)
            return False
        if runner is None or self._stopped.is_set():
            return False  # a stop while the runner was made (its transport, its processes)
        self._refused.discard(run.run_id)
        self._current = runner
        slicer = None
        if others_waiting:
            slicer = asyncio.get_running_loop().call_later(self._slice, runner.stop)
        try:
            outcome: RunReport = await runner.join(run.run_id, lease=lease)
        except SenderError as exc:  # the run is paused with the reason; others go on
            log.error("run %s paused: %s", run.run_id, exc)
            return None
        finally:
            if slicer is not None:
                slicer.cancel()
            self._current = None
        if outcome.sent_now:
            report.sent[run.run_id] = report.sent.get(run.run_id, 0) + outcome.sent_now
        if outcome.run.state is RunState.DONE and run.run_id not in report.finished:
            report.finished.append(run.run_id)
        return True
