"""InboundServer: the listener for bounces and calendar replies, over real SMTP on loopback."""

from __future__ import annotations

import asyncio
import logging
import mailbox
from pathlib import Path

import aiosmtplib
import pytest

from sender.config import SmtpSecurity, SmtpSettings
from sender.errors import ConfigurationError
from sender.models import DeliveryStatus, Envelope, RecipientResult
from sender.servers.inbound import InboundMail, InboundServer, Route
from sender.transport import SmtpTransport

BOUNCE_DOMAIN = "bounce.example.com"
REPLY_ADDRESS = "invitation@calendar.example.com"
VERP = "bounces+abc@bounce.example.com"

MESSAGE = (
    b"From: Mail Delivery System <mailer-daemon@mx.example.org>\r\n"
    b"To: bounces+abc@bounce.example.com\r\n"
    b"Subject: Undelivered Mail Returned to Sender\r\n"
    b"\r\n"
    b"secret body line\r\n"
    b".a line that starts with a dot\r\n"
)


# Seconds a client waits for each reply: a kept message is synced to disk first, and a
# loaded CI machine's disk can take seconds to do it (this is a test of behaviour, not speed).
REPLY_WAIT = 30.0


class Inbox:
    """An on_mail handler that records what it is given, or fails when told to."""

    def __init__(self, *, fail: bool = False) -> None:
        self.mails: list[InboundMail] = []
        self.fail = fail

    async def __call__(self, mail: InboundMail) -> None:
        if self.fail:
            raise RuntimeError("classifier crashed")
        self.mails.append(mail)


def make_server(inbox: Inbox, keep_dir: Path, *, max_size: int = 1024 * 1024) -> InboundServer:
    return InboundServer(
        bounce_domain=BOUNCE_DOMAIN,
        reply_addresses=[REPLY_ADDRESS],
        on_mail=inbox,
        keep_dir=keep_dir,
        max_size=max_size,
    )


async def send_through(
    inbox: Inbox, keep_dir: Path, envelope: Envelope
) -> tuple[RecipientResult, InboundServer]:
    """Start a server for ``inbox``, send MESSAGE to it with sender's SMTP transport, stop it."""
    async with make_server(inbox, keep_dir) as server:
        settings = SmtpSettings(
            host=server.host,
            port=server.port,
            security=SmtpSecurity.NONE,
            timeout=REPLY_WAIT,
            local_hostname="localhost",
        )
        async with SmtpTransport(settings) as transport:
            [result] = await transport.send(envelope, MESSAGE)
    return result, server


async def send_raw(
    server: InboundServer, mail_from: str, recipients: list[str], data: bytes
) -> tuple[list[int], int | None]:
    """One SMTP transaction with aiosmtplib (the null sender ``""`` included).

    Returns the RCPT TO reply codes and the DATA reply code (None without an accepted RCPT).
    """
    async with aiosmtplib.SMTP(
        hostname=server.host, port=server.port, timeout=REPLY_WAIT
    ) as client:
        await client.mail(mail_from)
        codes: list[int] = []
        for recipient in recipients:
            try:
                reply = await client.rcpt(recipient)
            except aiosmtplib.SMTPRecipientRefused as exc:
                codes.append(exc.code)
            else:
                codes.append(reply.code)
        if not any(200 <= code < 300 for code in codes):
            return codes, None
        try:
            reply = await client.data(data)
        except aiosmtplib.SMTPDataError as exc:
            return codes, exc.code
        return codes, reply.code


async def test_bounce_with_null_sender_reaches_on_mail(tmp_path: Path) -> None:
    """A bounce to a VERP address with MAIL FROM:<> arrives as route BOUNCE with the exact bytes."""
    inbox = Inbox()
    async with make_server(inbox, tmp_path) as server:
        codes, data_code = await send_raw(server, "", [VERP], MESSAGE)
    assert (codes, data_code) == ([250], 250)
    assert inbox.mails == [
        InboundMail(
            route=Route.BOUNCE,
            recipient="bounces+abc@bounce.example.com",
            mail_from="",
            data=MESSAGE,
        )
    ]
    assert (server.accepted, server.refused, server.kept) == (1, 0, 0)


async def test_reply_address_matches_case_insensitively(tmp_path: Path) -> None:
    """Mail to INVITATION@calendar.example.com arrives as route REPLY, recipient lower-cased."""
    inbox = Inbox()
    result, _server = await send_through(
        inbox, tmp_path, Envelope("ada@example.org", ("INVITATION@Calendar.Example.com",))
    )
    assert result.status is DeliveryStatus.ACCEPTED
    [mail] = inbox.mails
    assert (mail.route, mail.recipient, mail.mail_from) == (
        Route.REPLY,
        REPLY_ADDRESS,
        "ada@example.org",
    )


async def test_other_domain_is_refused_as_relaying(tmp_path: Path) -> None:
    """RCPT TO an address outside the bounce domain and reply list gets 550 5.7.1, no delivery."""
    inbox = Inbox()
    result, server = await send_through(
        inbox, tmp_path, Envelope("spammer@example.net", ("other@elsewhere.example",))
    )
    assert result.status is DeliveryStatus.PERMANENT
    assert result.reply is not None
    assert (result.reply.code, result.reply.enhanced_status, result.reply.text) == (
        550,
        "5.7.1",
        "relaying denied",
    )
    assert inbox.mails == []
    assert server.refused == 1


