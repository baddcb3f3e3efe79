"""A message re-sent after a crash carries the Message-ID of the copy that got through."""

from __future__ import annotations

import asyncio
import email
import signal
from pathlib import Path

import pytest

from sender import Address, LinkSettings, Participant, Sender, SenderSettings
from sender.bulk.runner import BulkRunner, RunSettings
from sender.config import SmtpSettings
from sender.pacing.schedule import Scheduler
from sender.servers.smtpd import Disconnect, ReceivedMessage, Response, SmtpHandler, SmtpServer
from sender.store import MessageState, SqliteStore
from sender.transport import SmtpTransport
from tests.helpers import IDENTITY, UNLIMITED, people_csv, smtp_url, spawn_sender

ROWS = 6


class _FirstDataHangs(SmtpHandler):
    """Records every message at the final dot; the first one never gets its reply."""

    def __init__(self) -> None:
        self.messages: list[ReceivedMessage] = []
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()  # set: the hung reply becomes a dropped connection

    async def on_data(self, message: ReceivedMessage, /) -> Response:
        self.messages.append(message)
        self.arrived.set()
        if len(self.messages) == 1:
            await self.release.wait()  # the client is killed while it waits for this reply
            return Disconnect()
        return None

    def message_ids(self, recipient: str) -> list[str | None]:
        return [
            email.message_from_bytes(m.data)["Message-ID"]
            for m in self.messages
            if recipient in m.recipients
        ]


def _write_csv(path: Path) -> None:
    people_csv(path, [f"user{i}@d{i % 2}.example" for i in range(ROWS)])


async def _sender_cli(tmp_path: Path, *args: str) -> asyncio.subprocess.Process:
    env = {"SENDER_SECRET_KEYS": "message-id-test-key-0123456789abcdef", **IDENTITY}
    return await spawn_sender(tmp_path, *args, env=env)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
async def test_resend_after_sigkill_carries_the_same_message_id(
    tmp_path: Path, workers: int
) -> None:
    """SIGKILL while a message's DATA reply is pending: its re-send has the same Message-ID."""
    _write_csv(tmp_path / "people.csv")
    handler = _FirstDataHangs()
    async with SmtpServer(handler) as server:
        command = [
            "run",
            "people.csv",
            "--smtp",
            smtp_url(server),
            "--concurrency",
            "2",
            "--workers",
            str(workers),
            "--rate",
            "0",
            "--domain-rate",
            "0",
            "--no-validate",
            "--no-progress",
        ]
        first = await _sender_cli(tmp_path, *command)
        try:
            async with asyncio.timeout(60):
                await handler.arrived.wait()
        finally:
            first.send_signal(signal.SIGKILL)
            handler.release.set()  # orphaned worker processes get their answer and exit
            async with asyncio.timeout(60):
                await first.communicate()
        hung = handler.messages[0].recipients[0]
        again = await _sender_cli(tmp_path, *command)
        async with asyncio.timeout(60):
            _, stderr = await again.communicate()
        assert again.returncode == 0, stderr.decode()
    ids = handler.message_ids(hung)
    assert len(ids) == 2, f"{hung} should have been sent twice, got {len(ids)}"
    assert ids[0] is not None
    assert ids[0] == ids[1]
    everyone = {r for m in handler.messages for r in m.recipients}
    assert everyone == {f"user{i}@d{i % 2}.example" for i in range(ROWS)}


async def test_requeued_in_flight_message_is_resent_with_its_message_id(
    tmp_path: Path,
) -> None:
    """A message claimed by a runner that stopped mid-send goes out again with one Message-ID."""
    settings = SenderSettings(
        from_address=Address("noreply@learning.example.com", "Example Academy"),
        links=LinkSettings(secret_keys=("k" * 32,), base_url="https://lms.example.com/login"),
        message_id_domain="mail.learning.example.com",
    )
    store = SqliteStore(tmp_path / "outbox.sqlite3")
    handler = _FirstDataHangs()
    people = [Participant(f"u{i}@d.example", f"U {i}", f"p-{i}", "PY101") for i in range(3)]
    try:
        async with SmtpServer(handler) as server:
            smtp = SmtpTransport(_settings_for(server, timeout=30.0))
            first = BulkRunner(
                Sender(settings, transport=smtp),
                store,
                RunSettings(concurrency=1),
                scheduler=Scheduler(UNLIMITED),
            )
            task = asyncio.create_task(first.run("r-mid", people))
            async with asyncio.timeout(30):
                await handler.arrived.wait()
            task.cancel()  # the runner goes away while the first DATA reply is pending
            with pytest.raises(asyncio.CancelledError):
                await task
            handler.release.set()
            await first.sender.aclose()
            second = BulkRunner(
                Sender(settings, transport=SmtpTransport(_settings_for(server))),
                store,
                RunSettings(concurrency=1),
                scheduler=Scheduler(UNLIMITED),
            )
            report = await second.run("r-mid")
            await second.sender.aclose()
        assert report.counts[MessageState.SENT] == 3
        ids = handler.message_ids("u0@d.example")
        assert len(ids) == 2
        assert ids[0] == ids[1]
        assert ids[0] is not None
        assert ids[0].endswith("@mail.learning.example.com>")
    finally:
        await store.aclose()


def _settings_for(server: SmtpServer, *, timeout: float = 10.0) -> SmtpSettings:
    return SmtpSettings(
        host=server.host,
        port=server.port,
        timeout=timeout,
        pool_size=1,
        local_hostname="localhost",
    )
