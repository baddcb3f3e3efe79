"""The inbound listener: an SMTP server for the bounce domain and the calendar-reply addresses.

Sender's VERP return paths (``bounces+<token>@bounce.example.com``), the
List-Unsubscribe mailto address (``unsubscribe+<token>@bounce.example.com``, routed as
:attr:`Route.UNSUBSCRIBE`) and the address invitations ask attendees to reply to
(``invitation@calendar.example.com``) point here. The server accepts mail for exactly
those, refuses every other recipient (``550 5.7.1 relaying denied``), and hands each
accepted recipient's copy to the caller's ``on_mail`` as an :class:`InboundMail`, one per
recipient::

    async def on_mail(mail: InboundMail) -> None:
        ...  # classify the bounce, or read the RSVP

    async with InboundServer(
        bounce_domain="bounce.example.com",
        reply_addresses=["invitation@calendar.example.com"],
        on_mail=on_mail,
        keep_dir=Path("/var/lib/sender/inbound"),
    ) as server:
        ...

Classification is the caller's job. The contract here is only: deliver to
``on_mail``, or, when ``on_mail`` raises, keep the raw bytes in the Maildir
``keep_dir / "unprocessed"`` and still answer ``250``, so no mail is lost
because of a bug downstream. Only when even that write fails does the client
hear ``451 4.3.0`` and retry (which may hand recipients that did succeed to
``on_mail`` again: delivery is at least once). Mail that is for people rather
than machines (to the bounce domain but no bounce, say): ``on_mail`` returns
:attr:`Disposition.FOR_PERSON`, and the raw bytes are kept in the Maildir
``keep_dir / "for-people"`` for someone to read.

Logs name the route and the recipient's domain, never a local part or a body.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TypeAlias

from sender import redact
from sender.addresses import domain_of, is_address, mail_domain, split_address
from sender.config import InboundLimits
from sender.errors import ConfigurationError
from sender.models import SmtpReply
from sender.readonly import ReadOnly
from sender.servers.smtpd import (
    EmbeddedServer,
    MaildirWriter,
    ReceivedMessage,
    Response,
    Session,
    SmtpServer,
)

__all__ = ["Disposition", "InboundMail", "InboundServer", "Route", "kept_for_people"]

_log = logging.getLogger("sender.inbound")

_UNPROCESSED = "unprocessed"
_FOR_PEOPLE = "for-people"
_NULL_PATH = "<>"  # how aiosmtpd reports MAIL FROM:<>
_UNSUBSCRIBE = "unsubscribe+"  # the List-Unsubscribe mailto's local part (feedback.unsubscribe)


class Route(StrEnum):
    """Why the server accepted a recipient."""

    BOUNCE = "bounce"  # any address in the bounce domain: VERP return paths
    UNSUBSCRIBE = "unsubscribe"  # unsubscribe+TOKEN@ a bounce domain: List-Unsubscribe mailto
    REPLY = "reply"  # one of the reply addresses, e.g. invitation@calendar.example.com


@dataclass(frozen=True, slots=True)
class InboundMail:
    """One accepted recipient's copy of an arriving message."""

    route: Route
    recipient: str  # the RCPT TO address it was accepted for, lower-cased
    mail_from: str  # the envelope sender; "" for the null reverse-path bounces use
    data: bytes  # the raw message, exactly as it arrived (dot-stuffing removed)


class Disposition(StrEnum):
    """What ``on_mail`` made of a message (returning None means :attr:`TAKEN`)."""

    TAKEN = "taken"  # handled: a bounce recorded, an answer read
    FOR_PERSON = "for_person"  # not for machines: kept raw in keep_dir/for-people


Handler: TypeAlias = Callable[[InboundMail], Awaitable[Disposition | None]]
"""Takes one :class:`InboundMail`; raising keeps the message in ``keep_dir/unprocessed``."""


