"""Real bounces in the shapes servers really send, read by parse_bounce: recipients and reasons.

Each file is a copy from Sisimai's corpus (tests/data/bounces/, BSD licence beside it).
Where sender's answer differs from Sisimai's on purpose, the test says why.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sender.feedback.bounces import Bounce, BounceKind, parse_bounce, smtp_stage

DATA = Path(__file__).parent / "data" / "bounces"


def real(name: str) -> bytes:
    return (DATA / name).read_bytes()


def failures(data: bytes) -> list[tuple[str | None, str, bool]]:
    """``(recipient, reason, suppress)`` per finding, as a user of the findings sees them."""
    return [(f.recipient, f.reason.value, f.suppress) for f in parse_bounce(data)]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # Amazon WorkMail: the DSN fields are in the text/plain "Technical report"
        ("lhost-amazonworkmail-01.eml", [("kijitora@example.jp", "user_unknown", True)]),
        # multipart/report whose body has no boundary at all: the fields are plain text
        (
            "rfc3464-04.eml",
            [("kijitora@mailx-53.neko.example.edu", "mailer_error", False)],
        ),
        # the same; no Diagnostic-Code, so sendmail's transcript ("unknown user") says why
        ("rfc3464-06.eml", [("kijitora@example.net", "user_unknown", True)]),
        # the declared boundary is not the one the body uses
        ("rhost-franceptt-07.eml", [("xxxx@wanadoo.fr", "undefined", False)]),
        # a whole MIME report pasted into a text/plain body
        ("lhost-sendmail-53.eml", [("sironeko@example.com", "policy", False)]),
        # OCN: a Postfix report forwarded inside an ISO-2022-JP text/plain body
        ("lhost-postfix-50.eml", [("soto-neko-nyaan@ntt.example.com", "suspended", False)]),
        # a DSN attached (message/rfc822) to another daemon's notice
        ("lhost-x5-01.eml", [("kijitora@neko.example.org", "user_unknown", True)]),
    ],
)
def test_dsn_fields_outside_a_delivery_status_part_are_read(
    name: str, expected: list[tuple[str, str, bool]]
) -> None:
    """DSN fields the MIME structure hides (shape 2) still give the recipient and reason."""
    assert failures(real(name)) == expected


@pytest.mark.parametrize(
    ("name", "recipient", "kind"),
    [
        ("lhost-exim-41.eml", "kijitora@example.net", BounceKind.SOFT),  # delay warning
        ("lhost-exim-52.eml", "neko@example.net", BounceKind.HARD),  # malformed address
    ],
)
def test_exim_reports_marked_auto_replied_are_bounces(
    name: str, recipient: str, kind: BounceKind
) -> None:
    """Exim marks its delay warnings and refusals Auto-Submitted: auto-replied: still bounces."""
    data = real(name)
    assert b"Auto-Submitted: auto-replied" in data
    (found,) = parse_bounce(data)
    assert (found.recipient, found.kind) == (recipient, kind)
    assert found.reason.value == ("delayed" if kind is BounceKind.SOFT else "syntax_error")


def test_a_domain_less_mailer_daemon_is_a_daemon_not_an_autoreply() -> None:
    """From: mailer-daemon (no domain) with Auto-Submitted: auto-replied is a bounce."""
    data = real("lhost-x6-01.eml")
    assert b"From: mailer-daemon\n" in data
    found = parse_bounce(data)
    assert found
    assert all(f.kind is not BounceKind.AUTOREPLY for f in found)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # Hotmail's own complaint: the attached message's X-HmXmrOriginalRecipient
        ("arf-22.eml", [("kijitora@example.com", "complaint", True)]),
        # SES notifications that SNS mailed: raw JSON with a footer, an SNS envelope
        ("lhost-amazonses-09.eml", [("bounce@simulator.amazonses.com", "user_unknown", True)]),
        ("lhost-amazonses-10.eml", [("bounce@simulator.amazonses.com", "user_unknown", True)]),
        ("lhost-amazonses-11.eml", [("complaint@simulator.amazonses.com", "complaint", True)]),
    ],
)
def test_provider_notifications_that_are_not_arf_or_dsn(
    name: str, expected: list[tuple[str, str, bool]]
) -> None:
    """Complaints and SES notifications in providers' own formats (shape 5) give findings."""
    assert failures(real(name)) == expected


