"""The library API an LMS calls: compose and send one participant's mail.

:class:`Sender` ties the layers together — links, templates, message bytes,
transport — and returns a :class:`~sender.models.DeliveryResult` per send
instead of raising on a refused recipient, so a caller decides what a 4xx or
5xx means for them (``result.raise_for_status()`` when they want an
exception).
"""

from __future__ import annotations

import base64
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Protocol

from sender import redact
from sender.clock import Clock, SystemClock
from sender.compose.dkim import DkimKey, DkimSigner
from sender.compose.ical import CalendarEvent, CalendarMethod, build_invite
from sender.compose.links import IssuedLink, LinkClaims, LinkSigner, ReturnPathSigner
from sender.compose.mime import Attachment, BuiltMessage, MessageBuilder, Part, envelope_address
from sender.compose.render import RenderedMessage, Renderer
from sender.config import BouncePolicy, SenderSettings, SmtpSettings
from sender.errors import ConfigurationError, InputError
from sender.feedback.suppression import keep_refusal
from sender.models import Address, DeliveryResult, DeliveryStatus, Envelope, Participant
from sender.pacing.schedule import Scheduler
from sender.servers.capture import CaptureServer
from sender.store import Store
from sender.transport import SmtpTransport, Transport

__all__ = ["CalendarSend", "ComposedMessage", "Sender", "SuppressionList", "open_sender"]

log = logging.getLogger("sender")

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


class SuppressionList(Protocol):
    """Where :meth:`Sender.send` looks up addresses it must not write to (a Store is one)."""

    async def suppressed(self, addresses: Sequence[str], /) -> Mapping[str, object]: ...


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


