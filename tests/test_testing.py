"""The public test helpers (and the smtpd server under them), spoken to over raw sockets."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import pytest

from sender import testing
from sender.clock import Clock
from sender.config import SmtpSecurity
from sender.errors import ConfigurationError
from sender.models import SmtpReply
from sender.servers.smtpd import SmtpServer
from sender.testing import ManualClock, RecordingSMTPServer, Stage


class RawClient:
    """A bare SMTP client over asyncio streams: it sends exactly what a test writes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def reply(self) -> str:
        """Read one (possibly multi-line) reply; return its lines joined by newlines."""
        lines: list[str] = []
        async with asyncio.timeout(2):
            while True:
                line = (await self.reader.readline()).decode()
                if not line:
                    raise ConnectionError("server closed the connection")
                lines.append(line.rstrip("\r\n"))
                if line[3:4] != "-":
                    return "\n".join(lines)

    async def command(self, line: str) -> str:
        self.writer.write(line.encode() + b"\r\n")
        return await self.reply()

    async def at_eof(self) -> bool:
        """Whether the server closed the connection (waits briefly for it)."""
        async with asyncio.timeout(2):
            return await self.reader.read() == b""


@asynccontextmanager
async def raw_client(server: RecordingSMTPServer | SmtpServer) -> AsyncIterator[RawClient]:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        yield RawClient(reader, writer)
    finally:
        writer.close()
        with suppress(ConnectionError):
            await writer.wait_closed()


async def greeted(client: RawClient) -> RawClient:
    assert (await client.reply()).startswith("220 ")
    assert (await client.command("EHLO client.example")).startswith("250")
    return client


async def mail_from(client: RawClient) -> RawClient:
    """Greeted, and MAIL FROM accepted: the client's next command is RCPT TO."""
    await greeted(client)
    assert (await client.command("MAIL FROM:<lms@example.org>")).startswith("250")
    return client


async def start_transaction(client: RawClient, rcpt: str = "ada@example.org") -> None:
    await mail_from(client)
    assert (await client.command(f"RCPT TO:<{rcpt}>")).startswith("250")


# -- ManualClock ------------------------------------------------------------------------


def test_manual_clock_stands_still() -> None:
    """Without advance() or sleep() neither clock moves."""
    clock = ManualClock(now=100.0, monotonic=5.0)
    assert (clock.now(), clock.monotonic()) == (100.0, 5.0)
    assert (clock.now(), clock.monotonic()) == (100.0, 5.0)


def test_advance_moves_both_clocks() -> None:
    """advance() moves wall time and monotonic time together."""
    clock = ManualClock(now=100.0, monotonic=5.0)
    clock.advance(2.5)
    assert (clock.now(), clock.monotonic()) == (102.5, 7.5)


@pytest.mark.parametrize("seconds", [-1.0, math.nan])
def test_advance_refuses_to_go_back(seconds: float) -> None:
    """Time never runs backwards (nor to NaN)."""
    with pytest.raises(ValueError, match="forward"):
        ManualClock().advance(seconds)


async def test_sleep_advances_records_and_yields() -> None:
    """sleep() advances by the requested time, remembers it, and lets other tasks run."""
    clock = ManualClock(monotonic=0.0)
    ran: list[str] = []

    async def other() -> None:
        ran.append("other")

    task = asyncio.create_task(other())
    await clock.sleep(30)
    assert ran == ["other"]
    assert clock.monotonic() == 30
    await clock.sleep(-1)
    assert clock.sleeps == [30, 0.0]
    await task


async def test_settle_waits_for_the_timers_advance_woke() -> None:
    """A background timer that does real-time work each time it wakes has done it by the time
    settle() returns, for every advance; without settle() the test would run ahead of it."""
    clock = ManualClock(monotonic=0.0)
    beats: list[float] = []

    async def renew() -> None:
        for _ in range(50):
            await clock.idle(10.0)
            await asyncio.sleep(0.01)  # a round trip to a shared store
            beats.append(clock.monotonic())

    task = asyncio.create_task(renew())
    await asyncio.sleep(0)
    clock.advance(10.0)
    assert beats == []  # advance() only wakes it
    await clock.settle()
    assert beats == [10.0]
    for step in range(2, 6):
        clock.advance(10.0)
        await clock.settle()
        assert beats[-1] == step * 10.0
    task.cancel()


