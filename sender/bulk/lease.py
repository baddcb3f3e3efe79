"""A sending process's worker lease: registered, renewed on its own timer, released.

Every process that claims messages (``sender run``, ``sender worker``, a library runner)
holds one (:class:`~sender.store.base.Workers`). Its claims are taken back when its
heartbeat is older than the ttl, never earlier, so a slow but live worker keeps them;
and a lease once taken back stays taken, so a worker that was presumed dead stops
claiming and sending instead of racing the worker that re-sends its messages.

While it holds the lease, each beat of the timer also takes back the claims no live
worker holds (:meth:`~sender.store.base.Workers.reclaim_expired`), so the messages of
a worker that died on any host go back to the queue within about one ttl, whichever
worker is left to notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from types import TracebackType

from sender.bulk.status import process_gone
from sender.clock import Clock
from sender.errors import SenderError
from sender.store import Workers

__all__ = ["WorkerLease"]

log = logging.getLogger("sender.runs")


class WorkerLease:
    """``owner``'s lease in ``store``, for as long as the ``async with`` block runs.

    On entry it registers (restarting a lease of the same name) and takes back at once
    the claims of workers of this host whose process is gone, then those no live worker
    holds. On exit it puts back what the owner still claims and ends the lease: as never
    started when the block ended normally (every send had finished), as interrupted when
    it was cut short; and not at all once the lease was lost, since then those claims are
    someone else's to send.
    """

    def __init__(self, store: Workers, owner: str, /, *, clock: Clock, ttl: float) -> None:
        self.owner = owner
        self.reclaimed = 0  # claims taken back on entry: messages a crash left in flight
        self._store = store
        self._clock = clock
        self._ttl = ttl
        self._lost = False
        self._listeners: list[Callable[[], None]] = []
        self._timer: asyncio.Task[None] | None = None

    @property
    def lost(self) -> bool:
        """True once the lease was taken back: stop claiming, and record nothing more."""
        return self._lost

    def on_lost(self, listener: Callable[[], None], /) -> Callable[[], None]:
        """Call ``listener`` when the lease is lost; returns a function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def __aenter__(self) -> WorkerLease:
        now = self._clock.now()
        await self._store.register_worker(
            self.owner, host=socket.gethostname(), pid=os.getpid(), now=now, ttl=self._ttl
        )
        self.reclaimed = await self._reclaim_gone(now) + await self._store.reclaim_expired(now=now)
        if self.reclaimed:
            log.warning("%d message(s) were in flight at a crash; queued again", self.reclaimed)
        self._timer = asyncio.create_task(self._keep())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
        if self._lost:
            return
        if exc_type is not None:
            # Cut short (cancelled, or a failure): a claim still held may have reached the
            # server, so it goes back as a crash leaves it, its attempt and first-attempt
            # time (hence its Message-ID) kept.
            await self._store.reclaim_worker(self.owner, now=self._clock.now())
        await self._store.release_worker(self.owner)

    async def check(self) -> bool:
        """Renew now and say whether the lease is still held (a claim came back empty, an
        outcome was dropped: was the lease taken back?)."""
        if self._lost:
            return False
        try:
            held = await self._store.worker_heartbeat(self.owner, now=self._clock.now())
        except SenderError as exc:  # a busy outbox says nothing about the lease
            log.warning("could not renew the worker lease: %s", exc)
            return True
        if not held:
            self._lose()
        return held

    async def _reclaim_gone(self, now: float) -> int:
        """Take back the leases of this host's workers whose process no longer exists.

        A SIGKILLed process leaves a fresh heartbeat behind; waiting out its lease is
        pointless when this host can see that it is gone.
        """
        taken = 0
        for worker in await self._store.workers(now):
            if worker.owner != self.owner and process_gone(worker.host, worker.pid):
                taken += await self._store.reclaim_worker(worker.owner, now=now)
        return taken

    async def _keep(self) -> None:
        """Renew every third of the ttl; take back what dead workers claimed on the way.

        A timer of its own, on the injected clock: slow sends hold up the sends,
        never the lease.
        """
        while True:
            await self._clock.idle(self._ttl / 3)
            if not await self.check():
                return
            try:
                now = self._clock.now()
                await self._reclaim_gone(now)
                await self._store.reclaim_expired(now=now)
            except SenderError as exc:
                log.warning("could not take back expired claims: %s", exc)

    def _lose(self) -> None:
        if self._lost:
            return
        self._lost = True
        log.warning(
            "worker %s: its lease was taken back (no heartbeat within %g s); it stops "
            "sending, and other workers send what it had claimed",
            self.owner,
            self._ttl,
        )
        for listener in list(self._listeners):
            listener()
