"""Live objects from settings: what the CLI and ``sender serve`` both open from a
:class:`~sender.config.CliConfig`.

The outbox, a sender over the configured transport paced by the limits every process
shares, the settings and stored options of a run, and a :class:`~sender.bulk.drain.Drain`
over every active run, beside which the webhooks are delivered. Each is made here once,
so a command and the HTTP API that do the same thing build it the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

from sender.bulk.drain import Drain
from sender.bulk.runner import BulkRunner, transport_identity
from sender.bulk.settings import RunSettings, calendar_of
from sender.bulk.status import DRAINER
from sender.bulk.workers import WorkerPool
from sender.checks.resolve import DnsSettings, Resolver
from sender.client import CalendarSend, Sender, open_sender
from sender.config import CliConfig, require_real_identity
from sender.pacing.limits import Limiter
from sender.pacing.schedule import Scheduler
from sender.store import RunInfo, Store, open_store
from sender.store.limits import open_limiter
from sender.transport import SmtpTransport

if TYPE_CHECKING:
    from sender.checks.doctor import DoctorReport

__all__ = [
    "ConfigFor",
    "delivering",
    "diagnose_sender",
    "drain_owner",
    "open_drain",
    "open_sending",
    "outbox_and_limiter",
    "resolver_for",
    "run_settings",
    "sending_options",
]

ConfigFor = Callable[[RunInfo], CliConfig]
"""The configuration one stored run is sent with (its transport, limits); raising a
:class:`~sender.errors.SenderError` leaves the run to another worker."""


@asynccontextmanager
async def open_sending(
    config: CliConfig, /, *, feedback: bool = False
) -> AsyncIterator[tuple[Store, Sender, Scheduler]]:
    """The outbox, and a sender over the configured transport paced by the scheduler it
    shares with the runs it makes, which asks the limiter every process shares (the
    ``limits`` setting); closed in turn when the block ends.

    With ``feedback`` the sender's own sends (``sender send``, ``POST /v1/messages``)
    check the outbox's suppression list and keep refusals there as bounces, as a run's do.
    """
    async with outbox_and_limiter(config) as (store, limiter):
        scheduler = Scheduler(config.limits, limiter=limiter)
        async with open_sender(
            config.sender,
            smtp=config.smtp,
            maildir=config.maildir,
            scheduler=scheduler,
            store=store if feedback else None,
            bounce_policy=config.bounces if feedback else None,
        ) as sender:
            yield store, sender, scheduler


def run_settings(
    config: CliConfig,
    /,
    *,
    switch_transport: bool,
    template: str = "invitation",
    calendar: CalendarSend | None = None,
    force: bool = False,
) -> RunSettings:
    """How a run started from settings behaves: the configuration's concurrency, retries,
    workers, relay patience and bounce rules, and what the caller says."""
    return RunSettings(
        template=template,
        concurrency=config.concurrency,
        retry=config.retry,
        workers=config.workers,
        relay_timeouts=config.relay_timeouts,
        calendar=calendar,
        force=force,
        bounces=config.bounces,
        switch_transport=switch_transport,
    )


def sending_options(config: CliConfig) -> dict[str, str | float | int | None]:
    """How a run was started (transport, limits), stored with it so a resume sends the same way.

    The transport is its URL without the password (or ``capture``); a resume takes the
    password from the configuration of the day.
    """
    per_second = config.limits.global_per_second
    per_minute = config.limits.domain_per_minute
    return {
        "transport": transport_identity(config.smtp),
        "rate": per_second if per_second is not None else 0,
        "domain_rate": f"{per_minute}/min" if per_minute is not None else "0",
        "concurrency": config.concurrency,
        "workers": config.workers,
    }


WEBHOOKS_STOP = 30.0  # seconds the deliverer may take to finish its posts in flight


@asynccontextmanager
async def delivering(config: CliConfig, store: Store, /) -> AsyncIterator[None]:
    """The configured webhooks (``config.webhooks``) delivered from ``store`` beside the
    block, as ``sender serve`` and ``sender worker`` both do; nothing without any.
    Expired login codes are forgotten here too, at each drain's start."""
    # Imported here, in the long-lived processes that deliver: httpx stays out of `sender run`.
    from sender.webhooks import RETENTION, Deliverer

    await store.prune_codes(before=time.time())
    if not config.webhooks:  # events still kept (for a later endpoint), not for ever
        await store.prune_hook_events(before=time.time() - RETENTION)
        yield
        return
    deliverer = Deliverer(store, config.webhooks)
    task = asyncio.create_task(deliverer.run(), name="sender-webhooks")
    try:
        yield
    finally:
        deliverer.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), WEBHOOKS_STOP)
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@asynccontextmanager
async def outbox_and_limiter(config: CliConfig, /) -> AsyncIterator[tuple[Store, Limiter]]:
    """The outbox and the limiter every process shares (the ``limits`` setting), closed in
    turn when the block ends: the limiter first, then the outbox it may live in."""
    store = open_store(config.store)
    limiter = None
    try:
        limiter = open_limiter(config.limiter, store=config.store)
        yield store, limiter
    finally:
        try:
            if limiter is not None:
                await limiter.aclose()
        finally:
            await store.aclose()