async def test_settle_returns_when_a_woken_timer_ends_and_gives_up_on_a_busy_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A timer that ends after waking counts as settled; one that stays busy makes settle()
    fail after SETTLE_LIMIT, saying so, rather than hang the test."""
    clock = ManualClock(monotonic=0.0)
    ended = asyncio.create_task(clock.idle(1.0))
    await asyncio.sleep(0)
    clock.advance(1.0)
    await clock.settle()
    assert ended.done()

    async def stuck() -> None:
        await clock.idle(1.0)
        await asyncio.sleep(3600)

    task = asyncio.create_task(stuck())
    await asyncio.sleep(0)
    clock.advance(1.0)
    monkeypatch.setattr(testing, "SETTLE_LIMIT", 0.05)
    with pytest.raises(TimeoutError, match="1 timer"):
        await clock.settle()
    task.cancel()


def test_manual_clock_is_a_clock() -> None:
    """ManualClock satisfies the Clock protocol sender's code expects."""
    clock: Clock = ManualClock()
    assert clock.now() > 0


# -- recording ----------------------------------------------------------------------------


async def test_records_envelope_options_and_unstuffed_data(
    smtp_server: RecordingSMTPServer,
) -> None:
    """A received message keeps MAIL FROM, RCPTs, options and the data with dots unstuffed."""
    async with raw_client(smtp_server) as client:
        await greeted(client)
        await client.command("MAIL FROM:<lms@example.org> SMTPUTF8 BODY=8BITMIME")
        await client.command("RCPT TO:<ada@example.org>")
        await client.command("RCPT TO:<bob@example.org>")
        assert (await client.command("DATA")).startswith("354")
        reply = await client.command("Subject: x\r\n\r\n..dot\r\nend\r\n.")
    assert reply == "250 2.0.0 Ok: queued as Q1"
    [message] = smtp_server.messages
    assert message.mail_from == "lms@example.org"
    assert message.recipients == ("ada@example.org", "bob@example.org")
    assert message.mail_options == ("SMTPUTF8", "BODY=8BITMIME")
    assert message.smtputf8
    assert message.data == b"Subject: x\r\n\r\n.dot\r\nend\r\n"
    assert message.session.connection_id == 1
    assert message.session.tls is False


async def test_connections_are_counted(smtp_server: RecordingSMTPServer) -> None:
    """Every accepted connection is counted and described, even one that never sends."""
    async with raw_client(smtp_server) as first, raw_client(smtp_server) as second:
        await first.reply()
        await second.reply()
    assert smtp_server.connections_opened == 2
    assert [s.connection_id for s in smtp_server.sessions] == [1, 2]
    assert smtp_server.sessions[0].peer.startswith("127.0.0.1:")


async def test_clear_forgets_messages_and_script(smtp_server: RecordingSMTPServer) -> None:
    """clear() empties the record and the script."""
    smtp_server.reply(Stage.RCPT, "550 5.1.1 User unknown")
    async with raw_client(smtp_server) as client:
        await greeted(client)
    smtp_server.clear()
    assert (smtp_server.messages, smtp_server.sessions) == ((), ())
    async with raw_client(smtp_server) as client:
        await start_transaction(client)


# -- scripting ----------------------------------------------------------------------------


async def test_scripted_reply_is_sent_verbatim(smtp_server: RecordingSMTPServer) -> None:
    """A scripted reply reaches the client exactly as written."""
    smtp_server.reply(Stage.RCPT, "550 5.1.1 User unknown")
    async with raw_client(smtp_server) as client:
        await mail_from(client)
        assert await client.command("RCPT TO:<ada@example.org>") == "550 5.1.1 User unknown"


