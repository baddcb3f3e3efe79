"""Calendar invitations for an event: invite, update, cancel, and read the answers back.

Each step is a durable bulk run (:mod:`sender.bulk.runner`) whose messages carry the
event's REQUEST or CANCEL at one SEQUENCE, so crash safety, limits and retries
are those of any run. The store remembers the event as last sent, and what each
attendee was sent is the ``sent`` messages of those runs; so the LMS only says
"this is the event now" and :meth:`Invitations.invite` works out the rest:

- a new event: SEQUENCE 0, ``invite`` to everyone given;
- the same event again: ``invite`` only to those not invited yet;
- a changed event (time, place, ...): SEQUENCE + 1, ``invite_update`` to everyone
  invited before, then ``invite`` to the newcomers, at the new SEQUENCE;
- :meth:`Invitations.cancel`: SEQUENCE + 1, ``invite_cancel`` to everyone invited, or
  to the participants given (those who left the course).

Replies (``METHOD:REPLY``) are matched on UID and attendee address
(case-insensitive) and recorded with their PARTSTAT; a reply to an older SEQUENCE
is kept as ``stale``; unknown events, addresses that were not invited, replies
whose From is not the attendee and replies whose From is not authenticated (a
DKIM signature aligned with it, or a trusted relay's ``dmarc=pass``) are kept as
refused, with the reason.

A new event's UID is an HMAC of course and event id under the newest secret key
(:meth:`CalendarEvent.keyed_uid`), so nobody can compute it; an event sent before
keeps the UID it was first sent with, whatever the keys are now.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from sender.addresses import address_key, domain_key
from sender.bulk.ingest import Rows, numbered
from sender.bulk.runner import BulkRunner, Progress, RunReport, RunSettings
from sender.checks.resolve import LookupStatus, Resolver
from sender.client import CalendarSend, Sender
from sender.clock import Clock, SystemClock
from sender.compose.dkim import aligned, verified_domains
from sender.compose.event import (
    CalendarEvent,
    CalendarMethod,
    RsvpAnswer,
    event_json,
    stored_event,
)
from sender.compose.ical import parse_replies
from sender.errors import CheckUnavailable, InputError
from sender.feedback.intake import calendar_parts, dmarc_passed
from sender.models import Participant
from sender.pacing.schedule import RateLimits, Scheduler
from sender.participants import CsvRow
from sender.store import EventRecord, InvitationRecord, RsvpRecord, Store
from sender.vocabulary import RsvpOutcome

__all__ = ["AttendeeAnswer", "Invitations", "event_from_record"]

log = logging.getLogger("sender.invites")


@dataclass(frozen=True, slots=True)
class AttendeeAnswer:
    """Where one invited participant stands: what they answered, to which SEQUENCE."""

    uid: str
    participant: Participant
    sequence: int  # the SEQUENCE last sent to them
    status: str  # ACCEPTED, DECLINED, TENTATIVE, NEEDS-ACTION (no answer yet) or CANCELLED
    answered_at: float | None
    answered_sequence: int | None
    comment: str


def event_from_record(record: EventRecord, /) -> CalendarEvent:
    """The event as last sent, rebuilt from its record (with the UID it was sent with)."""
    return stored_event(record.event, uid=record.uid)


def _short(uid: str) -> str:
    return hashlib.sha256(uid.encode()).hexdigest()[:10]


class Invitations:
    """Invites participants to calendar events through a :class:`Sender`, durably.

    ``on_rsvp`` is called with every answer recorded by :meth:`record_reply`, so an
    LMS can update its attendance list as replies arrive. An answer counts only when
    the reply's From is the attendee's own address (``check_sender=False`` lifts this,
    e.g. for delegates); others are kept as ``sender_mismatch``. That From (a delegate's
    too) must also be authenticated: a DKIM signature that verifies and aligns with its domain, or
    an ``Authentication-Results: ...; dmarc=pass`` from one of the sender settings'
    ``trusted_authserv_ids``; others are kept as ``unauthenticated``. ``resolver``
    looks up DKIM keys (default: the system's DNS).
    """

    def __init__(
        self,
        sender: Sender,
        store: Store,
        settings: RunSettings | None = None,
        /,
        *,
        scheduler: Scheduler | None = None,
        clock: Clock | None = None,
        on_rsvp: Callable[[RsvpRecord], None] | None = None,
        check_sender: bool = True,
        run_options: Mapping[str, str | float | int | None] | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self.sender = sender
        self._run_options = dict(run_options or {})
        self.store = store
        self.settings = settings or RunSettings()
        # One scheduler for every run of these invitations (an update, then the newcomers),
        # so its limits hold across them; the sender given is not changed to carry it.
        self._scheduler = scheduler or sender.scheduler or Scheduler(RateLimits(), clock=clock)
        self._clock = clock or SystemClock()
        self._on_rsvp = on_rsvp
        self._check_sender = check_sender
        self._resolver = resolver

    # --- sending -------------------------------------------------------------------------

    async def invite(
        self,
        event: CalendarEvent,
        participants: Rows,
        /,
        *,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> list[RunReport]:
        """Bring everyone up to date with ``event``: updates first, then new invitations."""
        event = await self.resolve(event)
        uid = event.event_uid
        previous = await self.store.get_event(uid)
        reports: list[RunReport] = []
        if previous is None:
            record = await self._save(event, sequence=0, changes=())
        elif previous.fingerprint != event.fingerprint() or previous.cancelled:
            changes = event.changes_from(event_from_record(previous))
            if previous.cancelled and not changes:
                changes = ("time",)  # re-instated: attendees must put it back in the calendar
            record = await self._save(event, sequence=previous.sequence + 1, changes=changes)
        else:
            record = previous
        if record.sequence > 0 and record.changes:
            invited = [
                inv
                for inv in await self.store.invitations(uid)
                if inv.sequence < record.sequence and inv.method == CalendarMethod.REQUEST.value
            ]
            update = CalendarSend(event, CalendarMethod.REQUEST, record.sequence, record.changes)
            reports.append(
                await self._run(
                    f"ev-{_short(uid)}-s{record.sequence}-update",
                    update,
                    [inv.participant for inv in invited],
                    on_progress=on_progress,
                )
            )
        # The run id hashes the whole input, so the same CSV again is the same run (a crash
        # resumes it) and a CSV with newcomers is a new run holding only them.
        rows = [row async for row in numbered(participants)]
        digest = hashlib.sha256(
            "\n".join(
                f"{row.row}:{row.participant.participant_id if row.participant else row.email}"
                for row in rows
            ).encode()
        ).hexdigest()[:8]
        run_id = f"ev-{_short(uid)}-s{record.sequence}-invite-{digest}"
        already = {inv.participant.participant_id for inv in await self.store.invitations(uid)}
        fresh = [
            row
            for row in rows
            if row.participant is None or row.participant.participant_id not in already
        ]
        if fresh or await self.store.get_run(run_id) is not None:
            invite = CalendarSend(event, CalendarMethod.REQUEST, record.sequence)
            reports.append(await self._run(run_id, invite, fresh, on_progress=on_progress))
        return reports

    async def cancel(
        self,
        event: CalendarEvent,
        /,
        participants: Iterable[Participant | str] | None = None,
        *,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> RunReport:
        """Cancel the event for everyone invited, or only for ``participants`` (unenrolled).

        ``participants`` are :class:`Participant` records or participant ids. Naming one
        who was never invited, or whose invitation is already cancelled, raises
        :class:`InputError` (``field="participant"``) before anything is sent or the
        event's SEQUENCE moves.
        """
        event = await self.resolve(event)
        uid = event.event_uid
        previous = await self.store.get_event(uid)
        if previous is None:
            raise InputError(f"event {uid} was never sent; nothing to cancel", field="event")
        everyone = participants is None
        invited = await self._to_cancel(uid, None if participants is None else list(participants))
        sequence = previous.sequence + 1
        await self._save(
            event_from_record(previous),
            sequence=sequence,
            changes=(),
            cancelled=everyone or previous.cancelled,
        )
        who = (
            "all"
            if everyone
            else hashlib.sha256(
                "\n".join(sorted(inv.participant.participant_id for inv in invited)).encode()
            ).hexdigest()[:8]
        )
        cancel = CalendarSend(event_from_record(previous), CalendarMethod.CANCEL, sequence)
        return await self._run(
            f"ev-{_short(uid)}-s{sequence}-cancel-{who}",
            cancel,
            [inv.participant for inv in invited],
            on_progress=on_progress,
        )

    async def _to_cancel(
        self, uid: str, participants: list[Participant | str] | None
    ) -> list[InvitationRecord]:
        """The invitations a cancel reaches; refuses ids that were never invited or are over."""
        records = await self.store.invitations(uid)
        live = [inv for inv in records if inv.method == CalendarMethod.REQUEST.value]
        if participants is None:
            return live
        wanted = list(
            dict.fromkeys(p if isinstance(p, str) else p.participant_id for p in participants)
        )
        if not wanted:
            raise InputError(f"no participants given to cancel {uid} for", field="participant")
        known = {inv.participant.participant_id for inv in records}
        over = known - {inv.participant.participant_id for inv in live}
        for missing, why in (
            ([pid for pid in wanted if pid not in known], "never invited to"),
            ([pid for pid in wanted if pid in over], "already cancelled for"),
        ):
            if missing:
                shown = ", ".join(repr(pid) for pid in missing[:5])
                more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
                who = "participant" if len(missing) == 1 else "participants"
                raise InputError(
                    f"{who} {shown}{more} {'was' if len(missing) == 1 else 'were'} {why} "
                    f"event {uid}; nothing cancelled",
                    field="participant",
                )
        chosen = set(wanted)
        return [inv for inv in live if inv.participant.participant_id in chosen]

    async def resolve(self, event: CalendarEvent, /) -> CalendarEvent:
        """``event`` with its UID filled in: as first sent, or keyed if it is new.

        An event without ``uid`` is known by course and event id: the UID stored for
        them is kept (also one issued under a key since rotated away, or an unkeyed
        one from before keyed UIDs); a new one gets :meth:`CalendarEvent.keyed_uid`
        under the newest secret key.
        """
        if event.uid is not None:
            return event
        for record in await self.store.events():  # the most recently changed first
            if record.course_id != event.course_id:
                continue
            stored = json.loads(record.event)
            if stored.get("event_id", "") == event.event_id:
                return replace(event, uid=record.uid)
        return self.sender.with_uid(CalendarSend(event)).event

    async def _save(
        self,
        event: CalendarEvent,
        *,
        sequence: int,
        changes: Sequence[str],
        cancelled: bool = False,
    ) -> EventRecord:
        record = EventRecord(
            uid=event.event_uid,
            course_id=event.course_id,
            sequence=sequence,
            fingerprint=event.fingerprint(),
            event=event_json(event),
            cancelled=cancelled,
            changes=tuple(changes),
            updated_at=self._clock.now(),
        )
        await self.store.save_event(record)
        return record

    async def _run(
        self,
        run_id: str,
        calendar: CalendarSend,
        participants: Sequence[CsvRow | Participant],
        *,
        on_progress: Callable[[Progress], None] | None,
    ) -> RunReport:
        # Every setting given to Invitations, bounce policy and force included; only the
        # template and the calendar are this run's own.
        settings = replace(self.settings, template=calendar.template, calendar=calendar)
        runner = BulkRunner(
            self.sender, self.store, settings, scheduler=self._scheduler, clock=self._clock
        )
        return await runner.run(
            run_id,
            participants,
            source=f"event {calendar.event.event_uid}",
            event=(calendar.event.event_uid, calendar.sequence, calendar.method.value),
            options={
                **self._run_options,
                "event": event_json(calendar.event),
                "changes": ",".join(calendar.changes),
            },
            on_progress=on_progress,
        )

    # --- answers -------------------------------------------------------------------------

    async def record_reply(self, data: bytes, /, *, source: str = "") -> list[RsvpRecord]:
        """Read one e-mail's calendar replies and keep each answer with its outcome.

        Returns what was kept now (an answer seen before is not repeated); a
        message with no calendar reply returns an empty list. Raises
        :class:`~sender.errors.CheckUnavailable` when DNS did not answer for the key
        that would authenticate the reply; the answers that need it are then not
        kept, so the message can be read again later.
        """
        kept: list[RsvpRecord] = []
        authenticated: dict[str, str] = {}  # From -> why it is not authenticated ("" if it is)
        for part in calendar_parts(data):
            try:
                answers = parse_replies(part.data, assume_method=part.method)
            except InputError as exc:  # the reason may quote the part: log only where
                log.info("%s: a calendar part is not a usable reply (%s)", source, exc.field)
                continue
            for answer in answers:
                outcome, reason, invitation = await self._judge(answer, sender=part.sender)
                if outcome in (
                    RsvpOutcome.STALE,
                    RsvpOutcome.RECORDED,
                ):  # check_sender=False included
                    if part.sender not in authenticated:
                        authenticated[part.sender] = await self._unauthenticated(data, part.sender)
                    if authenticated[part.sender]:
                        outcome, reason = RsvpOutcome.UNAUTHENTICATED, authenticated[part.sender]
                rsvp = RsvpRecord(
                    uid=answer.uid,
                    attendee=answer.attendee,
                    partstat=answer.partstat.value,
                    sequence=answer.sequence,
                    received_at=self._clock.now(),
                    outcome=outcome,
                    dtstamp=answer.dtstamp.timestamp() if answer.dtstamp else None,
                    comment=answer.comment.strip(),
                    source=source,
                    reason=reason,
                    participant_id=invitation.participant.participant_id if invitation else None,
                )
                if await self.store.add_rsvp(rsvp):
                    kept.append(rsvp)
                    if rsvp.outcome == RsvpOutcome.RECORDED and self._on_rsvp is not None:
                        self._on_rsvp(rsvp)
        return kept

    @staticmethod
    async def is_reply(data: bytes, /) -> bool:
        """Whether a message carries a readable calendar reply at all."""
        for part in calendar_parts(data):
            try:
                if parse_replies(part.data, assume_method=part.method):
                    return True
            except InputError:
                continue
        return False

    async def _unauthenticated(self, data: bytes, sender: str) -> str:
        """Why the message's From ``sender`` is not authenticated; "" when it is.

        Raises :class:`~sender.errors.CheckUnavailable` when it is not, but DNS did not
        answer for a signature's key: that answer is not decided (nor kept) now.
        """
        domain = domain_key(sender.rpartition("@")[2])  # IDNs as A-labels, as DNS has them
        trusted = self.sender.settings.trusted_authserv_ids
        if domain in {domain_key(d) for d in dmarc_passed(data, trusted_authserv_ids=trusted)}:
            return ""
        if self._resolver is None:
            self._resolver = Resolver()
        resolver = self._resolver
        unanswered: list[str] = []

        async def lookup(name: str) -> str | None:
            answer = await resolver.lookup(name, "TXT")
            if not answer.settled:
                unanswered.append(f"{name.rstrip('.')} ({answer.status})")
            if answer.status is not LookupStatus.OK or not answer.records:
                return None
            return next((r for r in answer.records if r.startswith("v=DKIM1")), answer.records[0])

        signers = await verified_domains(data, lookup=lookup)
        if any(aligned(signer, domain) for signer in signers):
            return ""
        if unanswered:
            raise CheckUnavailable(
                f"DNS did not answer for the DKIM key {', '.join(unanswered)}; "
                "read this reply again later"
            )
        if signers:
            return f"DKIM-signed by {', '.join(signers)}, which is not {domain}'s domain"
        return f"no DKIM signature of {domain} verifies and no trusted relay vouches for it"

    async def _judge(
        self, answer: RsvpAnswer, *, sender: str
    ) -> tuple[RsvpOutcome, str, InvitationRecord | None]:
        """(outcome, reason, the invitation answered) for one answer."""
        if await self.store.get_event(answer.uid) is None:
            return RsvpOutcome.UNKNOWN_EVENT, f"no event with UID {answer.uid} was sent", None
        attendee = address_key(answer.attendee)  # every spelling of the address is one
        invitation = next(
            (
                invitation
                for invitation in await self.store.invitations(answer.uid)
                if address_key(invitation.participant.email) == attendee
            ),
            None,
        )
        if invitation is None:
            return (
                RsvpOutcome.NOT_INVITED,
                f"{answer.attendee} was not invited to {answer.uid}",
                None,
            )
        if self._check_sender and address_key(sender) != attendee:
            # Anyone can write ATTENDEE:mailto:ada@... into a calendar; the From header
            # is what the receiving server's SPF/DMARC checks vouch for.
            who = sender or "no single From address"
            return (
                RsvpOutcome.SENDER_MISMATCH,
                f"sent from {who}, not by {answer.attendee}",
                invitation,
            )
        if answer.sequence < invitation.sequence:
            return (
                RsvpOutcome.STALE,
                f"answers SEQUENCE {answer.sequence}; {invitation.sequence} was sent since",
                invitation,
            )
        return RsvpOutcome.RECORDED, "", invitation

    async def answers(self, uid: str, /) -> list[AttendeeAnswer]:
        """Everyone invited to the event, with their latest answer (or NEEDS-ACTION)."""
        latest: dict[str, RsvpRecord] = {}
        for rsvp in await self.store.rsvps(uid):
            if rsvp.outcome == RsvpOutcome.RECORDED:
                latest[address_key(rsvp.attendee)] = rsvp  # received order: the last one wins
        result = []
        for invitation in await self.store.invitations(uid):
            answer = latest.get(address_key(invitation.participant.email))
            if invitation.method == CalendarMethod.CANCEL.value:
                status = "CANCELLED"
            elif answer is not None:
                status = answer.partstat
            else:
                status = "NEEDS-ACTION"
            result.append(
                AttendeeAnswer(
                    uid=uid,
                    participant=invitation.participant,
                    sequence=invitation.sequence,
                    status=status,
                    answered_at=answer.received_at if answer else None,
                    answered_sequence=answer.sequence if answer else None,
                    comment=answer.comment if answer else "",
                )
            )
        return result
