"""Bounces: DSNs, MTA prose, auto-replies, complaints and SES notifications."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sender.errors import InputError
from sender.feedback import bounces
from sender.feedback.bounces import Bounce, BounceKind

SAMPLES = Path(__file__).parent / "samples" / "bounces"

HARD, SOFT = BounceKind.HARD, BounceKind.SOFT
AUTO, COMPLAINT = BounceKind.AUTOREPLY, BounceKind.COMPLAINT

# file -> [(recipient, kind, status, reason)], as listed in samples/bounces/README.md.
EXPECTED: dict[str, list[tuple[str | None, BounceKind, str | None, str]]] = {
    "postfix_dsn.eml": [("nobody@example.org", HARD, "5.1.1", "user_unknown")],
    "postfix_delayed.eml": [("alan@example.org", SOFT, "4.4.1", "delayed")],
    "sendmail_several.eml": [
        ("ada@example.org", HARD, "5.1.1", "user_unknown"),
        ("grace@example.org", SOFT, "5.2.2", "mailbox_full"),
        ("edsger@example.invalid", HARD, "5.4.4", "host_unknown"),
    ],
    "exchange_dsn.eml": [("barbara@example.org", HARD, "5.1.1", "user_unknown")],
    "exchange_ndr.eml": [("linus@example.org", HARD, "5.1.1", "user_unknown")],
    "exim.eml": [
        ("john@example.org", HARD, "5.1.1", "user_unknown"),
        ("mary@nonexistent.example", HARD, "5.0.0", "host_unknown"),
    ],
    "exim_text.eml": [("john.smith@example.org", HARD, "5.1.1", "user_unknown")],
    "qmail.eml": [("dennis@example.org", HARD, "5.1.1", "user_unknown")],
    "postfix_legacy.eml": [("ken@example.org", HARD, "5.1.1", "user_unknown")],
    "gmail.eml": [("nobody2@example.org", HARD, "5.1.1", "user_unknown")],
    "yahoo.eml": [
        ("userx@yahoo.example", HARD, None, "user_unknown"),
        ("usery@yahoo.example", HARD, None, "suspended"),
    ],
    "groupwise.eml": [("bjarne@gw.example.org", HARD, None, "user_unknown")],
    "autoreply_rfc3834.eml": [("margaret@example.com", AUTO, None, "auto_reply")],
    "autoreply_exchange.eml": [("grace@example.org", AUTO, None, "auto_reply")],
    "autoreply_german.eml": [("zoe.mueller@example.de", AUTO, None, "auto_reply")],
    "autoreply_norwegian.eml": [("ole@example.no", AUTO, None, "auto_reply")],
    "arf_complaint.eml": [("ada@isp.example.net", COMPLAINT, None, "complaint")],
    "arf_yahoo_aol.eml": [("katherine.j@yahoo.example", COMPLAINT, None, "complaint")],
    "ordinary.eml": [],
}


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def summary(findings: list[Bounce]) -> list[tuple[str | None, BounceKind, str | None, str]]:
    return [(b.recipient, b.kind, b.status, b.reason) for b in findings]


def test_every_sample_has_an_expectation() -> None:
    """Each .eml under samples/bounces is listed in EXPECTED, and each listed file exists."""
    assert {p.name for p in SAMPLES.glob("*.eml")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_gives_its_findings(name: str) -> None:
    """Each sample message gives exactly the findings its README row lists."""
    assert summary(bounces.parse_bounce(sample(name))) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_samples_keep_crlf_bytes(name: str) -> None:
    """Samples are stored as they travel: every line ends in CRLF."""
    data = sample(name)
    assert data.count(b"\n") == data.count(b"\r\n") > 0


def test_dsn_carries_action_and_diagnostic() -> None:
    """A DSN finding keeps the Action and the Diagnostic-Code, unfolded."""
    [found] = bounces.parse_bounce(sample("postfix_dsn.eml"))
    assert found.dsn_action == "failed"
    assert found.diagnostic == (
        "smtp; 550 5.1.1 <nobody@example.org>: Recipient address rejected: "
        "User unknown in virtual mailbox table"
    )


def test_delayed_dsn_is_soft_delayed() -> None:
    """Action: delayed gives SOFT/delayed with the action kept."""
    [found] = bounces.parse_bounce(sample("postfix_delayed.eml"))
    assert (found.kind, found.reason, found.dsn_action) == (SOFT, "delayed", "delayed")


def test_several_recipient_dsn_skips_relayed_and_prefers_original_recipient() -> None:
    """Relayed recipients are skipped; Original-Recipient names the address sender used."""
    findings = bounces.parse_bounce(sample("sendmail_several.eml"))
    assert "katherine@example.net" not in {f.recipient for f in findings}
    assert findings[0].recipient == "ada@example.org"
    assert all(f.dsn_action == "failed" for f in findings)


def test_delivered_and_expanded_actions_are_not_failures() -> None:
    """A DSN that only reports delivered or expanded recipients gives []."""
    data = _dsn(
        "Final-Recipient: rfc822; a@example.org\r\nAction: delivered\r\nStatus: 2.0.0\r\n\r\n"
        "Final-Recipient: rfc822; b@example.org\r\nAction: expanded\r\nStatus: 2.0.0\r\n"
    )
    assert bounces.parse_bounce(data) == []


def test_dsn_without_diagnostic_borrows_the_prose_reason() -> None:
    """Exim's DSN omits Diagnostic-Code for local errors; the text part's reason fills it in."""
    findings = bounces.parse_bounce(sample("exim.eml"))
    assert findings[1].diagnostic == "Unrouteable address"


def test_complaint_carries_feedback_type() -> None:
    """An ARF report gives a COMPLAINT with the Feedback-Type."""
    [found] = bounces.parse_bounce(sample("arf_complaint.eml"))
    assert found.feedback_type == "abuse"
    assert found.dsn_action is None
    assert (found.action, found.suppress) == ("suppress", True)


def test_redacted_complaint_names_nobody() -> None:
    """An ARF report whose original To is redacted gives one COMPLAINT with no recipient."""
    data = (
        b"From: fbl@isp.example\r\nTo: fbl@bounce.example.com\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=feedback-report; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nabuse report\r\n"
        b"--b\r\nContent-Type: message/feedback-report\r\n\r\n"
        b"Feedback-Type: Abuse\r\nVersion: 1\r\n\r\n"
        b"--b\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        b"From: courses@example.com\r\nTo: redacted\r\nSubject: x\r\n\r\n--b--\r\n"
    )
    assert bounces.parse_bounce(data) == [
        Bounce(None, COMPLAINT, None, "", "complaint", feedback_type="abuse")
    ]


@pytest.mark.parametrize(
    "header",
    [
        "Auto-Submitted: auto-replied",
        "X-Autoreply: yes",
        "X-Autorespond: Away",
        "Precedence: auto_reply",
        "Subject: Out of Office: Python intro",
        "Subject: Automatic reply: Python intro",
        "Subject: Abwesenheitsnotiz: Python intro",
        "Subject: =?utf-8?q?Frav=C3=A6r=3A_kurs?=",
    ],
)
def test_autoreply_signals(header: str) -> None:
    """Each RFC 3834, vendor or vacation-subject signal makes an AUTOREPLY from the From address."""
    data = f"From: Ada <Ada@Example.org>\r\nTo: b@example.com\r\n{header}\r\n\r\nAway.\r\n"
    assert bounces.parse_bounce(data.encode()) == [
        Bounce("ada@example.org", AUTO, None, "", "auto_reply")
    ]


@pytest.mark.parametrize("name", [n for n in sorted(EXPECTED) if n.startswith("autoreply")])
def test_autoreplies_are_never_hard(name: str) -> None:
    """No auto-reply sample yields a HARD finding."""
    assert all(f.kind is not HARD for f in bounces.parse_bounce(sample(name)))


def test_autoreply_that_mentions_failure_is_still_autoreply() -> None:
    """An out-of-office text quoting MTA words stays an auto-reply, never HARD."""
    data = (
        b"From: ada@example.org\r\nSubject: Automatic reply: x\r\n\r\n"
        b"Delivery has failed to these recipients or groups:\r\n\r\nbob@example.org\r\n"
        b"#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##\r\n"
    )
    assert summary(bounces.parse_bounce(data)) == [("ada@example.org", AUTO, None, "auto_reply")]


def test_bounce_with_auto_submitted_is_not_an_autoreply() -> None:
    """MTA bounces carry Auto-Submitted: auto-replied; they are read as bounces."""
    data = sample("exim_text.eml")
    assert b"Auto-Submitted: auto-replied" in sample("exim.eml")
    data = data.replace(b"Subject:", b"Auto-Submitted: auto-replied\r\nSubject:", 1)
    assert {f.kind for f in bounces.parse_bounce(data)} == {HARD}


def test_ordinary_mail_is_not_a_bounce() -> None:
    """A person's reply that mentions delivery in passing gives []."""
    assert bounces.parse_bounce(sample("ordinary.eml")) == []
    assert bounces.parse_bounce(b"") == []