async def test_times_limits_a_rule(smtp_server: RecordingSMTPServer) -> None:
    """A rule with times=1 fires once, then the server behaves normally again."""
    smtp_server.reply(Stage.MAIL, SmtpReply(451, "4.7.1", "Try later"), times=1)
    async with raw_client(smtp_server) as client:
        await greeted(client)
        assert await client.command("MAIL FROM:<lms@example.org>") == "451 4.7.1 Try later"
        assert (await client.command("MAIL FROM:<lms@example.org>")).startswith("250")


async def test_address_narrows_a_rule(smtp_server: RecordingSMTPServer) -> None:
    """A rule for one address (any letter case) leaves other addresses alone."""
    smtp_server.reply(Stage.RCPT, "550 5.1.1 User unknown", address="Gone@Example.org")
    async with raw_client(smtp_server) as client:
        await mail_from(client)
        assert (await client.command("RCPT TO:<ada@example.org>")).startswith("250")
        assert (await client.command("RCPT TO:<gone@example.org>")).startswith("550")


async def test_refused_data_is_not_recorded(smtp_server: RecordingSMTPServer) -> None:
    """Only accepted messages are recorded; a 5xx at DATA leaves no trace."""
    smtp_server.reply(Stage.DATA, "554 5.7.1 Spam")
    async with raw_client(smtp_server) as client:
        await start_transaction(client)
        await client.command("DATA")
        assert await client.command("x\r\n.") == "554 5.7.1 Spam"
    assert smtp_server.messages == ()


async def test_drop_closes_without_reply(smtp_server: RecordingSMTPServer) -> None:
    """drop() closes the connection instead of answering."""
    smtp_server.drop(Stage.MAIL)
    async with raw_client(smtp_server) as client:
        await greeted(client)
        client.writer.write(b"MAIL FROM:<lms@example.org>\r\n")
        assert await client.at_eof()


async def test_drop_at_connect_sends_no_greeting(smtp_server: RecordingSMTPServer) -> None:
    """drop(Stage.CONNECT) hangs up before the greeting."""
    smtp_server.drop(Stage.CONNECT)
    async with raw_client(smtp_server) as client:
        assert await client.at_eof()


async def test_delay_postpones_the_reply(smtp_server: RecordingSMTPServer) -> None:
    """delay() holds the reply back for the given time, then sends the usual one."""
    smtp_server.delay(Stage.MAIL, 0.2)
    async with raw_client(smtp_server) as client:
        await greeted(client)
        started = time.monotonic()
        assert (await client.command("MAIL FROM:<lms@example.org>")).startswith("250")
        assert time.monotonic() - started >= 0.2


async def test_hold_keeps_the_reply_until_released(smtp_server: RecordingSMTPServer) -> None:
    """hold() answers nothing until its event is set, then sends the usual reply."""
    released = smtp_server.hold(Stage.MAIL, times=1)
    async with raw_client(smtp_server) as client:
        await greeted(client)
        client.writer.write(b"MAIL FROM:<lms@example.org>\r\n")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await client.reply()
        released.set()
        async with asyncio.timeout(5):
            assert (await client.reply()).startswith("250")
        assert (await client.command("RSET")).startswith("250")
        assert (await client.command("MAIL FROM:<lms@example.org>")).startswith("250")


async def test_hang_never_replies_and_aclose_ends_it() -> None:
    """hang() never answers; stopping the server still closes the connection promptly."""
    server = RecordingSMTPServer()
    await server.start()
    server.hang(Stage.RCPT)
    async with raw_client(server) as client:
        await mail_from(client)
        client.writer.write(b"RCPT TO:<ada@example.org>\r\n")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await client.reader.readline()
        await server.aclose()
        assert await client.at_eof()


async def test_drop_after_replies_then_hangs_up(smtp_server: RecordingSMTPServer) -> None:
    """drop_after(n) accepts the n-th message on a connection, then closes it."""
    smtp_server.drop_after(1)
    async with raw_client(smtp_server) as client:
        await start_transaction(client)
        await client.command("DATA")
        assert (await client.command("x\r\n.")).startswith("250")
        assert await client.at_eof()
    assert len(smtp_server.messages) == 1


