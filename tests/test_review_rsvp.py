"""Calendar answers count only with an authenticated From, whatever else is relaxed."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sender import Address, LinkSettings, Participant, Sender, SenderSettings
from sender.bulk.runner import RunSettings
from sender.compose.ical import CalendarEvent
from sender.feedback.intake import dmarc_passed
from sender.invites import Invitations
from sender.pacing.schedule import RateLimits, Scheduler
from sender.store import SqliteStore
from sender.testing import RecordingSMTPServer
from sender.transport import SmtpTransport

RELAY = "mx.relay.example"
FORGED = (
    f"Authentication-Results: {RELAY}; dmarc=pass header.from=example.org\r\n"
    "From: ada@example.org\r\n"
    "Subject: Accepted\r\n\r\nyes\r\n"
)


def test_a_forged_pass_right_below_the_relays_fail_does_not_count() -> None:
    """The relay's topmost dmarc=fail for a domain wins over a pass written below it."""
    relayed = (
        "Received: from attacker.example by mx.relay.example; Tue, 23 Feb 2027\r\n"
        f"Authentication-Results: {RELAY}; dmarc=fail header.from=example.org\r\n" + FORGED
    ).encode()
    assert dmarc_passed(relayed, trusted_authserv_ids=[RELAY]) == frozenset()


def test_several_headers_of_the_relay_still_count_together() -> None:
    """A relay writing one header per check (DKIM, then DMARC) is read in full."""
    data = (
        f"Authentication-Results: {RELAY}; dkim=pass header.d=example.org\r\n"
        f"Authentication-Results: {RELAY}; dmarc=pass header.from=example.org\r\n"
        "From: ada@example.org\r\n\r\nyes\r\n"
    ).encode()
    assert dmarc_passed(data, trusted_authserv_ids=[RELAY]) == {"example.org"}


UID = "3f2a9c1e5b7d4e6f8a0b1c2d3e4f5a6b@calendar.example.com"
SAMPLE = Path(__file__).parent / "samples" / "replies" / "outlook_accepted.eml"


async def test_check_sender_off_still_needs_an_authenticated_from(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """check_sender=False admits delegates, not forgeries: an unauthenticated From never counts."""
    settings = SenderSettings(
        from_address=Address("noreply@learning.example.com", "Example Academy"),
        links=LinkSettings(secret_keys=("r" * 32,), base_url="https://lms.example.com/login"),
        trusted_authserv_ids=(RELAY,),
    )
    event = CalendarEvent(
        course_id="PY101",
        summary="Python intro",
        start=datetime(2027, 3, 27, 10, 0),
        end=datetime(2027, 3, 27, 12, 0),
        timezone="Europe/Oslo",
        organizer_email="invitation@calendar.example.com",
        event_id="session-1",
        uid=UID,
    )
    sender = Sender(settings, transport=SmtpTransport(smtp_server.smtp_settings()))
    invitations = Invitations(
        sender,
        store,
        RunSettings(),
        scheduler=Scheduler(RateLimits(global_per_second=None, domain_per_minute=None)),
        check_sender=False,
    )
    await invitations.invite(event, [Participant("ada@example.org", "Ada", "p-1", "PY101")])
    await sender.aclose()
    data = SAMPLE.read_bytes().replace(b"ada@example.org>", b"mallory@example.net>", 1)
    (record,) = await invitations.record_reply(data)
    assert record.outcome == "unauthenticated"
    (answer,) = await invitations.answers(UID)
    assert answer.status == "NEEDS-ACTION"


def idn_reply(uid: str) -> bytes:
    """Ada's acceptance, written with her domain's A-label form, vouched for by the relay."""
    return (
        f"Authentication-Results: {RELAY}; dmarc=pass header.from=xn--bcher-kva.example\r\n"
        "From: Ada <ada@xn--bcher-kva.example>\r\n"
        "To: invitation@calendar.example.com\r\n"
        "Subject: Accepted\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: text/calendar; method=REPLY; charset="utf-8"\r\n\r\n'
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//review//EN\r\nMETHOD:REPLY\r\n"
        f"BEGIN:VEVENT\r\nUID:{uid}\r\nSEQUENCE:0\r\nDTSTAMP:20270223T091427Z\r\n"
        "ATTENDEE;PARTSTAT=ACCEPTED:mailto:ada@xn--bcher-kva.example\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"
    ).encode()


async def test_an_answer_from_another_spelling_of_the_invited_address_counts(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """Attendee and From match the invitation by address key: IDN and A-label are one."""
    settings = SenderSettings(
        from_address=Address("noreply@learning.example.com", "Example Academy"),
        links=LinkSettings(secret_keys=("r" * 32,), base_url="https://lms.example.com/login"),
        trusted_authserv_ids=(RELAY,),
    )
    event = CalendarEvent(
        course_id="PY101",
        summary="Python intro",
        start=datetime(2027, 3, 27, 10, 0),
        end=datetime(2027, 3, 27, 12, 0),
        timezone="Europe/Oslo",
        organizer_email="invitation@calendar.example.com",
        event_id="session-1",
        uid=UID,
    )
    sender = Sender(settings, transport=SmtpTransport(smtp_server.smtp_settings()))
    invitations = Invitations(
        sender,
        store,
        RunSettings(),
        scheduler=Scheduler(RateLimits(global_per_second=None, domain_per_minute=None)),
    )
    await invitations.invite(event, [Participant("Ada@Bücher.example", "Ada", "p-1", "PY101")])
    await sender.aclose()
    (record,) = await invitations.record_reply(idn_reply(UID))
    assert (record.outcome, record.reason) == ("recorded", "")
    (answer,) = await invitations.answers(UID)
    assert answer.status == "ACCEPTED"
