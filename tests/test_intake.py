"""Tests for sender.feedback.intake: real client reply shapes, mailbox formats, hostile bytes."""

from __future__ import annotations

import base64
import mailbox
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sender.errors import InputError
from sender.feedback.intake import CalendarPart, MailItem, calendar_parts, read_mail

SAMPLES = Path(__file__).parent / "samples" / "replies"
UID = "3f2a9c1e5b7d4e6f8a0b1c2d3e4f5a6b@calendar.example.com"
TITLE = "Python intro \u2014 session 1"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def only_part(name: str) -> CalendarPart:
    parts = calendar_parts(sample(name))
    assert len(parts) == 1, parts
    return parts[0]


def unfolded(part: CalendarPart) -> str:
    """The calendar text with RFC 5545 folding undone and LF line ends."""
    text = part.data.decode("utf-8").replace("\r\n", "\n")
    return re.sub(r"\n[ \t]", "", text)


def prop(part: CalendarPart, name: str) -> str | None:
    """The first unfolded content line of property ``name``, or None."""
    match = re.search(rf"^{name}[;:].*$", unfolded(part), re.MULTILINE)
    return match.group(0) if match else None


def value(part: CalendarPart, name: str) -> str | None:
    """The raw (still escaped) value of a property without quoted parameters."""
    line = prop(part, name)
    return None if line is None else line.split(":", 1)[1]


def calendar_mail(ics: bytes, *, headers: str = "", cte: str = "base64") -> bytes:
    body = base64.encodebytes(ics) if cte == "base64" else ics
    return (
        b"From: Ada <ada@example.org>\r\nSubject: Accepted\r\nMIME-Version: 1.0\r\n"
        + headers.encode()
        + f"Content-Transfer-Encoding: {cte}\r\n\r\n".encode()
        + body
    )


ICS = (
    "BEGIN:VCALENDAR\r\nMETHOD:REPLY\r\nBEGIN:VEVENT\r\n"
    f"UID:{UID}\r\nATTENDEE;PARTSTAT=ACCEPTED:mailto:ada@example.org\r\n"
    "END:VEVENT\r\nEND:VCALENDAR\r\n"
).encode()


# (file, ATTENDEE value, PARTSTAT, SEQUENCE, COMMENT value as sent, sender, subject)
EXPECTED = [
    (
        "outlook_accepted.eml",
        "MAILTO:ADA@EXAMPLE.ORG",
        "ACCEPTED",
        "1",
        "Looking forward to it\\, see you there.\\n",
        "ada@example.org",
        f"Accepted: {TITLE}",
    ),
    (
        "outlook_attachment_only.eml",
        "mailto:grace@example.org",
        "DECLINED",
        "0",
        "Sorry\\, I teach at that time. Could I join session 2 instead?\\n",
        "grace@example.org",
        f"Declined: {TITLE}",
    ),
    (
        "gmail_accepted.eml",
        "mailto:katherine.johnson@example.net",
        "ACCEPTED",
        "1",
        None,
        "katherine.johnson@example.net",
        f"Accepted: {TITLE} @ Tue 9 Mar 2027 18:00 - 19:30 (CET) (Python Course)",
    ),
    (
        "apple_tentative.eml",
        "mailto:margaret@example.com",
        "TENTATIVE",
        "1",
        None,
        "margaret@example.com",
        f"Tentative: {TITLE}",
    ),
    (
        "thunderbird_declined.eml",
        "mailto:alan@example.org",
        "DECLINED",
        "0",
        "I am at a conference in Manchester that week\\; please keep me on the list for session 2.",
        "alan@example.org",
        f"Invitation Declined: {TITLE}",
    ),
    (
        "nested_mixed_in_alternative.eml",
        "mailto:edsger@example.org",
        "ACCEPTED",
        "1",
        None,
        "edsger@example.org",
        f"Accepted: {TITLE}",
    ),
    (
        "windows1252.eml",
        "MAILTO:zoe.mueller@example.de",
        "ACCEPTED",
        "1",
        "Gern\\, bis dann!\\n",
        "zoe.mueller@example.de",
        f"Zugesagt: {TITLE}",
    ),
    (
        "forwarded.eml",
        "mailto:barbara@example.org",
        "ACCEPTED",
        "0",
        "\\n",
        "office@example.org",
        f"FW: Accepted: {TITLE}",
    ),
]


