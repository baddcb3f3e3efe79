"""SMTP PIPELINING (RFC 2920): batched commands, the same bytes and verdicts as one by one.

Each scenario runs twice against real servers scripted through real replies: aiosmtpd
offering PIPELINING and not, and Postfix's smtp-sink with and without ``-p``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.postfix import ensure_binaries
from sender.config import SmtpSettings
from sender.loop import fast_loop
from sender.models import TIMEOUT, DeliveryStatus, Envelope, RecipientResult
from sender.testing import RecordingSMTPServer, Stage
from sender.transport import SmtpTransport

SENDER = "bounces+t0k3n@lms.example"
MESSAGE = (
    b"From: LMS <noreply@lms.example>\r\n"
    b"To: ada@example.org\r\n"
    b"Subject: Pipelined\r\n"
    b"\r\n"
    b".a line starting with a dot\r\n"
    b".\r\n"
    b"Gr\xc3\xbc\xc3\x9fe\r\n"
)
ADA, BOB, CY = "ada@example.org", "bob@example.org", "cy@example.org"

Script = Callable[[RecordingSMTPServer], None]


@dataclass(frozen=True)
class Outcome:
    """What a send looked like from both ends."""

    results: tuple[tuple[RecipientResult, ...], ...]
    received: tuple[tuple[str, tuple[str, ...], bytes, tuple[str, ...]], ...]


async def _send_all(
    settings: SmtpSettings, envelopes: list[Envelope], message: bytes = MESSAGE
) -> tuple[tuple[RecipientResult, ...], ...]:
    """Send ``message`` once per envelope, in turn, over one pooled connection."""
    async with SmtpTransport(settings) as transport:
        return tuple([await transport.send(envelope, message) for envelope in envelopes])


async def _outcome(pipelining: bool, script: Script, envelopes: list[Envelope]) -> Outcome:
    async with RecordingSMTPServer(pipelining=pipelining) as server:
        script(server)
        results = await _send_all(server.smtp_settings(timeout=3.0, pool_size=1), envelopes)
        received = tuple(
            (m.mail_from, m.recipients, m.data, m.mail_options) for m in server.messages
        )
    return Outcome(results, received)


def _envelope(*recipients: str) -> Envelope:
    return Envelope(SENDER, recipients)


SCENARIOS: dict[str, tuple[Script, list[Envelope]]] = {
    "all-accepted": (lambda s: None, [_envelope(ADA, BOB, CY), _envelope(BOB)]),
    "4xx-on-one-rcpt": (
        lambda s: s.reply(Stage.RCPT, "451 4.7.1 Greylisted, try later", address=BOB),
        [_envelope(ADA, BOB, CY), _envelope(CY)],
    ),
    "5xx-on-one-rcpt": (
        lambda s: s.reply(Stage.RCPT, "550 5.1.1 No such user", address=ADA),
        [_envelope(ADA, BOB), _envelope(BOB)],
    ),
    "every-rcpt-refused": (
        lambda s: s.reply(Stage.RCPT, "550 5.1.1 No such user", times=2),
        [_envelope(ADA, BOB), _envelope(CY)],
    ),
    "5xx-at-data": (
        lambda s: s.reply(Stage.DATA, "554 5.7.1 Message refused", times=1),
        [_envelope(ADA, BOB), _envelope(CY)],
    ),
    "4xx-at-data": (
        lambda s: s.reply(Stage.DATA, "451 4.3.0 Queue full", times=1),
        [_envelope(ADA), _envelope(BOB)],
    ),
    "mail-from-refused": (
        lambda s: s.reply(Stage.MAIL, "553 5.7.1 Sender refused", times=1),
        [_envelope(ADA, BOB), _envelope(CY)],
    ),
    "unusable-address-among-good": (
        lambda s: None,
        [_envelope(ADA, "not an address", "Bob <bob@example.org>", CY)],
    ),
    "disconnect-mid-pipeline": (
        lambda s: s.drop(Stage.RCPT, address=CY),
        [_envelope(ADA, BOB, CY), _envelope(BOB)],
    ),
    "disconnect-at-data": (
        lambda s: s.drop(Stage.DATA),
        [_envelope(ADA, BOB), _envelope(CY)],
    ),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
async def test_pipelined_and_stepwise_sessions_agree(scenario: str) -> None:
    """With and without PIPELINING: byte-identical DATA, identical envelope, same verdicts."""
    script, envelopes = SCENARIOS[scenario]
    stepwise = await _outcome(False, script, envelopes)
    pipelined = await _outcome(True, script, envelopes)
    assert pipelined == stepwise
    assert len(pipelined.results) == len(envelopes)


async def test_disconnect_mid_pipeline_leaves_undecided_recipients_temporary() -> None:
    """A server that hangs up after some replies: what it answered stands, the rest is 4xx."""
    script = SCENARIOS["disconnect-mid-pipeline"][0]

    def refuse_ada_then_drop(server: RecordingSMTPServer) -> None:
        server.reply(Stage.RCPT, "550 5.1.1 No such user", address=ADA)
        script(server)

    outcome = await _outcome(True, refuse_ada_then_drop, [_envelope(ADA, BOB, CY), _envelope(BOB)])
    first, second = outcome.results
    assert [r.status for r in first] == [
        DeliveryStatus.PERMANENT,
        DeliveryStatus.TEMPORARY,
        DeliveryStatus.TEMPORARY,
    ]
    assert first[0].reply is not None
    assert first[0].reply.code == 550
    assert first[1].detail == "connection lost"
    assert [r.status for r in second] == [DeliveryStatus.ACCEPTED]  # on a new connection
    assert [m[1] for m in outcome.received] == [(BOB,)]


async def test_pipelined_reply_codes_map_to_their_recipients() -> None:
    """Each reply in the batch belongs to its own RCPT: the refusals land on the right ones."""
    async with RecordingSMTPServer(pipelining=True) as server:
        server.reply(Stage.RCPT, "452 4.2.2 Mailbox full", address=BOB)
        server.reply(Stage.RCPT, "550 5.1.1 No such user", address=CY)
        settings = server.smtp_settings(pool_size=1)
        [results] = await _send_all(settings, [_envelope(ADA, BOB, CY)])
        [received] = server.messages
    assert [(r.recipient, r.status) for r in results] == [
        (ADA, DeliveryStatus.ACCEPTED),
        (BOB, DeliveryStatus.TEMPORARY),
        (CY, DeliveryStatus.PERMANENT),
    ]
    assert str(results[1].reply).startswith("452")
    assert received.recipients == (ADA,)
    assert received.data == MESSAGE


# -- a server whose replies are out of step with the commands -----------------------------


async def _misbehaving(extra: dict[bytes, bytes]) -> tuple[SmtpSettings, asyncio.Server, list[int]]:
    """A PIPELINING server that adds ``extra[stage]`` after its usual reply at that stage
    (b"MAIL", b"DOT") the first time; RCPT to bad@ is refused. Counts taken messages."""
    taken: list[int] = []
    pending = dict(extra)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 out-of-step ESMTP\r\n")
        in_data = False
        while line := await reader.readline():
            if in_data:
                if line == b".\r\n":
                    in_data = False
                    taken.append(1)
                    writer.write(b"250 queued\r\n" + pending.pop(b"DOT", b""))
                continue
            command = line.strip().upper()
            if command.startswith(b"EHLO"):
                writer.write(b"250-fake\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            elif command.startswith(b"MAIL"):
                writer.write(b"250 ok\r\n" + pending.pop(b"MAIL", b""))
            elif command.startswith(b"RCPT"):
                bad = b"BAD@" in command
                writer.write(b"550 5.1.1 no such user\r\n" if bad else b"250 ok\r\n")
            elif command == b"DATA":
                writer.write(b"354 go\r\n")
                in_data = True
            elif command == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = SmtpSettings(
        host="127.0.0.1", port=port, timeout=3, pool_size=1, local_hostname="localhost"
    )
    return settings, server, taken


async def test_a_stray_reply_after_a_message_never_shifts_the_next_ones_verdicts() -> None:
    """A server that sends one reply too many after a message: the connection is not reused,
    so the next message's refusal lands on the refused address and the rest is delivered."""
    settings, server, taken = await _misbehaving({b"DOT": b"250 stray\r\n"})
    async with server, SmtpTransport(settings) as transport:
        await transport.send(_envelope(ADA), MESSAGE)
        await asyncio.sleep(0.1)  # the stray reply arrives while the connection is idle
        results = await transport.send(_envelope("bad@example.org", BOB), MESSAGE)
    assert [(r.recipient, r.status) for r in results] == [
        ("bad@example.org", DeliveryStatus.PERMANENT),
        (BOB, DeliveryStatus.ACCEPTED),
    ]
    assert len(taken) == 2


