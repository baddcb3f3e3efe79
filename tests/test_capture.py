"""CaptureServer: sender's own loopback SMTP server that files mail into a Maildir."""

from __future__ import annotations

import asyncio
import mailbox
from pathlib import Path

import pytest

from sender.config import SmtpSecurity
from sender.errors import ConfigurationError
from sender.models import DeliveryStatus, Envelope
from sender.servers.capture import CaptureServer
from sender.transport import SmtpTransport

MESSAGE = (
    b"From: LMS <noreply@lms.example>\r\n"
    b"Subject: Welcome\r\n"
    b"\r\n"
    b"Line one\r\n"
    b".starts with a dot\r\n"
    b"Gr\xc3\xbc\xc3\x9fe\r\n"
)


def stored_files(maildir: Path) -> list[bytes]:
    return sorted(path.read_bytes() for path in (maildir / "new").iterdir())


async def test_each_recipient_gets_its_own_file(tmp_path: Path) -> None:
    """One Maildir file per recipient, with Return-Path and Delivered-To over the exact bytes."""
    maildir = tmp_path / "mail"
    async with (
        CaptureServer(maildir) as capture,
        SmtpTransport(capture.smtp_settings()) as transport,
    ):
        results = await transport.send(
            Envelope("bounces@lms.example", ("ada@example.org", "bob@example.org")), MESSAGE
        )
    assert [r.status for r in results] == [DeliveryStatus.ACCEPTED] * 2
    assert stored_files(maildir) == [
        b"Return-Path: <bounces@lms.example>\r\nDelivered-To: ada@example.org\r\n" + MESSAGE,
        b"Return-Path: <bounces@lms.example>\r\nDelivered-To: bob@example.org\r\n" + MESSAGE,
    ]
    assert capture.stored == 2


async def test_maildir_and_its_parents_are_created(tmp_path: Path) -> None:
    """A Maildir path that does not exist yet is created, with tmp, new and cur."""
    maildir = tmp_path / "deep" / "er" / "Maildir"
    async with CaptureServer(maildir):
        pass
    assert sorted(p.name for p in maildir.iterdir()) == ["cur", "new", "tmp"]


async def test_smtputf8_and_8bit_mail_is_captured(tmp_path: Path) -> None:
    """Internationalized addresses (SMTPUTF8) and 8-bit bodies (8BITMIME) are accepted."""
    async with (
        CaptureServer(tmp_path) as capture,
        SmtpTransport(capture.smtp_settings()) as transport,
    ):
        [result] = await transport.send(
            Envelope("bounces@lms.example", ("jörg@exämple.org",), smtputf8=True), MESSAGE
        )
    assert result.status is DeliveryStatus.ACCEPTED
    [stored] = stored_files(tmp_path)
    assert stored.startswith(
        "Return-Path: <bounces@lms.example>\r\nDelivered-To: jörg@exämple.org\r\n".encode()
    )


async def test_captured_mail_reads_back_with_mailbox(tmp_path: Path) -> None:
    """The stdlib mailbox module reads the capture back, headers included."""
    async with (
        CaptureServer(tmp_path) as capture,
        SmtpTransport(capture.smtp_settings()) as transport,
    ):
        await transport.send(Envelope("bounces@lms.example", ("ada@example.org",)), MESSAGE)
    [message] = list(mailbox.Maildir(tmp_path, create=False))
    assert message["Delivered-To"] == "ada@example.org"
    assert message["Return-Path"] == "<bounces@lms.example>"
    assert message["Subject"] == "Welcome"


async def test_accepted_reply_names_a_queue_id(tmp_path: Path) -> None:
    """The DATA reply carries a queue id, like a real MTA's."""
    async with (
        CaptureServer(tmp_path) as capture,
        SmtpTransport(capture.smtp_settings()) as transport,
    ):
        [result] = await transport.send(
            Envelope("bounces@lms.example", ("ada@example.org",)), MESSAGE
        )
    assert result.reply is not None
    assert (result.reply.code, result.reply.text) == (250, "Ok: queued as C1")


async def test_settings_point_at_the_server(tmp_path: Path) -> None:
    """smtp_settings() names the loopback host and ephemeral port, in plain SMTP."""
    async with CaptureServer(tmp_path) as capture:
        settings = capture.smtp_settings()
        assert (settings.host, settings.port) == ("127.0.0.1", capture.port)
        assert capture.port > 0
        assert settings.security is SmtpSecurity.NONE


async def test_stopped_server_no_longer_listens(tmp_path: Path) -> None:
    """After the context exits, the port refuses connections."""
    async with CaptureServer(tmp_path) as capture:
        port = capture.port
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


def test_capture_refuses_to_listen_beyond_loopback(tmp_path: Path) -> None:
    """The capture server only ever binds to a loopback address."""
    with pytest.raises(ConfigurationError):
        CaptureServer(tmp_path, host="0.0.0.0")  # noqa: S104 - the point of the test