# -- calendar_parts on the samples -----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "attendee", "partstat", "sequence", "comment", "sender", "subject"),
    EXPECTED,
    ids=[row[0] for row in EXPECTED],
)
def test_sample_yields_exactly_its_reply(
    name: str,
    attendee: str,
    partstat: str,
    sequence: str,
    comment: str | None,
    sender: str,
    subject: str,
) -> None:
    """Each client sample gives one REPLY part with its attendee, PARTSTAT, SEQUENCE, COMMENT."""
    part = only_part(name)
    assert part.method == "REPLY"
    line = prop(part, "ATTENDEE")
    assert line is not None
    assert line.endswith(":" + attendee)
    assert f"PARTSTAT={partstat}" in line
    assert value(part, "UID") == UID
    assert value(part, "SEQUENCE") == sequence
    assert (value(part, "ORGANIZER") or "").lower() == "mailto:invitation@calendar.example.com"
    assert value(part, "COMMENT") == comment
    assert part.sender == sender
    assert part.subject == subject


def test_outlook_base64_part_decodes_with_windows_timezone() -> None:
    """Outlook's base64 text/calendar decodes to text with its Windows TZID and X-MS-OLK props."""
    part = only_part("outlook_accepted.eml")
    text = unfolded(part)
    assert part.filename is None
    assert "TZID:W. Europe Standard Time" in text
    assert "X-MS-OLK-CONFTYPE:0" in text
    assert text.startswith("BEGIN:VCALENDAR\nMETHOD:REPLY\n")


def test_method_comes_from_the_content_type_when_the_object_has_none() -> None:
    """The attachment-only Outlook reply has no METHOD inside; the MIME parameter still counts."""
    part = only_part("outlook_attachment_only.eml")
    assert part.method == "REPLY"
    assert part.filename == "invite.ics"
    assert prop(part, "METHOD") is None


def test_gmail_inline_and_attachment_copies_are_returned_once() -> None:
    """Google's inline QP part and its base64 invite.ics are one calendar, with both names kept."""
    part = only_part("gmail_accepted.eml")
    assert (part.method, part.filename) == ("REPLY", "invite.ics")
    assert f"SUMMARY:{TITLE}" in unfolded(part)


def test_thunderbird_8bit_copies_are_returned_once() -> None:
    """Thunderbird's 8-bit text/calendar and application/ics copies dedupe to one part."""
    part = only_part("thunderbird_declined.eml")
    assert (part.method, part.filename) == ("REPLY", "invite.ics")
    assert "PRODID:-//Mozilla.org/NONSGML Mozilla Calendar V1.1//EN" in unfolded(part)


def test_apple_quoted_printable_attachment_is_decoded() -> None:
    """Apple's QP-encoded iCal-*.ics attachment decodes, folding and UTF-8 intact."""
    part = only_part("apple_tentative.eml")
    assert part.filename == "iCal-20270225-083012.ics"
    assert f"SUMMARY:{TITLE}" in unfolded(part)
    assert 'CN="Margaret Hamilton"' in (prop(part, "ATTENDEE") or "")


def test_windows_1252_part_is_converted_to_utf8() -> None:
    """A windows-1252 calendar comes back as UTF-8 with the CN and the dash intact."""
    part = only_part("windows1252.eml")
    assert 'CN="Zoë Müller"' in (prop(part, "ATTENDEE") or "")
    assert f"SUMMARY:Zugesagt: {TITLE}" in unfolded(part)
    part.data.decode("utf-8")  # strict: no mojibake bytes left


def test_forwarded_reply_is_attributed_to_the_message_that_arrived() -> None:
    """A reply forwarded as message/rfc822 is found; sender and subject are the forwarder's."""
    part = only_part("forwarded.eml")
    assert part.sender == "office@example.org"
    assert "barbara@example.org" in (prop(part, "ATTENDEE") or "")


def test_message_without_calendar_gives_empty_list() -> None:
    """An out-of-office auto-reply holds no calendar."""
    assert calendar_parts(sample("no_calendar.eml")) == []


# -- calendar_parts on hand-made edge cases --------------------------------------------