async def test_subdomain_of_bounce_domain_is_refused(tmp_path: Path) -> None:
    """Only the bounce domain itself is accepted, not its subdomains or look-alikes."""
    inbox = Inbox()
    async with make_server(inbox, tmp_path) as server:
        client = aiosmtplib.SMTP(hostname=server.host, port=server.port, timeout=REPLY_WAIT)
        async with client:
            await client.mail("")
            for address in ("x@sub.bounce.example.com", "x@evilbounce.example.com"):
                with pytest.raises(aiosmtplib.SMTPRecipientRefused) as info:
                    await client.rcpt(address)
                assert info.value.code == 550
    assert server.refused == 2


async def test_only_accepted_recipients_are_delivered(tmp_path: Path) -> None:
    """One transaction with a bounce and a refused recipient delivers only the bounce."""
    inbox = Inbox()
    async with make_server(inbox, tmp_path) as server:
        codes, data_code = await send_raw(server, "", [VERP, "other@elsewhere.example"], MESSAGE)
    assert (codes, data_code) == ([250, 550], 250)
    assert [(m.route, m.recipient) for m in inbox.mails] == [
        (Route.BOUNCE, "bounces+abc@bounce.example.com")
    ]


async def test_each_recipient_is_its_own_mail(tmp_path: Path) -> None:
    """A message for a bounce address and the reply address reaches on_mail twice, once each."""
    inbox = Inbox()
    async with make_server(inbox, tmp_path) as server:
        await send_raw(server, "", [VERP, REPLY_ADDRESS], MESSAGE)
    assert [(m.route, m.recipient, m.data) for m in inbox.mails] == [
        (Route.BOUNCE, "bounces+abc@bounce.example.com", MESSAGE),
        (Route.REPLY, REPLY_ADDRESS, MESSAGE),
    ]
    assert server.accepted == 2


async def test_failing_handler_keeps_the_raw_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """When on_mail raises, the client still gets 250 and the raw bytes land in unprocessed/."""
    caplog.set_level(logging.DEBUG, logger="sender")
    inbox = Inbox(fail=True)
    async with make_server(inbox, tmp_path) as server:
        codes, data_code = await send_raw(server, "", [VERP], MESSAGE)
    assert (codes, data_code) == ([250], 250)
    box = mailbox.Maildir(tmp_path / "unprocessed", create=False)
    assert [box.get_bytes(key) for key in box.iterkeys()] == [MESSAGE]
    [kept] = box
    assert kept["Subject"] == "Undelivered Mail Returned to Sender"
    assert (server.accepted, server.kept) == (0, 1)
    assert server.unprocessed_dir == tmp_path / "unprocessed"
    assert "classifier crashed" in caplog.text
    assert "secret body line" not in caplog.text
    assert "bounces+abc" not in caplog.text


async def test_oversize_message_is_refused(tmp_path: Path) -> None:
    """A message over max_size, sent or declared with SIZE=, is refused with 552, not delivered."""
    inbox = Inbox()
    big = MESSAGE + (b"x" * 98 + b"\r\n") * 20
    async with make_server(inbox, tmp_path, max_size=1000) as server:
        assert await send_raw(server, "", [VERP], big) == ([250], 552)
        assert await send_raw(server, "", [VERP], MESSAGE) == ([250], 250)
        async with aiosmtplib.SMTP(
            hostname=server.host, port=server.port, timeout=REPLY_WAIT
        ) as client:
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as info:
                await client.mail("", options=["SIZE=5000"])
    assert info.value.code == 552
    assert [m.data for m in inbox.mails] == [MESSAGE]


async def test_aclose_with_a_client_still_connected(tmp_path: Path) -> None:
    """aclose() returns promptly and stops listening while a client sits idle on a connection."""
    async with make_server(Inbox(), tmp_path) as server:
        port = server.port
        client = aiosmtplib.SMTP(hostname=server.host, port=port, timeout=5)
        await client.connect()
        await client.ehlo()
        async with asyncio.timeout(5):
            await server.aclose()
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await client.noop()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


def test_nothing_to_accept_is_a_configuration_error(tmp_path: Path) -> None:
    """Without a bounce domain or a reply address the server would refuse everything."""
    with pytest.raises(ConfigurationError) as info:
        InboundServer(bounce_domain=None, reply_addresses=(), on_mail=Inbox(), keep_dir=tmp_path)
    assert info.value.setting == "bounce_domain"


@pytest.mark.parametrize(
    ("options", "setting"),
    [
        ({"bounce_domain": "not a domain"}, "bounce_domain"),
        ({"reply_addresses": ["no-at-sign"]}, "reply_addresses"),
        ({"reply_addresses": REPLY_ADDRESS}, "reply_addresses"),
        ({"max_size": 0}, "max_size"),
        ({"host": "0.0.0.0"}, "host"),  # noqa: S104 - the point of the test
    ],
)
def test_bad_settings_are_refused_at_construction(
    tmp_path: Path, options: dict[str, object], setting: str
) -> None:
    """Malformed domains, addresses, sizes and a non-loopback host raise ConfigurationError."""
    arguments: dict[str, object] = {
        "bounce_domain": BOUNCE_DOMAIN,
        "on_mail": Inbox(),
        "keep_dir": tmp_path,
        **options,
    }
    with pytest.raises(ConfigurationError) as info:
        InboundServer(**arguments)  # type: ignore[arg-type]
    assert info.value.setting == setting


async def test_reply_only_server_refuses_bounce_domain(tmp_path: Path) -> None:
    """With no bounce domain configured, only the reply addresses are accepted."""
    inbox = Inbox()
    server = InboundServer(
        bounce_domain=None, reply_addresses=[REPLY_ADDRESS], on_mail=inbox, keep_dir=tmp_path
    )
    async with server:
        codes, data_code = await send_raw(server, "", [VERP, REPLY_ADDRESS], MESSAGE)
    assert (codes, data_code) == ([550, 250], 250)
    assert [m.route for m in inbox.mails] == [Route.REPLY]