class Sender:
    """Sends personal-link mail to LMS participants.

    Use it as an async context manager so the transport's connections are
    closed. ``transport`` may be omitted for composing only (previews,
    ``sender render``).

    With a ``store`` (the outbox), every send meets the bounce loop: an address on
    its suppression list is not sent (``SUPPRESSED``), and a recipient the server
    refuses at RCPT or DATA is kept as a bounce under ``bounce_policy``.
    ``suppression`` overrides where the list is looked up.
    """

    def __init__(
        self,
        settings: SenderSettings,
        /,
        *,
        transport: Transport | None = None,
        clock: Clock | None = None,
        renderer: Renderer | None = None,
        scheduler: Scheduler | None = None,
        suppression: SuppressionList | None = None,
        store: Store | None = None,
        bounce_policy: BouncePolicy | None = None,
    ) -> None:
        self._settings = settings
        self._transport = transport
        self.scheduler = scheduler
        self.store = store
        self.suppression: SuppressionList | None = suppression if suppression is not None else store
        self.bounce_policy = bounce_policy if bounce_policy is not None else BouncePolicy()
        # Set by a bulk runner whose bounce policy pauses single sends too: why not to send.
        self.send_guard: Callable[[], Awaitable[str | None]] | None = None
        self._clock = clock or SystemClock()
        self.links = LinkSigner(settings.links, clock=self._clock)
        self.renderer = renderer or Renderer(
            template_dirs=settings.template_dirs,
            allowed_link_domains=settings.allowed_link_domains,
        )
        self._builder = MessageBuilder(
            from_address=settings.from_address,
            reply_to=settings.reply_to,
            message_id_domain=settings.message_id_domain,
            headers=dict(settings.headers),
            clock=self._clock,
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

    @property
    def settings(self) -> SenderSettings:
        return self._settings

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

    @property
    def transport(self) -> Transport | None:
        return self._transport

    async def __aenter__(self) -> Sender:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._transport is not None:
            await self._transport.aclose()

    # --- links -------------------------------------------------------------------------

    def get_link(
        self,
        participant: Participant,
        /,
        *,
        next: str | None = None,
        ttl: timedelta | None = None,
        stamp: str | None = None,
        purpose: str = "login",
    ) -> IssuedLink:
        """The participant's personal login link: what "Get Link" shows an admin."""
        return self.links.issue(
            participant.participant_id,
            participant.course_id,
            purpose=purpose,
            next=next,
            ttl=ttl,
            stamp=stamp,
        )

    def verify_link(
        self, url_or_token: str, /, *, stamp: str | None = None, purpose: str = "login"
    ) -> LinkClaims:
        """Verify a login link; raises LinkInvalid, LinkExpired or LinkRevoked."""
        return self.links.verify(url_or_token, stamp=stamp, purpose=purpose)

    # --- composing ---------------------------------------------------------------------

    def context(self, participant: Participant, link: IssuedLink, locale: str) -> dict[str, object]:
        """The template variables for one participant: CSV extras plus sender's own."""
        clash = RESERVED_VARIABLES.intersection(participant.vars)
        if clash:
            field = sorted(clash)[0]
            raise InputError(f"{field!r} is filled in by sender and cannot be set", field=field)
        ttl = (link.expires_at.timestamp() - self._clock.now()) / 86400
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
    ) -> ComposedMessage:
        """Issue the link, render the template and build the bytes, without sending.

        ``message_id`` lets a retry carry the first attempt's Message-ID, so a
        receiver that got both copies after a crash can tell they are one message.
        With a bounce domain configured, the envelope sender is a signed return path
        for ``return_path_key`` (an outbox message: ``m<id>``), or else for the
        participant, so every bounce names what it answers.
        ``calendar`` adds the invitation (or cancellation) for this participant as
        ``text/calendar`` inside the alternative and as an ``invite.ics`` attachment,
        the layout Outlook, Gmail, Apple Mail and Thunderbird all accept.

        Raises :class:`~sender.errors.InputError` for unusable participant
        data and :class:`~sender.errors.TemplateError` for template problems,
        naming the field or variable.
        """
        if not participant.name.strip():
            raise InputError("the participant has no name", field="name")
        rcpt, smtputf8 = envelope_address(participant.email, field="email")
        link = self.get_link(participant, next=next, ttl=ttl, stamp=stamp)
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
                dtstamp=datetime.fromtimestamp(self._clock.now(), UTC),
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
            mail_from=self._mail_from(participant, return_path_key),
            recipients=(rcpt,),
            smtputf8=smtputf8 or message.smtputf8,
        )
        return ComposedMessage(participant, link, rendered, message, envelope)

    def message_id_for(self, key: str, /) -> str:
        """The Message-ID for the message ``key`` names (an outbox message), always the same.

        A message re-sent after a crash then carries the Message-ID of the copy that
        may already have arrived, so the receiver can tell they are one message.
        """
        return self._builder.message_id_for(key)

    def _mail_from(self, participant: Participant, key: str | None) -> str:
        if self.return_paths is None:
            return self._return_path
        if key is None:  # a single send: the participant id, when it fits a local part
            encoded = base64.b32encode(participant.participant_id.encode()).decode()
            key = "p" + encoded.rstrip("=").lower()
            if len(key) > 40:
                return self._return_path
        return self.return_paths.address(key)

    # --- sending -----------------------------------------------------------------------

    async def deliver(
        self, composed: ComposedMessage, /, *, feedback: bool = True
    ) -> DeliveryResult:
        """Hand a composed message to the transport now and report the recipient's fate.

        No scheduling happens here: the bulk engine calls this once the scheduler
        granted a slot; :meth:`send` goes through the priority lane first.
        This is the choke point every send passes: with ``feedback`` (the default) an
        address on the suppression list is not sent (``SUPPRESSED``), and a recipient
        refused at RCPT or DATA is kept as a bounce in :attr:`store`. The bulk engine
        passes ``feedback=False``: its claim checks the list in the same statement,
        and it keeps refusals where it records outcomes, worker processes included.
        """
        if feedback:
            blocked = await self._suppressed(composed.participant, composed.rendered.template)
            if blocked is not None:
                return blocked
        return await self._hand_over(composed, feedback=feedback)

    async def _suppressed(self, participant: Participant, template: str) -> DeliveryResult | None:
        """The ``SUPPRESSED`` result when the address (in any spelling) is on the list."""
        if self.suppression is None or not await self.suppression.suppressed([participant.email]):
            return None
        log.warning(
            "%s for participant %s: suppressed, not sent", template, participant.participant_id
        )
        return DeliveryResult(
            email=participant.email,
            message_id="",
            status=DeliveryStatus.SUPPRESSED,
            detail="the address is on the suppression list",
            participant_id=participant.participant_id,
        )

    async def _keep_refusal(self, composed: ComposedMessage, result: DeliveryResult) -> None:
        """A recipient refused at RCPT or DATA: a bounce for the rules, as a DSN would be."""
        if self.store is None or not result.refused_recipient:
            return
        why = await keep_refusal(
            self.store,
            result,
            key=composed.message_id,
            policy=self.bounce_policy,
            now=self._clock.now(),
        )
        if why is not None:
            log.warning(
                "participant %s: address suppressed: %s", result.participant_id, redact.text(why)
            )

    async def _hand_over(self, composed: ComposedMessage, *, feedback: bool) -> DeliveryResult:
        if self._transport is None:
            raise ConfigurationError("this Sender has no transport; pass transport= to send")
        results = await self._transport.send(composed.envelope, composed.message.data)
        outcome = results[0]
        result = DeliveryResult(
            email=composed.participant.email,
            message_id=composed.message_id,
            status=outcome.status,
            reply=outcome.reply,
            detail=outcome.detail,
            participant_id=composed.participant.participant_id,
            stage=outcome.stage,
        )
        level = logging.INFO if result.status is DeliveryStatus.ACCEPTED else logging.WARNING
        if log.isEnabledFor(level):  # redacting costs ~8 µs a message; INFO is mostly off
            log.log(
                level,
                "%s for participant %s: %s %s",
                composed.rendered.template,
                composed.participant.participant_id,
                result.status.value,
                redact.text(result.describe()),
            )
        if feedback:
            await self._keep_refusal(composed, result)
        return result

    async def send(
        self,
        participant: Participant,
        /,
        *,
        template: str | None = None,
        next: str | None = None,
        ttl: timedelta | None = None,
        stamp: str | None = None,
        reply_to: Address | None = None,
        headers: Mapping[str, str] | None = None,
        calendar: CalendarSend | None = None,
    ) -> DeliveryResult:
        """Compose and send one template to one participant, ahead of any bulk work.

        The template defaults to ``invitation``, or to the calendar mail's own
        (``invite``, ``invite_update``, ``invite_cancel``) when ``calendar`` is given.
        With a scheduler attached (a bulk run in progress in this process), the
        message takes the priority lane: it waits only for the global rate limit.
        """
        if template is None:
            template = calendar.template if calendar is not None else "invitation"
        if self.send_guard is not None and (why := await self.send_guard()) is not None:
            log.warning(
                "%s for participant %s: not sent: %s", template, participant.participant_id, why
            )
            return DeliveryResult(
                email=participant.email,
                message_id="",
                status=DeliveryStatus.TEMPORARY,
                detail=why,
                participant_id=participant.participant_id,
            )
        if (blocked := await self._suppressed(participant, template)) is not None:
            return blocked  # checked before composing: no link issued for nobody
        composed = self.compose(
            participant,
            template=template,
            calendar=calendar,
            next=next,
            ttl=ttl,
            stamp=stamp,
            reply_to=reply_to,
            headers=headers,
        )
        if self.scheduler is not None:
            await self.scheduler.priority(composed.participant.domain)
        return await self._hand_over(composed, feedback=True)

    async def send_invitation(
        self,
        participant: Participant,
        /,
        *,
        next: str | None = None,
        stamp: str | None = None,
        reply_to: Address | None = None,
    ) -> DeliveryResult:
        """Invite one participant, with their personal login link."""
        return await self.send(
            participant, template="invitation", next=next, stamp=stamp, reply_to=reply_to
        )

    async def send_get_link(
        self,
        participant: Participant,
        /,
        *,
        next: str | None = None,
        stamp: str | None = None,
        reply_to: Address | None = None,
    ) -> DeliveryResult:
        """Mail one participant their personal login link on its own."""
        return await self.send(
            participant, template="get_link", next=next, stamp=stamp, reply_to=reply_to
        )


@asynccontextmanager
async def open_sender(
    settings: SenderSettings,
    /,
    *,
    smtp: SmtpSettings | None = None,
    maildir: Path | None = None,
    clock: Clock | None = None,
    scheduler: Scheduler | None = None,
    store: Store | None = None,
    bounce_policy: BouncePolicy | None = None,
) -> AsyncIterator[Sender]:
    """A ready :class:`Sender`: over ``smtp``, or, without it, the embedded capture server.

    The embedded default is a real SMTP server on 127.0.0.1 (ephemeral port)
    that stores every message in ``maildir`` (default ``.sender/maildir``),
    so the full SMTP path runs with no setup. With ``store``, sends check its
    suppression list and keep refusals as bounces (see :class:`Sender`).
    """
    async with AsyncExitStack() as stack:
        if smtp is None:
            capture = await stack.enter_async_context(
                CaptureServer(maildir or Path(".sender/maildir"))
            )
            smtp = capture.smtp_settings()
        sender = Sender(
            settings,
            transport=SmtpTransport(smtp, clock=clock),
            clock=clock,
            scheduler=scheduler,
            store=store,
            bounce_policy=bounce_policy,
        )
        async with sender:
            yield sender
