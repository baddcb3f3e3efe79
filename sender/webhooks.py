"""Delivering the outbox's webhook events to the LMS: signed, retried, one endpoint at a time.

Each configured endpoint has a loop of its own, so a slow or failing one never delays
another. A turn hands the endpoint the events it wants that it has not been given yet
(:meth:`~sender.store.base.Webhooks.hook_fan_out`), claims the due ones and posts them,
oldest first, through one pooled ``httpx.AsyncClient``. A delivery that fails is tried
again on :data:`SCHEDULE` (about three days in all) with the same ``webhook-id``, so a
receiver de-duplicates; a 410 Gone disables the endpoint until ``sender webhooks
replay``. Several processes may deliver from one store: a claim is a conditional update.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

import httpx

from sender.config import WebhookEndpoint
from sender.signing import secret_bytes, signed_headers
from sender.store import HookEvent, Webhooks
from sender.store.common import new_event_id
from sender.vocabulary import WebhookEvent

__all__ = ["RETENTION", "SCHEDULE", "TEST_EVENT", "Deliverer", "deliver_once", "post_test_events"]

log = logging.getLogger("sender.webhooks")

# Seconds before each retry; a delivery failing after the last is given up ("failed").
SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
BATCH = 20  # deliveries claimed per turn of one endpoint
RETENTION = 30 * 86_400.0  # seconds events are kept for `sender webhooks replay`
PRUNE_EVERY = 3600.0  # seconds between prunings
CLAIM_MARGIN = 30.0  # seconds past the timeout a claim is held before another may take it


def _wanted(endpoint: WebhookEndpoint) -> list[str]:
    return sorted(endpoint.events or {event.value for event in WebhookEvent})


async def deliver_once(
    client: httpx.AsyncClient,
    endpoint: WebhookEndpoint,
    event: HookEvent,
    /,
    *,
    now: float,
) -> tuple[int | None, str | None]:
    """Post one event, signed with every secret of the endpoint: (HTTP status, error)."""
    body = event.body()
    headers = signed_headers(
        [secret_bytes(secret, setting=f"{endpoint.name}.secret") for secret in endpoint.secrets],
        webhook_id=event.event_id,
        timestamp=int(now),
        body=body,
    )
    headers["content-type"] = "application/json"
    try:
        response = await client.post(
            endpoint.url, content=body, headers=headers, timeout=endpoint.timeout
        )
    except httpx.HTTPError as exc:  # the class only: a message may quote the URL's query
        return None, type(exc).__name__
    return response.status_code, None


class Deliverer:
    """Delivers the events of ``store`` to ``endpoints`` until :meth:`stop`.

    ``schedule`` and ``poll`` are for tests (a retry schedule of zeros, a short poll).
    """

    def __init__(
        self,
        store: Webhooks,
        endpoints: Sequence[WebhookEndpoint],
        /,
        *,
        client: httpx.AsyncClient | None = None,
        schedule: Sequence[float] = SCHEDULE,
        poll: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._endpoints = tuple(endpoints)
        self._client = client
        self._schedule = tuple(schedule)
        self._poll = poll
        self._clock = clock
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """One loop per endpoint until :meth:`stop`; the client closed at the end if ours."""
        async with contextlib.AsyncExitStack() as stack:
            client = self._client
            if client is None:
                client = await stack.enter_async_context(httpx.AsyncClient())
            async with asyncio.TaskGroup() as group:
                group.create_task(self._prune())
                for endpoint in self._endpoints:
                    group.create_task(self._loop(client, endpoint))

    async def _prune(self) -> None:
        """Forget events past :data:`RETENTION`, now and then, so the outbox stays small."""
        while not self._stopping.is_set():
            try:
                await self._store.prune_hook_events(before=self._clock() - RETENTION)
            except Exception as exc:
                log.warning("webhook events not pruned: %s", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), PRUNE_EVERY)

    async def _loop(self, client: httpx.AsyncClient, endpoint: WebhookEndpoint) -> None:
        while not self._stopping.is_set():
            try:
                busy = await self.turn(client, endpoint)
            except Exception as exc:
                log.warning("webhook %s: a turn failed: %s", endpoint.name, type(exc).__name__)
                busy = 0
            if busy < BATCH:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self._poll)

    async def turn(self, client: httpx.AsyncClient, endpoint: WebhookEndpoint) -> int:
        """Give the endpoint its new events, post its due ones; how many were posted."""
        now = self._clock()
        await self._store.hook_fan_out(endpoint.url, _wanted(endpoint), now=now)
        claimed = await self._store.claim_hook_deliveries(
            endpoint.url, now=now, until=now + endpoint.timeout + CLAIM_MARGIN, limit=BATCH
        )
        for event, attempts in claimed:
            if self._stopping.is_set():
                break
            status, error = await deliver_once(client, endpoint, event, now=self._clock())
            finished = self._clock()
            if status is not None and 200 <= status < 300:
                await self._store.hook_delivered(endpoint.url, event.id, status=status)
            elif status == 410:
                log.warning("webhook %s answered 410 Gone: disabled", endpoint.name)
                await self._store.disable_hook_endpoint(
                    endpoint.url, now=finished, reason="410 Gone"
                )
                await self._store.hook_retry(
                    endpoint.url, event.id, due_at=finished, status=status, error=None
                )
                break
            else:
                due = (
                    finished + self._schedule[attempts] if attempts < len(self._schedule) else None
                )
                log.info(
                    "webhook %s: %s for %s; %s",
                    endpoint.name,
                    error or status,
                    event.event_id,
                    "given up" if due is None else f"again in {due - finished:.0f}s",
                )
                await self._store.hook_retry(
                    endpoint.url, event.id, due_at=due, status=status, error=error
                )
        return len(claimed)


TEST_EVENT = "webhook.test"  # what `sender webhooks test` posts; never kept in the outbox


async def post_test_events(
    endpoints: Sequence[WebhookEndpoint], /
) -> list[tuple[int | None, str | None]]:
    """Post a signed ``webhook.test`` event to each endpoint now: (status, error) each."""
    answers = []
    async with httpx.AsyncClient() as client:
        for endpoint in endpoints:
            now = time.time()
            event = HookEvent(0, new_event_id(), TEST_EVENT, now, {"endpoint": endpoint.name})
            answers.append(await deliver_once(client, endpoint, event, now=now))
    return answers
