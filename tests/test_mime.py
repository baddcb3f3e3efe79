"""Tests for sender.compose.mime: every message is parsed back with the stdlib parser."""

from __future__ import annotations

import base64
import email
import email.policy
import re
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.message import EmailMessage, MIMEPart
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sender.compose.mime import (
    Attachment,
    BuiltMessage,
    MessageBuilder,
    Part,
    envelope_address,
    make_message_id,
)
from sender.errors import AddressError, HeaderError, InputError
from sender.models import Address

NOW = 1795339815.75  # 2026-11-22 09:30:15.75 UTC
SENDER = Address("kurs@learning.example.com", "Learning Platform")
ANNA = Address("anna@example.org", "Anna Svensson")

SUBJECTS = {
    "en": "Invitation to the Python course",
    "nb": "Invitasjon til «Kurs» – påmelding",
    "sv": "Välkommen till kursen i Python",
    "ja": "「Pythonコースへのご招待」",
    "en-long": "Reminder: " + "the introductory Python course starts next Monday, " * 6,
    "nb-long": "Invitasjon til «Kurs» – påmelding for høstsemesteret, " * 5,
    "sv-long": "Välkommen till kursen – glöm inte att anmäla dig före fredag! " * 5,
    "ja-long": "「Pythonコースへのご招待」来週の月曜日から始まります。" * 8,
}
NAMES = {
    "en": "Anna Svensson",
    "nb": "Bjørn Ødegård",
    "sv": "Åsa Öberg",
    "ja": "山田太郎",
    "en-long": "Professor Anna Maria Katarina Svensson-Lindqvist of the Department of Learning",
    "nb-long": "Bjørn Ødegård Æsøy Håkonsen, førsteamanuensis ved Institutt for informatikk",
    "ja-long": "山田太郎（東京大学大学院情報理工学系研究科コンピュータ科学専攻）",
}
TEXT = {
    "en": "Hello Anna,\n\nyou are invited.\nhttps://learning.example.com/l/abc\n",
    "nb": "Hei Bjørn,\n\ndu er invitert til «Kurs». Påmelding her:\nhttps://x.example/l\n",
    "sv": "Hej Åsa,\n\nvälkommen till kursen.\n",
    "ja": "山田さん、\n\nPythonコースへご招待します。\nhttps://learning.example.com/l/abc\n",
}


