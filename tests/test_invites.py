"""Calendar invitations end to end: invite, update, cancel over real SMTP, and RSVP read-back."""

from __future__ import annotations

import asyncio
import email
import email.policy
import email.utils
import json
from dataclasses import replace
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path

import icalendar
import pytest

from sender import Participant, Sender
from sender.bulk.runner import BulkRunner, RunSettings
from sender.bulk.settings import calendar_of
from sender.invites import Invitations
from sender.pacing.schedule import Scheduler
from sender.store import MessageState, RsvpRecord, SqliteStore
from sender.testing import RecordingSMTPServer, Stage
from sender.transport import SmtpTransport
from tests.helpers import EVENT as SESSION
from tests.helpers import (
    IDENTITY,
    RELAY,
    UNLIMITED,
    cli_with,
    invitations_for,
    sender_settings,
)

SAMPLES = Path(__file__).parent / "samples" / "replies"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
UID = "3f2a9c1e5b7d4e6f8a0b1c2d3e4f5a6b@calendar.example.com"
# The sample replies are real clients' mail without DKIM signatures. The tests hand them
# on as the trusted relay in front of the inbound listener would: with its DMARC result
# on top (relayed()); tests/test_rsvp_authentication.py covers unauthenticated mail.
SETTINGS = sender_settings("i" * 32, trusted_authserv_ids=(RELAY,))
EVENT = replace(
    SESSION,
    summary="Python intro — session 1",
    organizer_name="Example Academy",
    location="Room 2.14",
    uid=UID,
)
# The attendees of the reply samples, and the SEQUENCE each sample answers.
SAMPLE_ATTENDEES = {
    "ada@example.org": 1,
    "grace@example.org": 0,
    "alan@example.org": 0,
    "margaret@example.com": 1,
    "katherine.johnson@example.net": 1,
    "edsger@example.org": 1,
    "zoe.mueller@example.de": 1,
}


def relayed(data: bytes) -> bytes:
    """A reply as the trusted relay hands it on: DMARC passed for its From, result on top."""
    _, sender = email.utils.parseaddr(str(email.message_from_bytes(data)["From"]))
    domain = sender.rpartition("@")[2]
    return f"Authentication-Results: {RELAY}; dmarc=pass header.from={domain}\r\n".encode() + data


def participant(address: str, number: int, locale: str = "en") -> Participant:
    return Participant(address, f"Attendee {number}", f"p-{number}", "PY101", locale)


def attendees() -> list[Participant]:
    return [
        participant(address, n, ("en", "nb", "sv", "ja")[n % 4])
        for n, address in enumerate(SAMPLE_ATTENDEES)
    ]


async def invited(
    server: RecordingSMTPServer, store: SqliteStore, count: int, **options: object
) -> tuple[Invitations, list[Participant]]:
    """Invitations (``options`` for :func:`invitations_for`) that invited the first ``count``
    sample attendees to EVENT, and those attendees; its sender is still open."""
    invitations = invitations_for(server, store, SETTINGS, **options)  # type: ignore[arg-type]
    group = attendees()[:count]
    await invitations.invite(EVENT, group)
    return invitations, group


