"""The library API an LMS calls: compose and send one participant's mail.

:class:`Sender` ties the layers together — links, templates, message bytes,
transport — and returns a :class:`~sender.models.DeliveryResult` per send
instead of raising on a refused recipient, so a caller decides what a 4xx or
5xx means for them (``result.raise_for_status()`` when they want an
exception).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypedDict, Unpack

from sender import redact
from sender.clock import Clock
from sender.compose.codes import CODE_LOCK_SECONDS, CODE_TRIES, code_address, normalize_code
from sender.compose.composer import CalendarSend, ComposedMessage, ComposeOptions, Composer
from sender.compose.links import (
    AssertionClaims,
    IssuedLink,
    LinkClaims,
    LinkSigner,
    ReturnPathSigner,
)
from sender.compose.render import Renderer
from sender.config import BouncePolicy, SenderSettings, SesSettings, TransportSettings
from sender.errors import CodeInvalid, CodeLocked, ConfigurationError
from sender.feedback.suppression import keep_refusal
from sender.landing import Landing, Redeemed
from sender.lifecycle import AsyncResource
from sender.models import Address, DeliveryResult, DeliveryStatus, Participant
from sender.pacing.limits import Limiter
from sender.pacing.schedule import Scheduler
from sender.readonly import ReadOnly
from sender.store import Redemptions, Store
from sender.transport import SmtpTransport, Transport
from sender.vocabulary import UNSUBSCRIBE_STREAMS

if TYPE_CHECKING:
    from sender.compose.dkim import DkimSigner

__all__ = [
    "CalendarSend",
    "ComposedMessage",
    "LinkMailOptions",
    "SendContext",
    "SendGuard",
    "Sender",
    "SenderOptions",
    "SuppressionList",
    "open_sender",
]

log = logging.getLogger("sender")


class SuppressionList(Protocol):
    """Where :meth:`Sender.send` looks up addresses it must not write to (a Store is one):
    the suppression list, and who left a stream (one-click unsubscribe)."""

    async def suppressed(self, addresses: Sequence[str], /) -> Mapping[str, object]: ...

    async def unsubscribed(
        self, addresses: Sequence[str], /, *, stream: str
    ) -> Mapping[str, object]: ...


class LinkMailOptions(TypedDict, total=False):
    """What a single link mail (:meth:`Sender.send_invitation`, ``send_get_link``) may set."""

    next: str | None  # the path the link leads to after login
    stamp: str | None  # revokes links issued under another stamp
    reply_to: Address | None


class SenderOptions(TypedDict, total=False):
    """What :func:`open_sender` passes on to the :class:`Sender` it makes (see there)."""

    clock: Clock | None
    scheduler: Scheduler | None
    store: Store | None
    bounce_policy: BouncePolicy | None


SendGuard = Callable[[], Awaitable[str | None]]
"""Asked before each single send: why not to send now (a spent bounce budget), or None."""


@dataclass(frozen=True, slots=True)
class SendContext:
    """What a :class:`Sender`'s sends answer to besides composing: pacing and the bounce loop.

    Fixed when the sender is made. A bulk run that needs other rules for its single
    sends gets a sender of its own (:meth:`Sender.with_context`), so a sender shared
    with, say, a web app is never changed behind its back.
    """

    scheduler: Scheduler | None = None  # single sends take its priority lane
    suppression: SuppressionList | None = None  # addresses not to write to
    store: Store | None = None  # where refusals are kept as bounces
    bounce_policy: BouncePolicy = field(default_factory=BouncePolicy)
    guard: SendGuard | None = None


class Sender(AsyncResource):
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
        self._context = SendContext(
            scheduler=scheduler,
            suppression=suppression if suppression is not None else store,
            store=store,
            bounce_policy=bounce_policy if bounce_policy is not None else BouncePolicy(),
        )
        self.composer = Composer(settings, clock=clock, renderer=renderer)
        self._clock = self.composer.clock

    def with_context(self, context: SendContext, /) -> Sender:
        """A sender like this one (same composer, same transport) whose sends follow ``context``.

        This one is left as it was. Closing either closes the transport they share.
        """
        twin = copy.copy(self)
        twin._context = context
        return twin

    send_context = ReadOnly[SendContext](
        "_context", doc="What this sender's sends answer to: pacing, suppression, bounces, guard."
    )
    settings = ReadOnly[SenderSettings]("_settings")
    transport = ReadOnly[Transport | None]("_transport")
    # what the sends answer to, from the send context
    scheduler = ReadOnly[Scheduler | None]("_context.scheduler")
    suppression = ReadOnly[SuppressionList | None]("_context.suppression")
    store = ReadOnly[Store | None]("_context.store")
    bounce_policy = ReadOnly[BouncePolicy]("_context.bounce_policy")
    # what composes, from the composer
    links = ReadOnly[LinkSigner]("composer.links")
    renderer = ReadOnly[Renderer]("composer.renderer")
    dkim: ReadOnly[DkimSigner | None] = ReadOnly("composer.dkim")
    return_paths = ReadOnly[ReturnPathSigner | None]("composer.return_paths")

    async def aclose(self) -> None:
        if self._transport is not None:
            await self._transport.aclose()

    # --- links and composing -----------------------------------------------------------

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
        self, url_or_token: str, /, *, stamp: str | None = None, purpose: str | None = None
    ) -> LinkClaims:
        """Verify a login link; raises LinkInvalid, LinkExpired or LinkRevoked.

        ``purpose``: the one the link must have; None accepts any configured purpose
        (``login``, ``invitation``, ``get_link`` and the one-time ones), and
        ``claims.purpose`` says which. This never redeems a one-time link: a landing page
        calls :meth:`inspect_link` and :meth:`redeem_link`.
        """
        if purpose is None:
            return self.links.verify_any(
                url_or_token, purposes=self._settings.links.purposes, stamp=stamp
            )
        return self.links.verify(url_or_token, stamp=stamp, purpose=purpose)

    async def verify_code(self, code: str, /, *, email: str) -> LinkClaims:
        """The claims of the login code mailed to ``email``, as those of its link.

        ``code`` may be typed in any case, with spaces or dashes. Every try counts
        against the address in the store, whoever asks: after five wrong codes without
        a 15-minute pause, the address is locked for 15 minutes (:class:`CodeLocked`),
        the right code included. A wrong, expired or unknown code, and an address no
        code was mailed to, all raise :class:`CodeInvalid`; a code that is no code
        raises :class:`~sender.errors.InputError` (``code``) and counts for nothing.
        Needs the store the codes were kept in (``store=``).
        """
        store = self.store
        if store is None:
            raise ConfigurationError("verifying login codes needs the outbox: pass store=")
        normalized = normalize_code(code)
        address = code_address(email)
        now = self._clock.now()
        locked_until = await store.code_try(
            address, now=now, window=CODE_LOCK_SECONDS, limit=CODE_TRIES
        )
        if locked_until is not None:
            log.warning("login code refused: too many wrong codes for the address")
            until = datetime.fromtimestamp(locked_until, UTC)
            raise CodeLocked(
                f"too many wrong codes for this address; try again after {until:%H:%M:%S} UTC",
                locked_until=locked_until,
                retry_after=locked_until - now,
            )
        found = self.composer.codes.match(
            normalized, address, await store.login_codes(address, now=now)
        )
        if found is None:
            raise CodeInvalid("the code is wrong or has expired")
        await store.code_accepted(address)
        return LinkClaims(
            participant_id=found.participant_id,
            course_id=found.course_id,
            purpose=found.purpose,
            next=found.next,
            issued_at=datetime.fromtimestamp(found.issued_at, UTC),
            expires_at=datetime.fromtimestamp(found.expires_at, UTC),
        )

    # --- the landing page's steps (sender.landing) -------------------------------------

    def landing(self, *, store: Redemptions | None = None) -> Landing:
        """The landing page's steps over this sender's links, clock and store (or ``store``)."""
        return Landing(
            self._settings.links,
            links=self.links,
            store=store if store is not None else self.store,
            clock=self._clock,
        )

    async def inspect_link(
        self, url_or_token: str, /, *, stamp: str | None = None, store: Redemptions | None = None
    ) -> LinkClaims:
        """A landing page's GET: the claims of a good link, changing nothing.

        Raises LinkInvalid, LinkExpired, LinkRevoked, or LinkUsed for a one-time link
        already redeemed (that check needs the store).
        """
        return await self.landing(store=store).inspect(url_or_token, stamp=stamp)

    async def redeem_link(
        self, url_or_token: str, /, *, stamp: str | None = None, store: Redemptions | None = None
    ) -> Redeemed:
        """A landing page's POST: verify again, redeem a one-time link once (LinkUsed the
        second time), and sign the assertion (``.assertion``, ``.redirect_url``)."""
        return await self.landing(store=store).redeem(url_or_token, stamp=stamp)

    async def verify_assertion(
        self, assertion: str, /, *, purpose: str | None = None, store: Redemptions | None = None
    ) -> AssertionClaims:
        """The LMS's check of a landing page's assertion: good for ``assertion_ttl`` and one
        use. Raises LinkInvalid (forged), LinkExpired, or LinkUsed (replayed)."""
        return await self.landing(store=store).verify_assertion(assertion, purpose=purpose)

    def with_uid(self, calendar: CalendarSend, /) -> CalendarSend:
        """``calendar`` with its event's UID set (:meth:`Composer.with_uid`)."""
        return self.composer.with_uid(calendar)

    def context(self, participant: Participant, link: IssuedLink, locale: str) -> dict[str, object]:
        """The template variables for one participant (:meth:`Composer.context`)."""
        return self.composer.context(participant, link, locale)

    def compose(
        self, participant: Participant, /, **options: Unpack[ComposeOptions]
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
        ``code`` gives a template that shows ``{{ code }}`` a fresh login code; keeping
        its record (``composed.code``) is the caller's part, :meth:`deliver`'s with a store.

        Raises :class:`~sender.errors.InputError` for unusable participant
        data and :class:`~sender.errors.TemplateError` for template problems,
        naming the field or variable.
        """
        return self.composer.compose(participant, **options)

    def message_id_for(self, key: str, /) -> str:
        """The Message-ID for the message ``key`` names (an outbox message), always the same.

        A message re-sent after a crash then carries the Message-ID of the copy that
        may already have arrived, so the receiver can tell they are one message.
        """
        return self.composer.message_id_for(key)

    # --- sending -----------------------------------------------------------------------

    async def deliver(
        self, composed: ComposedMessage, /, *, feedback: bool = True
    ) -> DeliveryResult:
        """Hand a composed message to the transport now and report the recipient's fate.

        No scheduling happens here: the bulk engine calls this once the scheduler
        granted a slot; :meth:`send` goes through the priority lane first.
        This is the choke point every send passes: with ``feedback`` (the default) an
        address on the suppression list is not sent (``SUPPRESSED``), and a recipient
        refused at RCPT or DATA is kept as a bounce in :attr:`store`, and the login code
        of an accepted message is kept there too. The bulk engine passes
        ``feedback=False``: its claim checks the list in the same statement, and it keeps
        refusals and codes where it records outcomes, worker processes included.
        """
        if feedback:
            blocked = await self._suppressed(composed.participant, composed.rendered.template)
            if blocked is not None:
                return blocked
        return await self._hand_over(composed, feedback=feedback)

    async def _suppressed(self, participant: Participant, template: str) -> DeliveryResult | None:
        """The ``SUPPRESSED`` result when the address (in any spelling) is on the list, or
        ``UNSUBSCRIBED`` when it left the template's stream (subscription mail only)."""
        if self.suppression is None:
            return None
        if await self.suppression.suppressed([participant.email]):
            log.warning(
                "%s for participant %s: suppressed, not sent", template, participant.participant_id
            )
            return _not_sent(
                participant, DeliveryStatus.SUPPRESSED, "the address is on the suppression list"
            )
        stream = self.renderer.stream(template)
        if stream in UNSUBSCRIBE_STREAMS and await self.suppression.unsubscribed(
            [participant.email], stream=stream.value
        ):
            log.info(
                "%s for participant %s: unsubscribed from %s mail, not sent",
                template,
                participant.participant_id,
                stream.value,
            )
            return _not_sent(
                participant,
                DeliveryStatus.UNSUBSCRIBED,
                f"the address unsubscribed from {stream.value} mail",
            )
        return None

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
            code=composed.code,
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
            if self.store is not None and result.code is not None and result.ok:
                await self.store.keep_codes([result.code])  # it works once the mail is out
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
        guard = self._context.guard
        if guard is not None and (why := await guard()) is not None:
            log.warning(
                "%s for participant %s: not sent: %s", template, participant.participant_id, why
            )
            return _not_sent(participant, DeliveryStatus.TEMPORARY, why)
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
            code=self.store is not None,  # a code only where it is kept, so it works
        )
        if self.scheduler is not None:
            await self.scheduler.priority(composed.participant.domain)
        return await self._hand_over(composed, feedback=True)

    async def send_invitation(
        self, participant: Participant, /, **options: Unpack[LinkMailOptions]
    ) -> DeliveryResult:
        """Invite one participant, with their personal login link."""
        return await self.send(participant, template="invitation", **options)

    async def send_get_link(
        self, participant: Participant, /, **options: Unpack[LinkMailOptions]
    ) -> DeliveryResult:
        """Mail one participant their personal login link on its own."""
        return await self.send(participant, template="get_link", **options)