async def test_replies_out_of_step_mid_batch_mark_nobody_sent() -> None:
    """Two replies to one MAIL shift the batch: DATA's reply is a 250, not 354, so the
    message was not taken; every recipient is temporary, none accepted or refused for
    another's reply."""
    settings, server, taken = await _misbehaving({b"MAIL": b"250 again\r\n"})
    async with server, SmtpTransport(settings) as transport:
        first = await transport.send(_envelope("bad@example.org", BOB), MESSAGE)
        second = await transport.send(_envelope(ADA), MESSAGE)
    assert [r.status for r in first] == [DeliveryStatus.TEMPORARY, DeliveryStatus.TEMPORARY]
    assert "out of step" in first[1].detail
    assert [r.status for r in second] == [DeliveryStatus.ACCEPTED]  # on a new connection
    assert len(taken) == 1


# -- each reply has the timeout to come, however the replies are spread -------------------


@contextlib.asynccontextmanager
async def _slow_server(
    delays: list[float], *, reply_timeout: float = 0.5
) -> AsyncIterator[SmtpSettings]:
    """Offers PIPELINING, then answers MAIL, RCPT, DATA and the message, each reply after
    its own delay; the client's timeout is ``reply_timeout``. Its handlers end with the block."""
    handlers: list[asyncio.Task[None]] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 slow.example ESMTP\r\n")
        await reader.readuntil(b"\r\n")  # EHLO
        writer.write(b"250-slow.example\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
        await reader.readuntil(b"DATA\r\n")
        replies = (b"250 ok", b"250 ok", b"354 go", b"250 queued")
        for reply, delay in zip(replies, delays, strict=True):
            if reply == b"250 queued":
                await reader.readuntil(b"\r\n.\r\n")
            await asyncio.sleep(delay)
            writer.write(reply + b"\r\n")
            await writer.drain()
        await reader.read()  # QUIT, or the client hanging up

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.append(task)
        try:
            await answer(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with server:
            yield SmtpSettings(
                host="127.0.0.1", port=port, timeout=reply_timeout, local_hostname="localhost"
            )
    finally:
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)


async def test_replies_each_within_the_timeout_deliver_however_long_the_whole_takes() -> None:
    """Four replies 0.45 s apart (1.8 s in all) against a 1.5 s timeout: each is in time,
    with a second to spare for a loaded machine."""
    delays = [0.45, 0.45, 0.45, 0.45]
    async with (
        _slow_server(delays, reply_timeout=1.5) as settings,
        SmtpTransport(settings) as sender,
    ):
        (ada,) = await sender.send(_envelope(ADA), MESSAGE)
    assert ada.status is DeliveryStatus.ACCEPTED
    assert str(ada.reply) == "250 queued"


@pytest.mark.parametrize("late", [0, 2, 3], ids=["mail", "data", "message"])
async def test_a_reply_later_than_the_timeout_is_a_timeout_after_about_that_long(
    late: int,
) -> None:
    """The reply to MAIL, DATA or the message itself never comes: the recipient is
    temporary ("timeout") once that one reply is 0.5 s late, not sooner, not much later."""
    delays = [0.1, 0.1, 0.1, 0.1]
    delays[late] = 5.0
    loop = asyncio.get_running_loop()
    async with _slow_server(delays) as settings, SmtpTransport(settings) as sender:
        started = loop.time()
        (ada,) = await sender.send(_envelope(ADA), MESSAGE)
        waited = loop.time() - started
    assert ada.status is DeliveryStatus.TEMPORARY
    assert ada.detail == TIMEOUT
    before = 0.1 * late  # the replies that came, each after 0.1 s
    assert before + 0.5 <= waited + 0.02  # the clock's resolution
    assert waited < before + 1.5


# -- the batch is one write: a server that answers only once it has all of it -------------


async def test_commands_go_in_one_batch_and_replies_may_come_in_any_chunks() -> None:
    """MAIL, every RCPT and DATA arrive before the server answers; split replies still parse."""
    await _one_batch()


def test_commands_go_in_one_batch_on_uvloop() -> None:
    """On uvloop (the CLI's and the workers' loop) the connection is pipelined the same way."""
    factory = fast_loop()
    assert factory is not None, "uvloop is a default dependency on Linux: pip install -e ."
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_one_batch())


