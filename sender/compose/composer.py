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
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypedDict

from sender.clock import Clock, SystemClock
from sender.compose.codes import CodeSigner
from sender.compose.event import CalendarEvent, CalendarMethod
from sender.compose.links import (
    IssuedLink,
    LinkSigner,
    ReturnPathSigner,
    UnsubscribeSigner,
    participant_key,
)
from sender.compose.mime import Attachment, BuiltMessage, MessageBuilder, Part, envelope_address
from sender.compose.render import RenderedMessage, Renderer
from sender.config import SenderSettings
from sender.errors import ConfigurationError, InputError
from sender.models import Address, Envelope, LoginCode, Participant
from sender.vocabulary import UNSUBSCRIBE_STREAMS, Stream

if TYPE_CHECKING:
    from sender.compose.dkim import DkimSigner

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
        "code",
        "unsubscribe_url",
    }
)
# RFC 8058: what subscription mail carries; sender writes them, never a caller.
LIST_UNSUBSCRIBE = "List-Unsubscribe"
LIST_UNSUBSCRIBE_POST = ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
_OWN_HEADERS = frozenset({"list-unsubscribe", "list-unsubscribe-post"})


@dataclass(frozen=True, slots=True)
class _Identity:
    """How one stream's mail goes out: its From (in the builder), return path and DKIM key."""

    builder: MessageBuilder
    return_path: str
    dkim: DkimSigner | None
    return_paths: ReturnPathSigner | None


def _identity(
    settings: SenderSettings,
    clock: Clock,
    aliases: tuple[str, ...] = (),
    *,
    unsubscribe: bool = False,
) -> _Identity:
    """One stream's identity; with ``unsubscribe`` its builder writes List-Unsubscribe-Post
    itself (the same line on every message: folded once, here)."""
    headers = dict(settings.headers)
    if unsubscribe:
        headers[LIST_UNSUBSCRIBE_POST[0]] = LIST_UNSUBSCRIBE_POST[1]
    return _Identity(
        builder=MessageBuilder(
            from_address=settings.from_address,
            reply_to=settings.reply_to,
            message_id_domain=settings.message_id_domain,
            headers=headers,
            clock=clock,
        ),
        return_path=envelope_address(settings.return_path or settings.from_address.email)[0],
        dkim=_dkim_signer(settings),
        return_paths=ReturnPathSigner(
            settings.links.secret_keys, domain=settings.bounce_domain, aliases=aliases
        )
        if settings.bounce_domain
        else None,
    )


