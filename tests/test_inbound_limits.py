"""The inbound listener under bursts: a deep listen backlog, a session cap, a recipient cap."""

from __future__ import annotations

import asyncio
import contextlib
import selectors
import socket
import time
from pathlib import Path

import aiosmtplib
import pytest
from click.testing import CliRunner

from sender.cli import main
from sender.config import InboundLimits, load_config
from sender.errors import ConfigurationError
from sender.servers.inbound import InboundMail, InboundServer
from sender.servers.smtpd import SmtpHandler, SmtpServer

BOUNCE_DOMAIN = "bounce.example.com"
MESSAGE = b"From: mailer-daemon@mx.example.org\r\nSubject: bounce\r\n\r\nbody\r\n"


class Inbox:
    def __init__(self) -> None:
        self.mails: list[InboundMail] = []

    async def __call__(self, mail: InboundMail) -> None:
        self.mails.append(mail)


class DefaultReplies(SmtpHandler):
    """Every reply is the server's normal one."""


def make_server(inbox: Inbox, keep_dir: Path, **limits: int) -> InboundServer:
    return InboundServer(
        bounce_domain=BOUNCE_DOMAIN,
        on_mail=inbox,
        keep_dir=keep_dir,
        limits=InboundLimits(**limits),
    )


def connect_while_not_accepting(
    host: str, port: int, count: int, wait: float
) -> list[socket.socket]:
    """Start ``count`` TCP connects and wait up to ``wait`` s without yielding to the loop.

    The server's loop is blocked meanwhile, so only connections the kernel queues
    in the listen backlog can complete. Returns the sockets that connected.
    """
    selector = selectors.DefaultSelector()
    pending: list[socket.socket] = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.connect((host, port))
        selector.register(sock, selectors.EVENT_WRITE)
        pending.append(sock)
    connected: list[socket.socket] = []
    deadline = time.monotonic() + wait
    while len(connected) < count and (left := deadline - time.monotonic()) > 0:
        for key, _events in selector.select(timeout=left):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            selector.unregister(sock)
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                connected.append(sock)
    selector.close()
    for sock in pending:
        if sock not in connected:
            sock.close()
    return connected


async def greeting(sock: socket.socket) -> bytes:
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        line = await asyncio.wait_for(reader.readline(), timeout=20)
        writer.write(b"QUIT\r\n")
        await writer.drain()
        return line
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_a_burst_of_300_connections_waits_in_the_backlog(tmp_path: Path) -> None:
    """300 connections that arrive while the listener is busy all connect and get a 220."""
    async with make_server(Inbox(), tmp_path) as server:
        socks = connect_while_not_accepting(server.host, server.port, 300, wait=3.0)
        assert len(socks) == 300
        lines = await asyncio.gather(*(greeting(sock) for sock in socks))
    assert all(line.startswith(b"220 ") for line in lines)


async def test_300_concurrent_clients_each_deliver_a_bounce(tmp_path: Path) -> None:
    """300 simultaneous SMTP clients each deliver one bounce; none times out or is refused."""
    inbox = Inbox()

    async def one(n: int) -> int:
        async with aiosmtplib.SMTP(hostname=server.host, port=server.port, timeout=30) as client:
            await client.sendmail("", [f"bounces+n{n}@{BOUNCE_DOMAIN}"], MESSAGE)
        return n

    async with make_server(inbox, tmp_path) as server:
        done = await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(300))), timeout=60)
    assert sorted(done) == list(range(300))
    assert len(inbox.mails) == 300


async def test_sessions_beyond_the_cap_get_421(tmp_path: Path) -> None:
    """With max_sessions=5, the sixth simultaneous client hears 421; a freed slot is reused."""
    async with make_server(Inbox(), tmp_path, max_sessions=5) as server:
        clients = [
            aiosmtplib.SMTP(hostname=server.host, port=server.port, timeout=5) for _ in range(5)
        ]
        try:
            for client in clients:
                await client.connect()
                await client.ehlo()
            extra = aiosmtplib.SMTP(hostname=server.host, port=server.port, timeout=5)
            with pytest.raises(aiosmtplib.SMTPConnectResponseError) as info:
                await extra.connect()
            assert info.value.code == 421
            await clients.pop().quit()
            again = aiosmtplib.SMTP(hostname=server.host, port=server.port, timeout=5)
            for _ in range(50):  # the server notices the QUIT's close within a few turns
                try:
                    await again.connect()
                    break
                except aiosmtplib.SMTPConnectResponseError:
                    continue  # still 421: each attempt gives the server a few more turns
            await again.sendmail("", [f"bounces+x@{BOUNCE_DOMAIN}"], MESSAGE)
            await again.quit()
        finally:
            for client in clients:
                client.close()


async def test_recipients_beyond_the_cap_get_452(tmp_path: Path) -> None:
    """With max_recipients=3, the fourth RCPT TO hears 452 and the first three get the mail."""
    inbox = Inbox()
    async with (
        make_server(inbox, tmp_path, max_recipients=3) as server,
        aiosmtplib.SMTP(hostname=server.host, port=server.port, timeout=5) as client,
    ):
        await client.mail("")
        codes = []
        for n in range(4):
            try:
                codes.append((await client.rcpt(f"bounces+r{n}@{BOUNCE_DOMAIN}")).code)
            except aiosmtplib.SMTPRecipientRefused as exc:
                codes.append(exc.code)
        await client.data(MESSAGE)
    assert codes == [250, 250, 250, 452]
    assert sorted(mail.recipient for mail in inbox.mails) == [
        f"bounces+r{n}@{BOUNCE_DOMAIN}" for n in range(3)
    ]


@pytest.mark.parametrize("setting", ["backlog", "max_sessions", "max_recipients"])
def test_limits_below_one_are_configuration_errors(setting: str) -> None:
    """A backlog, session cap or recipient cap under 1 is refused, naming the setting."""
    with pytest.raises(ConfigurationError) as info:
        InboundLimits(**{setting: 0})
    assert info.value.setting == f"inbound_{setting}"
    with pytest.raises(ConfigurationError) as info:
        SmtpServer(DefaultReplies(), **{setting: 0})
    assert info.value.setting == setting


def test_inbound_limits_come_from_sender_toml(tmp_path: Path) -> None:
    """inbound_backlog, inbound_max_sessions and inbound_max_recipients are read from TOML."""
    toml = tmp_path / "sender.toml"
    toml.write_text(
        "inbound_backlog = 2048\ninbound_max_sessions = 7\ninbound_max_recipients = 9\n"
    )
    config = load_config(config_file=toml, state_dir=tmp_path / ".sender")
    assert (
        config.inbound.backlog,
        config.inbound.max_sessions,
        config.inbound.max_recipients,
    ) == (2048, 7, 9)
    defaults = load_config(state_dir=tmp_path / ".sender")
    assert defaults.inbound.backlog >= 1024


def test_inbound_refuses_a_zero_session_cap_in_one_line(tmp_path: Path) -> None:
    """`sender inbound --max-sessions 0` is a one-line configuration error, exit 2."""
    toml = tmp_path / "sender.toml"
    toml.write_text('bounce_domain = "bounce.example.com"\nsecret_keys = ["' + "k" * 32 + '"]\n')
    result = CliRunner().invoke(
        main, ["--config", str(toml), "inbound", "--listen", "127.0.0.1:0", "--max-sessions", "0"]
    )
    assert result.exit_code == 2, result.output
    assert "max_sessions" in result.output
    assert "Traceback" not in result.output
