"""A recipient refused in the SMTP dialogue is a bounce; copies of one bounce count once."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import aiosmtplib
import pytest

from sender import DeliveryStatus, Participant, Sender
from sender.bulk.runner import BulkRunner, RunReport, RunSettings
from sender.client import open_sender
from sender.config import BouncePolicy
from sender.feedback.suppression import budget_reason, ingest_bounce
from sender.pacing.schedule import Scheduler
from sender.servers.inbound import InboundServer
from sender.store import MessageState, SqliteStore
from sender.testing import RecordingSMTPServer, Stage
from sender.transport import SmtpTransport
from tests.helpers import UNLIMITED, bounce_ingester, dsn, sender_settings

SETTINGS = sender_settings("r" * 32)
BOUNCE_DOMAIN = "bounce.learning.example.com"
POLICY = BouncePolicy()
FAILED, DEFERRED = MessageState.FAILED, MessageState.DEFERRED


def people(count: int) -> list[Participant]:
    return [
        Participant(f"user{i}@d{i % 2}.example", f"User {i}", f"p-{i}", "C") for i in range(count)
    ]


def runner_for(
    server: RecordingSMTPServer, store: SqliteStore, *, workers: int = 1, **kw: object
) -> BulkRunner:
    sender = Sender(replace(SETTINGS, **kw), transport=SmtpTransport(server.smtp_settings()))  # type: ignore[arg-type]
    return BulkRunner(
        sender,
        store,
        RunSettings(concurrency=2, workers=workers),
        scheduler=Scheduler(UNLIMITED),
    )


async def run_once(
    server: RecordingSMTPServer,
    store: SqliteStore,
    run_id: str,
    group: list[Participant],
    *,
    workers: int = 1,
) -> RunReport:
    """A fresh runner through ``server`` sends ``group`` as ``run_id``, then closes its sender."""
    runner = runner_for(server, store, workers=workers)
    report = await runner.run(run_id, group)
    await runner.sender.aclose()
    return report


async def refused_once(
    server: RecordingSMTPServer, store: SqliteStore, stage: Stage, reply: str, run_id: str
) -> RunReport:
    """Run user0@d0.example alone, ``stage`` answered once with ``reply``."""
    server.reply(stage, reply, times=1)
    return await run_once(server, store, run_id, people(1))


@pytest.mark.parametrize(
    "workers",
    [
        pytest.param(1, id="in-process"),
        pytest.param(2, id="worker-processes", marks=pytest.mark.slow),
    ],
)
async def test_a_5xx_at_rcpt_in_a_run_is_a_hard_bounce_and_the_next_run_skips_it(
    smtp_server: RecordingSMTPServer, store: SqliteStore, workers: int
) -> None:
    """550 5.1.1 at RCPT: failed, kept as a hard bounce of that message, suppressed next run."""
    group = people(4)
    gone = group[2]
    smtp_server.reply(Stage.RCPT, "550 5.1.1 User unknown", address=gone.email)
    report = await run_once(smtp_server, store, "r-one", group, workers=workers)
    assert report.counts[MessageState.FAILED] == 1
    (kept,) = await store.bounces()
    record = await store.lookup("r-one", gone.participant_id)
    assert record is not None
    assert (kept.address, kept.kind, kept.status, kept.reason, kept.source) == (
        gone.email,
        "hard",
        "5.1.1",
        "user_unknown",
        "smtp",
    )
    assert (kept.message, kept.participant_id) == (record.id, gone.participant_id)
    assert gone.email in await store.suppressed([gone.email])
    assert await store.hard_bounces_since(0) == 1
    second = await run_once(smtp_server, store, "r-two", group)
    assert second.counts[MessageState.SUPPRESSED] == 1
    assert second.counts[MessageState.SENT] == 3
    rcpts = Counter(r for m in smtp_server.messages for r in m.recipients)
    assert gone.email not in rcpts


@pytest.mark.parametrize(
    ("stage", "reply", "state", "kept"),
    [
        (Stage.DATA, "554 5.7.1 Message rejected by policy", FAILED, [("hard", "policy")]),
        (Stage.RCPT, "451 4.7.1 Greylisted, try again later", DEFERRED, [("soft", "greylisted")]),
        (Stage.MAIL, "550 5.7.1 Sender domain blocked", FAILED, []),
    ],
    ids=[
        "5xx-at-data-is-a-hard-policy-bounce",
        "4xx-defers-and-is-at-most-a-soft-bounce",
        "5xx-to-mail-from-is-about-the-sender-not-the-recipient",
    ],
)
async def test_a_refusal_is_kept_as_the_bounce_it_is(
    smtp_server: RecordingSMTPServer,
    store: SqliteStore,
    stage: Stage,
    reply: str,
    state: MessageState,
    kept: list[tuple[str, str]],
) -> None:
    """The refused message's state and its bounces (kind, reason); no hard one: no suppression."""
    report = await refused_once(smtp_server, store, stage, reply, f"r-{stage}")
    assert report.counts[state] == 1
    bounces = await store.bounces()
    assert [(b.kind, b.reason) for b in bounces] == kept
    assert {b.address for b in bounces} <= {"user0@d0.example"}
    if all(kind != "hard" for kind, _reason in kept):
        assert await store.suppressed(["user0@d0.example"]) == {}
        assert await store.hard_bounces_since(0) == 0