def test_ses_by_mail_reads_as_the_https_endpoint_does() -> None:
    """An SES notification mailed by SNS gives what parse_ses_notification gives (one home)."""
    from sender.feedback.bounces import parse_ses_notification

    data = real("lhost-amazonses-10.eml")
    envelope = data.split(b"\n\n", 1)[1].split(b"\n\n--\n", 1)[0]
    assert parse_bounce(data) == parse_ses_notification(json.loads(envelope, strict=False))


def test_apple_mail_unsubscribe_is_an_opt_out_that_suppresses() -> None:
    """Apple Mail's unsubscribe (Auto-Submitted, X-Apple-Unsubscribe) is no auto-reply.

    Sisimai calls it feedback; sender agrees: the participant asked to stop, so the
    address is suppressed like a complaint, with ARF's feedback type "opt-out".
    """
    (found,) = parse_bounce(real("arf-26.eml"))
    assert (found.recipient, found.kind, found.feedback_type) == (
        "example@icloud.com",
        BounceKind.COMPLAINT,
        "opt-out",
    )
    assert found.suppress


def test_recipient_blocks_without_blank_lines_are_separate_findings() -> None:
    """AOL writes two recipient blocks back to back (shape 6): each gets its finding."""
    assert failures(real("rhost-aol-03.eml")) == [
        ("sabineko@example.jp", "mailbox_full", False),
        ("mikeneko@example.jp", "user_unknown", True),
    ]


@pytest.mark.parametrize(
    ("name", "recipient"),
    [
        # Postfix's "Delivery report unavailable": only the returned message's To is left
        ("lhost-postfix-64.eml", "xxxx@wanadoo.fr"),
        # X-Failed-Recipients beside a delivery-status part with no recipient block
        ("lhost-googleworkspace-01.eml", "neko-nyaan-cat-meeting@google-groups.example.com"),
        ("lhost-x3-05.eml", "kijitora@example.or.jp"),
    ],
)
def test_a_dsn_with_only_per_message_fields_still_names_the_recipient(
    name: str, recipient: str
) -> None:
    """A DSN without a recipient block (shape 7) takes it from the headers or the original."""
    (found,) = parse_bounce(real(name))
    assert found.recipient == recipient
    assert not found.suppress  # nothing says the address is dead


def test_deliverable_is_not_a_failure() -> None:
    """``Action: deliverable`` (a sendmail -bv report) is no failure, like delivered."""
    assert parse_bounce(real("rfc3464-28.eml")) == []


@pytest.mark.parametrize(
    ("name", "recipient", "reason"),
    [
        ("lhost-exim-44.eml", "kijitora@example.com", "mailer_error"),  # pipe to |...
        ("lhost-exim-60.eml", "nyaan%gol.com@q002.kijitora.gol.com", "mailbox_full"),
    ],
)
def test_a_local_delivery_is_reported_for_the_address_that_generated_it(
    name: str, recipient: str, reason: str
) -> None:
    """Final-Recipient ``|/usr/bin/x a@b`` is no address; Exim's "generated by" one is."""
    (found,) = parse_bounce(real(name))
    assert (found.recipient, found.reason.value) == (recipient, reason)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # procmail's "No such user" after Postfix took the alias: the address is fine
        ("lhost-postfix-01.eml", ("kijitora@example.org", "mailer_error", False)),
        ("rhost-google-04.eml", ("contact@example.co.jp", "auth_failure", False)),
        ("lhost-postfix-49.eml", ("toraneko@neko.example.co.jp", "suspended", False)),
    ],
)
def test_alias_expansion_reports_the_address_sender_wrote_to(
    name: str, expected: tuple[str, str, bool]
) -> None:
    """Original-Recipient, not the expanded Final-Recipient Sisimai reports (shape 3).

    sender suppresses or counts the address it mailed; the alias's target is another
    system's business. bench/bounces.py lists these files in OVERRIDES.
    """
    assert failures(real(name)) == [expected]