async def _one_batch() -> None:
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 batch.example ESMTP\r\n")
        await reader.readuntil(b"\r\n")  # EHLO
        writer.write(b"250-batch.example\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
        batch = await reader.readuntil(b"DATA\r\n")  # a client waiting for replies stalls here
        seen.append(batch)
        # MAIL's reply, ada's reply split mid-line, bob's refusal as a multi-line reply.
        writer.write(b"250 2.1.0 Ok\r\n250 2.1")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b".5 Ok\r\n550-5.1.1 No such\r\n550 5.1.1 user here\r\n354 Go on\r\n")
        payload = await reader.readuntil(b"\r\n.\r\n")
        seen.append(payload)
        writer.write(b"250 2.0.0 Ok: queued as BATCH1\r\n")
        await reader.readuntil(b"\r\n")  # QUIT
        writer.write(b"221 Bye\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = SmtpSettings(host="127.0.0.1", port=port, timeout=2.0, local_hostname="localhost")
    async with server, SmtpTransport(settings) as transport:
        ada, bob = await transport.send(_envelope(ADA, BOB), MESSAGE)
    assert ada.status is DeliveryStatus.ACCEPTED
    assert str(ada.reply) == "250 2.0.0 Ok: queued as BATCH1"
    assert bob.status is DeliveryStatus.PERMANENT
    assert bob.reply is not None
    assert bob.reply.code == 550
    assert seen[0] == (
        b"MAIL FROM:<" + SENDER.encode() + b"> BODY=8BITMIME\r\n"
        b"RCPT TO:<ada@example.org>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n"
    )
    assert seen[1] == MESSAGE.replace(b"\r\n.", b"\r\n..") + b".\r\n"  # dot-stuffed


# -- Postfix's smtp-sink (offers PIPELINING unless -p) -------------------------------------


@pytest.fixture
def smtp_sink() -> Iterator[Callable[..., tuple[int, Path]]]:
    """Start smtp-sink with extra options on a free port; dumps every message to a folder."""
    # The system's binary, or Postfix's package extracted into a cache (never the daemon).
    binary, _source, env = ensure_binaries()
    processes: list[subprocess.Popen[bytes]] = []
    folders: list[tempfile.TemporaryDirectory[str]] = []

    def start(*options: str) -> tuple[int, Path]:
        folder = tempfile.TemporaryDirectory(prefix="sink-")
        folders.append(folder)
        os.chmod(folder.name, 0o777)  # noqa: S103 - smtp-sink drops to nobody before it writes
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        args = [str(binary), *options, "-d", f"{folder.name}/%M.", "-u", "nobody"]
        process = subprocess.Popen(
            [*args, f"127.0.0.1:{port}", "16"], env=env, stderr=subprocess.DEVNULL
        )
        processes.append(process)
        return port, Path(folder.name)

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=5)
    for folder in folders:
        folder.cleanup()


