"""One participant's message, start to finish: the one door into ``compose/``.

:class:`Composer` ties the steps together in their one order: the personal link
(:mod:`~sender.compose.links`), the template (:mod:`~sender.compose.render`), the
calendar object (:mod:`~sender.compose.ical`), the bytes (:mod:`~sender.compose.mime`),
the signature (:mod:`~sender.compose.dkim`) and the envelope with its signed return
path. :class:`~sender.client.Sender` and the bulk workers call it once per message;
nothing here sends or stores anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TypedDict

from sender.clock import Clock, SystemClock
from sender.compose.dkim import DkimKey, DkimSigner
from sender.compose.ical import CalendarEvent, CalendarMethod, build_invite
from sender.compose.links import (
    IssuedLink,
    LinkSigner,
    ReturnPathSigner,
    participant_key,
)
from sender.compose.mime import Attachment, BuiltMessage, MessageBuilder, Part, envelope_address
from sender.compose.render import RenderedMessage, Renderer
from sender.config import SenderSettings
from sender.errors import InputError
from sender.models import Address, Envelope, Participant

__all__ = [
    "CALENDAR_TEMPLATES",
    "RESERVED_VARIABLES",
    "CalendarSend",
    "ComposeOptions",
    "ComposedMessage",
    "Composer",
    "calendar_for",
    "link_purpose",
]

# Template variables sender fills itself; a CSV column must not replace them.
RESERVED_VARIABLES = frozenset(
    {
        "name",
        "email",
        "link",
        "participant_id",
        "course_id",
        "organization",
        "expires_days",
        "locale",
    }
)


@dataclass(frozen=True, slots=True)
class CalendarSend:
    """The calendar object a message carries: the event, REQUEST or CANCEL, and its SEQUENCE.

    ``changes`` names what an update changed (``"time"``, ``"place"``, ...), so the
    subject can say it; a first invitation has none.
    """

    event: CalendarEvent
    method: CalendarMethod = CalendarMethod.REQUEST
    sequence: int = 0
    changes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.method not in (CalendarMethod.REQUEST, CalendarMethod.CANCEL):
            raise InputError("a calendar mail is a REQUEST or a CANCEL", field="method")
        if self.sequence < 0:
            raise InputError("SEQUENCE cannot be negative", field="sequence")

    @property
    def template(self) -> str:
        """The built-in template set for this kind of calendar mail."""
        if self.method is CalendarMethod.CANCEL:
            return "invite_cancel"
        return "invite_update" if self.changes else "invite"

    def context(self) -> dict[str, object]:
        """The ``event_*`` template variables."""
        event = self.event
        return {
            "event_summary": event.summary,
            "event_description": event.description,
            "event_location": event.location,
            "event_date": event.start.date().isoformat(),
            "event_start_time": event.start.strftime("%H:%M"),
            "event_end_date": event.end.date().isoformat(),
            "event_end_time": event.end.strftime("%H:%M"),
            "event_timezone": event.timezone,
            "event_changes": list(self.changes),
        }


# The built-in calendar template sets: the method each sends, and what an update changed.
CALENDAR_TEMPLATES: dict[str, tuple[CalendarMethod, tuple[str, ...]]] = {
    "invite": (CalendarMethod.REQUEST, ()),
    "invite_update": (CalendarMethod.REQUEST, ("time",)),
    "invite_cancel": (CalendarMethod.CANCEL, ()),
}


def calendar_for(
    template: str, event: CalendarEvent, /, *, sequence: int | None = None
) -> CalendarSend:
    """The calendar part a preview of calendar template ``template`` carries for ``event``:
    its method, SEQUENCE 0 for a first invitation and 1 otherwise (unless given)."""
    kind = CALENDAR_TEMPLATES.get(template)
    if kind is None:
        raise InputError(
            f"{template} is not a calendar template ({', '.join(CALENDAR_TEMPLATES)})",
            field="template",
        )
    method, changes = kind
    default = 0 if template == "invite" else 1
    return CalendarSend(event, method, default if sequence is None else sequence, changes)


@dataclass(frozen=True, slots=True)
class ComposedMessage:
    """A message ready for the wire, with everything that went into it."""

    participant: Participant
    link: IssuedLink
    rendered: RenderedMessage
    message: BuiltMessage
    envelope: Envelope

    @property
    def message_id(self) -> str:
        return self.message.message_id


class ComposeOptions(TypedDict, total=False):
    """What one message may set besides its participant (:meth:`Composer.compose`)."""

    template: str  # the template set; ``invitation`` by default
    next: str | None  # the path the link leads to after login
    ttl: timedelta | None  # how long the link lasts, if not the settings' default
    stamp: str | None  # revokes links issued under another stamp
    reply_to: Address | None
    headers: Mapping[str, str] | None
    message_id: str | None  # a retry's: the first attempt's Message-ID
    calendar: CalendarSend | None
    return_path_key: str | None  # what the signed return path names (``m<id>``)
    purpose: str | None  # the link's purpose; by default the template's (link_purpose)


def link_purpose(template: str, /) -> str:
    """The purpose a mail's link gets by default: ``get_link`` for the get_link template,
    ``invitation`` for every other (invitations and calendar mail), which stay reusable
    until they expire; ``login``, one-time by default, is for links an LMS issues itself."""
    return "get_link" if template == "get_link" else "invitation"


class Composer:
    """Makes one participant's message from the sender settings; sends nothing.

    Everything it needs is built once from :class:`~sender.config.SenderSettings`
    (the link and return-path signers, the message builder, the DKIM signer), so
    composing a message costs only that message's own work.
    """

    def __init__(
        self,
        settings: SenderSettings,
        /,
        *,
        clock: Clock | None = None,
        renderer: Renderer | None = None,
    ) -> None:
        self._settings = settings
        self.clock = clock or SystemClock()  # the sender's: its sends and links agree on the time
        self.links = LinkSigner(settings.links, clock=self.clock)
        self.renderer = renderer or Renderer(
            template_dirs=settings.template_dirs,
            allowed_link_domains=settings.allowed_link_domains,
        )
        self._builder = MessageBuilder(
            from_address=settings.from_address,
            reply_to=settings.reply_to,
            message_id_domain=settings.message_id_domain,
            headers=dict(settings.headers),
            clock=self.clock,
        )
        self._return_path = envelope_address(settings.return_path or settings.from_address.email)[0]
        self.dkim = (
            DkimSigner(
                DkimKey(settings.dkim_domain, settings.dkim_selector, settings.dkim_private_key)
            )
            if settings.dkim_domain and settings.dkim_selector and settings.dkim_private_key
            else None
        )
        self.return_paths = (
            ReturnPathSigner(settings.links.secret_keys, domain=settings.bounce_domain)
            if settings.bounce_domain
            else None
        )

    def with_uid(self, calendar: CalendarSend, /) -> CalendarSend:
        """``calendar`` with its event's UID set: keyed with the newest secret key when new.

        The unkeyed UID (:attr:`CalendarEvent.event_uid`) is never sent for a new event,
        so nobody can compute an event's UID, and with it forge a reply, from its ids.
        """
        event = calendar.event
        if event.uid is not None:
            return calendar
        uid = event.keyed_uid(self._settings.links.secret_keys[-1])
        return replace(calendar, event=replace(event, uid=uid))

    def context(self, participant: Participant, link: IssuedLink, locale: str) -> dict[str, object]:
        """The template variables for one participant: CSV extras plus sender's own."""
        clash = RESERVED_VARIABLES.intersection(participant.vars)
        if clash:
            field = sorted(clash)[0]
            raise InputError(f"{field!r} is filled in by sender and cannot be set", field=field)
        ttl = (link.expires_at.timestamp() - self.clock.now()) / 86400
        return {
            "course_name": participant.course_id,
            **participant.vars,
            "name": participant.name,
            "email": participant.email,
            "link": link.url,
            "participant_id": participant.participant_id,
            "course_id": participant.course_id,
            "organization": self._settings.organization_name,
            "expires_days": max(1, math.ceil(round(ttl, 6))),
            "locale": locale,
        }

    def compose(
        self,
        participant: Participant,
        /,
        *,
        template: str = "invitation",
        next: str | None = None,
        ttl: timedelta | None = None,
        stamp: str | None = None,
        reply_to: Address | None = None,
        headers: Mapping[str, str] | None = None,
        message_id: str | None = None,
        calendar: CalendarSend | None = None,
        return_path_key: str | None = None,
        purpose: str | None = None,
    ) -> ComposedMessage:
        """Issue the link, render the template and build the bytes (see :meth:`Sender.compose`)."""
        if not participant.name.strip():
            raise InputError("the participant has no name", field="name")
        rcpt, smtputf8 = envelope_address(participant.email, field="email")
        link = self.links.issue(
            participant.participant_id,
            participant.course_id,
            purpose=purpose or link_purpose(template),
            next=next,
            ttl=ttl,
            stamp=stamp,
        )
        locale = self.renderer.resolve_locale(template, participant.locale)
        context = self.context(participant, link, locale)
        alternatives: list[Part] = []
        attachments: list[Attachment] = []
        if calendar is not None:
            calendar = self.with_uid(calendar)
            context.update(calendar.context())
            ics = build_invite(
                calendar.event,
                method=calendar.method,
                attendee_email=participant.email,
                attendee_name=participant.name,
                sequence=calendar.sequence,
                dtstamp=datetime.fromtimestamp(self.clock.now(), UTC),
                link=link.url,
            )
            alternatives.append(Part(f"text/calendar; method={calendar.method.value}", ics))
            attachments.append(Attachment("application/ics", "invite.ics", ics))
        rendered = self.renderer.render(template, locale=locale, context=context, link=link.url)
        message = self._builder.build(
            to=Address(participant.email, participant.name),
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            reply_to=reply_to,
            headers=headers,
            message_id=message_id,
            alternatives=alternatives,
            attachments=attachments,
        )
        if self.dkim is not None:
            message = replace(message, data=self.dkim.sign(message.data))
        envelope = Envelope(
            mail_from=self.mail_from(participant, return_path_key),
            recipients=(rcpt,),
            smtputf8=smtputf8 or message.smtputf8,
        )
        return ComposedMessage(participant, link, rendered, message, envelope)

    def message_id_for(self, key: str, /) -> str:
        """The Message-ID for the message ``key`` names (an outbox message), always the same."""
        return self._builder.message_id_for(key)

    def mail_from(self, participant: Participant, key: str | None = None, /) -> str:
        """The envelope sender: the return path signed for ``key``, or for the participant.

        Without a bounce domain it is the configured return path; a single send whose
        participant id is too long for a key gets that too.
        """
        if self.return_paths is None:
            return self._return_path
        if key is None:
            key = participant_key(participant.participant_id)
            if key is None:
                return self._return_path
        return self.return_paths.address(key)
