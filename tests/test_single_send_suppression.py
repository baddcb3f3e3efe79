"""Single sends meet the suppression list at one choke point: library, CLI, bulk and workers."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from sender import DeliveryStatus, Participant, Sender
from sender.bulk.runner import BulkRunner, RunSettings
from sender.cli import main
from sender.client import open_sender
from sender.pacing.schedule import Scheduler
from sender.store import MessageState, SqliteStore
from sender.testing import RecordingSMTPServer
from sender.transport import SmtpTransport
from tests.helpers import UNLIMITED, sender_settings

T0 = 1_800_000_000.0
SETTINGS = sender_settings("q" * 32)
KARI = Participant("Kari@X.example", "Kari", "p-1", "C")


async def test_open_sender_with_a_store_refuses_suppressed_addresses(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """send_invitation and send_get_link return SUPPRESSED; nothing reaches the server."""
    await store.suppress("kari@x.example", kind="manual", reason="left", now=T0)
    async with open_sender(SETTINGS, smtp=smtp_server.smtp_settings(), store=store) as sender:
        invited = await sender.send_invitation(KARI)
        linked = await sender.send_get_link(KARI)
    assert invited.status is DeliveryStatus.SUPPRESSED
    assert linked.status is DeliveryStatus.SUPPRESSED
    assert smtp_server.messages == ()


async def test_deliver_is_the_choke_point(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """compose then deliver, as an LMS may call them, still checks the list."""
    await store.suppress("kari@x.example", kind="manual", reason="left", now=T0)
    transport = SmtpTransport(smtp_server.smtp_settings())
    async with Sender(SETTINGS, transport=transport, store=store) as sender:
        result = await sender.deliver(sender.compose(KARI))
        other = await sender.deliver(
            sender.compose(Participant("ola@x.example", "Ola", "p-2", "C"))
        )
    assert result.status is DeliveryStatus.SUPPRESSED
    assert other.ok
    assert [m.recipients for m in smtp_server.messages] == [("ola@x.example",)]


@pytest.mark.slow
async def test_worker_processes_never_send_to_a_suppressed_address(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """With workers, the claim's check applies: the suppressed row is recorded, not sent."""
    await store.suppress("KARI@x.example", kind="manual", reason="left", now=T0)
    group = [KARI, *(Participant(f"u{i}@x.example", f"U {i}", f"p-u{i}", "C") for i in range(5))]
    sender = Sender(SETTINGS, transport=SmtpTransport(smtp_server.smtp_settings()))
    runner = BulkRunner(
        sender,
        store,
        RunSettings(concurrency=2, workers=2),
        scheduler=Scheduler(UNLIMITED),
    )
    report = await runner.run("r-workers", group)
    await sender.aclose()
    assert report.counts[MessageState.SUPPRESSED] == 1
    assert report.counts[MessageState.SENT] == 5
    received = Counter(r for m in smtp_server.messages for r in m.recipients)
    assert KARI.email not in received


def test_sender_send_refuses_a_suppressed_address_with_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sender send` to a suppressed address (another spelling) says so and exits 1."""
    monkeypatch.chdir(tmp_path)
    env = {"SENDER_SECRET_KEYS": "single-send-key-0123456789abcdef"}
    runner = CliRunner()
    added = runner.invoke(main, ["suppress", "add", "åse@x.example", "--reason", "left"], env=env)
    assert added.exit_code == 0, added.output
    sent = runner.invoke(
        main,
        ["send", "--to", "ÅSE@x.example", "--name", "Åse", "--participant", "p-1", "--course", "C"],
        env=env,
    )
    assert sent.exit_code == 1, sent.output
    assert "suppress" in sent.output + sent.stderr
    assert "Traceback" not in sent.output + sent.stderr
    assert [p for p in tmp_path.rglob("*") if p.is_file() and p.parent.name in ("new", "cur")] == []
