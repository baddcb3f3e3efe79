"""Plain records that flow through sender: who we write to, what came back.

Everything here is a frozen, slotted dataclass or a StrEnum, so records can be
shared between tasks and stored without defensive copies.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from sender.addresses import domain_key
from sender.errors import PermanentDeliveryError, TemporaryDeliveryError

__all__ = [
    "TIMEOUT",
    "Address",
    "DeliveryResult",
    "DeliveryStatus",
    "Envelope",
    "LoginCode",
    "Participant",
    "Positional",
    "RecipientResult",
    "SmtpReply",
]

_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})(?:\s+|$)")


class Positional:
    """Base of the records a bulk run sends through its worker pipes, once per message.

    They pickle as their constructor call with positional arguments. dataclasses' own
    pickling of a frozen slotted class sets each field in Python, one
    ``object.__setattr__`` at a time; this halves the cost both ways.
    """

    __slots__ = ()

    def __reduce__(self) -> tuple[Any, ...]:
        cls = type(self)
        return cls, _arguments(cls)(self)


_ARGUMENTS: dict[type, Callable[[object], tuple[Any, ...]]] = {}


def _arguments(cls: type) -> Callable[[object], tuple[Any, ...]]:
    """What reads the constructor's arguments off an instance of ``cls``, in order: an
    ``attrgetter`` of every field (one field too, as a 1-tuple), made once per class."""
    read = _ARGUMENTS.get(cls)
    if read is None:
        found = fields(cls)
        if not all(f.init and not f.kw_only for f in found):
            raise TypeError(f"{cls.__name__}: every field must be a positional __init__ argument")
        names = [f.name for f in found]
        if len(names) == 1:
            one = operator.attrgetter(names[0])
            read = _ARGUMENTS[cls] = lambda instance: (one(instance),)
        else:
            read = _ARGUMENTS[cls] = operator.attrgetter(*names)
    return read


class DeliveryStatus(StrEnum):
    """What the receiving server said about one recipient."""

    ACCEPTED = "accepted"
    TEMPORARY = "temporary"  # 4xx, timeout, disconnect: try again later
    PERMANENT = "permanent"  # 5xx: never try again
    SUPPRESSED = "suppressed"  # on the suppression list: not sent at all
    UNSUBSCRIBED = "unsubscribed"  # unsubscribed from the template's stream: not sent

    @classmethod
    def from_code(cls, code: int) -> DeliveryStatus:
        """Classify an SMTP reply code; anything that is not 2xx or 5xx is retryable."""
        if 200 <= code < 300:
            return cls.ACCEPTED
        if 500 <= code < 600:
            return cls.PERMANENT
        return cls.TEMPORARY


@dataclass(frozen=True, slots=True)
class Address:
    """A mailbox with an optional display name, as in ``From`` or ``Reply-To``."""

    email: str
    name: str = ""

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email

    @property
    def domain(self) -> str:
        return self.email.rpartition("@")[2]


@dataclass(frozen=True, slots=True)
class Participant(Positional):
    """One person an LMS wants to reach. ``vars`` become template variables."""

    email: str
    name: str
    participant_id: str
    course_id: str
    locale: str = "en"
    vars: Mapping[str, str] = field(default_factory=dict)

    @property
    def domain(self) -> str:
        """The receiving domain as :func:`~sender.addresses.domain_key` spells it.

        Per-domain pacing and status rows use it, so ``bücher.example`` and
        ``xn--bcher-kva.example`` are one receiver, as they are to DNS.
        """
        return domain_key(self.email.rpartition("@")[2])


@dataclass(frozen=True, slots=True)
class Envelope:
    """The SMTP envelope: who bounces come back to, and who receives the bytes."""

    mail_from: str
    recipients: tuple[str, ...]
    smtputf8: bool = False


@dataclass(frozen=True, slots=True)
class SmtpReply(Positional):
    """One SMTP reply: the code, the RFC 3463 enhanced status when given, and the text."""

    code: int
    enhanced_status: str | None
    text: str

    @classmethod
    def parse(cls, code: int, message: str) -> SmtpReply:
        """Split ``"5.1.1 User unknown"`` into its enhanced status and text."""
        match = _ENHANCED.match(message)
        if match is None:
            return cls(code, None, message.strip())
        return cls(code, match.group(1), message[match.end() :].strip())

    def __str__(self) -> str:
        parts = [str(self.code)]
        if self.enhanced_status:
            parts.append(self.enhanced_status)
        if self.text:
            parts.append(self.text)
        return " ".join(parts)


TIMEOUT = "timeout"
"""A result's ``detail`` when a connect or command got no answer in time (a silent relay)."""


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """A transport's verdict on one envelope recipient. ``reply`` is None when none came."""

    recipient: str
    status: DeliveryStatus
    reply: SmtpReply | None = None
    detail: str = ""  # why there is no reply: "timeout", "connection lost", ...
    stage: str = ""  # the command whose reply decided it: "mail", "rcpt", "data"; "" otherwise

    def describe(self) -> str:
        if self.reply is not None:
            return str(self.reply)
        return self.detail or self.status.value


@dataclass(frozen=True, slots=True)
class LoginCode(Positional):
    """What the store keeps of a login code mailed to a participant: never the code itself.

    ``address`` is the canonical key of the address it was mailed to, ``digest`` the
    keyed hash of the code (:class:`sender.compose.codes.CodeSigner`); the rest is what
    the code opens, as the claims of the link it came with.
    """

    address: str
    digest: str = field(repr=False)
    participant_id: str
    course_id: str
    purpose: str
    next: str | None
    issued_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class DeliveryResult(Positional):
    """What happened to one message for one participant.

    ``code`` is the login code the message carried (its keyed hash), for whoever records
    the result to keep; it is not part of :meth:`as_dict`.
    """

    email: str
    message_id: str
    status: DeliveryStatus
    reply: SmtpReply | None = None
    detail: str = ""
    participant_id: str | None = None
    stage: str = ""  # the SMTP command that refused it: "mail", "rcpt" or "data"; "" otherwise
    code: LoginCode | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.status is DeliveryStatus.ACCEPTED

    @property
    def refused_recipient(self) -> bool:
        """The server refused this recipient (a 4xx or 5xx at RCPT or DATA): a bounce.

        A refused MAIL FROM, a greeting or a lost connection says nothing about the
        recipient, so it is none.
        """
        return self.reply is not None and self.reply.code >= 400 and self.stage in ("rcpt", "data")

    def describe(self) -> str:
        if self.reply is not None:
            return str(self.reply)
        return self.detail or self.status.value

    def as_dict(self) -> dict[str, str | None]:
        """The result as JSON-ready data (``sender send --json``, the HTTP API)."""
        return {
            "email": self.email,
            "participant_id": self.participant_id,
            "status": self.status.value,
            "reply": None if self.reply is None else str(self.reply),
            "detail": self.detail,
            "message_id": self.message_id,
        }

    def raise_for_status(self) -> DeliveryResult:
        """Return self when accepted; raise the matching :class:`DeliveryError` otherwise."""
        if self.status is DeliveryStatus.ACCEPTED:
            return self
        message = f"{self.email}: {self.describe()}"
        if self.status in (
            DeliveryStatus.PERMANENT,
            DeliveryStatus.SUPPRESSED,
            DeliveryStatus.UNSUBSCRIBED,
        ):
            raise PermanentDeliveryError(message, result=self)
        raise TemporaryDeliveryError(message, result=self)