def test_daemon_bounce_without_recipients_is_kept_for_a_human() -> None:
    """A mailer-daemon report nobody can read gives one UNKNOWN finding with no recipient."""
    data = (
        b"From: Mail Delivery Subsystem <MAILER-DAEMON@mx.example.net>\r\n"
        b"Subject: Undeliverable mail\r\n\r\nSomething went wrong.\r\n"
    )
    assert bounces.parse_bounce(data) == [Bounce(None, BounceKind.UNKNOWN, None, "", "undefined")]


def test_daemon_bounce_falls_back_to_x_failed_recipients() -> None:
    """A daemon message whose text is unknown still names X-Failed-Recipients."""
    data = (
        b"From: MAILER-DAEMON@mx.example.net\r\nX-Failed-Recipients: A@Example.org\r\n"
        b"Subject: Mail delivery failed\r\n\r\nGone.\r\n"
    )
    assert summary(bounces.parse_bounce(data)) == [
        ("a@example.org", BounceKind.UNKNOWN, None, "undefined")
    ]


@pytest.mark.parametrize(
    ("status", "diagnostic", "code", "expected"),
    [
        ("5.1.1", "", None, (HARD, "user_unknown")),
        ("5.1.0", "", None, (HARD, "user_unknown")),
        (
            None,
            "550 5.1.1 <x@y>: Recipient address rejected: User unknown",
            None,
            (HARD, "user_unknown"),
        ),
        ("5.0.0", "no such user here", None, (HARD, "user_unknown")),
        (None, "user unknown", 550, (HARD, "user_unknown")),
        ("5.1.2", "", None, (HARD, "host_unknown")),
        ("5.4.4", "", None, (HARD, "host_unknown")),
        (
            "5.0.0",
            "Host or domain name not found. Name service error",
            None,
            (HARD, "host_unknown"),
        ),
        ("5.1.10", "Recipient address has null MX", None, (HARD, "not_accepting")),
        ("5.0.0", "NXDOMAIN", None, (HARD, "host_unknown")),
        ("5.1.10", "RESOLVER.ADR.RecipientNotFound; not found", None, (HARD, "user_unknown")),
        ("5.1.6", "", None, (HARD, "has_moved")),
        ("5.2.2", "", None, (SOFT, "mailbox_full")),
        ("5.0.0", "Mailbox full", None, (SOFT, "mailbox_full")),
        (
            "5.2.1",
            "The email account that you tried to reach is disabled",
            None,
            (HARD, "suspended"),
        ),
        ("5.7.1", "", None, (HARD, "policy")),
        (
            "5.7.26",
            "Unauthenticated email is not accepted due to DMARC policy",
            None,
            (HARD, "auth_failure"),
        ),
        ("5.7.1", "SPF check failed", None, (HARD, "auth_failure")),
        (
            "5.7.1",
            "Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org",
            None,
            (HARD, "blocked"),
        ),
        ("5.7.1", "Your IP address is listed in the RBL", None, (HARD, "blocked")),
        (
            "5.7.25",
            "The IP address sending this message does not have a PTR record",
            None,
            (HARD, "ptr_required"),
        ),
        (None, "Message blocked as spam", 554, (HARD, "spam_detected")),
        ("5.7.1", "Message rejected: virus detected", None, (HARD, "virus")),
        ("5.3.4", "Message too big", None, (HARD, "message_too_big")),
        ("5.7.1", "Relay access denied", None, (HARD, "relaying_denied")),
        ("4.2.2", "", None, (SOFT, "mailbox_full")),
        ("4.7.1", "Greylisted, please try again later", None, (SOFT, "greylisted")),
        ("4.7.1", "Service unavailable, try again later", None, (SOFT, "greylisted")),
        ("4.7.0", "Too many connections from your host", None, (SOFT, "too_many_connections")),
        (
            "4.7.0",
            "Mail sent from your IP has been temporarily rate limited",
            None,
            (SOFT, "rate_limited"),
        ),
        ("4.4.1", "Connection timed out", None, (SOFT, "expired")),
        (None, "451 Requested action aborted: local error", None, (SOFT, "system_error")),
        ("4.3.0", "", None, (SOFT, "system_error")),
        (None, "", None, (BounceKind.UNKNOWN, "undefined")),
        (None, "user unknown", None, (BounceKind.UNKNOWN, "user_unknown")),
        ("2.0.0", "ok", None, (BounceKind.UNKNOWN, "delivered")),
        ("failed", "", None, (BounceKind.UNKNOWN, "undefined")),
    ],
)
def test_classify(
    status: str | None, diagnostic: str, code: int | None, expected: tuple[BounceKind, str]
) -> None:
    """classify maps status, code and text to (kind, reason) as the table says."""
    assert bounces.classify(status, diagnostic, code=code) == expected


