"""Calendar answers count only with an authenticated From, whatever else is relaxed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from sender import Participant
from sender.feedback.intake import dmarc_passed
from sender.store import SqliteStore
from sender.testing import RecordingSMTPServer
from tests.helpers import EVENT, RELAY, invitations_for, sender_settings

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
SETTINGS = sender_settings("r" * 32, trusted_authserv_ids=(RELAY,))
EVENT_WITH_UID = replace(EVENT, uid=UID)  # the UID the sample reply answers


def ada(address: str) -> Participant:
    """Ada, invited at ``address``."""
    return Participant(address, "Ada", "p-1", "PY101")


async def test_check_sender_off_still_needs_an_authenticated_from(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """check_sender=False admits delegates, not forgeries: an unauthenticated From never counts."""
    invitations = invitations_for(smtp_server, store, SETTINGS, check_sender=False)
    await invitations.invite(EVENT_WITH_UID, [ada("ada@example.org")])
    await invitations.sender.aclose()
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
    invitations = invitations_for(smtp_server, store, SETTINGS)
    await invitations.invite(EVENT_WITH_UID, [ada("Ada@Bücher.example")])
    await invitations.sender.aclose()
    (record,) = await invitations.record_reply(idn_reply(UID))
    assert (record.outcome, record.reason) == ("recorded", "")
    (answer,) = await invitations.answers(UID)
    assert answer.status == "ACCEPTED"
