"""The embedded default: a local SMTP server that files every message into a Maildir.

Sender starts it on ``127.0.0.1`` and an ephemeral port and sends to it with
the ordinary :class:`~sender.transport.smtp.SmtpTransport`, so a trial run
exercises the real SMTP path and nothing leaves the machine. Like an MDA it
writes one file per recipient, with ``Return-Path`` and ``Delivered-To``
prepended; the rest is exactly the bytes that arrived (CRLF line ends kept,
dot-stuffing removed), so signatures and parsers see what a server would.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import mailbox
from pathlib import Path
from types import TracebackType
from typing import Self

from sender.config import SmtpSecurity, SmtpSettings
from sender.home import add_private, private_maildir
from sender.models import SmtpReply
from sender.servers.smtpd import ReceivedMessage, Response, SmtpHandler, SmtpServer

__all__ = ["CaptureServer"]

_log = logging.getLogger("sender.transport")


class CaptureServer:
    """An SMTP server on loopback that stores what it receives in ``maildir``.

    Accepts SMTPUTF8 and 8BITMIME. Creates the Maildir (and parents) if
    needed. Use ``async with``; :meth:`smtp_settings` tells a transport where
    to send.
    """

    def __init__(self, maildir: Path, /, *, host: str = "127.0.0.1") -> None:
        self._maildir = Path(maildir)
        self._server = SmtpServer(_CaptureHandler(self), host=host, smtputf8=True)
        self._box: mailbox.Maildir | None = None
        self._lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self._stored = 0

    @property
    def maildir(self) -> Path:
        return self._maildir

    @property
    def host(self) -> str:
        return self._server.host

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def stored(self) -> int:
        """Files written so far: one per recipient of each accepted message."""
        return self._stored

    def smtp_settings(self) -> SmtpSettings:
        """Settings that point a transport at this server (plain SMTP on loopback)."""
        return SmtpSettings(
            host=self.host,
            port=self.port,
            security=SmtpSecurity.NONE,
            timeout=10.0,
            local_hostname="localhost",
        )

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Create the Maildir if needed, then listen."""
        self._box = await asyncio.to_thread(private_maildir, self._maildir)
        await self._server.start()
        _log.info("capture: storing mail for %s:%d in %s", self.host, self.port, self._maildir)

    async def aclose(self) -> None:
        await self._server.aclose()

    async def _store(self, message: ReceivedMessage) -> Response:
        box = self._box
        if box is None:  # pragma: no cover - the server only runs after start()
            return SmtpReply(451, "4.3.0", "Mailbox not ready")
        files = [
            b"".join(
                (
                    b"Return-Path: <" + message.mail_from.encode() + b">\r\n",
                    b"Delivered-To: " + recipient.encode() + b"\r\n",
                    message.data,
                )
            )
            for recipient in message.recipients
        ]
        async with self._lock:  # mailbox's unique names assume one writer at a time
            try:
                keys = await asyncio.to_thread(
                    lambda: [add_private(box, self._maildir, data) for data in files]
                )
            except OSError as exc:
                _log.error("capture: cannot write to %s: %s", self._maildir, exc)
                return SmtpReply(451, "4.3.0", "Cannot store the message")
        self._stored += len(keys)
        return SmtpReply(250, "2.0.0", f"Ok: queued as C{next(self._ids)}")


class _CaptureHandler(SmtpHandler):
    """Accepts every sender and recipient (the Protocol's defaults); stores at DATA."""

    def __init__(self, owner: CaptureServer) -> None:
        self._owner = owner

    async def on_data(self, message: ReceivedMessage, /) -> Response:
        return await self._owner._store(message)