async def _ready(port: int) -> None:
    for _ in range(1000):  # bounded: 10 s
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.01)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise AssertionError("smtp-sink did not listen")


def _dumps(folder: Path) -> list[bytes]:
    """The sink's message dumps, without the lines that name the session."""
    out = []
    for path in sorted(folder.iterdir()):
        kept, in_received = [], False
        for line in path.read_bytes().split(b"\n"):
            # The sink's own Received: header names a session id and the time.
            in_received = line.startswith(b"Received:") or (in_received and line[:1] == b"\t")
            if not in_received and not line.startswith(b"X-Client"):
                kept.append(line)
        out.append(b"\n".join(kept))
    return sorted(out)


async def _settled_dumps(folder: Path, accepted: int) -> list[bytes]:
    """The dumps once the sink has finished writing (it writes after replying): at least
    one per ``accepted`` message, unchanged for 0.2 s."""
    dumps, steady = _dumps(folder), 0
    for _ in range(200):  # bounded: 10 s
        await asyncio.sleep(0.05)
        now = _dumps(folder)
        steady = steady + 1 if now == dumps else 0
        dumps = now
        if steady >= 4 and len(dumps) >= accepted:
            break
    return dumps


def _verdicts(results: tuple[tuple[RecipientResult, ...], ...]) -> list[list[object]]:
    """Status, code and stage per recipient (smtp-sink's queue ids differ per session)."""
    return [
        [(r.recipient, r.status, r.reply and r.reply.code, r.stage) for r in s] for s in results
    ]


@pytest.mark.parametrize(
    "options",
    [(), ("-r", "rcpt"), ("-f", "data"), ("-f", "mail"), ("-q", "rcpt")],
    ids=["accepted", "4xx-rcpt", "5xx-data", "5xx-mail", "disconnect-at-rcpt"],
)
async def test_smtp_sink_pipelined_and_not_agree(
    smtp_sink: Callable[..., tuple[int, Path]], options: tuple[str, ...]
) -> None:
    """Against Postfix's smtp-sink, PIPELINING and -p (none) give the same bytes and verdicts."""
    envelopes = [_envelope(ADA, BOB), _envelope(CY), _envelope(ADA, BOB, CY)]
    outcomes = []
    for extra in ((), ("-p",)):
        port, folder = smtp_sink(*options, *extra)
        await _ready(port)
        settings = SmtpSettings(
            host="127.0.0.1", port=port, timeout=3.0, pool_size=1, local_hostname="localhost"
        )
        results = await _send_all(settings, envelopes)
        accepted = sum(any(r.status is DeliveryStatus.ACCEPTED for r in sent) for sent in results)
        outcomes.append((_verdicts(results), await _settled_dumps(folder, accepted)))
    assert outcomes[0] == outcomes[1]
    verdicts, dumps = outcomes[0]
    if not options:
        assert all(v[1] is DeliveryStatus.ACCEPTED for s in verdicts for v in s)
        assert len(dumps) == len(envelopes)
        assert all(MESSAGE.replace(b"\r\n", b"\n") in dump for dump in dumps)
