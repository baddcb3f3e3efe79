"""A small SMTP server that runs inside the caller's event loop, on loopback.

This is the only module that imports aiosmtpd, and the one place that starts and
closes a server. The capture server, the inbound listener and :mod:`sender.testing`'s
recording server are each an :class:`EmbeddedServer`: one :class:`SmtpServer` inside,
for which the server itself is the handler, opened and closed by ``async with``; none sees
aiosmtpd's types. A :class:`SmtpHandler` decides every reply through plain records
(:class:`Session`, :class:`ReceivedMessage`) and answers with an
:class:`~sender.models.SmtpReply`, a :class:`Disconnect`, or ``None`` for the
normal reply.

The server is started with ``loop.create_server`` in the running loop rather
than aiosmtpd's threaded ``Controller``, so tests and the CLI need no threads,
and :meth:`SmtpServer.aclose` closes live client connections, so nothing
waits on a client that never says QUIT.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import mailbox
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeAlias

import aiosmtpd.smtp as _smtpd

from sender import redact
from sender.addresses import is_loopback_host
from sender.config import SmtpSecurity
from sender.errors import ConfigurationError
from sender.home import add_private, private_maildir
from sender.lifecycle import AsyncResource
from sender.models import SmtpReply
from sender.readonly import ReadOnly

__all__ = [
    "Authenticator",
    "Disconnect",
    "EmbeddedServer",
    "MaildirWriter",
    "ReceivedMessage",
    "Response",
    "Session",
    "SmtpHandler",
    "SmtpServer",
]

_log = logging.getLogger("sender.smtpd")

# aiosmtpd logs every command at INFO (RCPT TO names a return path with its signature)
# and every DATA line at DEBUG (bodies, login links and all). Its loggers stay at WARNING
# unless someone set their level by name (``sender --log-debug mail.log`` does).
for _name in ("mail.log", "mail.debug"):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.WARNING)


class _NoCommandText(logging.Filter):
    """aiosmtpd warns about an unknown command by quoting it; that may be a body line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "%r unrecognised: %s" and isinstance(record.args, tuple):
            peer, command = (*record.args, "")[:2]
            record.args = (peer, f"({len(str(command))} characters)")
        return True


logging.getLogger("mail.log").addFilter(_NoCommandText())

_DEFAULT_DATA_LIMIT = 32 * 1024 * 1024
_DEFAULT_BACKLOG = 1024  # asyncio's default of 100 drops bursts: SYNs wait for a retransmit
_STOP_GRACE = 5.0  # seconds aclose() waits for aborted connections to wind down
_AUTH_MECHANISMS = ("PLAIN", "LOGIN")


@dataclass(frozen=True, slots=True)
class Session:
    """One client connection, as the handler sees it when it is asked to reply."""

    connection_id: int  # 1, 2, 3, ... in the order the server accepted connections
    peer: str  # "127.0.0.1:54321"
    tls: bool  # implicit TLS, or STARTTLS completed
    login: str | None  # the AUTH user, once authenticated


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """A complete message after DATA: the envelope and the bytes, dot-stuffing removed."""

    mail_from: str
    recipients: tuple[str, ...]
    data: bytes
    mail_options: tuple[str, ...]  # upper-cased MAIL FROM parameters, e.g. "SMTPUTF8"
    session: Session

    @property
    def smtputf8(self) -> bool:
        return "SMTPUTF8" in self.mail_options


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Close the connection instead of replying, as a crashing or impatient server does.

    With ``reply`` the server sends it first and then closes (``250`` and gone,
    or ``421 4.4.2 closing``); without, it drops the connection mid-command.
    """

    reply: SmtpReply | None = None


Response: TypeAlias = SmtpReply | Disconnect | None
"""A handler's answer; ``None`` means the server's normal reply."""

Authenticator: TypeAlias = Callable[[str, str], bool]
"""``(login, password) -> accepted``: checks AUTH PLAIN and AUTH LOGIN credentials."""


class SmtpHandler(Protocol):
    """Decides the server's replies. Every method may await, e.g. to delay a reply."""

    async def on_connect(self, session: Session, /) -> Response:
        """Before the greeting; a 4xx/5xx reply becomes the greeting, then the server hangs up."""
        return None

    async def on_mail(
        self, session: Session, address: str, options: tuple[str, ...], /
    ) -> Response:
        """At ``MAIL FROM``; a 2xx reply (or None) starts the transaction."""
        return None

    async def on_rcpt(
        self, session: Session, address: str, options: tuple[str, ...], /
    ) -> Response:
        """At ``RCPT TO``; a 2xx reply (or None) adds the recipient."""
        return None

    async def on_data(self, message: ReceivedMessage, /) -> Response:
        """After the final dot; a 2xx reply (or None) means the server took the message."""
        return None