def kept_for_people(keep_dir: Path, /) -> tuple[Path, int]:
    """The Maildir ``keep_dir / "for-people"`` and how many messages it holds (0 if none)."""
    path = Path(keep_dir) / _FOR_PEOPLE
    count = 0
    for sub in ("new", "cur"):
        try:
            count += sum(1 for name in os.listdir(path / sub) if not name.startswith("."))
        except FileNotFoundError:
            continue
    return path, count


def _check_domain(domain: str) -> str:
    cleaned = mail_domain(domain)
    if cleaned is None:
        raise ConfigurationError(
            f"inbound: bounce domain {domain!r} is not a domain name", setting="bounce_domain"
        )
    return cleaned


def _check_address(address: str) -> str:
    cleaned = address.strip().lower()
    if not is_address(cleaned):
        raise ConfigurationError(
            f"inbound: reply address {address!r} is not an e-mail address",
            setting="reply_addresses",
        )
    return cleaned


class InboundServer(EmbeddedServer):
    """An SMTP server that accepts mail for the bounce domain and the reply addresses only.

    Give ``bounce_domain``, ``reply_addresses``, or both; with neither it would
    accept nothing, which is a :class:`~sender.errors.ConfigurationError`.
    Messages over ``max_size`` bytes are refused with ``552``. ``limits`` bounds
    a burst: the listen backlog, open sessions (``421`` beyond) and recipients
    per transaction (``452`` beyond). It binds to
    loopback unless ``allow_non_loopback`` says otherwise (put an MTA in front
    of it, or mean it). Use ``async with``, or :meth:`start` and :meth:`aclose`.

    What happened so far, counted once per recipient: :attr:`accepted` (``on_mail`` took
    the mail without raising), :attr:`refused` (at RCPT TO: neither a bounce nor a reply
    address), :attr:`kept` (in :attr:`unprocessed_dir`, ``keep_dir / "unprocessed"``,
    because ``on_mail`` raised) and :attr:`for_people` (in :attr:`for_people_dir`,
    ``keep_dir / "for-people"``, because ``on_mail`` left it for a person to read).
    """

    def __init__(
        self,
        *,
        bounce_domain: str | None,
        reply_addresses: Sequence[str] = (),
        on_mail: Handler,
        keep_dir: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        max_size: int = 10 * 1024 * 1024,
        allow_non_loopback: bool = False,
        limits: InboundLimits | None = None,
        bounce_aliases: Sequence[str] = (),
    ) -> None:
        if isinstance(reply_addresses, str):  # one address, not its characters
            raise ConfigurationError(
                "inbound: reply_addresses is a sequence of addresses, not one string",
                setting="reply_addresses",
            )
        self._bounce_domain = _check_domain(bounce_domain) if bounce_domain is not None else None
        # Further bounce domains (a stream's own), routed like the bounce domain.
        self._bounce_domains = frozenset(
            {_check_domain(d) for d in bounce_aliases}
            | ({self._bounce_domain} if self._bounce_domain else set())
        )
        self._reply_addresses = frozenset(_check_address(a) for a in reply_addresses)
        if not self._bounce_domains and not self._reply_addresses:
            raise ConfigurationError(
                "inbound: give a bounce domain or a reply address; "
                "with neither the server would refuse every message",
                setting="bounce_domain",
            )
        if max_size < 1:
            raise ConfigurationError(
                f"inbound: max_size must be a positive number of bytes, not {max_size}",
                setting="max_size",
            )
        limits = limits if limits is not None else InboundLimits()
        self._deliver = on_mail
        self._unprocessed = MaildirWriter(Path(keep_dir) / _UNPROCESSED, log=_log)
        self._people = MaildirWriter(Path(keep_dir) / _FOR_PEOPLE, log=_log)
        self._server = SmtpServer(
            self,
            host=host,
            port=port,
            smtputf8=True,
            data_size_limit=max_size,
            allow_non_loopback=allow_non_loopback,
            backlog=limits.backlog,
            max_sessions=limits.max_sessions,
            max_recipients=limits.max_recipients,
        )
        self._accepted = 0
        self._refused = 0
        self._kept = 0
        self._for_people = 0

    # -- lifecycle ---------------------------------------------------------------

    async def _prepare(self) -> None:
        """Create the Maildirs under ``keep_dir`` if needed."""
        for box in (self._unprocessed, self._people):
            try:
                await box.open()
            except OSError as exc:
                raise ConfigurationError(
                    f"inbound: cannot create the Maildir {box.path}: {exc}", setting="keep_dir"
                ) from exc

    def _started(self) -> None:
        _log.info(
            "inbound: listening on %s:%d for %s",
            self.host,
            self.port,
            ", ".join(self._describe()),
        )

    # -- what it is and what happened -------------------------------------------

    unprocessed_dir = ReadOnly[Path]("_unprocessed.path")
    for_people_dir = ReadOnly[Path]("_people.path")
    for_people = ReadOnly[int]("_for_people")
    accepted = ReadOnly[int]("_accepted")
    refused = ReadOnly[int]("_refused")
    kept = ReadOnly[int]("_kept")

    def _route(self, address: str, /) -> Route | None:
        """The route mail for ``address`` takes, or None when the server refuses it."""
        address = address.strip().lower()
        if address in self._reply_addresses:
            return Route.REPLY
        parts = split_address(address)
        if parts is not None and parts[1].rstrip(".") in self._bounce_domains:
            return Route.UNSUBSCRIBE if parts[0].startswith(_UNSUBSCRIBE) else Route.BOUNCE
        return None

    # -- the handler's work ------------------------------------------------------

    def _describe(self) -> list[str]:
        parts = [f"bounces @{d}" for d in sorted(self._bounce_domains)]
        if self._reply_addresses:
            parts.append(f"{len(self._reply_addresses)} reply address(es)")
        return parts

    async def on_rcpt(
        self, session: Session, address: str, options: tuple[str, ...], /
    ) -> Response:
        """Any sender is accepted (the null reverse-path too); a recipient only when routed."""
        route = self._route(address)
        if route is None:
            self._refused += 1
            _log.info("inbound: refused a recipient @%s (relaying denied)", domain_of(address))
            return SmtpReply(550, "5.7.1", "relaying denied")
        return None

    async def on_data(self, message: ReceivedMessage, /) -> Response:
        mail_from = "" if message.mail_from == _NULL_PATH else message.mail_from
        size = len(message.data)
        failed = False
        for address in message.recipients:  # only those on_rcpt accepted
            recipient = address.strip().lower()
            route = self._route(recipient)
            if route is None:  # pragma: no cover - on_rcpt refused these already
                continue
            mail = InboundMail(
                route=route, recipient=recipient, mail_from=mail_from, data=message.data
            )
            try:
                disposition = await self._deliver(mail)
            except Exception as exc:
                _log.error(
                    "inbound: on_mail failed on a %s message (%d bytes) to @%s; keeping it raw: "
                    "%s\n%s",
                    route,
                    size,
                    domain_of(recipient),
                    redact.error(exc),
                    redact.frames(exc),
                )
                if not await self._keep(message.data):
                    failed = True
                continue
            self._accepted += 1
            if disposition is Disposition.FOR_PERSON:
                if not await self._keep(message.data, for_person=True):
                    failed = True
                continue
            _log.info(
                "inbound: took a %s message (%d bytes) to @%s", route, size, domain_of(recipient)
            )
        if failed:
            return SmtpReply(451, "4.3.0", "Cannot store the message; try again later")
        return SmtpReply(250, "2.0.0", "OK")

    async def _keep(self, data: bytes, *, for_person: bool = False) -> bool:
        """Write ``data`` into the unprocessed (or for-people) Maildir; False when that fails."""
        box = self._people if for_person else self._unprocessed
        keys = await box.add(data)
        if keys is None:
            return False
        if for_person:
            self._for_people += 1
            _log.info("inbound: not for machines; kept for a person as %s in %s", keys[0], box.path)
        else:
            self._kept += 1
            _log.warning("inbound: kept an unprocessed message as %s in %s", keys[0], box.path)
        return True