def test_copies_differing_only_in_line_ends_are_one_calendar() -> None:
    """An LF copy and a CRLF copy of one calendar dedupe; the first copy's bytes win."""
    lf = ICS.replace(b"\r\n", b"\n")
    data = (
        b'From: ada@example.org\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/calendar; method=REPLY\r\n\r\n" + lf + b"\r\n"
        b'--b\r\nContent-Type: application/octet-stream; name="reply.ics"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(ICS) + b"--b--\r\n"
    )
    [part] = calendar_parts(data)
    assert part.data == lf
    assert (part.method, part.filename) == ("REPLY", "reply.ics")


def test_different_calendars_are_all_returned_in_order() -> None:
    """Two distinct calendars in one message give two parts, in message order."""
    other = ICS.replace(b"ACCEPTED", b"DECLINED")
    data = (
        b'From: ada@example.org\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/calendar\r\n\r\n" + ICS + b"\r\n"
        b"--b\r\nContent-Type: text/calendar\r\n\r\n" + other + b"\r\n--b--\r\n"
    )
    assert [b"ACCEPTED" in p.data for p in calendar_parts(data)] == [True, False]


@pytest.mark.parametrize(
    "content_type",
    [
        'application/octet-stream; name="Antwort.ICS"',
        "application/ics",
        'text/plain; name="reply.ics"',
    ],
)
def test_calendar_attachments_are_found_by_type_or_ics_name(content_type: str) -> None:
    """application/ics, and any part whose name ends in .ics, count as calendars."""
    data = calendar_mail(ICS, headers=f"Content-Type: {content_type}\r\n")
    assert len(calendar_parts(data)) == 1


def test_ics_named_part_without_vcalendar_is_skipped() -> None:
    """A part that does not decode to BEGIN:VCALENDAR is not a calendar, whatever its name."""
    data = calendar_mail(
        b"\x89PNG\r\n\x1a\n", headers='Content-Type: text/calendar; name="x.ics"\r\n'
    )
    assert calendar_parts(data) == []


def test_utf8_bom_is_stripped() -> None:
    """A leading byte-order mark does not survive decoding."""
    data = calendar_mail(
        b"\xef\xbb\xbf" + ICS, headers="Content-Type: text/calendar; charset=utf-8\r\n"
    )
    [part] = calendar_parts(data)
    assert part.data.startswith(b"BEGIN:VCALENDAR")


def test_utf16_with_bom_and_no_charset_is_decoded() -> None:
    """UTF-16 text with a BOM but no declared charset comes back as UTF-8."""
    data = calendar_mail(ICS.decode().encode("utf-16"), headers="Content-Type: text/calendar\r\n")
    [part] = calendar_parts(data)
    assert part.data == ICS


@pytest.mark.parametrize("charset", ["us-ascii", "x-unknown-charset", "utf-7"])
def test_wrong_or_unknown_charset_falls_back_to_utf8(charset: str) -> None:
    """A declared charset that cannot decode the bytes gives way to UTF-8."""
    ics = ICS.replace(b"mailto:", "CN=Zoë:mailto:".encode())
    data = calendar_mail(ics, headers=f"Content-Type: text/calendar; charset={charset}\r\n")
    [part] = calendar_parts(data)
    assert "CN=Zoë" in part.data.decode("utf-8")


def test_undeclared_latin1_bytes_are_read_as_windows_1252() -> None:
    """Bytes that are not UTF-8 and declare no charset are read as Windows-1252."""
    ics = ICS.replace(b"mailto:", "CN=Zoë – X:mailto:".encode("cp1252"))
    data = calendar_mail(ics, headers="Content-Type: text/calendar\r\n", cte="8bit")
    [part] = calendar_parts(data)
    assert "CN=Zoë – X" in part.data.decode("utf-8")


@pytest.mark.parametrize(
    ("from_header", "expected"),
    [
        ("From: =?utf-8?q?Ad=C3=A1?= <Ada@Example.ORG>\r\n", "ada@example.org"),
        ("From: ada@example.org, grace@example.org\r\n", ""),
        ("From: Ada Lovelace\r\n", ""),
        ("", ""),
    ],
)
def test_sender_is_the_single_from_address_lower_cased(from_header: str, expected: str) -> None:
    """sender is From's one addr-spec, lower-cased, else empty so no invitation matches."""
    data = from_header.encode() + b"Content-Type: text/calendar\r\n\r\n" + ICS
    [part] = calendar_parts(data)
    assert part.sender == expected