def _format(reply: SmtpReply) -> str:
    if not 200 <= reply.code <= 599:
        raise ValueError(f"an SMTP reply code is 200-599, not {reply.code}")
    return str(reply)


def _check_bind_host(host: str, *, allow_non_loopback: bool) -> None:
    """Refuse to listen beyond this machine unless the caller says so: the server relays nothing."""
    if not allow_non_loopback and not is_loopback_host(host):
        raise ConfigurationError(
            f"smtpd: refusing to listen on {host!r}, which is not a loopback address; "
            "pass allow_non_loopback=True to mean it",
            setting="host",
        )


class _Hooks:
    """aiosmtpd's ``handle_*`` hooks, translated to :class:`SmtpHandler` calls."""

    def __init__(self, server: SmtpServer) -> None:
        self._server = server

    async def handle_EHLO(  # aiosmtpd finds hooks by name
        self,
        protocol: _Protocol,
        session: _smtpd.Session,
        envelope: _smtpd.Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname  # with a hook, aiosmtpd leaves this to us
        if self._server._pipelining:  # aiosmtpd reads a batch of commands line by line
            responses = [responses[0], "250-PIPELINING", *responses[1:]]
        if self._server._authenticator is None:
            return [line for line in responses if not line[4:].upper().startswith("AUTH")]
        return responses

    async def handle_MAIL(
        self,
        protocol: _Protocol,
        session: _smtpd.Session,
        envelope: _smtpd.Envelope,
        address: str,
        options: list[str],
    ) -> str:
        if self._server._authenticator is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        response = await self._server._handler.on_mail(protocol.info(), address, tuple(options))
        reply = await protocol.answer(response, default=SmtpReply(250, "2.1.0", "OK"))
        if 200 <= reply.code < 300:
            envelope.mail_from = address
            envelope.mail_options.extend(options)
        return _format(reply)

    async def handle_RCPT(
        self,
        protocol: _Protocol,
        session: _smtpd.Session,
        envelope: _smtpd.Envelope,
        address: str,
        options: list[str],
    ) -> str:
        limit = self._server._max_recipients
        if limit is not None and len(envelope.rcpt_tos) >= limit:
            return _format(SmtpReply(452, "4.5.3", f"Too many recipients; at most {limit}"))
        response = await self._server._handler.on_rcpt(protocol.info(), address, tuple(options))
        reply = await protocol.answer(response, default=SmtpReply(250, "2.1.5", "OK"))
        if 200 <= reply.code < 300:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(options)
        return _format(reply)

    async def handle_DATA(
        self, protocol: _Protocol, session: _smtpd.Session, envelope: _smtpd.Envelope
    ) -> str:
        data = envelope.original_content or b""
        message = ReceivedMessage(
            mail_from=envelope.mail_from or "",
            recipients=tuple(envelope.rcpt_tos),
            data=data,
            mail_options=tuple(envelope.mail_options),
            session=protocol.info(),
        )
        response = await self._server._handler.on_data(message)
        reply = await protocol.answer(response, default=SmtpReply(250, "2.0.0", "OK"))
        return _format(reply)

    async def handle_exception(self, error: Exception) -> str:
        _log.error("smtpd: the handler failed: %s\n%s", redact.error(error), redact.frames(error))
        return "451 4.3.0 Internal server error"


class _QuietSession(_smtpd.Session):
    """aiosmtpd's session minus the deprecation warning it logs on every successful AUTH."""

    legacy_login: object = None

    @property
    def login_data(self) -> object:
        return self.legacy_login

    @login_data.setter
    def login_data(self, value: object) -> None:
        self.legacy_login = value


class _Protocol(_smtpd.SMTP):
    """aiosmtpd's protocol, plus what :class:`SmtpServer` needs to track and close it."""

    def __init__(self, server: SmtpServer, connection_id: int) -> None:
        loop = asyncio.get_running_loop()
        super().__init__(
            _Hooks(server),
            data_size_limit=server._data_size_limit,
            enable_SMTPUTF8=server._smtputf8,
            decode_data=False,
            hostname=server._hostname,
            tls_context=server._tls_context if server._security is SmtpSecurity.STARTTLS else None,
            require_starttls=server._require_starttls,
            timeout=server._idle_timeout,
            # Implicit TLS protects AUTH too, but aiosmtpd only counts STARTTLS.
            auth_require_tls=not (
                server._allow_auth_without_tls or server._security is SmtpSecurity.TLS
            ),
            auth_callback=server._check_login,
            loop=loop,
        )
        self._owner = server
        self.connection_id = connection_id
        self.admitted = False  # counted against max_sessions
        self.lost: asyncio.Future[None] = self.loop.create_future()

    def _create_session(self) -> _smtpd.Session:
        return _QuietSession(self.loop)

    def info(self) -> Session:
        session = self.session
        peer = session.peer if session is not None else None
        if isinstance(peer, tuple) and len(peer) >= 2:
            peer_text = f"{peer[0]}:{peer[1]}"
        else:
            peer_text = str(peer)
        login: str | None = None
        auth_data = session.auth_data if session is not None else None
        if isinstance(auth_data, _smtpd.LoginPassword):
            login = auth_data.login.decode("utf-8", "surrogateescape")
        return Session(
            connection_id=self.connection_id,
            peer=peer_text,
            tls=self._owner._security is SmtpSecurity.TLS or self._tls_protocol is not None,
            login=login,
        )

    async def answer(self, response: Response, *, default: SmtpReply) -> SmtpReply:
        """Turn a handler's response into the reply to send, closing the connection if asked."""
        if response is None:
            return default
        if isinstance(response, SmtpReply):
            return response
        if response.reply is not None:
            # Reply first, then close: aiosmtpd writes the reply before the loop runs this.
            self.loop.call_soon(self.hang_up)
            return response.reply
        self.drop()
        # connection_lost() cancels the task awaiting this, so nothing is ever sent.
        await self.loop.create_future()
        raise AssertionError("unreachable: the dropped connection cancels this task")

    def hang_up(self) -> None:
        """Close politely: flush what was written, then close."""
        if self.transport is not None:
            self.transport.close()

    def drop(self) -> None:
        """Close at once, discarding anything unsent, as a crash or a reset does."""
        transport = self.transport
        if isinstance(transport, asyncio.Transport):
            transport.abort()
        elif transport is not None:
            transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self._original_transport is None and self.transport is None
        super().connection_made(transport)
        if first:  # not the second call that STARTTLS makes
            owner = self._owner
            owner._live.add(self)
            owner._most_live = max(owner._most_live, len(owner._live))

    def connection_lost(self, error: Exception | None) -> None:
        try:
            super().connection_lost(error)
        finally:
            self._owner._live.discard(self)
            if self.admitted:
                self.admitted = False
                self._owner._sessions -= 1
            if not self.lost.done():
                self.lost.set_result(None)

    async def _handle_client(self) -> None:
        # Overrides aiosmtpd's session loop to ask the handler before the greeting.
        owner = self._owner
        if owner._max_sessions is not None and owner._sessions >= owner._max_sessions:
            await self.push(_format(SmtpReply(421, "4.3.2", "Too many connections; try later")))
            self.hang_up()
            return
        owner._sessions += 1
        self.admitted = True
        try:
            response = await self._owner._handler.on_connect(self.info())
        except Exception as exc:
            _log.error(
                "smtpd: the handler failed before the greeting: %s\n%s",
                redact.error(exc),
                redact.frames(exc),
            )
            response = Disconnect(SmtpReply(421, "4.3.0", "Internal server error"))
        if isinstance(response, Disconnect) and response.reply is None:
            self.drop()
            return
        reply = response.reply if isinstance(response, Disconnect) else response
        if reply is not None and (isinstance(response, Disconnect) or reply.code >= 300):
            await self.push(_format(reply))
            self.hang_up()
            return
        if reply is not None:
            self.__ident__ = reply.text  # a custom 2xx greeting text
        await super()._handle_client()

    def task(self) -> asyncio.Task[None] | None:
        return self._handler_coroutine


class SmtpServer(AsyncResource):
    """An SMTP server on loopback, in the running loop; ``async with`` starts and stops it.

    ``security`` says how clients protect the connection: ``NONE``; ``STARTTLS``
    (offered; required only with ``require_starttls``); ``TLS`` (implicit, from
    the first byte). Both TLS modes need ``tls_context``, a server-side context.
    With ``authenticator``, every transaction needs AUTH first, and AUTH is only
    offered under TLS unless ``allow_auth_without_tls`` says otherwise.

    Bursts: ``backlog`` connections wait in the kernel's listen queue (the
    kernel caps it at ``net.core.somaxconn``); beyond ``max_sessions`` open
    sessions a client hears ``421 4.3.2`` and retries later; beyond
    ``max_recipients`` in one transaction a ``RCPT TO`` hears ``452 4.5.3``.
    ``pipelining`` offers PIPELINING (RFC 2920) in the EHLO reply.
    """

    def __init__(
        self,
        handler: SmtpHandler,
        /,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        security: SmtpSecurity = SmtpSecurity.NONE,
        tls_context: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        authenticator: Authenticator | None = None,
        allow_auth_without_tls: bool = False,
        smtputf8: bool = True,
        hostname: str = "localhost",
        data_size_limit: int | None = _DEFAULT_DATA_LIMIT,
        idle_timeout: float = 300.0,
        allow_non_loopback: bool = False,
        backlog: int = _DEFAULT_BACKLOG,
        max_sessions: int | None = None,
        max_recipients: int | None = None,
        pipelining: bool = False,
    ) -> None:
        _check_bind_host(host, allow_non_loopback=allow_non_loopback)
        for setting, value in (
            ("backlog", backlog),
            ("max_sessions", max_sessions),
            ("max_recipients", max_recipients),
        ):
            if value is not None and value < 1:
                raise ConfigurationError(
                    f"smtpd: {setting} must be at least 1, not {value}", setting=setting
                )
        if (security is SmtpSecurity.NONE) != (tls_context is None):
            raise ConfigurationError(
                "smtpd: give a tls_context exactly when security is starttls or tls",
                setting="tls_context",
            )
        if require_starttls and security is not SmtpSecurity.STARTTLS:
            raise ConfigurationError(
                "smtpd: require_starttls needs security=starttls", setting="require_starttls"
            )
        if (
            authenticator is not None
            and security is SmtpSecurity.NONE
            and not allow_auth_without_tls
        ):
            raise ConfigurationError(
                "smtpd: AUTH without TLS sends passwords in the clear; "
                "pass allow_auth_without_tls=True to mean it",
                setting="authenticator",
            )
        if idle_timeout <= 0:
            raise ConfigurationError("smtpd: idle_timeout must be positive", setting="idle_timeout")
        self._handler = handler
        self._host = host
        self._requested_port = port
        self._security = security
        self._tls_context = tls_context
        self._require_starttls = require_starttls
        self._authenticator = authenticator
        self._allow_auth_without_tls = allow_auth_without_tls
        self._smtputf8 = smtputf8
        self._hostname = hostname
        self._data_size_limit = data_size_limit
        self._idle_timeout = idle_timeout
        self._backlog = backlog
        self._max_sessions = max_sessions
        self._max_recipients = max_recipients
        self._pipelining = pipelining
        self._sessions = 0  # connections past the greeting, counted against max_sessions
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._live: set[_Protocol] = set()
        self._most_live = 0
        self._ids = itertools.count(1)

    host = ReadOnly[str]("_host")

    @property
    def port(self) -> int:
        """The port the server listens on; an ephemeral one unless a port was given."""
        if self._port is None:
            raise RuntimeError("smtpd: the server is not started")
        return self._port

    security = ReadOnly[SmtpSecurity]("_security")

    @property
    def open_connections(self) -> int:
        return len(self._live)

    most_open_connections = ReadOnly[int]("_most_live")  # the most open at once, so far

    async def start(self) -> None:
        """Listen; :attr:`port` is known afterwards."""
        if self._server is not None:
            raise RuntimeError("smtpd: the server is already started")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._make_protocol,
            self._host,
            self._requested_port,
            ssl=self._tls_context if self._security is SmtpSecurity.TLS else None,
            backlog=self._backlog,
        )
        self._port = int(self._server.sockets[0].getsockname()[1])
        _log.debug("smtpd: listening on %s:%d (%s)", self._host, self._port, self._security)

    async def aclose(self) -> None:
        """Stop listening and close every live connection; idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        await self.disconnect_all()
        await server.wait_closed()

    async def disconnect_all(self) -> None:
        """Drop every live connection now, as a restarting server does; keep listening."""
        protocols = list(self._live)
        for protocol in protocols:
            protocol.drop()
        waits: set[asyncio.Future[None]] = set()
        for protocol in protocols:
            waits.add(protocol.lost)
            task = protocol.task()
            if task is not None:
                waits.add(task)
        if waits:
            _done, pending = await asyncio.wait(waits, timeout=_STOP_GRACE)
            for future in pending:
                future.cancel()

    def _make_protocol(self) -> _Protocol:
        return _Protocol(self, next(self._ids))

    def _check_login(self, mechanism: str, login: bytes, password: bytes) -> bool:
        if self._authenticator is None:
            return False
        return self._authenticator(
            login.decode("utf-8", "surrogateescape"), password.decode("utf-8", "surrogateescape")
        )


class EmbeddedServer(AsyncResource, SmtpHandler):
    """A server sender runs: one :class:`SmtpServer` inside, started and closed with it.

    The capture server, the inbound listener and the recording test server differ only
    in what they answer and what they keep. Each is its inner server's
    :class:`SmtpHandler`: a subclass builds ``SmtpServer(self, ...)`` in its constructor,
    overrides the ``on_*`` replies it changes (the rest give the
    server's normal reply), and may prepare files in :meth:`_prepare` and say where it
    listens in :meth:`_started`.
    """

    _server: SmtpServer
    host = ReadOnly[str]("_server.host")
    port = ReadOnly[int]("_server.port", doc="Where it listens; ``RuntimeError`` before start.")

    async def start(self) -> None:
        """Prepare (create Maildirs, say), then listen: :attr:`port` is known afterwards."""
        await self._prepare()
        await self._server.start()
        self._started()

    async def aclose(self) -> None:
        """Stop listening and close every client connection; idempotent."""
        await self._server.aclose()

    async def _prepare(self) -> None:
        """What must exist before the first client connects; nothing by default."""

    def _started(self) -> None:
        """Called once listening (log where); nothing by default."""


class MaildirWriter:
    """A Maildir a server files whole messages into, as an MDA does; private to its owner.

    :meth:`open` creates it (and its parents) if needed; :meth:`add` writes off the
    event loop, one writer at a time, because mailbox's unique names assume that.
    """

    def __init__(self, path: Path, /, *, log: logging.Logger) -> None:
        self.path = Path(path)
        self._log = log  # the owner's logger: the line names the server that failed
        self._box: mailbox.Maildir | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        """Create the Maildir if needed; ``OSError`` when that fails."""
        self._box = await asyncio.to_thread(private_maildir, self.path)

    async def add(self, *messages: bytes) -> list[str] | None:
        """File each message; their keys, or None (logged) when the disk refused."""
        box = self._box
        if box is None:  # pragma: no cover - a server only runs after open()
            return None
        async with self._lock:
            try:
                return await asyncio.to_thread(
                    lambda: [add_private(box, self.path, data) for data in messages]
                )
            except OSError as exc:
                self._log.error("cannot write to the Maildir %s: %s", self.path, exc)
                return None