async def test_disconnect_all_keeps_listening(smtp_server: RecordingSMTPServer) -> None:
    """disconnect_all() drops live connections while new ones are still accepted."""
    async with raw_client(smtp_server) as client:
        await greeted(client)
        await smtp_server.disconnect_all()
        assert await client.at_eof()
    async with raw_client(smtp_server) as client:
        await greeted(client)


@pytest.mark.parametrize("reply", ["5.1.1 no code", "99 too short", "600 5.0.0 out of range"])
def test_reply_must_start_with_a_reply_code(reply: str) -> None:
    """Scripted replies are checked when scripted, not when a client trips over them."""
    with pytest.raises(ValueError, match="reply code"):
        RecordingSMTPServer().reply(Stage.RCPT, reply)


def test_address_only_narrows_mail_and_rcpt() -> None:
    """An address makes no sense for CONNECT or DATA rules."""
    with pytest.raises(ValueError, match="address"):
        RecordingSMTPServer().drop(Stage.DATA, address="ada@example.org")


def test_smtp_settings_describe_the_server_before_start() -> None:
    """Asking for the port of a server not yet started is an error, not port 0."""
    with pytest.raises(RuntimeError, match="not started"):
        RecordingSMTPServer().smtp_settings()


async def test_smtp_settings_describe_the_server(smtp_server: RecordingSMTPServer) -> None:
    """smtp_settings() points a client at this server with its security and a short timeout."""
    settings = smtp_server.smtp_settings(pool_size=2)
    assert (settings.host, settings.port, settings.pool_size) == (
        "127.0.0.1",
        smtp_server.port,
        2,
    )
    assert settings.security is SmtpSecurity.NONE
    assert settings.timeout == 5.0


# -- the server's own guards ------------------------------------------------------------------


async def test_aclose_closes_idle_client_connections() -> None:
    """Stopping the server ends connections whose clients never said QUIT."""
    server = RecordingSMTPServer()
    await server.start()
    async with raw_client(server) as client:
        await greeted(client)
        await server.aclose()
        assert await client.at_eof()
    await server.aclose()  # idempotent


async def test_auth_is_required_before_mail() -> None:
    """With credentials configured, MAIL FROM before AUTH is refused with 530."""
    async with (
        RecordingSMTPServer(credentials={"u": "p"}, allow_auth_without_tls=True) as server,
        raw_client(server) as client,
    ):
        await greeted(client)
        assert (await client.command("MAIL FROM:<lms@example.org>")).startswith("530")
        assert (await client.command("AUTH PLAIN AHUAcA==")).startswith("235")  # \0u\0p
        assert (await client.command("MAIL FROM:<lms@example.org>")).startswith("250")
        assert server.sessions[0].login is None  # sessions are snapshots taken at connect


async def test_auth_is_only_offered_where_configured(smtp_server: RecordingSMTPServer) -> None:
    """A server without credentials does not advertise AUTH."""
    async with raw_client(smtp_server) as client:
        assert (await client.reply()).startswith("220")
        assert "AUTH" not in await client.command("EHLO client.example")


def test_auth_without_tls_is_refused_unless_asked() -> None:
    """AUTH in the clear needs an explicit allow_auth_without_tls=True."""
    with pytest.raises(ConfigurationError, match="allow_auth_without_tls"):
        RecordingSMTPServer(credentials={"u": "p"})


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "mail.example.org"])  # noqa: S104
def test_binding_beyond_loopback_is_refused(host: str) -> None:
    """The server listens on loopback only, unless told otherwise."""
    with pytest.raises(ConfigurationError, match="loopback"):
        RecordingSMTPServer(host=host)


def test_tls_security_needs_a_context() -> None:
    """security=tls or starttls without a TLS context is a configuration error."""
    with pytest.raises(ConfigurationError, match="tls_context"):
        RecordingSMTPServer(security=SmtpSecurity.TLS)