class FixedClock:
    """A Clock that stands still until a test moves it."""

    def __init__(self, now: float = NOW) -> None:
        self.time = now

    def now(self) -> float:
        return self.time

    def monotonic(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        self.time += seconds


def builder(**kwargs: Any) -> MessageBuilder:
    options: dict[str, Any] = {"from_address": SENDER, "clock": FixedClock()}
    options.update(kwargs)
    return MessageBuilder(**options)


def build(**kwargs: Any) -> BuiltMessage:
    options: dict[str, Any] = {"to": ANNA, "subject": "Hello", "text": "Hi\n"}
    options.update(kwargs)
    return builder().build(**options)


def parse(data: bytes) -> EmailMessage:
    """Parse with the stdlib, after checking the wire form every message must have."""
    assert data.endswith(b"\r\n")
    for line in data.split(b"\r\n"):
        assert b"\r" not in line
        assert b"\n" not in line
        assert len(line) <= 998
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def header_lines(data: bytes) -> list[str]:
    return data.partition(b"\r\n\r\n")[0].decode().split("\r\n")


def raw_header(message: EmailMessage, name: str) -> str:
    values = [value for key, value in message.raw_items() if key.lower() == name.lower()]
    assert len(values) == 1
    return re.sub(r"\r?\n", "", str(values[0]))


def display_name(message: EmailMessage, name: str) -> str:
    """The display name of a one-address header, decoded as RFC 2047 says.

    Python 3.11's address parser departs from RFC 2047 for encoded-words in a phrase:
    it keeps the whitespace between adjacent encoded-words (CPython gh-128110) and
    rewrites whitespace inside them (runs, tabs, str.isspace() controls). So encoded
    names are decoded from the raw header with ``email.header``, and the stdlib's
    parsed name must agree with that apart from whitespace.
    """
    parsed = str(message[name].addresses[0].display_name)
    phrase = raw_header(message, name).rpartition(" <")[0]
    if "=?utf-8?b?" not in phrase:
        return parsed
    decoded = str(make_header(decode_header(phrase)))
    words = re.findall(r"=\?utf-8\?b\?([^?]*)\?=", phrase)
    stdlib_view = " ".join(base64.b64decode(word).decode() for word in words)
    assert "".join(parsed.split()) == "".join(stdlib_view.split())
    return decoded


def normalised(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text if text.endswith("\n") else text + "\n"


def content(part: MIMEPart) -> str:
    return str(part.get_content()).replace("\r\n", "\n")


def tree(message: EmailMessage) -> list[str]:
    return [part.get_content_type() for part in message.walk()]


# -- structure ------------------------------------------------------------------------


def test_text_only_is_a_single_text_plain_part() -> None:
    """Text alone becomes one text/plain UTF-8 part, not a multipart."""
    message = parse(build(text="Hello Anna\n").data)
    assert tree(message) == ["text/plain"]
    assert message.get_content_charset() == "utf-8"
    assert message["Content-Transfer-Encoding"] == "7bit"
    assert content(message) == "Hello Anna\n"


def test_text_and_html_make_multipart_alternative_text_first() -> None:
    """Text plus HTML becomes multipart/alternative with text before html."""
    message = parse(build(text="plain\n", html="<p>rich</p>").data)
    assert tree(message) == ["multipart/alternative", "text/plain", "text/html"]
    text_part, html_part = message.iter_parts()
    assert content(text_part) == "plain\n"
    assert content(html_part) == "<p>rich</p>\n"


def test_calendar_invite_has_the_planned_layout() -> None:
    """Alternatives follow html inside the alternative; attachments follow it in mixed."""
    ics = "BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nEND:VCALENDAR\r\n"
    built = build(
        text="plain",
        html="<p>rich</p>",
        alternatives=[Part("text/calendar; method=REQUEST", ics)],
        attachments=[Attachment("application/ics", "invite.ics", ics.encode())],
    )
    message = parse(built.data)
    assert tree(message) == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "text/calendar",
        "application/ics",
    ]
    alternative, attachment = message.iter_parts()
    calendar = list(alternative.iter_parts())[2]
    assert calendar.get_param("method") == "REQUEST"
    assert calendar.get_content_charset() == "utf-8"
    assert calendar["Content-Disposition"] is None
    assert content(calendar) == ics.replace("\r\n", "\n")
    assert attachment.get_content_disposition() == "attachment"
    assert attachment.get_filename() == "invite.ics"
    assert attachment.get_param("name") == "invite.ics"
    assert attachment["Content-Transfer-Encoding"] == "base64"
    assert attachment.get_content() == ics.encode()


def test_alternatives_without_html_still_make_an_alternative() -> None:
    """Text and a calendar part form multipart/alternative without an html part."""
    message = parse(build(alternatives=[Part("text/calendar; method=CANCEL", "X\n")]).data)
    assert tree(message) == ["multipart/alternative", "text/plain", "text/calendar"]


def test_attachment_without_html_wraps_the_text_in_mixed() -> None:
    """With only text and an attachment, mixed holds text/plain then the file."""
    data = b"%PDF-1.7\x00\xff binary"
    message = parse(build(attachments=[Attachment("application/pdf", "kurs.pdf", data)]).data)
    assert tree(message) == ["multipart/mixed", "text/plain", "application/pdf"]
    attachment = list(message.iter_parts())[1]
    assert attachment.get_content() == data


def test_several_attachments_keep_their_order() -> None:
    """Attachments appear after the body in the order given."""
    files = [Attachment("text/plain", f"f{i}.txt", f"file {i}".encode()) for i in range(3)]
    message = parse(build(html="<p>x</p>", attachments=files).data)
    names = [part.get_filename() for part in list(message.iter_parts())[1:]]
    assert names == ["f0.txt", "f1.txt", "f2.txt"]


def test_bytes_alternative_of_a_text_type_is_utf8() -> None:
    """A text/* alternative given as bytes is taken as UTF-8 and labelled so."""
    part = Part("text/calendar; method=REQUEST", "SUMMARY:Møte 会議\r\n".encode())
    message = parse(build(alternatives=[part]).data)
    calendar = list(message.iter_parts())[1]
    assert content(calendar) == "SUMMARY:Møte 会議\n"


def test_non_text_alternative_is_base64() -> None:
    """A non-text alternative is sent as base64 without a charset."""
    message = parse(build(alternatives=[Part("application/json", b'{"a": 1}')]).data)
    part = list(message.iter_parts())[1]
    assert part["Content-Transfer-Encoding"] == "base64"
    assert part.get_param("charset") is None
    assert part.get_content() == b'{"a": 1}'


def test_non_utf8_bytes_for_a_text_alternative_raise_input_error() -> None:
    """Bytes that are not UTF-8 cannot be labelled charset=UTF-8."""
    with pytest.raises(InputError):
        build(alternatives=[Part("text/calendar", b"\xff\xfe")])


@pytest.mark.parametrize(
    "content_type",
    ["text/calendar; charset=latin-1", "multipart/mixed", "message/rfc822", "calendar", ""],
)
def test_unusable_alternative_content_types_raise_header_error(content_type: str) -> None:
    """Alternatives are UTF-8 leaves with a type/subtype."""
    with pytest.raises(HeaderError) as caught:
        build(alternatives=[Part(content_type, "x")])
    assert caught.value.field == "Content-Type"


# -- headers --------------------------------------------------------------------------


@pytest.mark.parametrize("locale", SUBJECTS)
def test_subjects_round_trip_and_fold(locale: str) -> None:
    """en/nb/sv/ja subjects, long ones too, decode exactly and fold within 78 columns."""
    subject = SUBJECTS[locale]
    built = build(subject=subject)
    message = parse(built.data)
    assert message["Subject"] == subject
    for line in header_lines(built.data):
        assert len(line) <= 78
    for word in re.findall(r"=\?[^?]+\?[bBqQ]\?[^?]*\?=", raw_header(message, "Subject")):
        assert len(word) <= 75


def test_long_ascii_subject_folds_at_whitespace_unencoded() -> None:
    """A long plain ASCII subject stays readable: folded, not encoded."""
    subject = SUBJECTS["en-long"].strip()
    built = build(subject=subject)
    lines = [line for line in header_lines(built.data) if line.startswith(("Subject", " "))]
    assert len(lines) > 1
    assert all(len(line) <= 78 for line in lines)
    assert "=?" not in "".join(lines)
    assert parse(built.data)["Subject"] == subject


def test_non_ascii_subject_uses_utf8_base64_encoded_words() -> None:
    """Non-ASCII subjects are sent as =?utf-8?b?...?= words."""
    message = parse(build(subject=SUBJECTS["ja"]).data)
    assert raw_header(message, "Subject").startswith("=?utf-8?b?")


def test_encoded_words_never_split_a_character() -> None:
    """Every encoded-word decodes to whole UTF-8 characters on its own."""
    subject = "😀é山" * 40
    message = parse(build(subject=subject).data)
    words = re.findall(r"=\?utf-8\?b\?([^?]*)\?=", raw_header(message, "Subject"))
    assert len(words) > 3
    assert "".join(base64.b64decode(word).decode("utf-8") for word in words) == subject


@pytest.mark.parametrize("subject", ["", " leading", "trailing ", "two  spaces", "=?x?= look"])
def test_awkward_ascii_subjects_round_trip(subject: str) -> None:
    """Whitespace and encoded-word look-alikes survive exactly."""
    assert parse(build(subject=subject).data)["Subject"] == subject


@pytest.mark.parametrize("locale", NAMES)
def test_display_names_round_trip(locale: str) -> None:
    """en/nb/sv/ja display names, long ones too, decode exactly in To, From and Reply-To."""
    name = NAMES[locale]
    person = Address("person@example.org", name)
    built = builder(from_address=Address("kurs@example.com", name)).build(
        to=person, subject="x", text="x", reply_to=person
    )
    message = parse(built.data)
    for field in ("From", "To", "Reply-To"):
        assert display_name(message, field) == name
    assert message["To"].addresses[0].addr_spec == "person@example.org"
    assert all(len(line) <= 78 for line in header_lines(built.data))


@pytest.mark.parametrize(
    ("name", "wire"),
    [
        ("O'Brien, Pat", '"O\'Brien, Pat"'),
        ('Pat "the Teacher" Smith', '"Pat \\"the Teacher\\" Smith"'),
        ("back\\slash", '"back\\\\slash"'),
        ("J. R. Tolkien", '"J. R. Tolkien"'),
        ("Course <Admin>", '"Course <Admin>"'),
    ],
)
def test_ascii_names_with_specials_become_quoted_strings(name: str, wire: str) -> None:
    """Specials in an ASCII name are quoted and escaped, and parse back exactly."""
    message = parse(build(to=Address("a@example.org", name)).data)
    assert raw_header(message, "To") == f"{wire} <a@example.org>"
    assert message["To"].addresses[0].display_name == name


def test_plain_ascii_name_is_sent_as_is() -> None:
    """A name of plain words needs no quoting or encoding."""
    message = parse(build().data)
    assert raw_header(message, "To") == "Anna Svensson <anna@example.org>"


def test_address_without_name_is_a_bare_addr_spec() -> None:
    """No display name means no angle brackets."""
    message = parse(build(to=Address("anna@example.org")).data)
    assert raw_header(message, "To") == "anna@example.org"
    assert message["To"].addresses[0].display_name == ""


def test_idn_domain_becomes_a_label() -> None:
    """IDN domains are sent as A-labels, in addresses and the default Message-ID."""
    sender = Address("kurs@lærer.no", "Lærer")
    built = builder(from_address=sender).build(
        to=Address("taro@例え.テスト", "太郎"), subject="x", text="x"
    )
    message = parse(built.data)
    assert message["To"].addresses[0].domain == "xn--r8jz45g.xn--zckzah"
    assert message["From"].addresses[0].domain == "xn--lrer-voa.no"
    assert built.message_id.endswith("@xn--lrer-voa.no>")
    assert built.smtputf8 is False


def test_non_ascii_local_part_is_raw_utf8_and_needs_smtputf8() -> None:
    """A non-ASCII local part has no encoding, so it goes raw under SMTPUTF8."""
    built = build(to=Address("δοκιμή@παράδειγμα.δοκιμή", "Δοκιμή"))
    assert built.smtputf8 is True
    assert "δοκιμή@xn--hxajbheg2az3al.xn--jxalpdlp".encode() in built.data
    message = parse(built.data)
    # The stdlib parser reads header octets as surrogate-escaped ASCII; undo that.
    username = message["To"].addresses[0].username
    assert username.encode("utf-8", "surrogateescape").decode() == "δοκιμή"
    assert display_name(message, "To") == "Δοκιμή"


def test_non_ascii_local_part_in_reply_to_or_from_needs_smtputf8() -> None:
    """Any address on the message with a UTF-8 local part sets smtputf8."""
    utf8 = Address("δοκιμή@example.org")
    assert build(reply_to=utf8).smtputf8 is True
    assert builder(reply_to=utf8).build(to=ANNA, subject="x", text="x").smtputf8 is True
    assert builder(from_address=utf8).build(to=ANNA, subject="x", text="x").smtputf8 is True
    assert build().smtputf8 is False


def test_unusual_but_valid_local_parts_are_kept() -> None:
    """Dotted, plus-tagged and quoted local parts are sent unchanged."""
    for email_address in ("first.last+tag@example.org", '"john doe"@example.org', "a..b@x.jp"):
        built = build(to=Address(email_address))
        assert f"To: {email_address}\r\n".encode() in built.data


@pytest.mark.parametrize(
    "bad",
    [
        "no-at-sign",
        "@example.com",
        "user@",
        "john doe@example.com",
        "user@exa mple.com",
        "user@-bad-.example",
        "user@exa..mple.com",
        "user@xn--.example\u3002",
        "a(b)@example.com",
        "x" * 250 + "@example.com",
    ],
)
def test_invalid_addresses_raise_address_error(bad: str) -> None:
    """Anything but local@domain with a usable local part and domain is refused."""
    with pytest.raises(AddressError) as caught:
        build(to=Address(bad))
    assert caught.value.field == "To"


def test_envelope_address_matches_the_header_form() -> None:
    """envelope_address gives the A-label form and the SMTPUTF8 need that build uses."""
    assert envelope_address("anna@bücher.example") == ("anna@xn--bcher-kva.example", False)
    assert envelope_address("δοκιμή@example.org") == ("δοκιμή@example.org", True)
    with pytest.raises(AddressError) as caught:
        envelope_address("nobody", field="email")
    assert caught.value.field == "email"
    with pytest.raises(HeaderError):
        envelope_address("anna@example.org\r\nRCPT TO:<x@y>")


def test_invalid_builder_addresses_raise_at_construction() -> None:
    """From and Reply-To are validated once, when the builder is made."""
    with pytest.raises(AddressError) as caught:
        builder(from_address=Address("nobody"))
    assert caught.value.field == "From"
    with pytest.raises(AddressError) as caught:
        builder(reply_to=Address("x@"))
    assert caught.value.field == "Reply-To"


def test_from_is_always_the_builders_address() -> None:
    """From comes from the builder configuration, never from a message."""
    message = parse(build().data)
    assert str(message["From"]) == "Learning Platform <kurs@learning.example.com>"


def test_reply_to_per_message_overrides_the_builders() -> None:
    """A teacher's Reply-To replaces the builder default for that message only."""
    default = Address("support@learning.example.com", "Support")
    teacher = Address("teacher@school.example", "Ms Berg")
    b = builder(reply_to=default)
    plain = parse(b.build(to=ANNA, subject="x", text="x").data)
    assert plain["Reply-To"].addresses[0].addr_spec == default.email
    overridden = parse(b.build(to=ANNA, subject="x", text="x", reply_to=teacher).data)
    assert overridden["Reply-To"].addresses[0].addr_spec == teacher.email
    assert len(overridden.get_all("Reply-To", [])) == 1
    assert parse(build().data)["Reply-To"] is None


def test_always_present_headers() -> None:
    """From, To, Subject, Date, Message-ID and MIME-Version are on every message."""
    message = parse(build().data)
    for name in ("From", "To", "Subject", "Date", "Message-ID", "MIME-Version"):
        assert len(message.get_all(name, [])) == 1
    assert message["MIME-Version"] == "1.0"


def test_date_comes_from_the_clock() -> None:
    """Date is the injected clock's time, to the second, in UTC."""
    clock = FixedClock()
    b = builder(clock=clock)
    message = parse(b.build(to=ANNA, subject="x", text="x").data)
    assert message["Date"].datetime == datetime.fromtimestamp(int(NOW), tz=UTC)
    clock.time += 3600.5
    later = parse(b.build(to=ANNA, subject="x", text="x").data)
    assert later["Date"].datetime == datetime.fromtimestamp(int(NOW) + 3601, tz=UTC)


def test_message_id_is_random_on_the_configured_domain() -> None:
    """Message-IDs are unique, bracketed and on message_id_domain."""
    b = builder(message_id_domain="mail.example.net")
    ids = {b.build(to=ANNA, subject="x", text="x").message_id for _ in range(50)}
    assert len(ids) == 50
    for message_id in ids:
        assert re.fullmatch(r"<[0-9a-f]{32}@mail\.example\.net>", message_id)
    built = b.build(to=ANNA, subject="x", text="x")
    assert parse(built.data)["Message-ID"] == built.message_id


def test_message_id_defaults_to_the_from_domain() -> None:
    """Without message_id_domain, Message-IDs use the From address's domain."""
    assert build().message_id.endswith("@learning.example.com>")


def test_given_message_id_is_used_with_brackets() -> None:
    """A caller's Message-ID is used as given, bracketed if it was bare."""
    assert build(message_id="<a.b@x.example>").message_id == "<a.b@x.example>"
    built = build(message_id="retry-1@x.example")
    assert built.message_id == "<retry-1@x.example>"
    assert parse(built.data)["Message-ID"] == "<retry-1@x.example>"


@pytest.mark.parametrize("bad", ["no-at", "<a@b", "a b@c", "<a<b@c>", "ø@example.com", ""])
def test_malformed_message_ids_raise_header_error(bad: str) -> None:
    """A Message-ID must be <left@right> in printable ASCII."""
    with pytest.raises(HeaderError) as caught:
        build(message_id=bad)
    assert caught.value.field == "Message-ID"


def test_make_message_id_is_unguessable_and_idn_safe() -> None:
    """make_message_id gives 128 random bits on an A-label domain."""
    assert re.fullmatch(r"<[0-9a-f]{32}@example\.com>", make_message_id("example.com"))
    assert make_message_id("bücher.example").endswith("@xn--bcher-kva.example>")
    assert make_message_id("example.com") != make_message_id("example.com")


def test_extra_headers_follow_and_per_message_ones_override() -> None:
    """Builder headers appear on every message; a per-message one of the same name wins."""
    b = builder(headers={"List-Unsubscribe": "<https://x.example/u>", "X-Course": "py-101"})
    built = b.build(
        to=ANNA,
        subject="x",
        text="x",
        headers={
            "list-unsubscribe": "<https://x.example/u/anna>",
            "X-Kurs": "Grunnkurs i «Python»",
        },
    )
    message = parse(built.data)
    assert message.get_all("List-Unsubscribe") == ["<https://x.example/u/anna>"]
    assert message["X-Course"] == "py-101"
    assert message["X-Kurs"] == "Grunnkurs i «Python»"
    plain = parse(b.build(to=ANNA, subject="x", text="x").data)
    assert plain["List-Unsubscribe"] == "<https://x.example/u>"


def test_long_extra_header_folds_at_whitespace() -> None:
    """A long structured value folds at its own whitespace and unfolds unchanged."""
    value = ", ".join(f"<https://learning.example.com/unsubscribe/{i}>" for i in range(5))
    built = build(headers={"List-Unsubscribe": value})
    assert all(len(line) <= 78 for line in header_lines(built.data))
    assert parse(built.data)["List-Unsubscribe"] == value


def test_unfoldable_extra_header_raises() -> None:
    """A value with a word longer than a line can hold is refused, not sent broken."""
    with pytest.raises(HeaderError) as caught:
        build(headers={"X-Token": "a" * 1200})
    assert caught.value.field == "X-Token"


@pytest.mark.parametrize(
    "name",
    [
        "From",
        "to",
        "SUBJECT",
        "Date",
        "Message-ID",
        "MIME-Version",
        "Reply-To",
        "Cc",
        "bcc",
        "Return-Path",
        "Content-Type",
        "content-transfer-encoding",
        "Content-Disposition",
        "Bad Name",
        "Bad:Name",
        "Nöt-ASCII",
        "",
        "X-" + "a" * 80,
    ],
)
def test_forbidden_extra_header_names_raise_header_error(name: str) -> None:
    """Structural, empty, non-printable or colon/space-bearing names are refused."""
    with pytest.raises(HeaderError) as caught:
        build(headers={name: "x"})
    assert caught.value.field == name
    with pytest.raises(HeaderError):
        builder(headers={name: "x"})


def test_duplicate_extra_header_names_raise_header_error() -> None:
    """Two spellings of one header name in one mapping are ambiguous."""
    with pytest.raises(HeaderError):
        build(headers={"X-A": "1", "x-a": "2"})


# -- header injection -----------------------------------------------------------------


def _injections(value: str) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(field, builder kwargs, build kwargs) with ``value`` placed in each header."""
    return [
        ("Subject", {}, {"subject": value}),
        ("To", {}, {"to": Address("anna@example.org", value)}),
        ("To", {}, {"to": Address(f"anna{value}@example.org")}),
        ("To", {}, {"to": Address(f"anna@example.org{value}")}),
        ("Reply-To", {}, {"reply_to": Address("t@example.org", value)}),
        ("Reply-To", {}, {"reply_to": Address(f"t@example.org{value}")}),
        ("Reply-To", {"reply_to": Address("t@example.org", value)}, {}),
        ("From", {"from_address": Address("k@example.org", value)}, {}),
        ("From", {"from_address": Address(f"k@example.org{value}")}, {}),
        ("Message-ID", {}, {"message_id": f"<a@b{value}>"}),
        ("Message-ID", {"message_id_domain": f"example.org{value}"}, {}),
        ("X-Extra", {}, {"headers": {"X-Extra": value}}),
        ("X-Extra", {"headers": {"X-Extra": value}}, {}),
        ("Content-Type", {}, {"alternatives": [Part(f"text/calendar{value}", "x")]}),
        ("Content-Type", {}, {"attachments": [Attachment(f"text/x{value}", "a", b"")]}),
        ("Content-Disposition", {}, {"attachments": [Attachment("text/x", value, b"")]}),
    ]


@pytest.mark.parametrize("char", ["\r", "\n", "\r\n", "\x00"])
@pytest.mark.parametrize("case", range(len(_injections(""))))
def test_header_injection_raises_naming_the_field(char: str, case: int) -> None:
    """CR, LF or NUL in any header value raises HeaderError naming that header."""
    field, builder_kwargs, build_kwargs = _injections(f"x{char}Bcc: victim@example.com")[case]
    with pytest.raises(HeaderError) as caught:
        builder(**builder_kwargs).build(**{"to": ANNA, "subject": "s", "text": "t", **build_kwargs})
    assert caught.value.field == field


def test_header_errors_are_value_errors() -> None:
    """Callers may catch plain ValueError."""
    with pytest.raises(ValueError, match="Subject"):
        build(subject="a\nb")


def test_lone_surrogate_in_subject_raises_header_error() -> None:
    """Text that cannot be UTF-8 cannot be a header."""
    with pytest.raises(HeaderError) as caught:
        build(subject="bad \ud800")
    assert caught.value.field == "Subject"


# -- bodies ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "cte"),
    [
        (TEXT["en"], "7bit"),
        (TEXT["nb"], "quoted-printable"),
        (TEXT["sv"], "quoted-printable"),
        (TEXT["ja"], "base64"),
        ("boundary look-alike: --=_sender-alt\n", "quoted-printable"),
        ("x" * 5000, "quoted-printable"),
        ("nul \x00 byte\n", "quoted-printable"),
    ],
)
def test_transfer_encoding_fits_the_text(text: str, cte: str) -> None:
    """7bit for short-lined ASCII, QP for Latin text, base64 for CJK; all round-trip."""
    message = parse(build(text=text).data)
    assert message["Content-Transfer-Encoding"] == cte
    assert content(message) == normalised(text)


def test_line_endings_are_normalised_to_crlf() -> None:
    """CR, LF and CRLF in bodies all become CRLF on the wire."""
    built = build(text="a\rb\r\nc\nd", html="<p>\r</p>\n")
    assert b"a\r\nb\r\nc\r\nd\r\n" in built.data
    message = parse(built.data)
    text_part, html_part = message.iter_parts()
    assert content(text_part) == "a\nb\nc\nd\n"
    assert content(html_part) == "<p>\n</p>\n"


def test_long_single_line_html_survives() -> None:
    """5,000 characters of HTML on one line come back unchanged."""
    html = "<p>" + "".join(f"<a href='https://x.example/{i}'>{i}</a> " for i in range(250))
    html = html[:4996] + "</p>"
    assert len(html) == 5000
    for page in (html, html.replace("a href", "a title='Välkommen' href")):
        message = parse(build(html=page).data)
        assert content(list(message.iter_parts())[1]) == page + "\n"


def test_long_japanese_line_survives_in_base64_lines() -> None:
    """A long CJK line is base64 in 76-character lines."""
    text = "Pythonコースへのご招待。" * 400
    built = build(text=text)
    body = built.data.partition(b"\r\n\r\n")[2]
    assert all(len(line) <= 76 for line in body.split(b"\r\n"))
    assert content(parse(built.data)) == text + "\n"


def test_trailing_whitespace_dots_and_from_lines_survive() -> None:
    """Trailing spaces, lone dots and 'From ' lines round-trip in every encoding."""
    for extra in ("", "ø", "日本語" * 30):
        text = f"line with spaces   \n.\n..\nFrom me\ttab\t\n{extra}\n"
        message = parse(build(text=text).data)
        assert content(message) == text


def test_lone_surrogate_in_body_raises_input_error() -> None:
    """A body that is not encodable as UTF-8 raises InputError naming the body."""
    with pytest.raises(InputError) as caught:
        build(html="\udcff")
    assert caught.value.field == "html"


def test_non_ascii_attachment_filename_uses_rfc2231() -> None:
    """Non-ASCII and long filenames are RFC 2231 encoded and decode exactly."""
    for filename in ("Välkommen.pdf", "招待状.ics", "Invitasjon – " * 12 + ".pdf"):
        built = build(attachments=[Attachment("application/pdf", filename, b"%PDF")])
        assert b"filename*" in built.data
        attachment = list(parse(built.data).iter_parts())[1]
        assert attachment.get_filename() == filename
        assert all(len(line) <= 78 for line in header_lines(built.data))
        head = built.data.split(b"--=_sender-mixed\r\n")[2].partition(b"\r\n\r\n")[0]
        assert all(len(line) <= 78 for line in head.split(b"\r\n"))


@pytest.mark.parametrize("filename", ['say "hi".txt', "back\\slash.txt", "a; b=c.txt"])
def test_ascii_attachment_filenames_with_specials_are_quoted(filename: str) -> None:
    """Quotes, backslashes and separators in filenames are escaped in a quoted-string."""
    built = build(attachments=[Attachment("text/plain", filename, b"x")])
    attachment = list(parse(built.data).iter_parts())[1]
    assert attachment.get_filename() == filename


def test_every_layout_has_crlf_lines_within_998() -> None:
    """No bare CR or LF and no line over 998 octets in any layout."""
    ics = Part("text/calendar; method=REQUEST", "DESCRIPTION:" + "x" * 3000 + "\n")
    files = [Attachment("application/octet-stream", "blob.bin", bytes(range(256)) * 40)]
    for kwargs in (
        {},
        {"html": "<p>" + "y" * 3000 + "</p>"},
        {"alternatives": [ics]},
        {"attachments": files},
        {"html": "h", "alternatives": [ics], "attachments": files},
    ):
        parse(build(text="z" * 2000 + "\r" + "日本" * 1000, **kwargs).data)


# -- properties -----------------------------------------------------------------------

HEADER_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\r\n\x00"), max_size=200)


@settings(max_examples=300)
@given(subject=HEADER_TEXT)
def test_any_subject_round_trips(subject: str) -> None:
    """Any subject without CR, LF or NUL decodes back exactly, within the line limits."""
    built = build(subject=subject)
    assert parse(built.data)["Subject"] == subject
    assert all(len(line) <= 78 for line in header_lines(built.data))


@settings(max_examples=300)
@given(name=HEADER_TEXT)
def test_any_display_name_round_trips(name: str) -> None:
    """Any display name without CR, LF or NUL decodes back exactly."""
    built = build(to=Address("anna@example.org", name))
    message = parse(built.data)
    assert display_name(message, "To") == name
    assert message["To"].addresses[0].addr_spec == "anna@example.org"


@given(
    value=st.tuples(HEADER_TEXT, st.sampled_from(["\r", "\n", "\x00"]), HEADER_TEXT).map("".join),
    case=st.integers(min_value=0, max_value=len(_injections("")) - 1),
)
def test_any_value_with_cr_lf_or_nul_raises(value: str, case: int) -> None:
    """A CR, LF or NUL anywhere in any header value raises HeaderError for that field."""
    field, builder_kwargs, build_kwargs = _injections(value)[case]
    with pytest.raises(HeaderError) as caught:
        builder(**builder_kwargs).build(**{"to": ANNA, "subject": "s", "text": "t", **build_kwargs})
    assert caught.value.field == field


@settings(max_examples=200)
@given(text=st.text(), html=st.none() | st.text())
def test_any_body_round_trips(text: str, html: str | None) -> None:
    """Any text and HTML come back equal up to CRLF normalisation and a final newline."""
    message = parse(build(text=text, html=html).data)
    if html is None:
        assert content(message) == normalised(text)
    else:
        text_part, html_part = message.iter_parts()
        assert content(text_part) == normalised(text)
        assert content(html_part) == normalised(html)