def test_classify_does_not_read_codes_from_ip_addresses() -> None:
    """An IP address or a port in the text is not taken for a status or a reply code."""
    assert bounces.classify(None, "connect to mx[192.0.2.25]:25: 5.4.44.1 refused") == (
        BounceKind.UNKNOWN,
        "undefined",
    )


def test_envelope_recipients_in_header_order() -> None:
    """Delivered-To, X-Original-To, Envelope-To, X-Envelope-To, To: lower-cased, each once."""
    data = (
        b"To: Course <Bounces+T1@Bounce.example.com>, other@example.org\r\n"
        b"X-Envelope-To: <x@example.net>\r\nEnvelope-To: bounces+t1@bounce.example.com\r\n"
        b"X-Original-To: orig@example.net\r\nDelivered-To: BOUNCES+T1@bounce.example.com\r\n"
        b"\r\nbody\r\n"
    )
    assert bounces.envelope_recipients(data) == [
        "bounces+t1@bounce.example.com",
        "orig@example.net",
        "x@example.net",
        "other@example.org",
    ]


def test_envelope_recipients_of_a_sample() -> None:
    """A saved Exim bounce names the VERP return path in Envelope-To."""
    assert bounces.envelope_recipients(sample("exim.eml")) == [
        "bounces+r7kq2v.pair@bounce.example.com"
    ]