def _not_sent(participant: Participant, status: DeliveryStatus, why: str) -> DeliveryResult:
    """The result of a send that never reached the transport, and why."""
    return DeliveryResult(
        email=participant.email,
        message_id="",
        status=status,
        detail=why,
        participant_id=participant.participant_id,
    )


@asynccontextmanager
async def open_sender(
    settings: SenderSettings,
    /,
    *,
    smtp: TransportSettings | None = None,
    maildir: Path | None = None,
    limiter: Limiter | None = None,
    **options: Unpack[SenderOptions],
) -> AsyncIterator[Sender]:
    """A ready :class:`Sender`: over ``smtp`` (an SMTP server or SES), or, without it, the
    embedded capture server.

    The embedded default is a real SMTP server on 127.0.0.1 (ephemeral port)
    that stores every message in ``maildir`` (default ``.sender/maildir``),
    so the full SMTP path runs with no setup. With ``store``, sends check its
    suppression list and keep refusals as bounces (see :class:`Sender`).
    ``smtp.max_connections`` is shared through ``limiter`` (default: the
    ``scheduler``'s), so it holds over every process that shares it.
    """
    async with AsyncExitStack() as stack:
        # Each imported where it is built, its only builder: aiosmtpd and httpx load only
        # for the embedded server and SES, never for SMTP (so never in a worker process).
        if smtp is None:
            from sender.servers.capture import CaptureServer

            capture = await stack.enter_async_context(
                CaptureServer(maildir or Path(".sender/maildir"))
            )
            smtp = capture.smtp_settings()
        scheduler = options.get("scheduler")
        if limiter is None and scheduler is not None:
            limiter = scheduler.limiter
        transport: Transport
        if isinstance(smtp, SesSettings):
            from sender.transport.ses import SesTransport

            transport = SesTransport(smtp)
        else:
            transport = SmtpTransport(smtp, clock=options.get("clock"), limiter=limiter)
        sender = Sender(settings, transport=transport, **options)
        async with sender:
            yield sender
