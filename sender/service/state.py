"""What one HTTP app holds: its settings, its keys, and the outbox and sender it opens.

The outbox and the sender (over the configured transport, paced by the limits every
process shares, honouring the suppression list, as ``sender send`` does) are opened on
first use, so the app also works mounted inside an LMS's own ASGI app, whose lifespan
does not reach it. Its own lifespan (:meth:`Service.running`) adds the drain, which
sends every active run as ``sender worker`` does, and closes everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from sender.bulk.runner import transport_identity
from sender.client import Sender
from sender.config import CliConfig, parse_duration
from sender.configured import open_drain, open_sending
from sender.errors import ConfigurationError, InputError
from sender.feedback.sns import SnsVerifier
from sender.feedback.suppression import CleanupRow, SenderSideProblem, bounce_report
from sender.models import Participant
from sender.service.auth import KeyRing
from sender.store import RunInfo, Store

__all__ = ["Service"]

log = logging.getLogger("sender.service")

DRAIN_STOP = 60.0  # seconds the drain may take to finish what is in flight at shutdown


class Service:
    """The settings, keys and open resources behind one app.

    ``work``: the app's lifespan also sends every active run (its own and those any
    process enqueued through the same transport), beside any ``sender worker``.
    ``sns``: how SNS messages are verified; by default for ``config.ses_topics`` against
    SNS's own hosts (tests pass one trusting their loopback server).
    """

    def __init__(
        self,
        config: CliConfig,
        /,
        *,
        work: bool = True,
        poll: float = 1.0,
        sns: SnsVerifier | None = None,
    ) -> None:
        self.config = config
        self.keys = KeyRing(config.api_keys)
        self.sns = SnsVerifier(config.ses_topics) if sns is None else sns
        self.links = Sender(config.sender)  # composes only: links, templates, no transport
        self.work = work
        self._poll = poll
        self._stack = AsyncExitStack()
        self._opened: tuple[Store, Sender] | None = None
        self._lock = asyncio.Lock()

    async def sending(self) -> tuple[Store, Sender]:
        """The outbox and the paced, suppression-checking sender, opened on first use."""
        async with self._lock:
            if self._opened is None:
                store, sender, _scheduler = await self._stack.enter_async_context(
                    open_sending(self.config, feedback=True)
                )
                self._opened = (store, sender)
            return self._opened

    async def cleanup_report(
        self, since: str, /, *, now: float
    ) -> tuple[list[CleanupRow], list[SenderSideProblem]]:
        """The clean-up report (:func:`~sender.feedback.suppression.bounce_report`) for
        ``since`` (a duration: ``24h``, ``7d``) before ``now``, under the configured bounce
        rules and limit groups; a bad duration is an :class:`InputError` naming ``since``."""
        try:
            window = parse_duration(since, setting="since").total_seconds()
        except ConfigurationError as exc:
            raise InputError(str(exc), field="since") from exc
        store, _sender = await self.sending()
        return await bounce_report(
            store,
            since=now - window,
            now=now,
            policy=self.config.bounces,
            groups=self.config.limits.effective_groups(),
        )

    def link_url(self, person: Participant, /) -> str:
        """``person``'s Get Link: the URL of a freshly signed login link."""
        return self.links.get_link(person).url

    async def aclose(self) -> None:
        async with self._lock:
            self._opened = None
            try:
                await self._stack.aclose()
            finally:
                await self.sns.aclose()

    def config_for(self, run: RunInfo, /) -> CliConfig:
        """The drain sends a run only through the transport it was enqueued with."""
        stored = run.options.get("transport")
        mine = transport_identity(self.config.smtp)
        if isinstance(stored, str) and stored != mine:
            raise ConfigurationError(
                f"run {run.run_id} sends through {stored}, and this server through {mine}: "
                "a `sender worker` configured for it sends it",
                setting="smtp_url",
            )
        return self.config

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The app's lifespan: the drain (with ``work``) while it serves; then all closed."""
        try:
            if not self.work:
                yield
                return
            async with open_drain(self.config, self.config_for, poll=self._poll) as drain:
                task = asyncio.create_task(drain.run(), name="sender-drain")
                try:
                    yield
                finally:
                    drain.stop()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(task), DRAIN_STOP)
                    if not task.done():
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                    elif not task.cancelled() and (error := task.exception()) is not None:
                        log.error("the drain stopped: %s", error)
        finally:
            await self.aclose()