def _line_ends(data: bytes, newline: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", newline)


@pytest.mark.parametrize("name", ["lhost-amazonworkmail-01.eml", "rhost-aol-03.eml"])
@pytest.mark.parametrize("newline", [b"\r\n", b"\r"], ids=["crlf", "cr-only"])
def test_line_endings_do_not_change_the_findings(name: str, newline: bytes) -> None:
    """CRLF and CR-only copies of a real bounce give the findings the LF copy gives."""
    data = real(name)
    assert failures(_line_ends(data, newline)) == failures(data)


def test_a_real_crlf_bounce_and_a_utf7_one_are_read() -> None:
    """Barracuda's CRLF report and Outlook's unicode-1-1-utf-7 text give their recipient."""
    assert b"\r\n" in real("lhost-barracuda-02.eml")
    assert failures(real("lhost-barracuda-02.eml")) == [
        ("kijitora@example.jp", "spam_detected", False)
    ]
    assert b"charset=unicode-1-1-utf-7" in real("lhost-outlook-01.eml")
    assert failures(real("lhost-outlook-01.eml")) == [
        ("kijitora@example.jp", "mailbox_full", False)
    ]


_HOSTILE_LINES = st.sampled_from(
    [
        "From: mailer-daemon",
        "From: staff@hotmail.com",
        "Subject: complaint about message from 192.0.2.1",
        "X-Apple-Unsubscribe: true",
        "Auto-Submitted: auto-replied",
        'Content-Type: multipart/report; boundary="declared"',
        "Content-Type: multipart/mixed; boundary=x",
        "Content-Type: message/delivery-status",
        "Content-Type: message/rfc822",
        "Content-Type: text/plain; charset=unicode-1-1-utf-7",
        "Content-Type: text/plain; charset=iso-2022-jp",
        "--actual",
        "--x",
        "--x--",
        "--" + "a" * 300,
        "-----",
        "",
        "Final-Recipient: rfc822; a@example.org",
        "Final-Recipient: rfc822; @mx.example.org",
        "Final-Recipient: rfc822;|/usr/bin/x a@example.org",
        "Original-Recipient: rfc822; b@example.org",
        "Action: failed",
        "Action: deliverable",
        "Action: delayed",
        "Status: 5.1.1",
        "Status: 4.0.0",
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown",
        "X-Failed-Recipients: c@example.org",
        "X-HmXmrOriginalRecipient: d@example.org",
        "To: e@example.org",
        '{"notificationType":"Bounce","bounce":{"bounceType":"Permanent",',
        '{"Type" : "Notification", "Message" : "{\\"notificationType\\":1}"}',
        "{" * 200,
        "This message was created automatically by mail delivery software.",
        "The address to which the message has not yet been delivered is:",
        "The following address(es) failed:",
        "  pipe to |/usr/bin/x",
        "    generated by a@example.org",
        "recipient addresses that were incorrectly constructed:",
        "  a@example.org <b@example.org>: malformed address: x",
        "Technical report:",
        "\x1b$B$3$N%a!<%k\x1b(B",
        "+AGEAYgBj-",
    ]
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_HOSTILE_LINES, max_size=80), st.sampled_from(["\r\n", "\n", "\r"]))
def test_hostile_report_shapes_never_raise(lines: list[str], newline: str) -> None:
    """Messages stitched from the lines the shape readers look for never make parse_bounce raise,
    and every finding's recipient is an address or nobody."""
    found = parse_bounce(newline.join(lines).encode("utf-8", "surrogateescape"))
    for finding in found:
        assert isinstance(finding, Bounce)
        assert finding.recipient is None or (
            "@" in finding.recipient and not finding.recipient.startswith("@")
        )


def test_thousands_of_nested_messages_neither_raise_nor_lose_the_headers() -> None:
    """Nesting deeper than the MIME parser can recurse still reads the top headers."""
    from sender.feedback.bounces import envelope_recipients
    from sender.feedback.intake import calendar_parts

    data = (
        b"From: MAILER-DAEMON@mx.example.net\nTo: a@example.org\n"
        b"X-Failed-Recipients: b@example.org\n"
        + b"Content-Type: message/rfc822\n\n" * 5_000
        + b"x\n"
    )
    assert failures(data) == [("b@example.org", "undefined", False)]
    assert envelope_recipients(data) == ["a@example.org"]
    assert calendar_parts(data) == []


def suppressed(data: bytes) -> set[str | None]:
    return {f.recipient for f in parse_bounce(data) if f.suppress}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # Postfix: "550 Unknown user ... (in reply to end of DATA command)"
        ("lhost-postfix-03.eml", ("kijitora@example.net", "filtered", False)),
        ("rhost-nttdocomo-02.eml", ("azumakuniyuki@ntt.docomo.example.ne.jp", "filtered", False)),
        # Courier's transcript: ">>> DATA" then "<<< 550 Unknown user"
        ("lhost-courier-02.eml", ("kijitora@example.jp", "filtered", False)),
        # Exim: "SMTP error from remote mail server after MAIL FROM:...: 550 5.1.7 No such
        # domain": no recipient had been named yet, so it is our sender that was refused
        ("lhost-exim-50.eml", ("kijitora@neko.example.com", "rejected_sender", False)),
        # DATA answered "no valid recipients": the "Invalid recipient" after ">>> DATA" was a
        # pipelined RCPT reply, so the address is dead (Sisimai agrees here)
        (
            "lhost-sendmail-46.eml",
            ("pseudo-local-part-kijitora-nyaaan@laposte.net", "user_unknown", True),
        ),
    ],
)
def test_the_smtp_stage_decides_whether_an_unknown_user_is_dead(
    name: str, expected: tuple[str, str, bool]
) -> None:
    """A recipient accepted at RCPT TO and refused as "unknown" at DATA exists: a filter refused
    the content, so nobody is suppressed. At RCPT TO it is dead; at MAIL FROM it is our sender.
    """
    assert failures(real(name)) == [expected]