def test_raw_utf8_subject_is_decoded() -> None:
    """An 8-bit UTF-8 Subject (no encoded words) is read as UTF-8."""
    data = f"Subject: Zugesagt: {TITLE}\r\nContent-Type: text/calendar\r\n\r\n".encode() + ICS
    [part] = calendar_parts(data)
    assert part.subject == f"Zugesagt: {TITLE}"


def test_method_parameter_is_upper_cased() -> None:
    """method=reply in the Content-Type reads as REPLY."""
    data = calendar_mail(ICS, headers='Content-Type: text/calendar; method="reply"\r\n')
    assert calendar_parts(data)[0].method == "REPLY"


def test_header_with_a_broken_charset_name_is_kept_as_text() -> None:
    """An encoded word whose charset name holds 8-bit bytes leaves the Subject undecoded."""
    data = b"Subject: =?utf\xe5-8?q?hi?=\r\nContent-Type: text/calendar\r\n\r\n" + ICS
    [part] = calendar_parts(data)
    assert part.subject == "=?utf\ufffd-8?q?hi?="


def assert_well_formed(parts: list[CalendarPart]) -> None:
    for part in parts:
        part.data.decode("utf-8")
        for text in (part.method, part.filename, part.subject, part.sender):
            if text is not None:
                text.encode("utf-8")  # no lone surrogates for JSON output to trip on


# Pieces of MIME syntax, so generated input reaches the parser's interesting branches.
TOKENS = [
    b"\r\n",
    b"\n",
    b"\r\n\r\n",
    b"--b",
    b"--b--",
    b"From: ",
    b"Subject: ",
    b"Content-Type: ",
    b"Content-Transfer-Encoding: ",
    b"Content-Disposition: attachment; ",
    b"text/calendar",
    b"application/ics",
    b"multipart/mixed; boundary=b",
    b"multipart/alternative; boundary=b",
    b"message/rfc822",
    b"; charset=",
    b"; method=",
    b"; name=",
    b"*=",
    b"''",
    b"%FF",
    b"utf-8",
    b"utf-16",
    b"utf-7",
    b"unicode_escape",
    b"base64",
    b"quoted-printable",
    b"8bit",
    b"x-uuencode",
    b"=?",
    b"?q?",
    b"?b?",
    b"?=",
    b"=E9",
    b"x.ics",
    b"BEGIN:VCALENDAR",
    b"QkVHSU46VkNBTEVOREFS",
    b"<a@b.c>",
    b",",
    b'"',
    b"\xff",
    b"\xef\xbb\xbf",
    b"\x00",
]


@given(st.binary(max_size=4096))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    """calendar_parts returns well-formed parts for any input at all."""
    assert_well_formed(calendar_parts(data))


@given(st.lists(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=4)), max_size=60))
def test_mime_shaped_garbage_never_raises(pieces: list[bytes]) -> None:
    """Random sequences of MIME syntax never make calendar_parts raise."""
    assert_well_formed(calendar_parts(b"".join(pieces)))


SAMPLE_BYTES = [sample(p.name) for p in sorted(SAMPLES.glob("*.eml"))]


@given(
    st.sampled_from(SAMPLE_BYTES),
    st.lists(
        st.tuples(
            st.integers(0, 5000),
            st.integers(0, 40),
            st.one_of(st.sampled_from(TOKENS), st.binary(max_size=12)),
        ),
        max_size=6,
    ),
)
def test_damaged_replies_never_raise(original: bytes, edits: list[tuple[int, int, bytes]]) -> None:
    """Real replies with bytes cut and spliced in anywhere still parse without raising."""
    data = original
    for at, cut, insert in edits:
        at %= len(data) + 1
        data = data[:at] + insert + data[at + cut :]
    assert_well_formed(calendar_parts(data))


# -- read_mail ---------------------------------------------------------------------------


def test_read_mail_single_eml() -> None:
    """A message file is one item whose source is its path."""
    path = SAMPLES / "outlook_accepted.eml"
    assert list(read_mail([path])) == [MailItem(str(path), path.read_bytes())]


