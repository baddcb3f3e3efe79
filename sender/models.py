"""Plain records that flow through sender: who we write to, what came back.

Everything here is a frozen, slotted dataclass or a StrEnum, so records can be
shared between tasks and stored without defensive copies.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from sender.addresses import domain_key
from sender.errors import PermanentDeliveryError, TemporaryDeliveryError

__all__ = [
    "TIMEOUT",
    "Address",
    "DeliveryResult",
    "DeliveryStatus",
    "Envelope",
    "Participant",
    "RecipientResult",
    "SmtpReply",
]

_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})(?:\s+|$)")


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
class Participant:
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
class SmtpReply:
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
class DeliveryResult:
    """What happened to one message for one participant."""

    email: str
    message_id: str
    status: DeliveryStatus
    reply: SmtpReply | None = None
    detail: str = ""
    participant_id: str | None = None
    stage: str = ""  # the SMTP command that refused it: "mail", "rcpt" or "data"; "" otherwise

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
