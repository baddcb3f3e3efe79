"""The library API end to end: compose, send over real SMTP, verify the link that arrived."""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage
from pathlib import Path

import pytest

from sender import (
    Address,
    DeliveryStatus,
    InputError,
    LinkRevoked,
    Participant,
    PermanentDeliveryError,
    Sender,
    open_sender,
)
from sender.compose.links import participant_key, participant_of_key
from sender.testing import ManualClock, RecordingSMTPServer, Stage
from sender.transport import SmtpTransport
from tests.helpers import sender_settings

SETTINGS = sender_settings()
KARI = Participant(
    email="kari@example.com",
    name="Kari Nordmann",
    participant_id="p-1001",
    course_id="PY101",
    locale="nb",
    vars={"course_name": "Introduksjon til Python"},
)
TARO = Participant(
    "taro@example.jp", "山田 太郎", "p-1016", "PY101", "ja", {"course_name": "Python入門"}
)
URL = re.compile(r"https://lms\.example\.com/login\?token=[A-Za-z0-9_.=-]+")


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def body(message: EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


async def test_invitation_arrives_byte_correct_and_its_link_verifies(
    smtp_server: RecordingSMTPServer,
) -> None:
    """The server receives exactly the composed bytes, and the link in them verifies."""
    sender = Sender(SETTINGS, transport=SmtpTransport(smtp_server.smtp_settings()))
    async with sender:
        composed = sender.compose(KARI, template="invitation")
        result = await sender.deliver(composed)
    assert result.ok
    assert result.status is DeliveryStatus.ACCEPTED
    assert result.reply is not None
    assert result.reply.code == 250
    (received,) = smtp_server.messages
    assert received.data == composed.message.data
    assert received.recipients == ("kari@example.com",)
    assert received.mail_from == "noreply@learning.example.com"
    message = parse(received.data)
    assert message["Message-ID"] == result.message_id
    assert message["To"].addresses[0].display_name == "Kari Nordmann"
    assert "Introduksjon til Python" in message["Subject"]
    links = set(URL.findall(body(message, "plain")) + URL.findall(body(message, "html")))
    assert len(links) == 1
    claims = sender.verify_link(links.pop())
    assert (claims.participant_id, claims.course_id) == ("p-1001", "PY101")


async def test_japanese_get_link_round_trips(smtp_server: RecordingSMTPServer) -> None:
    """A Japanese get_link mail keeps its subject, name and text through the wire."""
    async with Sender(SETTINGS, transport=SmtpTransport(smtp_server.smtp_settings())) as sender:
        result = await sender.send_get_link(TARO)
    assert result.ok
    message = parse(smtp_server.messages[0].data)
    assert "Python入門" in message["Subject"]
    assert message["To"].addresses[0].display_name == "山田 太郎"
    assert "山田 太郎 様" in body(message, "plain")


async def test_refused_recipient_is_a_permanent_result(smtp_server: RecordingSMTPServer) -> None:
    """A 550 at RCPT comes back as a permanent result with code, status and text."""
    smtp_server.reply(Stage.RCPT, "550 5.1.1 User unknown", address="kari@example.com")
    async with Sender(SETTINGS, transport=SmtpTransport(smtp_server.smtp_settings())) as sender:
        result = await sender.send_invitation(KARI)
        other = await sender.send_invitation(TARO)
    assert result.status is DeliveryStatus.PERMANENT
    assert result.reply is not None
    assert (result.reply.code, result.reply.enhanced_status) == (550, "5.1.1")
    assert "User unknown" in result.describe()
    with pytest.raises(PermanentDeliveryError):
        result.raise_for_status()
    assert other.ok
    assert [m.recipients for m in smtp_server.messages] == [("taro@example.jp",)]


async def test_teacher_goes_in_reply_to_and_from_stays_ours(
    smtp_server: RecordingSMTPServer,
) -> None:
    """From is always the configured address; a teacher's address is only Reply-To."""
    teacher = Address("ola@school.example.org", "Ola Lærer")
    async with Sender(SETTINGS, transport=SmtpTransport(smtp_server.smtp_settings())) as sender:
        await sender.send_invitation(KARI, reply_to=teacher)
    message = parse(smtp_server.messages[0].data)
    assert message["From"].addresses[0].addr_spec == "noreply@learning.example.com"
    assert message["Reply-To"].addresses[0].addr_spec == "ola@school.example.org"
    assert message["Reply-To"].addresses[0].display_name == "Ola Lærer"


def test_stamped_link_from_compose_is_revoked_after_address_change() -> None:
    """Links composed under a stamp stop verifying once the LMS changes the stamp."""
    sender = Sender(SETTINGS)
    composed = sender.compose(KARI, stamp="kari@example.com:v1")
    assert sender.verify_link(composed.link.url, stamp="kari@example.com:v1")
    with pytest.raises(LinkRevoked):
        sender.verify_link(composed.link.url, stamp="kari@new.example.com:v1")


def test_expiry_days_in_the_text_follow_the_link_lifetime() -> None:
    """The mail tells the participant how many days the link lasts."""
    clock = ManualClock(now=1_800_000_000)
    composed = Sender(SETTINGS, clock=clock).compose(
        Participant("a@example.com", "A", "p-1", "c-1", "en")
    )
    assert "14 days" in composed.rendered.text


@pytest.mark.parametrize(
    ("participant", "field"),
    [
        (Participant("a@example.com", "Evil\r\nBcc: x@evil.example", "p-1", "c-1"), "To"),
        (Participant("not-an-address", "A", "p-1", "c-1"), "email"),
        (
            Participant("a@example.com", "A", "p-1", "c-1", vars={"link": "https://evil.example"}),
            "link",
        ),
        (Participant("a@example.com", "", "p-1", "c-1"), "name"),
    ],
)
def test_bad_participant_data_names_the_field(participant: Participant, field: str) -> None:
    """Header injection, a broken address or a hijacked variable is refused by field."""
    with pytest.raises(InputError) as info:
        Sender(SETTINGS).compose(participant)
    assert info.value.field == field


async def test_embedded_default_stores_mail_in_a_maildir(tmp_path: Path) -> None:
    """Without SMTP settings, open_sender delivers to its own capture server's Maildir."""
    async with open_sender(SETTINGS, maildir=tmp_path / "maildir") as sender:
        results = [await sender.send_invitation(p) for p in (KARI, TARO)]
    assert all(r.ok for r in results)
    files = sorted((tmp_path / "maildir" / "new").iterdir())
    assert len(files) == 2
    delivered = {parse(f.read_bytes())["Delivered-To"] for f in files}
    assert delivered == {"kari@example.com", "taro@example.jp"}


async def test_logs_never_hold_tokens_secrets_or_bodies(
    smtp_server: RecordingSMTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Even at DEBUG, no log line carries the link token, the secret key or body text."""
    caplog.set_level("DEBUG")
    smtp_server.reply(Stage.RCPT, "550 5.1.1 User unknown", address="taro@example.jp")
    async with Sender(SETTINGS, transport=SmtpTransport(smtp_server.smtp_settings())) as sender:
        composed = sender.compose(KARI)
        await sender.deliver(composed)
        await sender.send_invitation(TARO)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "p-1001" in logged  # the log does say what happened, to whom by id
    assert composed.link.token not in logged
    assert SETTINGS.links.secret_keys[0] not in logged
    assert composed.rendered.text.splitlines()[2] not in logged


def test_a_single_sends_return_path_key_names_its_participant() -> None:
    """The key of a single send's return path reads back as its participant id, or is None."""
    key = participant_key("p-1001")
    assert key is not None
    assert key.startswith("p")
    assert participant_of_key(key) == "p-1001"
    assert participant_key("x" * 40) is None  # too long for a 40-character key
    assert participant_of_key("m1z") is None  # an outbox message's key