async def test_a_single_send_refused_with_5xx_is_a_bounce_and_suppresses(
    smtp_server: RecordingSMTPServer, store: SqliteStore, tmp_path: Path
) -> None:
    """A single send refused at RCPT keeps a hard bounce; the next single send is suppressed."""
    kari = Participant("kari@x.example", "Kari", "p-7", "C")
    smtp_server.reply(Stage.RCPT, "550 5.1.1 No such user", address=kari.email)
    async with open_sender(SETTINGS, smtp=smtp_server.smtp_settings(), store=store) as sender:
        first = await sender.send_invitation(kari)
        second = await sender.send_get_link(kari)
    assert first.status is DeliveryStatus.PERMANENT
    assert second.status is DeliveryStatus.SUPPRESSED
    (kept,) = await store.bounces()
    assert (kept.address, kept.kind, kept.participant_id) == (kari.email, "hard", "p-7")


# --- 2.1: copies of one bounce --------------------------------------------------------------


def copy(recipient: str, n: int) -> bytes:
    """The ``n``-th copy of one bounce for ``recipient``: its own Message-ID, as copies have."""
    return dsn(recipient, message_id=f"copy-{n}@mx.d0.example")


async def test_ninety_bounce_copies_for_one_address_leave_the_budget_unspent(
    smtp_server: RecordingSMTPServer, store: SqliteStore, tmp_path: Path
) -> None:
    """90 bounces for one return path, over SMTP to the listener: one address, budget unspent."""
    runner = runner_for(smtp_server, store, bounce_domain=BOUNCE_DOMAIN)
    await runner.run("r-storm", people(2))
    await runner.sender.aclose()
    signer = runner.sender.return_paths
    assert signer is not None
    target = smtp_server.messages[0]

    on_mail = bounce_ingester(store, signer, POLICY)

    async with (
        InboundServer(
            bounce_domain=BOUNCE_DOMAIN, on_mail=on_mail, keep_dir=tmp_path / "inbound"
        ) as server,
        aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, timeout=10) as client,
    ):
        for n in range(90):
            await client.sendmail("", [target.mail_from], copy(target.recipients[0], n))
    assert len(await store.bounces()) == 90  # all kept, for the report
    assert await store.hard_bounces_since(0) == 1
    assert await budget_reason(store, policy=POLICY, now=time.time()) is None
    report = await run_once(smtp_server, store, "r-after", people(2))
    assert report.run.paused_reason is None
    assert report.counts[MessageState.SUPPRESSED] == 1


async def test_bounces_for_one_address_without_return_paths_count_once(
    store: SqliteStore,
) -> None:
    """Ingested without a return path (intake of saved files), 90 copies are one address."""
    now = time.time()
    for n in range(90):
        await ingest_bounce(
            store, copy("Gone@D0.example", n), return_paths=None, policy=POLICY, now=now
        )
    assert await store.hard_bounces_since(0) == 1
    assert await budget_reason(store, policy=POLICY, now=now) is None