def _dkim_signer(settings: SenderSettings) -> DkimSigner | None:
    """The stream's DKIM signer, if it signs. Imported here, the one place a signer is built:
    dkimpy (and dnspython, cryptography under it) load only when some stream signs."""
    if not (settings.dkim_domain and settings.dkim_selector and settings.dkim_private_key):
        return None
    from sender.compose.dkim import DkimKey, DkimSigner

    return DkimSigner(
        DkimKey(settings.dkim_domain, settings.dkim_selector, settings.dkim_private_key)
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
    """A message ready for the wire, with everything that went into it.

    ``code`` is what the store keeps of the login code the message shows (its keyed
    hash), when it shows one.
    """

    participant: Participant
    link: IssuedLink
    rendered: RenderedMessage
    message: BuiltMessage
    envelope: Envelope
    code: LoginCode | None = field(default=None, repr=False)

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
    code: bool  # a login code for templates that show one (kept by whoever sends)


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
        if any(name.lower() in _OWN_HEADERS for name, _ in settings.headers):
            raise ConfigurationError(
                "headers: sender writes List-Unsubscribe itself, on subscription mail only",
                setting="headers",
            )
        # Each stream's identity, made once: a stream with unsubscribe has its own builder
        # (List-Unsubscribe-Post is constant), over the default's settings if it has none.
        aliases = tuple(
            domain
            for stream in Stream
            if (domain := settings.for_stream(stream).bounce_domain)
            and domain != settings.bounce_domain
        )
        default = _identity(settings, self.clock, aliases)
        self._identities = {
            stream: default
            if (own := settings.for_stream(stream)) is settings
            and stream not in UNSUBSCRIBE_STREAMS
            else _identity(
                own,
                self.clock,
                aliases if own is settings else (),
                unsubscribe=stream in UNSUBSCRIBE_STREAMS,
            )
            for stream in Stream
        }
        self._builder = default.builder
        self._return_path = default.return_path
        self.dkim = default.dkim
        self.return_paths = default.return_paths  # verifies every stream's return paths
        self.unsubscribes = UnsubscribeSigner(settings.links.secret_keys)
        self._public_url = settings.public_url
        self.codes = CodeSigner(settings.links.secret_keys)

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

    def unsubscribe_url(self, token: str, /) -> str:
        """The one-click URL for ``token``, on ``public_url``'s host."""
        if self._public_url is None:
            raise ConfigurationError(
                "subscription mail needs public_url (where `sender serve` answers "
                "/u/TOKEN) for its one-click unsubscribe",
                setting="public_url",
            )
        return f"{self._public_url}/u/{token}"

    def _unsubscribe(
        self, stream: Stream, identity: _Identity, participant: Participant, key: str | None
    ) -> tuple[str, dict[str, str]]:
        """Subscription mail's unsubscribe URL and its List-Unsubscribe header (one HMAC)."""
        if key is not None:
            token = self.unsubscribes.for_key(stream, key)
        else:
            token = self.unsubscribes.for_address(
                stream, participant.email, participant.participant_id
            )
        url = self.unsubscribe_url(token)
        value = f"<{url}>"
        if key is not None and identity.return_paths is not None:
            value += f", <mailto:unsubscribe+{token}@{identity.return_paths.domain}>"
        return url, {LIST_UNSUBSCRIBE: value}  # List-Unsubscribe-Post: the builder's own

    def context(
        self, participant: Participant, link: IssuedLink, locale: str, code: str | None = None
    ) -> dict[str, object]:
        """The template variables for one participant: CSV extras plus sender's own.

        ``code`` is the login code as shown (``ABCD-EFGH``), or None: a template shows
        its code paragraph only when there is one.
        """
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
            "code": code,
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
        code: bool = False,
        purpose: str | None = None,
    ) -> ComposedMessage:
        """Issue the link, render the template and build the bytes (see :meth:`Sender.compose`).

        With ``code``, a template that shows ``{{ code }}`` gets a fresh login code, and
        the message its record (:attr:`ComposedMessage.code`) for the caller to keep.
        """
        if not participant.name.strip():
            raise InputError("the participant has no name", field="name")
        rcpt, smtputf8 = envelope_address(participant.email, field="email")
        purpose = purpose or link_purpose(template)
        link = self.links.issue(
            participant.participant_id,
            participant.course_id,
            purpose=purpose,
            next=next,
            ttl=ttl,
            stamp=stamp,
        )
        locale = self.renderer.resolve_locale(template, participant.locale)
        shown: str | None = None
        kept: LoginCode | None = None
        if code and self.renderer.uses(template, locale, "code"):
            shown, kept = self.codes.issue(
                participant_id=participant.participant_id,
                course_id=participant.course_id,
                email=participant.email,
                purpose=purpose,
                next=next,
                issued_at=link.issued_at.timestamp(),  # the link's, as its token says
                expires_at=link.expires_at.timestamp(),
            )
        context = self.context(participant, link, locale, shown)
        stream = self.renderer.stream(template)
        identity = self._identities[stream]
        if headers and any(name.lower() in _OWN_HEADERS for name in headers):
            raise InputError(
                "sender writes List-Unsubscribe itself, on subscription mail only",
                field="headers",
            )
        unsubscribe = None
        if stream in UNSUBSCRIBE_STREAMS:
            unsubscribe, own = self._unsubscribe(stream, identity, participant, return_path_key)
            context["unsubscribe_url"] = unsubscribe
            headers = {**headers, **own} if headers else own
        alternatives: list[Part] = []
        attachments: list[Attachment] = []
        if calendar is not None:
            calendar = self.with_uid(calendar)
            context.update(calendar.context())
            # Imported here, where the one calendar object is written: icalendar loads only
            # when a message carries one.
            from sender.compose.ical import build_invite

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
        rendered = self.renderer.render(
            template, locale=locale, context=context, link=link.url, unsubscribe=unsubscribe
        )
        message = identity.builder.build(
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
        if identity.dkim is not None:
            message = replace(message, data=identity.dkim.sign(message.data))
        envelope = Envelope(
            mail_from=self.mail_from(participant, return_path_key, stream=stream),
            recipients=(rcpt,),
            smtputf8=smtputf8 or message.smtputf8,
        )
        return ComposedMessage(participant, link, rendered, message, envelope, kept)

    def message_id_for(self, key: str, /) -> str:
        """The Message-ID for the message ``key`` names (an outbox message), always the same."""
        return self._builder.message_id_for(key)

    def mail_from(
        self,
        participant: Participant,
        key: str | None = None,
        /,
        *,
        stream: Stream = Stream.TRANSACTIONAL,
    ) -> str:
        """The envelope sender: the return path signed for ``key``, or for the participant,
        in ``stream``'s bounce domain.

        Without a bounce domain it is the configured return path; a single send whose
        participant id is too long for a key gets that too.
        """
        identity = self._identities[stream]
        if identity.return_paths is None:
            return identity.return_path
        if key is None:
            key = participant_key(participant.participant_id)
            if key is None:
                return identity.return_path
        return identity.return_paths.address(key)
