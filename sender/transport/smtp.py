"""Pooled SMTP delivery with a verdict per recipient; the only module that imports aiosmtplib.

How a send goes: wait (first come, first served) for one of ``pool_size``
turns; take the most recently used idle connection or open one (connect,
EHLO, STARTTLS, AUTH); then ``MAIL FROM``, one ``RCPT TO`` per recipient,
``DATA`` (skipped, with ``RSET``, when every recipient was refused). Every
connect and command has ``settings.timeout``; the whole send also has an
overall limit, so nothing can hang.

A server that offers PIPELINING (RFC 2920) gets ``MAIL FROM``, every ``RCPT TO`` and
``DATA`` in one write, and its replies are read in order, each mapped to its command: two
round trips a message instead of 3 + recipients. aiosmtplib still connects, greets,
upgrades and logs in; after that a small protocol of this module (:class:`_Pipeline`)
takes the connection over, because aiosmtplib's protocol reads one reply per command and
drops bytes that arrive while a reply waits to be picked up. Both ways give the same bytes at
DATA and the same result per recipient (below); a server without PIPELINING is spoken to
one command at a time through aiosmtplib, as before.

With ``settings.max_connections``, the relay's connections are capped over every process
that shares the :class:`~sender.pacing.limits.Limiter` given: a connection is opened only
under a slot leased from it (key ``conn:HOST:PORT``), renewed every third of
:data:`LEASE_TTL` while the connection lives, and given back when it closes. A process that
dies holds its slots only until they expire. A send that finds no slot free asks again
(every 10 ms, doubling up to a quarter of a second) within its overall limit, and takes a
connection of this pool instead if one comes free first. While it waits it marks itself
waiting (a lease on ``conn:HOST:PORT:waiting``); a pool that sees another process's mark
closes connections idle for :data:`SLOT_IDLE`, and after giving a slot back waits a quarter
of a second before asking again, so the waiting process gets its turn. Nobody waiting, idle
connections stay warm as without a cap. Without a cap the limiter is never asked; without a
limiter the cap holds for this pool alone.

What the caller gets back, per recipient and in envelope order:

====================================  =========================================
what happened                         result
====================================  =========================================
RCPT 2xx, DATA 2xx                    ACCEPTED, with the DATA reply (queue id)
RCPT 5xx / 4xx                        PERMANENT / TEMPORARY, with that reply
DATA 5xx / 4xx                        the same, for every RCPT-accepted recipient
MAIL FROM 5xx / 4xx                   the same, for every recipient
greeting, EHLO, STARTTLS refused      TEMPORARY with the reply (like Postfix)
timeout, lost or refused connection   TEMPORARY, ``detail`` says which
SMTPUTF8 needed, server lacks it      PERMANENT, ``detail`` says so
address unusable on a command line    PERMANENT, ``detail`` says so
====================================  =========================================

Settings that cannot work raise :class:`~sender.errors.ConfigurationError`
from :meth:`SmtpTransport.send` instead: a refused login (5xx to AUTH, or 530
"authentication required" to MAIL FROM), a server without AUTH while
credentials are set, a missing STARTTLS when it is required, an untrusted
certificate. Each of these would fail every message alike; as per-recipient
results they would be booked as bounces and could suppress good addresses.

A reused connection that turns out dead before anything was sent (the server
closed it while idle, or it fails at MAIL FROM with a disconnect or ``421``)
is replaced and the send retried once, invisibly. A failure after MAIL FROM is
never retried here: the message may have been delivered, and retry timing
belongs to the scheduler.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import os
import secrets
import socket
import ssl
from dataclasses import dataclass
from typing import cast

import aiosmtplib
from aiosmtplib.protocol import (
    COMMAND_INJECTION_REGEX,
    MAX_LINE_LENGTH,
    MAX_RESPONSE_LENGTH,
    normalize_message_line_endings,
)

from sender import redact
from sender.addresses import is_mailbox
from sender.clock import Clock, SystemClock
from sender.config import SmtpSecurity, SmtpSettings
from sender.errors import ConfigurationError, SenderError
from sender.lifecycle import AsyncResource
from sender.models import TIMEOUT, DeliveryStatus, Envelope, RecipientResult, SmtpReply
from sender.pacing.limits import Limiter
from sender.readonly import ReadOnly

__all__ = ["LEASE_TTL", "MAX_IDLE", "SLOT_IDLE", "SmtpTransport", "wire_payload"]

_log = logging.getLogger("sender.transport")

MAX_IDLE = 60.0
"""Seconds an idle connection is kept; older ones are quit, since servers drop them anyway."""

LEASE_TTL = 60.0
"""Seconds a connection slot (``max_connections``) is held unless renewed: how long the
slots of a process that died stay taken. A live connection renews its slot every third."""

SLOT_IDLE = 0.1
"""Seconds a connection holding a slot stays idle while another process waits for a slot
(instead of :data:`MAX_IDLE`); also how often a pool holding slots looks for waiters."""

_GUARD_STEPS = 20  # the overall limit is timeout x (recipients + this), retry included
_SLOT_FIRST, _SLOT_MOST = 0.01, 0.25  # seconds between asks for a slot: first, and at most
_WAITING_TTL = 1.0  # seconds a waiting mark lasts unless renewed (each ask renews it)
_WAITERS = 1 << 30  # waiting marks are not capped


class _Failure(Exception):
    """The verdict for every recipient not decided yet: the connection failed, not a reply."""

    def __init__(self, *, reply: SmtpReply | None = None, detail: str = "") -> None:
        super().__init__(detail or str(reply))
        self.reply = reply
        self.detail = detail

    def result(self, recipient: str) -> RecipientResult:
        return RecipientResult(recipient, DeliveryStatus.TEMPORARY, self.reply, self.detail)


class _Retry(Exception):
    """A reused connection was dead before anything was sent: reconnect and try once more."""


class _FairLimiter:
    """At most ``size`` holders; waiters are served strictly in arrival order."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed over just as we were cancelled
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # hand the slot over directly: no barging
                return
        self._free += 1


