"""Failure prose: recipients named in sentences, read by shape from real servers' reports."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sender.feedback.bounces import parse_bounce
from sender.feedback.prose import cut_returned_message, failed_recipients

DATA = Path(__file__).parent / "data" / "bounces"
UNKNOWN = "user_unknown"


def found(name: str) -> list[tuple[str | None, str]]:
    return [(b.recipient, str(b.reason)) for b in parse_bounce((DATA / name).read_bytes())]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # "There was an error delivering your mail to <a@b>." then the remote's reply
        ("lhost-dragonfly-05.eml", [("authfailure@libsisimai.net", "auth_failure")]),
        ("lhost-dragonfly-24.eml", [("userunknown@libsisimai.net", "user_unknown")]),
        # "Unknown user: a@b", "User mailbox exceeds allowed size: a@b" (IMail)
        ("lhost-imailserver-01.eml", [("kijitora@example.com", "user_unknown")]),
        ("lhost-imailserver-02.eml", [("kijitora@example.co.jp", "mailbox_full")]),
        ("rfc3464-38.eml", [("kijitora-nyaan@example.jp", "mailbox_full")]),
        # "Could not be delivered to: <a@b>" (KDDI, From no-reply@, a returned message)
        ("lhost-kddi-01.eml", [("kijitora@x0000000000000.dion.ne.jp", "mailbox_full")]),
        ("lhost-mailfoundry-02.eml", [("kijitora@example.org", "mailbox_full")]),
        ("lhost-x2-07.eml", [("kijitora@example.co.jp", "network_error")]),
        # "The following recipients returned permanent errors: a@b. Reason: ..."
        ("lhost-x6-01.eml", [("kijitora@nyaan.example.org", "network_error")]),
    ],
)
def test_address_on_the_phrase_line(name: str, expected: list[tuple[str, str]]) -> None:
    """A failure phrase with the address on its line gives that recipient and the reply's reason."""
    assert found(name) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # "did not reach the following recipient(s):" / "a@b on <date>" / indented reasons
        (
            "lhost-exchange2003-02.eml",
            [
                ("kijitora@example.co.jp", "user_unknown"),
                ("mikeneko@example.co.jp", "user_unknown"),
            ],
        ),
        # "for the following list of recipients:" / "a@b: 550 5.2.2 ..."
        (
            "lhost-opensmtpd-02.eml",
            [
                ("mailboxfull@example.jp", "mailbox_full"),
                ("userunknown@example.jp", "user_unknown"),
            ],
        ),
        ("lhost-opensmtpd-03.eml", [("kijitora@neko.example.jp", "host_unknown")]),
        # "a@b Invalid Address, ERROR_CODE :550, ..." one per line (Zoho)
        (
            "lhost-zoho-02.eml",
            [
                ("mikeneko@example.co.jp", "user_unknown"),
                ("sabineko@example.co.jp", "mailbox_full"),
            ],
        ),
        # Exim's words, but the address unindented and quoted: "a@b": then the reply (GMX)
        (
            "lhost-gmx-03.eml",
            [
                ("mikeneko@example.co.jp", "user_unknown"),
                ("sabineko@example.co.jp", "mailbox_full"),
            ],
        ),
        # ISO-2022-JP: 以下のメールアドレスへの送信に失敗しました。 / a@b / -------server message
        ("lhost-mfilter-02.eml", [("kijitora@example.co.jp", "user_unknown")]),
        # "---The following addresses had delivery errors---" / "a@b [User unknown]"
        ("lhost-x1-01.eml", [("kijitora@example.co.jp", "user_unknown")]),
        # The reason before the address: Notes' "Failure Reasons", MailMarshal's summary
        ("lhost-notes-02.eml", [("kijitora@u1.example.co.jp", "user_unknown")]),
        ("lhost-mailmarshal-02.eml", [("kijitora@nyaan.example.com", "user_unknown")]),
        ("lhost-domino-01.eml", [("kijitora@example.jp", "user_unknown")]),
        # ">>> a@b <a@b>" under sendmail's "permanent fatal errors", the reply in the transcript
        ("lhost-activehunter-01.eml", [("kijitora@example.org", "user_unknown")]),
    ],
)
def test_addresses_on_the_lines_under_the_phrase(
    name: str, expected: list[tuple[str, str]]
) -> None:
    """A phrase, then one recipient per line: each recipient once, with the reply beside it."""
    assert found(name) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # sendmail V5: "<<< 550 ..." replies before "554 <a@b>... 550 Host unknown" lines
        (
            "lhost-v5sendmail-05.eml",
            [
                ("kijitora@example.edu", "network_error"),
                ("kuroneko@example.or.jp", "host_unknown"),
                ("kijitora@example.org", "host_unknown"),
                ("mikeneko@example.co.jp", "user_unknown"),
            ],
        ),
        ("lhost-v5sendmail-06.eml", [("kijitora@example.edu", "relaying_denied")]),
        # only a transcript: "In:  RCPT TO:<a@b>" ... "Out: 451 4.3.0 ..." (Postfix, TrendMicro)
        ("lhost-postfix-75.eml", [("kijitora@libsisimai.net", "system_error")]),
        ("lhost-trendmicro-01.eml", [("kijitora@example.co.jp", "user_unknown")]),
    ],
)
def test_smtp_transcripts(name: str, expected: list[tuple[str, str]]) -> None:
    """A transcript's replies belong to the recipient line after them, or to its RCPT TO."""
    assert found(name) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # "Delivery to the following recipient has been delayed:" (Gmail), a warning (Zoho)
        ("lhost-gmail-06.eml", [("kijitora@example.jp", "delayed")]),
        ("lhost-zoho-04.eml", [("kijitora@6kaku.example.co.jp", "delayed")]),
    ],
)
def test_warnings_are_delays(name: str, expected: list[tuple[str, str]]) -> None:
    """A report that says the server is still trying is a delay, which suppresses nobody."""
    assert found(name) == expected
    assert not any(b.suppress for b in parse_bounce((DATA / name).read_bytes()))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # Final-Recipient "RFC822; @mx.example.org" (a source route's remnant): the prose names her
        ("lhost-sendmail-15.eml", [("kijitora@example.org", "host_unknown")]),
        # Exim "pipe to |/usr/..." / "save to /mail/..." then "generated by a@b"
        # (the failed local delivery is a mailer error, as Sisimai says: not suppressed)
        ("lhost-exim-44.eml", [("kijitora@example.com", "mailer_error")]),
        ("lhost-exim-60.eml", [("nyaan%gol.com@q002.kijitora.gol.com", "mailbox_full")]),
        # a bounce forwarded by a person as "> "-quoted text
        ("lhost-sendmail-14.eml", [("kijitora@example.com", "user_unknown")]),
    ],
)
def test_odd_recipients(name: str, expected: list[tuple[str, str]]) -> None:
    """A DSN field that names no mailbox yields to the prose; a pipe's owner is the recipient."""
    assert found(name) == expected