def ses(name: str) -> str:
    return (SAMPLES / name).read_text(encoding="utf-8")


def test_ses_permanent_bounce() -> None:
    """A Permanent SES bounce is HARD, one finding per bounced recipient."""
    assert bounces.parse_ses_notification(ses("ses_bounce_permanent.json")) == [
        Bounce(
            "nobody@example.org",
            HARD,
            "5.1.1",
            "smtp; 550 5.1.1 user unknown",
            "user_unknown",
            "failed",
            reply_code=550,
        )
    ]


def test_ses_transient_bounce() -> None:
    """A Transient MailboxFull SES bounce is SOFT/mailbox_full; the display name is dropped."""
    assert summary(bounces.parse_ses_notification(ses("ses_bounce_transient.json"))) == [
        ("grace@example.org", SOFT, "4.2.2", "mailbox_full")
    ]


def test_ses_complaint() -> None:
    """An SES complaint is COMPLAINT with its feedback type."""
    assert bounces.parse_ses_notification(ses("ses_complaint.json")) == [
        Bounce("ada@example.net", COMPLAINT, None, "", "complaint", None, "abuse")
    ]


def test_ses_delivery_is_nothing() -> None:
    """An SES Delivery notification gives []."""
    assert bounces.parse_ses_notification(ses("ses_delivery.json")) == []


def test_ses_inside_sns_envelope() -> None:
    """An SNS-wrapped notification is unwrapped, as text, bytes or a mapping."""
    text = ses("ses_sns_bounce.json")
    expected = [
        ("alan@example.org", HARD, "5.1.1", "user_unknown"),
        ("edsger@example.org", HARD, "5.1.1", "user_unknown"),
    ]
    assert summary(bounces.parse_ses_notification(text)) == expected
    assert summary(bounces.parse_ses_notification(text.encode())) == expected
    assert summary(bounces.parse_ses_notification(json.loads(text))) == expected