@dataclass(eq=False, slots=True)
class _Connection:
    client: aiosmtplib.SMTP
    number: int
    transactions: int = 0
    idle_since: float = 0.0
    slot: str | None = None  # the holder name of its leased slot (with max_connections)
    lost: bool = False  # its slot expired and was taken: close it once it is free
    wire: _Pipeline | None = None  # the server offers PIPELINING: commands go through this

    @property
    def connected(self) -> bool:
        return self.wire.alive if self.wire is not None else self.client.is_connected

    async def command(self, verb: bytes) -> aiosmtplib.SMTPResponse:
        """A command without arguments (RSET, QUIT) and its reply, on the wire if there is
        one, else through aiosmtplib."""
        if self.wire is not None:
            return await self.wire.command(verb + b"\r\n")
        return await self.client.execute_command(verb)


_AFTER_CODE = (b" ", b"-", b"\r", b"\n")  # what may follow a reply's three digits


class _Pipeline(asyncio.Protocol):
    """A connection after its handshake, on a server that offers PIPELINING.

    Takes the transport over from aiosmtplib (``transport.set_protocol``) once EHLO,
    STARTTLS and AUTH are done. Every complete reply is queued in arrival order, however
    the bytes were split or joined, and :meth:`read` hands them out one at a time. Errors
    are aiosmtplib's exception classes, so :func:`_failure` translates both paths alike.
    """

    def __init__(self, transport: asyncio.Transport, *, timeout: float) -> None:
        self._transport = transport
        self._timeout = timeout  # for each reply, as aiosmtplib's for each command
        self._buffer = bytearray()
        self._replies: collections.deque[aiosmtplib.SMTPResponse] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._error: aiosmtplib.SMTPException | None = None
        self._loop = asyncio.get_running_loop()
        self._deadline = 0.0  # when the reply waited for is late
        self._timer: asyncio.TimerHandle | None = None

    @property
    def alive(self) -> bool:
        return self._error is None and not self._transport.is_closing()

    @property
    def quiet(self) -> bool:
        """No reply waits unread: a reply nobody asked for would shift every later
        reply onto the wrong command, so a connection that is not quiet is never reused."""
        return not self._replies and not self._buffer

    def data_received(self, data: bytes) -> None:
        if self._error is not None:
            return
        self._buffer += data
        try:
            self._parse()
        except aiosmtplib.SMTPResponseException as exc:
            self._fail(exc)
            self._transport.close()
        self._wake()

    def _parse(self) -> None:
        """Move every complete reply (multi-line ones joined, as aiosmtplib does) to the queue."""
        buffer = self._buffer
        start = position = 0
        lines: list[bytes] = []
        while (end := buffer.find(b"\n", position)) != -1:
            line = bytes(buffer[position : end + 1])
            position = end + 1
            if len(line) > MAX_LINE_LENGTH:
                raise aiosmtplib.SMTPResponseException(-1, "Response too long")
            if not (line[:3].isdigit() and line[:1] in b"2345" and line[3:4] in _AFTER_CODE):
                text = line.decode("utf-8", errors="ignore")
                raise aiosmtplib.SMTPResponseException(-1, f"Malformed SMTP response line: {text}")
            code = int(line[:3])
            lines.append(line[4:].strip(b" \t\r\n"))
            if line[3:4] != b"-":
                text = b"\n".join(lines).decode("utf-8", "surrogateescape")
                self._replies.append(aiosmtplib.SMTPResponse(code, text))
                lines = []
                start = position
        del buffer[:start]
        if len(buffer) > MAX_RESPONSE_LENGTH:
            raise aiosmtplib.SMTPResponseException(-1, "Response too long")

    def eof_received(self) -> bool:
        self._fail(aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"))
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        error = aiosmtplib.SMTPServerDisconnected("Connection lost")
        error.__cause__ = exc
        self._fail(error)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fail(self, error: aiosmtplib.SMTPException) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def write(self, data: bytes) -> None:
        if not self.alive:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        self._transport.write(data)

    async def read(self) -> aiosmtplib.SMTPResponse:
        """The next reply, in the order the commands were written, or
        ``SMTPReadTimeoutError`` when it takes longer than the timeout."""
        while not self._replies:
            if self._error is not None:
                raise self._error
            self._waiter = self._loop.create_future()
            self._deadline = self._loop.time() + self._timeout
            if self._timer is None:
                self._timer = self._loop.call_at(self._deadline, self._check_deadline)
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._replies.popleft()

    def _check_deadline(self) -> None:
        """The timer behind :meth:`read`'s timeout, one per connection, not one per read.

        Two reads a message each arming and cancelling a timer cost ≈ 10 µs; this one
        is armed at a read's deadline and, when it fires, fails the read waiting past
        its deadline, or is armed again at the deadline of the read waiting now.
        """
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # nothing waits: the next read arms it
        if self._loop.time() >= self._deadline:
            waiter.set_exception(
                aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response")
            )
        else:
            self._timer = self._loop.call_at(self._deadline, self._check_deadline)

    async def command(self, line: bytes) -> aiosmtplib.SMTPResponse:
        self.write(line)
        return await self.read()


def wire_payload(message: bytes, /) -> bytes:
    """``message`` as DATA sends it: CRLF line ends, dot-stuffed, ending in ``.CRLF``.

    The message builder already writes CRLF, so the usual case is three C-level
    scans and one ``bytes.replace``; anything else goes through aiosmtplib's own
    normalisation, so both paths give the same bytes.
    """
    crlf = message.count(b"\r\n")
    if message.count(b"\n") != crlf or message.count(b"\r") != crlf:
        message = normalize_message_line_endings(message)
    elif not message.endswith(b"\r\n"):
        message += b"\r\n"
    stuffed = message.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed + b".\r\n"


def _reply(code: int, message: str) -> SmtpReply:
    return SmtpReply.parse(code, message)


def _from_reply(recipient: str, code: int, message: str, *, stage: str) -> RecipientResult:
    status = DeliveryStatus.from_code(code)
    return RecipientResult(recipient, status, _reply(code, message), stage=stage)


def _out_of_step(response: aiosmtplib.SMTPResponse, /, *, went: bool) -> bool:
    """Whether DATA's reply (``went``: it was 354) is neither 354 nor a refusal: then it
    answers another command, and the replies are out of step with what was sent."""
    return not went and not 400 <= response.code < 600


def _refuse(envelope: Envelope, results: list[RecipientResult | None], detail: str) -> None:
    """Fail every undecided recipient permanently, for a reason no server reply gave."""
    for index, recipient in enumerate(envelope.recipients):
        if results[index] is None:
            results[index] = RecipientResult(recipient, DeliveryStatus.PERMANENT, None, detail)


def _mail_line(
    client: aiosmtplib.SMTP, envelope: Envelope, message: bytes, encoding: str
) -> bytes | None:
    """``MAIL FROM:<...>`` with its options (no line end), or None if the sender is unusable."""
    if not is_mailbox(envelope.mail_from):
        return None
    try:
        address = envelope.mail_from.encode(encoding)
    except ValueError:  # non-ASCII without SMTPUTF8
        return None
    line = b"MAIL FROM:<" + address + b">"
    if client.supports_extension("size"):
        line += b" SIZE=%d" % len(message)
    if envelope.smtputf8:
        line += b" SMTPUTF8"
    if not message.isascii() and client.supports_extension("8bitmime"):
        line += b" BODY=8BITMIME"
    return None if COMMAND_INJECTION_REGEX.search(line) else line


def _rcpt_line(recipient: str, encoding: str) -> bytes | RecipientResult:
    """``RCPT TO:<...>`` (no line end), or the verdict for an address no command can carry."""
    detail = "invalid recipient address"
    if recipient and is_mailbox(recipient):
        try:
            line = b"RCPT TO:<" + recipient.encode(encoding) + b">"
        except ValueError:
            if encoding == "ascii" and not recipient.isascii():
                detail = "the address is not ASCII; the envelope needs smtputf8"
        else:
            if not COMMAND_INJECTION_REGEX.search(line):
                return line
    return RecipientResult(recipient, DeliveryStatus.PERMANENT, None, detail)


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what caused it, so the root of a wrapped error can be found."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _failure(exc: BaseException) -> _Failure:
    """Translate an aiosmtplib or socket error on an open connection."""
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError):
        return _Failure(detail=TIMEOUT)
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected | ConnectionError):
        return _Failure(detail="connection lost")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        if 400 <= exc.code < 600:
            return _Failure(reply=_reply(exc.code, exc.message))
        return _Failure(detail=f"protocol error: {exc.message}")
    if isinstance(exc, ssl.SSLError):
        return _Failure(detail=f"tls error: {exc.reason or exc}")
    if isinstance(exc, aiosmtplib.SMTPException):
        return _Failure(detail=f"smtp error: {exc.message}")
    return _Failure(detail=f"connection lost: {exc}")