@pytest.mark.parametrize(
    ("name", "dead"),
    [
        # "<<< 503 5.0.0 Need RCPT (recipient)" answered DATA: both 550s were RCPT replies.
        # Sisimai reads filtered@example.com (5.2.1 "User Unknown") as filtered.
        ("lhost-sendmail-02.eml", {"userunknown@example.org", "filtered@example.com"}),
        ("lhost-sendmail-27.eml", {"this-local-part-does-not-exist-on-the-system@mineo.jp"}),
        # "<<< 554 5.5.1 Error: no valid recipients" answered DATA; the reply before it is
        # Postfix's RCPT refusal ("Recipient address rejected: User unknown")
        ("lhost-sendmail-48.eml", {"pseudo-local-part-kijitora-nyaan@sfr.fr"}),
        # Amazon SES inbound: "550 5.1.1 Mailbox does not exist" (Sisimai: filtered, for all SES)
        ("lhost-receivingses-01.eml", {"userunknown@neko.example.jp"}),
        ("lhost-receivingses-02.eml", {"userunknown@neko.example.jp"}),
        # a delay report ("only a temporary failure"): Sisimai calls No MX dead at once
        ("lhost-opensmtpd-12.eml", set()),
        # 450 4.1.1: the server asks us to try again; counted, not suppressed (Sisimai: dead)
        ("lhost-postfix-05.eml", set()),
    ],
)
def test_where_sender_suppresses_otherwise_than_sisimai(name: str, dead: set[str]) -> None:
    """The files bench/bounces.py lists in OVERRIDES for the SMTP stage, and why."""
    assert suppressed(real(name)) == dead


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # "550: : User unknown": the address slot empty, KDDI/au's reception filter
        (
            "lhost-yahoo-06.eml",
            ("otsu-sakaba-hunter-neko-nyaaaaaaan@ezweb.ne.jp", "filtered", False),
        ),
        # "Recipient address rejected: User ... temporary locked": the account exists
        ("lhost-amazonses-19.eml", ("kijitora@example.com", "suspended", False)),
        # "an MX or SRV record indicated no SMTP service": a null MX (RFC 7505)
        ("lhost-mailru-05.eml", ("neko@libsisimai.org", "not_accepting", True)),
        # SES's label "5.1.0 - Unknown address error" around the real reply "5.7.1 ... Access
        # denied": the reply decides, and it refused us, not the address
        ("lhost-amazonses-01.eml", ("shironeko@example.co.jp", "policy", False)),
    ],
)
def test_what_the_words_say_beyond_unknown_user(name: str, expected: tuple[str, str, bool]) -> None:
    """Refusals that mention an unknown user or address but are about something else."""
    assert failures(real(name)) == [expected]


@pytest.mark.parametrize(
    ("text", "stage"),
    [
        ("550 Unknown user (in reply to end of DATA command)", "data"),
        ("550 5.1.1 <a@b>: User unknown (in reply to RCPT TO command)", "rcpt"),
        ("SMTP error from remote mail server after end of data: 550 unknown user", "data"),
        ("SMTP error from remote mail server after RCPT TO:<a@b>: 550 unknown", "rcpt"),
        ("SMTP error from remote mail server after MAIL FROM:<a@b>: 553", "mail"),
        (">>> RCPT To:<a@b>\n<<< 550 5.1.1 <a@b>... User unknown", "rcpt"),
        (">>> DATA\n<<< 550 Unknown user a@b\n554 5.0.0 Service unavailable", "data"),
        (
            ">>> DATA\n<<< 550 5.5.0 Invalid recipient\n<<< 554 5.5.1 Error: no valid recipients",
            "rcpt",
        ),
        ("550 5.1.1 User unknown", None),
    ],
)
def test_smtp_stage_reads_each_mta_s_wording(text: str, stage: str | None) -> None:
    """Postfix's "in reply to", Exim's "after", a sendmail transcript's last ">>>" command."""
    assert smtp_stage(text) == stage