@pytest.mark.parametrize("name", ["lhost-x1-01.eml", "lhost-mxlogic-03.eml"])
def test_user_unknown_where_sisimai_says_filtered(name: str) -> None:
    """Sisimai calls these 'filtered'; the server's only words are "User unknown" / "550 unknown
    user", nothing about a filter, so sender suppresses the address (bench OVERRIDES)."""
    ((_recipient, reason),) = found(name)
    assert reason == "user_unknown"
    assert all(b.suppress for b in parse_bounce((DATA / name).read_bytes()))


def test_user_unknown_in_reply_to_data_is_a_filter() -> None:
    """m-FILTER's "550 unknown user" to DATA is a content filter (so Sisimai reads it too)."""
    ((recipient, reason),) = found("lhost-mfilter-01.eml")
    assert (recipient, reason) == ("kijitora@example.com", "filtered")


def test_person_mentioning_a_failure_is_not_a_bounce() -> None:
    """Ordinary mail that quotes a failure phrase and an address is not read as a report."""
    data = (
        b"From: Ann <ann@example.org>\r\nTo: b@example.net\r\nSubject: lunch\r\n\r\n"
        b"Unknown user: bob@example.com\r\nThe following recipients were affected:\r\n"
        b"  carol@example.com\r\n"
    )
    assert parse_bounce(data) == []


def test_reader_stops_at_the_returned_message() -> None:
    """Addresses in the returned message's headers are not recipients."""
    text = (
        "The following address failed:\n\n  a@example.com: 550 5.1.1 User unknown\n\n"
        "--- Below is a copy of the original message:\n\n<b@example.com>: 550 no\n"
    )
    assert [f.address for f in failed_recipients(text)] == ["a@example.com"]
    assert "b@example.com" not in cut_returned_message(text)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "The following addresses had permanent fatal errors:",
                "Unknown user: a@example.com",
                "  <b@example.com>: 550 5.1.1 x",
                ">>> RCPT TO:<c@example.com>",
                "<<< 550 no",
                "> quoted",
                "",
                "x" * 300 + "@",
                "a" * 70 + "@" + "b." * 20,
            ]
        )
        | st.text(max_size=80),
        max_size=60,
    )
)
def test_hostile_prose_never_raises(lines: list[str]) -> None:
    """Any text gives a list of bounded findings, each address with an @, without raising."""
    result = failed_recipients("\n".join(lines))
    assert len(result) <= 500
    assert all("@" in f.address and len(f.diagnostic) <= 2_000 for f in result)