def _tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    """One client context per transport: system CAs plus ``ca_file``, verified unless told not."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if settings.ca_file is not None:
        try:
            context.load_verify_locations(cafile=settings.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"smtp: cannot load ca_file {settings.ca_file!r}: {exc}", setting="ca_file"
            ) from exc
    if not settings.validate_certs:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class SmtpTransport(AsyncResource):
    """A :class:`~sender.transport.base.Transport` over a pool of persistent SMTP connections.

    Connections are opened lazily, at most ``settings.pool_size`` at once, and
    each carries up to ``settings.max_messages_per_connection`` messages before
    it is quit and replaced. With ``settings.max_connections``, each holds a slot of
    ``limiter`` (see the module docstring). ``clock`` measures idleness (see
    :data:`MAX_IDLE`) and times the slots; network timeouts are real. Use as an async
    context manager, or call :meth:`aclose`. It counts :attr:`connections_opened`
    (connected, greeted, and logged in where needed) and :attr:`messages_sent`
    (accepted at DATA).
    """

    def __init__(
        self,
        settings: SmtpSettings,
        /,
        *,
        clock: Clock | None = None,
        limiter: Limiter | None = None,
    ) -> None:
        self._settings = settings
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._tls = _tls_context(settings) if settings.security is not SmtpSecurity.NONE else None
        self._local_hostname = settings.local_hostname
        try:  # aiosmtplib's own checks (EHLO name, host), now rather than at the first send
            self._client()
        except ValueError as exc:
            raise ConfigurationError(f"smtp: {exc}", setting="local_hostname") from exc
        cap = settings.max_connections
        self._size = settings.pool_size if cap is None else min(settings.pool_size, cap)
        self._turns = _FairLimiter(self._size)
        self._idle: list[_Connection] = []
        self._closed = False
        self._connections_opened = 0
        self._messages_sent = 0
        self._where = settings.address
        # Connection slots shared with other processes: only with a cap, else never asked.
        self._limiter = limiter if cap is not None else None
        self._slot_key = f"conn:{settings.address}"
        self._holder = f"{socket.gethostname()}:{os.getpid()}/{secrets.token_hex(4)}"
        self._slots = itertools.count(1)
        self._leased: set[_Connection] = set()  # open connections holding a slot
        self._handoff: collections.deque[asyncio.Future[_Connection]] = collections.deque()
        self._gave_back = -float("inf")  # monotonic time this pool last gave a slot back
        self._waiting_key = f"conn:{settings.address}:waiting"
        self._waiting_here = 0  # sends of this pool marked as waiting
        self._contended = False  # another process was waiting for a slot, at the last look
        self._keeper: asyncio.Task[None] | None = None

    settings = ReadOnly[SmtpSettings]("_settings")
    limiter = ReadOnly[Limiter | None]("_limiter")  # None: no cap, or none to share it
    connections_opened = ReadOnly[int]("_connections_opened")
    messages_sent = ReadOnly[int]("_messages_sent")

    async def send(self, envelope: Envelope, message: bytes, /) -> tuple[RecipientResult, ...]:
        """Deliver ``message`` to the envelope: one result per recipient, in order.

        Raises :class:`~sender.errors.ConfigurationError` only for settings that
        cannot work (see the module docstring), and ``RuntimeError`` after
        :meth:`aclose`.
        """
        if self._closed:
            raise RuntimeError("smtp: send() after aclose()")
        if not envelope.recipients:
            return ()
        results: list[RecipientResult | None] = [None] * len(envelope.recipients)
        await self._turns.acquire()
        try:
            async with asyncio.timeout(self._settings.timeout * (len(results) + _GUARD_STEPS)):
                await self._deliver(envelope, message, results)
        except _Failure as failure:
            self._settle(envelope, results, failure)
        except TimeoutError:
            _log.warning("smtp: a send to %s hit its overall time limit", self._where)
            self._settle(envelope, results, _Failure(detail=TIMEOUT))
        finally:
            self._turns.release()
        if any(result is None for result in results):  # pragma: no cover - a bug, not an outcome
            _log.error("smtp: a send ended without a verdict for every recipient")
            self._settle(envelope, results, _Failure(detail="no verdict"))
        return tuple(result for result in results if result is not None)

    async def aclose(self) -> None:
        """Let sends in progress (and those already waiting) finish, then QUIT every connection."""
        if self._closed:
            return
        self._closed = True
        held = 0
        try:
            for _ in range(self._size):  # every turn: nothing is in flight any more
                await self._turns.acquire()
                held += 1
            idle, self._idle = self._idle, []
            await asyncio.gather(*(self._retire(conn) for conn in idle))
        finally:
            for _ in range(held):
                self._turns.release()
            keeper, self._keeper = self._keeper, None
            if keeper is not None:
                keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keeper

    # -- one send ------------------------------------------------------------------

    def _settle(
        self, envelope: Envelope, results: list[RecipientResult | None], failure: _Failure
    ) -> None:
        for index, recipient in enumerate(envelope.recipients):
            if results[index] is None:
                results[index] = failure.result(recipient)

    async def _deliver(
        self, envelope: Envelope, message: bytes, results: list[RecipientResult | None]
    ) -> None:
        conn = await self._checkout()
        for attempt in (1, 2):
            may_retry = attempt == 1 and conn.transactions > 0
            try:
                await self._transact(conn, envelope, message, results, may_retry=may_retry)
            except _Retry:
                _log.debug("smtp: connection #%d was dead; retrying on a new one", conn.number)
                await self._discard(conn)
                conn = await self._open()
                continue
            except BaseException:
                await self._discard(conn)
                raise
            await self._checkin(conn)
            return

    async def _transact(
        self,
        conn: _Connection,
        envelope: Envelope,
        message: bytes,
        results: list[RecipientResult | None],
        *,
        may_retry: bool,
    ) -> None:
        client = conn.client
        if envelope.smtputf8 and not client.supports_extension("smtputf8"):
            _refuse(
                envelope, results, "the server does not offer SMTPUTF8, which this message needs"
            )
            return
        encoding = "utf-8" if envelope.smtputf8 else "ascii"
        mail = _mail_line(client, envelope, message, encoding)
        if mail is None:
            _refuse(envelope, results, "invalid envelope sender")
            return
        conn.transactions += 1
        try:
            if conn.wire is not None:
                accepted, response = await self._pipelined(
                    conn, conn.wire, envelope, mail, message, encoding, results, may_retry=may_retry
                )
            else:
                accepted, response = await self._stepwise(
                    conn, envelope, mail, message, encoding, results, may_retry=may_retry
                )
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise _failure(exc) from exc
        if response is None:
            return
        reply = _reply(response.code, response.message)
        for index in accepted:
            results[index] = RecipientResult(
                envelope.recipients[index], DeliveryStatus.ACCEPTED, reply
            )
        self._messages_sent += 1
        if _log.isEnabledFor(logging.DEBUG):  # redacting costs ~8 µs a message
            _log.debug(
                "smtp: message accepted on connection #%d: %s",
                conn.number,
                redact.text(str(reply)),
            )

    async def _stepwise(
        self,
        conn: _Connection,
        envelope: Envelope,
        mail: bytes,
        message: bytes,
        encoding: str,
        results: list[RecipientResult | None],
        *,
        may_retry: bool,
    ) -> tuple[list[int], aiosmtplib.SMTPResponse | None]:
        """One command and one reply at a time, through aiosmtplib: the accepted
        recipients and the final DATA reply (None when nothing was delivered)."""
        client = conn.client
        try:
            # execute_command, not client.mail(): the address is checked already, and
            # aiosmtplib would parse it again with email.utils (~60 µs a command).
            response = await client.execute_command(mail)
        except aiosmtplib.SMTPServerDisconnected as exc:
            if may_retry:
                raise _Retry from exc
            raise
        if not self._mail_accepted(envelope, response, results, may_retry=may_retry):
            await self._reset(conn)
            return [], None
        accepted: list[int] = []
        for index, recipient in enumerate(envelope.recipients):
            line = _rcpt_line(recipient, encoding)
            if isinstance(line, RecipientResult):
                results[index] = line
                continue
            response = await client.execute_command(line)
            if self._rcpt_accepted(recipient, response):
                accepted.append(index)
            else:
                results[index] = _from_reply(
                    recipient, response.code, response.message, stage="rcpt"
                )
        if not accepted:
            await self._reset(conn)
            return [], None
        response = await client.execute_command(b"DATA")
        went = response.code == 354
        if went:
            protocol = client.protocol
            if protocol is None:
                raise aiosmtplib.SMTPServerDisconnected("Connection lost")
            # Not client.data(): its two regex passes over the message cost ~50 µs a message.
            try:
                protocol.write(wire_payload(message))  # no await before the read: no reply slips
                response = await protocol.read_response(timeout=self._settings.timeout)
            except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
                client.close()  # the reply stream is out of step: never reuse this connection
                raise
        return await self._finish(conn, envelope, accepted, response, results, went=went)

    async def _pipelined(
        self,
        conn: _Connection,
        wire: _Pipeline,
        envelope: Envelope,
        mail: bytes,
        message: bytes,
        encoding: str,
        results: list[RecipientResult | None],
        *,
        may_retry: bool,
    ) -> tuple[list[int], aiosmtplib.SMTPResponse | None]:
        """MAIL FROM, every RCPT TO and DATA in one write (RFC 2920), then the replies in
        order; the same verdicts as :meth:`_stepwise`."""
        unusable: dict[int, RecipientResult] = {}
        sent: list[int] = []
        lines = [mail]
        for index, recipient in enumerate(envelope.recipients):
            line = _rcpt_line(recipient, encoding)
            if isinstance(line, RecipientResult):
                unusable[index] = line
            else:
                lines.append(line)
                sent.append(index)
        if sent:
            lines.append(b"DATA")
        lines.append(b"")
        if not wire.quiet:  # a reply came while the connection was idle: out of step
            conn.client.close()
            if may_retry:
                raise _Retry
            raise aiosmtplib.SMTPServerDisconnected("the server replied to nothing")
        wire.write(b"\r\n".join(lines))
        try:
            response = await wire.read()
        except aiosmtplib.SMTPServerDisconnected as exc:
            if may_retry:
                raise _Retry from exc
            raise
        if not self._mail_accepted(envelope, response, results, may_retry=may_retry):
            await self._drain(conn, wire, replies=len(lines) - 2)  # the RCPTs' and DATA's
            await self._reset(conn)
            return [], None
        for index, result in unusable.items():
            results[index] = result
        accepted: list[int] = []
        for index in sent:
            recipient = envelope.recipients[index]
            response = await wire.read()
            if self._rcpt_accepted(recipient, response):
                accepted.append(index)
            else:
                results[index] = _from_reply(
                    recipient, response.code, response.message, stage="rcpt"
                )
        if not sent:
            await self._reset(conn)
            return [], None
        response = await wire.read()  # DATA's
        if not accepted:
            if response.code == 354:  # a server that took DATA without recipients: RFC 2920
                response = await wire.command(b".\r\n")
            await self._reset(conn)
            return [], None
        went = response.code == 354
        if went:
            response = await wire.command(wire_payload(message))
        return await self._finish(conn, envelope, accepted, response, results, went=went)

    async def _finish(
        self,
        conn: _Connection,
        envelope: Envelope,
        accepted: list[int],
        response: aiosmtplib.SMTPResponse,
        results: list[RecipientResult | None],
        *,
        went: bool,
    ) -> tuple[list[int], aiosmtplib.SMTPResponse | None]:
        """After DATA's last reply, both paths: the accepted recipients and that reply, or
        the verdicts kept and the connection readied for the next message (RSET), or
        dropped when its replies are out of step."""
        if went and response.code == 250:
            return accepted, response
        if self._data_refused(envelope, accepted, response, results, went=went):
            await self._reset(conn)
        else:
            conn.client.close()  # never reuse a connection whose replies are shifted
        return [], None

    def _mail_accepted(
        self,
        envelope: Envelope,
        response: aiosmtplib.SMTPResponse,
        results: list[RecipientResult | None],
        *,
        may_retry: bool,
    ) -> bool:
        """Whether MAIL FROM was accepted; if not, every recipient's verdict is its reply."""
        code, text = response.code, response.message
        if code == 250:
            return True
        if may_retry and code == 421:
            raise _Retry
        if code == 530:
            raise ConfigurationError(
                f"smtp: {self._where} wants authentication first: {_reply(code, text)}",
                setting="smtp_url",
            )
        for index, recipient in enumerate(envelope.recipients):
            results[index] = _from_reply(recipient, code, text, stage="mail")
        return False

    @staticmethod
    def _rcpt_accepted(recipient: str, response: aiosmtplib.SMTPResponse) -> bool:
        accepted = response.code in (250, 251)
        if _log.isEnabledFor(logging.DEBUG):
            if accepted:
                _log.debug("smtp: RCPT %s: %d", redact.address(recipient), response.code)
            else:
                _log.debug(
                    "smtp: RCPT %s refused: %d %s",
                    redact.address(recipient),
                    response.code,
                    redact.text(response.message),
                )
        return accepted

    @staticmethod
    def _data_refused(
        envelope: Envelope,
        accepted: list[int],
        response: aiosmtplib.SMTPResponse,
        results: list[RecipientResult | None],
        *,
        went: bool,
    ) -> bool:
        """The verdicts for a message not taken (``went``: DATA had its 354, and then not
        250): the RCPT-accepted recipients' verdict is the refusing reply; True then.

        A DATA answered by anything but 354 or a 4xx/5xx refusal (a 250, say) cannot be
        the reply to DATA: the server's replies are out of step with the commands, and
        every recipient is left to try again (temporary); False then, so the connection
        is dropped."""
        if _out_of_step(response, went=went):
            for index, recipient in enumerate(envelope.recipients):
                decided = results[index]
                if decided is not None and decided.stage != "rcpt":
                    continue  # decided here, not by a reply that may be someone else's
                results[index] = RecipientResult(
                    recipient,
                    DeliveryStatus.TEMPORARY,
                    None,
                    f"DATA not accepted: the server answered {response.code}, out of step",
                    stage="data",
                )
            return False
        for index in accepted:
            results[index] = _from_reply(
                envelope.recipients[index], response.code, response.message, stage="data"
            )
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("smtp: DATA refused: %d %s", response.code, redact.text(response.message))
        return True

    async def _drain(self, conn: _Connection, wire: _Pipeline, *, replies: int) -> None:
        """Read the replies to commands written after a refused MAIL FROM; a DATA the
        server took anyway gets the lone dot RFC 2920 asks for. Else drop the connection."""
        try:
            for _ in range(replies):
                response = await wire.read()
            if replies and response.code == 354:
                await wire.command(b".\r\n")
        except (aiosmtplib.SMTPException, OSError):
            conn.client.close()

    async def _reset(self, conn: _Connection) -> None:
        """RSET after a refusal, so the connection can carry the next message; else drop it."""
        if not conn.connected:
            return
        try:
            response = await conn.command(b"RSET")
            if response.code != 250:
                conn.client.close()
        except (aiosmtplib.SMTPException, OSError):
            conn.client.close()

    # -- the pool --------------------------------------------------------------------

    async def _checkout(self) -> _Connection:
        now = self._clock.monotonic()
        while self._idle:
            conn = self._idle.pop()  # most recently used: warm, and lets the rest go stale
            if conn.connected and not conn.lost and now - conn.idle_since < MAX_IDLE:
                return conn
            await self._retire(conn)
        return await self._open()

    async def _checkin(self, conn: _Connection) -> None:
        if not conn.connected or (conn.wire is not None and not conn.wire.quiet):
            await self._discard(conn)  # gone, or a stray reply would shift the next message's
        elif (
            self._closed
            or conn.lost
            or conn.transactions >= self._settings.max_messages_per_connection
        ):
            await self._retire(conn)
        else:
            conn.idle_since = self._clock.monotonic()
            self._give(conn)

    def _give(self, conn: _Connection) -> None:
        """Hand ``conn`` to the first send waiting for a slot, else keep it idle."""
        while self._handoff:
            waiter = self._handoff.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    async def _discard(self, conn: _Connection) -> None:
        conn.client.close()
        await self._give_back(conn)

    async def _retire(self, conn: _Connection) -> None:
        """QUIT politely if the connection still lives, then close it."""
        try:
            if conn.connected:
                await conn.command(b"QUIT")
        except (aiosmtplib.SMTPException, OSError):
            pass
        finally:
            conn.client.close()
        _log.debug("smtp: connection #%d closed after %d messages", conn.number, conn.transactions)
        await self._give_back(conn)

    # -- connection slots shared between processes (max_connections) -----------------

    async def _lease(self, limiter: Limiter, holder: str) -> bool:
        cap = self._settings.max_connections or 1  # only asked with a cap
        return await limiter.lease(
            self._slot_key, holder=holder, cap=cap, ttl=LEASE_TTL, now=self._clock.now()
        )

    async def _slot(self, limiter: Limiter) -> _Connection | str:
        """A slot leased for a new connection (its holder name), or a connection of this
        pool that came free first."""
        holder = f"{self._holder}#{next(self._slots)}"
        waiter: asyncio.Future[_Connection] = asyncio.get_running_loop().create_future()
        self._handoff.append(waiter)
        leased, marked, delay = False, False, _SLOT_FIRST
        try:
            while not waiter.done():
                # Just after this pool gave a slot back, a process waiting for one goes first.
                pause = self._gave_back + _SLOT_MOST - self._clock.monotonic()
                if pause <= 0 or not self._contended:
                    if leased := await self._lease(limiter, holder):
                        break
                    if not marked:
                        marked = True
                        self._waiting_here += 1
                    await limiter.lease(
                        self._waiting_key,
                        holder=holder,
                        cap=_WAITERS,
                        ttl=_WAITING_TTL,
                        now=self._clock.now(),
                    )
                    pause, delay = delay, min(delay * 2, _SLOT_MOST)
                await self._wait(waiter, pause)
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._give(waiter.result())  # handed over as this send gave up: pass it on
            raise
        finally:
            if waiter in self._handoff:
                self._handoff.remove(waiter)
            if marked:
                self._waiting_here -= 1  # the mark itself expires unless given back below
        if marked:
            await self._release(limiter, holder, key=self._waiting_key)
        if waiter.done():  # a connection came free, perhaps while the slot was being leased
            if leased:
                await self._release(limiter, holder)
            return waiter.result()
        return holder

    async def _others_wait(self, limiter: Limiter) -> bool:
        """Whether a send of another process is marked as waiting for a slot: the marks
        number more than this pool's own."""
        probe = f"{self._holder}#probe"
        now = self._clock.now()
        cap = self._waiting_here + 1
        alone = await limiter.lease(
            self._waiting_key, holder=probe, cap=cap, ttl=_WAITING_TTL, now=now
        )
        if alone:
            await limiter.release(self._waiting_key, holder=probe)
        return not alone

    async def _wait(self, waiter: asyncio.Future[_Connection], seconds: float) -> None:
        """Until ``waiter`` has a connection, or ``seconds`` passed on the clock."""
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        try:
            await asyncio.wait((waiter, sleeper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()

    async def _release(self, limiter: Limiter, holder: str, *, key: str | None = None) -> None:
        try:
            await limiter.release(key or self._slot_key, holder=holder)
        except SenderError as exc:  # the slot expires on its own
            _log.warning(
                "smtp: a connection slot for %s was not given back (it expires within %g s): %s",
                self._where,
                LEASE_TTL,
                exc,
            )

    async def _give_back(self, conn: _Connection) -> None:
        """Give the slot of a closed connection back, for this process or another."""
        holder, conn.slot = conn.slot, None
        self._leased.discard(conn)
        if holder is not None and self._limiter is not None:
            self._gave_back = self._clock.monotonic()
            await self._release(self._limiter, holder)

    async def _keep_slots(self, limiter: Limiter) -> None:
        """While this pool holds slots: every :data:`SLOT_IDLE`, look for sends of other
        processes waiting for one, and if there are, close connections idle that long;
        renew the slots every third of :data:`LEASE_TTL`."""
        renewed = self._clock.monotonic()
        while self._leased:
            await self._clock.idle(SLOT_IDLE)
            try:
                self._contended = await self._others_wait(limiter)
            except SenderError as exc:
                _log.warning("smtp: connection slots for %s not looked at: %s", self._where, exc)
            now = self._clock.monotonic()
            longest = SLOT_IDLE if self._contended else MAX_IDLE
            for conn in [conn for conn in self._idle if now - conn.idle_since >= longest]:
                if conn in self._idle:
                    self._idle.remove(conn)
                    await self._retire(conn)
            if now - renewed < LEASE_TTL / 3:
                continue
            renewed = now
            for conn in list(self._leased):
                holder = conn.slot
                if holder is None:
                    continue
                try:
                    kept = await self._lease(limiter, holder)
                except SenderError as exc:
                    _log.warning("smtp: connection slots for %s not renewed: %s", self._where, exc)
                    break
                if kept or conn.slot != holder:
                    continue
                # Stalled past the ttl, and another process took the slot: close it when free.
                _log.warning(
                    "smtp: connection #%d to %s lost its slot; closing it", conn.number, self._where
                )
                conn.lost, conn.slot = True, None
                self._leased.discard(conn)
                if conn in self._idle:
                    self._idle.remove(conn)
                    await self._retire(conn)

    # -- opening a connection ------------------------------------------------------

    def _client(self) -> aiosmtplib.SMTP:
        settings = self._settings
        return aiosmtplib.SMTP(
            hostname=settings.host,
            port=settings.port,
            local_hostname=self._local_hostname,
            timeout=settings.timeout,
            use_tls=settings.security is SmtpSecurity.TLS,
            start_tls=False,  # STARTTLS is done explicitly below; never opportunistically
            validate_certs=settings.validate_certs,
            tls_context=self._tls,
        )

    async def _open(self) -> _Connection:
        """A new connection; with a cap, under a slot (or one of this pool's that came free)."""
        limiter = self._limiter
        if limiter is None:
            return await self._connect()
        slot = await self._slot(limiter)
        if isinstance(slot, _Connection):
            return slot
        try:
            conn = await self._connect()
        except BaseException:
            await self._release(limiter, slot)
            raise
        conn.slot = slot
        self._leased.add(conn)
        if self._keeper is None or self._keeper.done():
            self._keeper = asyncio.create_task(self._keep_slots(limiter))
        return conn

    async def _connect(self) -> _Connection:
        if self._local_hostname is None:  # once per transport, not once per connection
            name = await asyncio.to_thread(socket.getfqdn)
            usable = name.isascii() and name.isprintable() and " " not in name
            self._local_hostname = name if name and usable else "localhost"
        client = self._client()
        try:
            await client.connect()
        except (aiosmtplib.SMTPException, OSError) as exc:
            client.close()
            raise self._connect_error(exc) from exc
        try:
            await self._handshake(client)
        except (aiosmtplib.SMTPException, OSError) as exc:
            client.close()
            raise self._connect_error(exc) from exc
        except BaseException:
            client.close()
            raise
        self._connections_opened += 1
        number = self._connections_opened
        wire = None
        # uvloop's transports are no subclasses of asyncio's, so no isinstance check here.
        transport = cast(asyncio.Transport | None, client.transport)
        if client.supports_extension("pipelining") and transport is not None:
            wire = _Pipeline(transport, timeout=self._settings.timeout)
            transport.set_protocol(wire)  # aiosmtplib's protocol reads no more replies
        _log.debug(
            "smtp: connection #%d to %s opened%s",
            number,
            self._where,
            " (pipelining)" if wire else "",
        )
        return _Connection(client, number, wire=wire)

    async def _handshake(self, client: aiosmtplib.SMTP) -> None:
        settings = self._settings
        await self._ehlo(client)
        if settings.security is SmtpSecurity.STARTTLS:
            if not client.supports_extension("starttls"):
                raise ConfigurationError(
                    f"smtp: {self._where} does not offer STARTTLS, which the settings require",
                    setting="smtp_url",
                )
            await client.starttls()
            await self._ehlo(client)
        if settings.username is None:
            return
        if not client.supported_auth_methods:
            raise ConfigurationError(
                f"smtp: {self._where} offers no AUTH method sender can use "
                f"(it offers {' '.join(client.server_auth_methods) or 'none'}), "
                "but the settings have a user and password",
                setting="smtp_url",
            )
        try:
            await client.login(settings.username, settings.password or "")
        except aiosmtplib.SMTPAuthenticationError as exc:
            if exc.code >= 500:
                raise ConfigurationError(
                    f"smtp: {self._where} refused the login of {settings.username!r}: "
                    f"{_reply(exc.code, exc.message)}",
                    setting="smtp_url",
                ) from exc
            raise _Failure(reply=_reply(exc.code, exc.message)) from exc

    async def _ehlo(self, client: aiosmtplib.SMTP) -> None:
        try:
            await client.ehlo()
        except aiosmtplib.SMTPHeloError:
            if not client.is_connected:
                raise
            await client.helo()  # an old server without ESMTP

    def _connect_error(self, exc: BaseException) -> Exception:
        """Translate a failure while connecting, greeting, upgrading or logging in."""
        for cause in _causes(exc):
            if isinstance(cause, ssl.SSLCertVerificationError):
                return ConfigurationError(
                    f"smtp: the TLS certificate of {self._where} is not trusted "
                    f"({cause.verify_message}); set ca_file, or verify=false for a test relay",
                    setting="ca_file",
                )
        if isinstance(exc, aiosmtplib.SMTPConnectTimeoutError | aiosmtplib.SMTPTimeoutError):
            return _Failure(detail=TIMEOUT)
        if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
            return _Failure(reply=_reply(exc.code, exc.message))
        for cause in _causes(exc):
            if isinstance(cause, ConnectionRefusedError):
                return _Failure(detail=f"connection refused: {self._where}")
            if isinstance(cause, aiosmtplib.SMTPServerDisconnected):
                return _Failure(detail="connection lost")
        if isinstance(exc, aiosmtplib.SMTPConnectError):
            root = exc.__cause__ if exc.__cause__ is not None else exc
            return _Failure(detail=f"connection failed: {root}")
        return _failure(exc)