@pytest.mark.parametrize(
    ("bounce_type", "subtype", "expected"),
    [
        ("Undetermined", "Undetermined", (BounceKind.UNKNOWN, "undefined")),
        ("Permanent", "Suppressed", (HARD, "user_unknown")),
        ("Permanent", "ContentRejected", (HARD, "spam_detected")),
        ("Permanent", "NoEmail", (HARD, "user_unknown")),
    ],
)
def test_ses_bounce_types(bounce_type: str, subtype: str, expected: tuple[BounceKind, str]) -> None:
    """bounceType gives the kind; a telling bounceSubType gives the reason."""
    payload = {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": bounce_type,
            "bounceSubType": subtype,
            "bouncedRecipients": [{"emailAddress": "a@example.org"}],
        },
    }
    [found] = bounces.parse_ses_notification(payload)
    assert (found.kind, found.reason) == expected


@pytest.mark.parametrize(
    "payload",
    [
        "",
        "{",
        b"\xff\xfe{",
        "[]",
        '"Bounce"',
        "{}",
        '{"notificationType": "Open"}',
        '{"notificationType": "Bounce"}',
        '{"notificationType": "Bounce", "bounce": {"bouncedRecipients": "a@example.org"}}',
        '{"notificationType": "Bounce", "bounce": {"bouncedRecipients": [{"status": "5.1.1"}]}}',
        '{"notificationType": "Complaint", "complaint": {"complainedRecipients": [1]}}',
        '{"Type": "Notification", "Message": {"notificationType": "Delivery"}}',
        '{"Type": "Notification", "Message": "not json"}',
        "[" * 100_000,
    ],
)
def test_damaged_ses_notification_raises_input_error(payload: str | bytes) -> None:
    """Bad JSON or an unknown shape raises InputError naming the notification."""
    with pytest.raises(InputError) as caught:
        bounces.parse_ses_notification(payload)
    assert caught.value.field == "notification"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2_000))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    """parse_bounce and envelope_recipients accept any bytes."""
    assert isinstance(bounces.parse_bounce(data), list)
    assert isinstance(bounces.envelope_recipients(data), list)


_LINES = st.sampled_from(
    [
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status; boundary=b",
        "Content-Type: multipart/report; report-type=feedback-report; boundary=b",
        "Content-Type: multipart/mixed; boundary=b",
        "Content-Type: message/delivery-status",
        "Content-Type: message/global-delivery-status",
        "Content-Type: message/feedback-report",
        "Content-Type: message/rfc822",
        "Content-Type: text/rfc822-headers",
        "Content-Type: text/plain; charset=utf-7",
        "Content-Type: text/plain; charset*=bogus''x",
        "Content-Type: text/html",
        "Content-Transfer-Encoding: base64",
        "Content-Transfer-Encoding: quoted-printable",
        "From: MAILER-DAEMON@example.net",
        "From: =?bogus?q?x?= <a@b>",
        "Subject: Automatic reply: x",
        "Subject: =?utf-8?b?////?=",
        "Auto-Submitted: auto-replied",
        "X-Failed-Recipients: a@example.org, <",
        "Final-Recipient: rfc822; a@example.org",
        "Original-Recipient: ;",
        "Original-Rcpt-To: <>",
        "Action: failed",
        "Action:",
        "Status: 5.1.1",
        "Status: 9.9.9.9",
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown",
        "Feedback-Type: abuse",
        " folded continuation",
        "--b",
        "--b--",
        "",
        "<a@example.org>:",
        "  a@example.org",
        "    550 5.1.1 unknown",
        "This message was created automatically by mail delivery software.",
        "The following address(es) failed:",
        "Hi. This is the qmail-send program at x.",
        "Delivery has failed to these recipients or groups:",
        "Diagnostic information for administrators:",
        "#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##",
        "The message that you sent was undeliverable to the following:",
        "\ta@example.org (user not found)",
        "\u00e9\u00e6\u00f8 \udcff",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_LINES, max_size=60), st.sampled_from(["\r\n", "\n", "\r"]))
def test_mime_shaped_garbage_never_raises(lines: list[str], newline: str) -> None:
    """Messages stitched from real header, report and MTA lines never make parse_bounce raise."""
    data = newline.join(lines).encode("utf-8", "surrogateescape")
    for found in bounces.parse_bounce(data):
        assert found.recipient is None or found.recipient == found.recipient.lower()


def _dsn(blocks: str) -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example.net\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nReport.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; mx.example.net\r\n\r\n{blocks}\r\n--b--\r\n"
    ).encode()