def test_read_mail_mbox_yields_its_messages_in_order() -> None:
    """An mbox gives one item per message, sources numbered from #0 in file order."""
    path = SAMPLES / "replies.mbox"
    items = list(read_mail([path]))
    assert [item.source for item in items] == [f"{path}#{n}" for n in range(3)]
    parts = [calendar_parts(item.data) for item in items]
    assert [len(found) for found in parts] == [1, 1, 1]  # Gmail's LF and CRLF copies are one
    senders = [found[0].sender for found in parts]
    assert senders == ["ada@example.org", "katherine.johnson@example.net", "alan@example.org"]
    assert not items[0].data.startswith(b"From ")


def test_read_mail_maildir(tmp_path: Path) -> None:
    """A Maildir gives its new/ and cur/ messages in sorted name order, skipping tmp/."""
    box = mailbox.Maildir(tmp_path / "Maildir", factory=None, create=True)
    names = ["outlook_accepted.eml", "gmail_accepted.eml", "apple_tentative.eml"]
    keys = [box.add(sample(name)) for name in names]
    seen = mailbox.MaildirMessage(sample("thunderbird_declined.eml"))
    seen.set_subdir("cur")
    seen.add_flag("S")
    keys.append(box.add(seen))
    (tmp_path / "Maildir" / "tmp" / "half-written").write_bytes(b"Subject: x\r\n")
    items = list(read_mail([tmp_path / "Maildir"]))
    sources = [Path(item.source) for item in items]
    assert sorted(p.name.split(":")[0] for p in sources) == sorted(keys)
    assert [p.name for p in sources] == sorted(p.name for p in sources)
    assert {p.parent.name for p in sources} == {"new", "cur"}
    assert sum(1 for item in items if calendar_parts(item.data)) == 4


def test_read_mail_directory_of_eml_files_recurses_one_level(tmp_path: Path) -> None:
    """A directory gives its .eml files and, one level down, .eml files and Maildirs, by name."""
    (tmp_path / "b.eml").write_bytes(b"Subject: b\r\n\r\n")
    (tmp_path / "a.EML").write_bytes(b"Subject: a\r\n\r\n")
    (tmp_path / "notes.txt").write_bytes(b"not mail")
    (tmp_path / ".hidden.eml").write_bytes(b"Subject: hidden\r\n\r\n")
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "sub" / "c.eml").write_bytes(b"Subject: c\r\n\r\n")
    (tmp_path / "sub" / "deeper" / "d.eml").write_bytes(b"Subject: d\r\n\r\n")
    for part in ("new", "cur"):
        (tmp_path / "box" / part).mkdir(parents=True)
    (tmp_path / "box" / "new" / "1700000000.M1P1.host").write_bytes(b"Subject: m\r\n\r\n")
    sources = [item.source for item in read_mail([tmp_path])]
    assert sources == [
        str(tmp_path / "a.EML"),
        str(tmp_path / "b.eml"),
        str(tmp_path / "box" / "new" / "1700000000.M1P1.host"),
        str(tmp_path / "sub" / "c.eml"),
    ]


def test_read_mail_takes_paths_in_the_order_given() -> None:
    """Several paths are read one after another in argument order."""
    paths = [SAMPLES / "no_calendar.eml", SAMPLES / "replies.mbox", SAMPLES / "forwarded.eml"]
    mbox = paths[1]
    assert [item.source for item in read_mail(paths)] == [
        str(paths[0]),
        f"{mbox}#0",
        f"{mbox}#1",
        f"{mbox}#2",
        str(paths[2]),
    ]


def test_read_mail_missing_path_raises_input_error_naming_it(tmp_path: Path) -> None:
    """A path that does not exist fails at once, naming the path in field 'path'."""
    missing = tmp_path / "nope.mbox"
    with pytest.raises(InputError, match=re.escape(str(missing))) as info:
        read_mail([SAMPLES / "outlook_accepted.eml", missing])
    assert info.value.field == "path"


def test_read_mail_unreadable_message_raises_input_error(tmp_path: Path) -> None:
    """A message that cannot be read becomes an InputError naming the file."""
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    broken = maildir / "new" / "1700000000.M1P1.host"
    broken.mkdir()  # a directory where a message file should be
    with pytest.raises(InputError, match=re.escape(str(broken))) as info:
        list(read_mail([maildir]))
    assert info.value.field == "path"