def parsed(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def calendar_of_message(message: EmailMessage) -> tuple[str, icalendar.Calendar]:
    """The text/calendar part's method= parameter and the calendar parsed from it."""
    (part,) = [p for p in message.walk() if p.get_content_type() == "text/calendar"]
    method = part.get_param("method")
    assert isinstance(method, str)
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return method, icalendar.Calendar.from_ical(payload)


def assert_invitation_layout(message: EmailMessage) -> None:
    """multipart/mixed > (alternative: plain, html, calendar) + application/ics attachment."""
    assert message.get_content_type() == "multipart/mixed"
    alternative, attachment = message.iter_parts()
    assert alternative.get_content_type() == "multipart/alternative"
    leaves = [p.get_content_type() for p in alternative.iter_parts()]
    assert leaves == ["text/plain", "text/html", "text/calendar"]
    calendar_part = list(alternative.iter_parts())[2]
    assert calendar_part.get_param("charset") == "UTF-8"
    assert calendar_part["Content-Disposition"] is None
    assert attachment.get_content_type() == "application/ics"
    assert attachment.get_filename() == "invite.ics"
    assert attachment.get_content_disposition() == "attachment"
    assert attachment["Content-Transfer-Encoding"] == "base64"
    ics = attachment.get_payload(decode=True)
    inline = calendar_part.get_payload(decode=True)
    assert ics == inline


def by_recipient(server: RecordingSMTPServer) -> dict[str, list[EmailMessage]]:
    found: dict[str, list[EmailMessage]] = {}
    for received in server.messages:
        for recipient in received.recipients:
            found.setdefault(recipient, []).append(parsed(received.data))
    return found


async def test_invite_update_cancel_give_three_messages_with_one_uid_and_rising_sequence(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """Each attendee gets REQUEST 0, REQUEST 1 (new time), CANCEL 2, all with the same UID."""
    invitations, group = await invited(smtp_server, store, 3)
    moved = replace(EVENT, start=datetime(2027, 3, 27, 11, 0), end=datetime(2027, 3, 27, 13, 0))
    await invitations.invite(moved, group)
    await invitations.cancel(moved)
    await invitations.sender.aclose()
    received = by_recipient(smtp_server)
    assert set(received) == {p.email for p in group}
    for messages in received.values():
        assert len(messages) == 3
        seen = []
        for message in messages:
            assert_invitation_layout(message)
            method, cal = calendar_of_message(message)
            assert cal["METHOD"] == method
            (vevent,) = cal.walk("VEVENT")
            seen.append((method, int(vevent["SEQUENCE"]), str(vevent["UID"])))
        assert seen == [("REQUEST", 0, UID), ("REQUEST", 1, UID), ("CANCEL", 2, UID)]
        last = calendar_of_message(messages[2])[1].walk("VEVENT")[0]
        assert last["STATUS"] == "CANCELLED"
    subjects = [str(m["Subject"]) for m in received[group[0].email]]
    assert subjects[0] == "You're invited: Python intro — session 1"
    assert "new time" in subjects[1]
    assert subjects[2].startswith("Cancelled")


async def test_same_event_again_sends_nothing_and_newcomers_get_only_an_invitation(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """Inviting again is idempotent; a participant added to the list gets SEQUENCE 0 alone."""
    invitations = invitations_for(smtp_server, store, SETTINGS)
    group = attendees()
    await invitations.invite(EVENT, group[:2])
    (again,) = await invitations.invite(EVENT, group[:2])  # the same run, resumed: done
    assert again.sent_now == 0
    assert len(smtp_server.messages) == 2
    await invitations.invite(EVENT, group[:3])
    await invitations.sender.aclose()
    assert [m.recipients for m in smtp_server.messages][2:] == [(group[2].email,)]


async def test_cancel_for_one_unenrolled_participant_leaves_the_others_invited(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """A participant who left gets a CANCEL; the others stay invited and the event stays on."""
    invitations, group = await invited(smtp_server, store, 3)
    await invitations.cancel(EVENT, [group[1]])
    await invitations.sender.aclose()
    last = parsed(smtp_server.messages[-1].data)
    assert smtp_server.messages[-1].recipients == (group[1].email,)
    method, cal = calendar_of_message(last)
    assert method == "CANCEL"
    assert int(cal.walk("VEVENT")[0]["SEQUENCE"]) == 1
    answers = {a.participant.participant_id: a.status for a in await invitations.answers(UID)}
    assert answers == {"p-0": "NEEDS-ACTION", "p-1": "CANCELLED", "p-2": "NEEDS-ACTION"}
    record = await store.get_event(UID)
    assert record is not None
    assert not record.cancelled


async def test_replies_from_every_client_are_matched_and_stale_ones_kept_apart(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """Each sample reply is recorded; SEQUENCE-0 answers after the update are stale."""
    seen: list[RsvpRecord] = []
    invitations, group = await invited(
        smtp_server, store, len(SAMPLE_ATTENDEES), on_rsvp=seen.append
    )
    moved = replace(EVENT, location="Room 3.01")
    await invitations.invite(moved, group)
    await invitations.sender.aclose()
    kept: list[RsvpRecord] = []
    for sample in sorted(SAMPLES.glob("*.eml")):
        kept += await invitations.record_reply(relayed(sample.read_bytes()), source=sample.name)
    outcomes = {record.attendee: record.outcome for record in kept}
    assert outcomes == {
        "ada@example.org": "recorded",
        "grace@example.org": "stale",
        "alan@example.org": "stale",
        "margaret@example.com": "recorded",
        "katherine.johnson@example.net": "recorded",
        "edsger@example.org": "recorded",
        "zoe.mueller@example.de": "recorded",
        "barbara@example.org": "not_invited",
    }
    assert {r.attendee for r in seen} == {a for a, o in outcomes.items() if o == "recorded"}
    answers = {a.participant.email: a.status for a in await invitations.answers(UID)}
    assert answers["ada@example.org"] == "ACCEPTED"
    assert answers["margaret@example.com"] == "TENTATIVE"
    assert answers["grace@example.org"] == "NEEDS-ACTION"  # her DECLINED answered SEQUENCE 0
    again = await invitations.record_reply(relayed((SAMPLES / "outlook_accepted.eml").read_bytes()))
    assert again == []


async def test_reply_to_an_unknown_event_is_kept_as_refused(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """A reply whose UID was never sent is kept with the reason, and counts for nobody."""
    invitations = invitations_for(smtp_server, store, SETTINGS)
    data = (SAMPLES / "thunderbird_declined.eml").read_bytes()
    (record,) = await invitations.record_reply(data, source="x.eml")
    assert record.outcome == "unknown_event"
    assert UID in record.reason
    await invitations.sender.aclose()


async def test_a_deferred_calendar_message_is_retried_with_its_calendar(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """A 451 on one invitation defers it; resuming the run sends it with the same REQUEST."""
    smtp_server.reply(Stage.RCPT, "451 4.7.1 Greylisted", address="ada@example.org", times=1)
    invitations = invitations_for(smtp_server, store, SETTINGS)
    (report,) = await invitations.invite(EVENT, attendees()[:2])
    await invitations.sender.aclose()
    assert report.counts.get(MessageState.DEFERRED) == 1
    calendar = calendar_of(report.run)
    assert calendar is not None
    assert (calendar.event, calendar.sequence, calendar.method.value) == (EVENT, 0, "REQUEST")
    await store.reset_failed(report.run.run_id, now=0)
    sender = Sender(SETTINGS, transport=SmtpTransport(smtp_server.smtp_settings()))
    runner = BulkRunner(
        sender,
        store,
        RunSettings(template=calendar.template, calendar=calendar),
        scheduler=Scheduler(UNLIMITED),
    )
    await runner.run(report.run.run_id)
    await sender.aclose()
    retried = by_recipient(smtp_server)["ada@example.org"]
    assert len(retried) == 1
    method, cal = calendar_of_message(retried[0])
    assert (method, int(cal.walk("VEVENT")[0]["SEQUENCE"])) == ("REQUEST", 0)


# --- the command line ------------------------------------------------------------------


_cli = cli_with(
    catch_exceptions=True,
    SENDER_SECRET_KEYS="invite-cli-key-0123456789abcdef",
    SENDER_TRUSTED_AUTHSERV_IDS=RELAY,
    **IDENTITY,
)


def cli(*args: str) -> tuple[int, str, str]:
    result = _cli(*args)
    return result.exit_code, result.stdout, result.stderr


# The sample attendees share domains: the default 30/min per domain would wait 2 s a message.
UNPACED = ("--domain-rate", "0")


def event_and_people(workdir: Path, count: int) -> tuple[Path, Path]:
    """event.toml (the example event, with UID) and people.csv of the first ``count`` attendees."""
    event_file = workdir / "event.toml"
    event_file.write_text(
        (EXAMPLES / "event.toml").read_text(encoding="utf-8") + f'uid = "{UID}"\n',
        encoding="utf-8",
    )
    csv = workdir / "people.csv"
    lines = ["email,name,participant_id,course_id,locale"]
    lines += [f"{a},Attendee {n},p-{n},PY101,en" for n, a in enumerate(SAMPLE_ATTENDEES)]
    csv.write_text("\n".join(lines[: count + 1]) + "\n", encoding="utf-8")
    return event_file, csv


def test_render_invite_writes_a_complete_invitation(workdir: Path) -> None:
    """`sender render invite --event` writes the layout with a REQUEST for that attendee."""
    code, _, stderr = cli(
        "render",
        "invite",
        *("--event", str(EXAMPLES / "event.toml")),
        *("--to", "kari@example.com", "--name", "Kari Nordmann", "--locale", "nb"),
        *("--out", "invite.eml"),
    )
    assert code == 0, stderr
    message = parsed((workdir / "invite.eml").read_bytes())
    assert_invitation_layout(message)
    method, cal = calendar_of_message(message)
    assert method == cal["METHOD"] == "REQUEST"
    (vevent,) = cal.walk("VEVENT")
    assert str(vevent["ATTENDEE"]).lower() == "mailto:kari@example.com"
    assert vevent["ATTENDEE"].params["CN"] == "Kari Nordmann"
    assert str(vevent["ORGANIZER"]) == "mailto:invitation@calendar.example.com"
    assert vevent["DTSTART"].params["TZID"] == "Europe/Oslo"
    assert cal.walk("VTIMEZONE")


def test_render_invite_without_event_is_one_line(workdir: Path) -> None:
    """A calendar template without --event is refused in one line naming the option."""
    code, _, stderr = cli("render", "invite", "--out", "x.eml")
    assert code != 0
    assert "--event" in stderr
    assert "Traceback" not in stderr


async def test_invite_then_rsvp_ingest_and_list_over_the_cli(
    smtp_server: RecordingSMTPServer, workdir: Path
) -> None:
    """invite over SMTP, ingest the sample replies, and list who accepted, as JSON."""
    event_file, csv = event_and_people(workdir, len(SAMPLE_ATTENDEES))
    smtp = f"smtp://{smtp_server.host}:{smtp_server.port}"
    code, _, stderr = await asyncio.to_thread(
        cli, "invite", str(event_file), str(csv), "--smtp", smtp, "--no-progress", *UNPACED
    )
    assert code == 0, stderr
    assert len(smtp_server.messages) == len(SAMPLE_ATTENDEES)
    samples = []
    for name in ("outlook_accepted.eml", "apple_tentative.eml"):
        (workdir / name).write_bytes(relayed((SAMPLES / name).read_bytes()))
        samples.append(str(workdir / name))
    code, stdout, stderr = await asyncio.to_thread(cli, "rsvp", "ingest", *samples, "--json")
    assert code == 0, stderr
    ingested = json.loads(stdout)
    assert ingested["recorded"] == 2
    assert {a["partstat"] for a in ingested["answers"]} == {"ACCEPTED", "TENTATIVE"}
    code, stdout, stderr = await asyncio.to_thread(cli, "rsvp", "list", UID, "--json")
    assert code == 0, stderr
    (event,) = json.loads(stdout)["events"]
    statuses = {a["email"]: a["status"] for a in event["attendees"]}
    assert statuses["ada@example.org"] == "ACCEPTED"
    assert statuses["margaret@example.com"] == "TENTATIVE"
    assert event["counts"] == {"ACCEPTED": 1, "TENTATIVE": 1, "NEEDS-ACTION": 5}


@pytest.mark.slow
async def test_worker_processes_send_the_calendar_too(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """With two worker processes, every invitation still carries its REQUEST."""
    sender = Sender(SETTINGS, transport=SmtpTransport(smtp_server.smtp_settings(pool_size=4)))
    invitations = Invitations(
        sender,
        store,
        RunSettings(concurrency=4, workers=2),
        scheduler=Scheduler(UNLIMITED),
    )
    await invitations.invite(EVENT, attendees())
    await sender.aclose()
    assert len(smtp_server.messages) == len(SAMPLE_ATTENDEES)
    for received in smtp_server.messages:
        method, cal = calendar_of_message(parsed(received.data))
        (vevent,) = cal.walk("VEVENT")
        assert (method, str(vevent["UID"])) == ("REQUEST", UID)
        assert str(vevent["ATTENDEE"]).lower() == f"mailto:{received.recipients[0]}"


async def test_a_reply_not_sent_by_the_attendee_does_not_count(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """ATTENDEE:mailto:ada in a mail from someone else is kept as sender_mismatch, not counted."""
    invitations, _ = await invited(smtp_server, store, 1)
    await invitations.sender.aclose()
    data = (SAMPLES / "outlook_accepted.eml").read_bytes()
    forged = data.replace(b"ada@example.org>", b"mallory@example.net>", 1)
    assert forged != data
    (record,) = await invitations.record_reply(forged, source="forged.eml")
    assert record.outcome == "sender_mismatch"
    assert "mallory@example.net" in record.reason
    (answer,) = await invitations.answers(UID)
    assert answer.status == "NEEDS-ACTION"


async def test_check_sender_off_counts_a_delegate_reply(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """With check_sender=False, a reply sent by someone else on the attendee's behalf counts."""
    invitations, _ = await invited(smtp_server, store, 1, check_sender=False)
    await invitations.sender.aclose()
    data = (SAMPLES / "outlook_accepted.eml").read_bytes()
    delegated = data.replace(b"ada@example.org>", b"assistant@example.org>", 1)
    (record,) = await invitations.record_reply(relayed(delegated))
    assert record.outcome == "recorded"
    (answer,) = await invitations.answers(UID)
    assert answer.status == "ACCEPTED"