def drain_owner() -> str:
    """A draining worker's name: ``host:pid`` and :data:`~sender.bulk.status.DRAINER`."""
    return f"{socket.gethostname()}:{os.getpid()}{DRAINER}{secrets.token_hex(4)}"


@asynccontextmanager
async def open_drain(
    base: CliConfig,
    config_for: ConfigFor,
    /,
    *,
    ttl: float = 30.0,
    poll: float = 1.0,
    exit_when_idle: bool = False,
) -> AsyncIterator[Drain]:
    """A :class:`Drain` over ``base``'s outbox: each run sent as ``config_for`` says, one
    sender per transport and one process pool per run shape, kept open across turns; all
    closed when the block ends. The caller runs it (``await drain.run()``)."""
    async with outbox_and_limiter(base) as (store, limiter), AsyncExitStack() as stack:
        await stack.enter_async_context(delivering(base, store))
        senders: dict[str, Sender] = {}
        pools: dict[tuple[object, ...], WorkerPool] = {}

        async def runner_for(run: RunInfo, owner: str) -> BulkRunner:
            config = config_for(run)
            require_real_identity(config)
            identity = transport_identity(config.smtp)
            if identity not in senders:
                senders[identity] = await stack.enter_async_context(
                    open_sender(config.sender, smtp=config.smtp, maildir=config.maildir)
                )
            sender = senders[identity]
            calendar = calendar_of(run)
            settings = run_settings(
                config, template=run.template, calendar=calendar, switch_transport=False
            )
            pool = None
            if settings.workers > 1 and isinstance(sender.transport, SmtpTransport):
                # Kept open across the run's turns: starting processes takes a while.
                key = (
                    identity,
                    settings.workers,
                    settings.concurrency,
                    run.event_uid,
                    run.sequence,
                )
                if key not in pools:
                    pools[key] = await stack.enter_async_context(
                        WorkerPool(
                            sender.settings,
                            sender.transport.settings,
                            workers=settings.workers,
                            concurrency=settings.concurrency,
                            calendar=calendar,
                        )
                    )
                pool = pools[key]
            return BulkRunner(
                sender,
                store,
                dataclasses.replace(settings, lease_ttl=ttl),
                scheduler=Scheduler(config.limits, limiter=limiter),
                owner=owner,
                pool=pool,
            )

        yield Drain(
            store,
            runner_for,
            owner=drain_owner(),
            ttl=ttl,
            exit_when_idle=exit_when_idle,
            poll=poll,
        )


def resolver_for(dns_server: str | None) -> Resolver:
    """DNS look-ups through ``dns_server`` (HOST:PORT), or the system's resolver."""
    return Resolver(DnsSettings.from_text(dns_server) if dns_server else DnsSettings())


async def diagnose_sender(
    config: CliConfig,
    /,
    *,
    domain: str | None = None,
    spf_include: str = "amazonses.com",
    dkim_selector: str | None = None,
    sending_ips: Sequence[str] = (),
) -> DoctorReport:
    """The doctor's report for ``domain`` (by default the From address's domain), with the
    configured DKIM key, bounce domain, reply domain and streams (the From and DKIM
    identity of the main stream and of each ``[streams.NAME]`` with its own): ``sender
    doctor`` and the admin pages' Health page."""
    # Imported here, for these two alone: the doctor brings in httpx (MTA-STS) and the DKIM
    # libraries, which no run needs.
    from sender.checks.doctor import StreamIdentity, diagnose

    settings = config.sender
    main_stream = StreamIdentity(
        "main",
        settings.from_address.domain,
        settings.dkim_domain,
        settings.dkim_selector,
        settings.dkim_private_key,
    )
    own_streams = [  # [streams.NAME] with an identity of its own, over the top level
        StreamIdentity(
            stream.value,
            (mine := settings.for_stream(stream)).from_address.domain,
            mine.dkim_domain,
            mine.dkim_selector,
            mine.dkim_private_key,
        )
        for stream, _own in settings.streams
    ]
    return await diagnose(
        domain or settings.from_address.domain,
        resolver=resolver_for(config.dns_server),
        spf_include=spf_include,
        dkim_selector=dkim_selector or settings.dkim_selector,
        dkim_private_key=settings.dkim_private_key,
        bounce_domain=settings.bounce_domain,
        reply_domain=settings.reply_to.domain if settings.reply_to else None,
        sending_ips=sending_ips,
        streams=[main_stream, *own_streams],
    )
