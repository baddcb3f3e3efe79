"""The request bodies of the HTTP API, as frozen dataclasses.

The web framework validates JSON against them and writes them into the OpenAPI document
(``GET /openapi.json``), from which an LMS in any language can generate a client.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "AssertionRequest",
    "LinkRequest",
    "MessageRequest",
    "ParticipantIn",
    "RunRequest",
    "SuppressionRequest",
    "VerifyRequest",
]


@dataclass(frozen=True, slots=True)
class LinkRequest:
    """A Get Link to issue: who, which course, where to land after login, how long."""

    participant_id: str
    course_id: str
    next: str | None = None  # a same-site path, e.g. /courses/1
    ttl: str | int | None = None  # 7d, 12h, or seconds; default: the configured link_ttl
    stamp: str | None = None  # revocation stamp
    purpose: str = "login"  # one_time_purposes (login by default) redeem once


@dataclass(frozen=True, slots=True)
class VerifyRequest:
    """A link (``url``) or its ``token`` to check, with the participant's current stamp."""

    token: str | None = None
    url: str | None = None
    stamp: str | None = None
    purpose: str | None = None  # the purpose it must have; default: any configured


@dataclass(frozen=True, slots=True)
class AssertionRequest:
    """A landing page's assertion to check (and use up), optionally for one purpose."""

    assertion: str
    purpose: str | None = None


@dataclass(frozen=True, slots=True)
class ParticipantIn:
    """One participant, as a CSV row names them; ``vars`` become template variables."""

    email: str
    name: str
    participant_id: str
    course_id: str
    locale: str | None = None
    vars: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MessageRequest:
    """One message to send now."""

    participant: ParticipantIn
    template: str = "invitation"
    locale: str | None = None  # used when the participant names none; default en
    next: str | None = None


@dataclass(frozen=True, slots=True)
class RunRequest:
    """A run to enqueue; the same ``run_id`` again queues only added or corrected rows."""

    participants: list[ParticipantIn]
    template: str = "invitation"
    run_id: str | None = None


@dataclass(frozen=True, slots=True)
class SuppressionRequest:
    """An address never to write to again, until removed."""

    address: str
    reason: str = "added through the API"
