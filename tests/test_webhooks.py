"""Webhook deliveries reach a real receiver on loopback, signed, retried with the same id."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from sender.config import WebhookEndpoint, load_config
from sender.configured import delivering
from sender.models import Participant, SmtpReply
from sender.service.serve import Listener
from sender.store import BounceRecord, MessageState, Outcome, RunState, SqliteStore
from sender.store.base import NewRow
from sender.webhooks import Deliverer

SECRET = "whsec_" + base64.b64encode(b"receiver-secret-0123456789abcdef").decode()
RUN = "hooks-run"
T0 = time.time()  # events of now: a new endpoint is given the last three days'


class Receiver:
    """An ASGI app that keeps each request and answers the next status of ``answers``
    (200 once they run out)."""

    def __init__(self, *answers: int) -> None:
        self.answers = list(answers)
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.arrived = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.received.append((headers, body))
        self.arrived.set()
        status = self.answers.pop(0) if self.answers else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with aclosing(SqliteStore(tmp_path / "outbox.sqlite3")) as opened:
        await opened.create_run(RUN, template="invitation", source="p.csv", now=T0)
        yield opened


async def send_one(store: SqliteStore) -> None:
    """One participant of RUN, recorded as sent: a message.sent event."""
    person = Participant(
        email="ada@example.org", name="Ada", participant_id="p1", course_id="PY101"
    )
    await store.add_rows(RUN, [NewRow(row=2, participant=person)])
    claimed = await store.claim(RUN, "example.org", now=T0, owner="w")
    assert claimed is not None
    await store.record(
        claimed.id,
        Outcome(
            state=MessageState.SENT,
            at=T0,
            reply=SmtpReply(250, "2.0.0", "ok"),
            message_id="<m1@skolen.example.org>",
        ),
    )


async def until(condition: Any, deliverer: Deliverer) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    deliverer.stop()
    raise AssertionError("not reached in 5 s")


async def test_a_delivery_answered_500_is_retried_with_the_same_id_and_verifies(
    store: SqliteStore,
) -> None:
    """message.sent reaches the receiver, which answers 500 once: the retry carries the
    same webhook-id, and both verify with the Standard Webhooks library."""
    await send_one(store)
    receiver = Receiver(500)
    async with Listener(receiver) as listening:
        endpoint = WebhookEndpoint(url=f"{listening.url}/hooks", secrets=(SECRET,))
        deliverer = Deliverer(store, [endpoint], schedule=(0.0,), poll=0.02)
        task = asyncio.create_task(deliverer.run())
        await until(lambda: len(receiver.received) >= 2, deliverer)
        deliverer.stop()
        await asyncio.wait_for(task, 10)
    (first_headers, _), (headers, body) = receiver.received[:2]
    assert first_headers["webhook-id"] == headers["webhook-id"]
    payload = Webhook(SECRET).verify(body.decode(), headers)
    assert payload["type"] == "message.sent"
    assert payload["data"] == {
        "run_id": RUN,
        "participant_id": "p1",
        "course_id": "PY101",
        "message_id": "<m1@skolen.example.org>",
        "email": "ada@example.org",
    }
    (state,) = await store.hook_endpoints()
    assert (state.pending, state.delivered, state.failed) == (0, 1, 0)


async def test_410_disables_the_endpoint_and_replay_enables_it(store: SqliteStore) -> None:
    await send_one(store)
    await store.set_run_state(RUN, RunState.DONE, now=T0 + 1)
    receiver = Receiver(410)
    async with Listener(receiver) as listening:
        endpoint = WebhookEndpoint(url=f"{listening.url}/h", secrets=(SECRET,))
        async with httpx.AsyncClient() as client:
            deliverer = Deliverer(store, [endpoint], client=client, schedule=(0.0,))
            await deliverer.turn(client, endpoint)
            await deliverer.turn(client, endpoint)
            assert len(receiver.received) == 1
            (state,) = await store.hook_endpoints()
            assert state.disabled_reason == "410 Gone"
            assert await store.replay_hook_events(endpoint.url, since=0, now=T0) == 2
            await deliverer.turn(client, endpoint)
    types = [json.loads(body)["type"] for _, body in receiver.received]
    assert types == ["message.sent", "message.sent", "run.finished"]


async def test_a_slow_endpoint_does_not_hold_up_another(store: SqliteStore) -> None:
    """One endpoint that never answers in time; the other still gets the event."""
    await send_one(store)
    stalled = asyncio.Event()
    release = asyncio.Event()

    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await Receiver()(scope, receive, send)
            return
        stalled.set()
        await asyncio.wait_for(release.wait(), 30)

    fast = Receiver()
    async with Listener(slow) as slow_at, Listener(fast) as fast_at:
        endpoints = [
            WebhookEndpoint(url=slow_at.url, secrets=(SECRET,), timeout=20, name="webhooks[1]"),
            WebhookEndpoint(url=fast_at.url, secrets=(SECRET,), name="webhooks[2]"),
        ]
        deliverer = Deliverer(store, endpoints, poll=0.02)
        task = asyncio.create_task(deliverer.run())
        await until(lambda: stalled.is_set() and bool(fast.received), deliverer)
        deliverer.stop()
        release.set()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    Webhook(SECRET).verify(fast.received[0][1].decode(), fast.received[0][0])


async def test_a_worker_delivers_a_runs_sent_and_bounced_events_from_sender_toml(
    store: SqliteStore, workdir: Path
) -> None:
    """[[webhooks]] in sender.toml: the drain's deliverer (as in `sender worker` and
    `sender serve`) posts message.sent and message.bounced; the receiver answers 500
    once, and the retry on the real schedule (5 s) verifies under the whsec_ secret."""
    await send_one(store)
    message = await store.lookup(RUN, "p1")
    assert message is not None
    bounce = BounceRecord(
        fingerprint="b1",
        address="ada@example.org",
        kind="hard",
        status="5.1.1",
        diagnostic="550 5.1.1 user unknown",
        reason="user_unknown",
        at=T0,
        message=message.id,
    )
    assert await store.add_bounce(bounce)
    receiver = Receiver(500)
    async with Listener(receiver) as listening:
        toml = (
            f'[[webhooks]]\nurl = "{listening.url}/lms"\nsecret = "{SECRET}"\n'
            'events = ["message.sent", "message.bounced"]\n'
        )
        await asyncio.to_thread(Path("sender.toml").write_text, toml, encoding="utf-8")
        config = load_config()
        async with delivering(config, store):
            for _ in range(3000):  # the retry is due 5 s after the 500
                if len(receiver.received) >= 3:
                    break
                await asyncio.sleep(0.01)
    webhook = Webhook(SECRET)
    verified = [(h["webhook-id"], webhook.verify(b.decode(), h)) for h, b in receiver.received]
    sent = [(id_, event) for id_, event in verified if event["type"] == "message.sent"]
    bounced = [event for _, event in verified if event["type"] == "message.bounced"]
    assert len(verified) == 3  # the bounce is not held up behind the retry
    assert len(sent) == 2
    assert sent[0][0] == sent[1][0]  # the retry keeps its webhook-id
    assert bounced[0]["data"]["participant_id"] == "p1"
    assert bounced[0]["data"]["reason"] == "user_unknown"
