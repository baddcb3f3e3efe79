"""The embedded default: a local SMTP server that files every message into a Maildir.

Sender starts it on ``127.0.0.1`` and an ephemeral port and sends to it with
the ordinary :class:`~sender.transport.smtp.SmtpTransport`, so a trial run
exercises the real SMTP path and nothing leaves the machine. Like an MDA it
writes one file per recipient, with ``Return-Path`` and ``Delivered-To``
prepended; the rest is exactly the bytes that arrived (CRLF line ends kept,
dot-stuffing removed), so signatures and parsers see what a server would.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

from sender.config import SmtpSecurity, SmtpSettings
from sender.models import SmtpReply
from sender.readonly import ReadOnly
from sender.servers.smtpd import (
    EmbeddedServer,
    MaildirWriter,
    ReceivedMessage,
    Response,
    SmtpServer,
)

__all__ = ["CaptureServer"]

_log = logging.getLogger("sender.transport")


class CaptureServer(EmbeddedServer):
    """An SMTP server on loopback that stores what it receives in ``maildir``.

    Accepts SMTPUTF8 and 8BITMIME. Creates the Maildir (and parents) if
    needed. Use ``async with``; :meth:`smtp_settings` tells a transport where
    to send. :attr:`stored` counts the files written: one per recipient of each
    accepted message.
    """

    def __init__(self, maildir: Path, /, *, host: str = "127.0.0.1") -> None:
        self._box = MaildirWriter(maildir, log=_log)
        self._server = SmtpServer(self, host=host, smtputf8=True)
        self._ids = itertools.count(1)
        self._stored = 0

    maildir = ReadOnly[Path]("_box.path")
    stored = ReadOnly[int]("_stored")

    def smtp_settings(self) -> SmtpSettings:
        """Settings that point a transport at this server (plain SMTP on loopback)."""
        return SmtpSettings(
            host=self.host,
            port=self.port,
            security=SmtpSecurity.NONE,
            timeout=10.0,
            local_hostname="localhost",
        )

    async def _prepare(self) -> None:
        await self._box.open()

    def _started(self) -> None:
        _log.info("capture: storing mail for %s:%d in %s", self.host, self.port, self.maildir)

    async def on_data(self, message: ReceivedMessage, /) -> Response:
        """Accepts every sender and recipient (the defaults); files one copy per recipient."""
        keys = await self._box.add(
            *(
                b"".join(
                    (
                        b"Return-Path: <" + message.mail_from.encode() + b">\r\n",
                        b"Delivered-To: " + recipient.encode() + b"\r\n",
                        message.data,
                    )
                )
                for recipient in message.recipients
            )
        )
        if keys is None:
            return SmtpReply(451, "4.3.0", "Cannot store the message")
        self._stored += len(keys)
        return SmtpReply(250, "2.0.0", f"Ok: queued as C{next(self._ids)}")
