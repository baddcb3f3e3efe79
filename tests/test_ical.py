"""Tests for sender.compose.ical: every invite is parsed back with icalendar and read as text."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import vobject
from hypothesis import given, settings
from hypothesis import strategies as st
from icalendar import Calendar, Component

from sender.compose.event import CalendarEvent, CalendarMethod, PartStat, RsvpAnswer
from sender.compose.ical import build_invite, calendar_method, parse_replies
from sender.errors import AddressError, InputError
from tests.helpers import ISSUE_ZONES

ORGANIZER = "invitation@calendar.example.com"
DTSTAMP = datetime(2026, 11, 22, 9, 30, 15, tzinfo=UTC)
LINK = "https://learning.example.com/l/eyJwIjoiYW5uYSJ9.Z3h0"
OSLO = ZoneInfo("Europe/Oslo")


def event(**kwargs: Any) -> CalendarEvent:
    options: dict[str, Any] = {
        "course_id": "py101",
        "summary": "Python course: first session",
        "start": datetime(2027, 3, 27, 10, 0),
        "end": datetime(2027, 3, 29, 10, 0),
        "timezone": "Europe/Oslo",
        "organizer_email": ORGANIZER,
        "organizer_name": "Learning Platform",
        "description": "Bring a laptop.\nCoffee is served.",
        "location": "Room 1, Main building",
        "event_id": "intro",
    }
    options.update(kwargs)
    return CalendarEvent(**options)


def invite(ev: CalendarEvent | None = None, **kwargs: Any) -> bytes:
    options: dict[str, Any] = {
        "method": CalendarMethod.REQUEST,
        "attendee_email": "anna@example.org",
        "attendee_name": "Anna Svensson",
        "sequence": 0,
        "dtstamp": DTSTAMP,
        "link": LINK,
    }
    options.update(kwargs)
    return build_invite(ev if ev is not None else event(), **options)


def parse(data: bytes) -> Calendar:
    """Parse with icalendar, after checking the wire form every invite must have."""
    assert data.endswith(b"\r\n")
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert b"\r" not in data.replace(b"\r\n", b"")
    for line in data.split(b"\r\n"):
        assert len(line) <= 75, line
        line.decode()  # folding never splits a UTF-8 character
    cal = Calendar.from_ical(data)
    assert cal.name == "VCALENDAR"
    read_by_vobject(data, cal)
    return cal


def read_by_vobject(data: bytes, cal: Calendar) -> None:
    """A second, independent reader: vobject gets the same event, its times from the VTIMEZONE.

    icalendar resolves a TZID with zoneinfo; vobject builds the zone from the file's own
    VTIMEZONE (dateutil's tzical), keeping the first block it sees for each TZID.
    """
    (vevent,) = cal.walk("VEVENT")
    other = vobject.readOne(data.decode())
    assert other.vevent.uid.value == str(vevent["UID"])
    assert other.method.value == str(cal["METHOD"])
    for name in ("dtstart", "dtend"):
        theirs = getattr(other.vevent, name).value
        ours = vevent[name.upper()].dt
        assert theirs.astimezone(UTC) == ours.astimezone(UTC), name


def unfolded(data: bytes) -> list[str]:
    """The content lines, unfolded as RFC 5545 section 3.1 says."""
    return data.replace(b"\r\n ", b"").decode().split("\r\n")


def line(data: bytes, name: str) -> str:
    """The one unfolded content line of the VEVENT whose name is ``name``."""
    lines = unfolded(data)
    vevent = lines[lines.index("BEGIN:VEVENT") : lines.index("END:VEVENT")]
    found = [ln for ln in vevent if re.match(rf"{name}[;:]", ln)]
    assert len(found) == 1, found
    return found[0]


def only_vevent(cal: Calendar) -> Component:
    vevents = cal.walk("VEVENT")
    assert len(vevents) == 1
    return vevents[0]


# -- the invitation --------------------------------------------------------------------


def test_request_has_every_required_property() -> None:
    """A REQUEST carries the calendar and event properties iTIP clients need."""
    data = invite()
    cal = parse(data)
    vevent = only_vevent(cal)
    ev = event()

    assert str(cal["PRODID"]) == "-//sender//sender//EN"
    assert str(cal["VERSION"]) == "2.0"
    assert str(cal["CALSCALE"]) == "GREGORIAN"
    assert str(cal["METHOD"]) == "REQUEST"
    assert str(vevent["UID"]) == ev.event_uid
    assert vevent["DTSTAMP"].dt == DTSTAMP
    assert int(vevent["SEQUENCE"]) == 0
    assert vevent["DTSTART"].params["TZID"] == "Europe/Oslo"
    assert vevent["DTEND"].params["TZID"] == "Europe/Oslo"
    assert str(vevent["SUMMARY"]) == "Python course: first session"
    assert str(vevent["DESCRIPTION"]) == f"Bring a laptop.\nCoffee is served.\n\n{LINK}"
    assert str(vevent["LOCATION"]) == "Room 1, Main building"
    assert str(vevent["STATUS"]) == "CONFIRMED"
    organizer = vevent["ORGANIZER"]
    assert str(organizer) == f"mailto:{ORGANIZER}"
    assert organizer.params["CN"] == "Learning Platform"
    attendee = vevent["ATTENDEE"]
    assert str(attendee) == "mailto:anna@example.org"
    assert dict(attendee.params) == {
        "CN": "Anna Svensson",
        "ROLE": "REQ-PARTICIPANT",
        "PARTSTAT": "NEEDS-ACTION",
        "RSVP": "TRUE",
    }

    assert unfolded(data)[0] == "BEGIN:VCALENDAR"
    assert "METHOD:REQUEST" in unfolded(data)
    assert line(data, "DTSTART") == "DTSTART;TZID=Europe/Oslo:20270327T100000"
    assert line(data, "DTEND") == "DTEND;TZID=Europe/Oslo:20270329T100000"
    assert line(data, "DTSTAMP") == "DTSTAMP:20261122T093015Z"
    assert line(data, "ORGANIZER") == (f'ORGANIZER;CN="Learning Platform":mailto:{ORGANIZER}')
    attendee_line = line(data, "ATTENDEE")
    for param in ("ROLE=REQ-PARTICIPANT", "PARTSTAT=NEEDS-ACTION", "RSVP=TRUE"):
        assert f";{param}" in attendee_line
    assert attendee_line.endswith(":mailto:anna@example.org")
    assert line(data, "LOCATION") == r"LOCATION:Room 1\, Main building"
    assert LINK in line(data, "DESCRIPTION")


def test_vtimezone_tzid_matches_dtstart() -> None:
    """The one VTIMEZONE is the zone DTSTART and DTEND name, and comes before the VEVENT."""
    data = invite()
    cal = parse(data)
    assert [tz.tz_name for tz in cal.timezones] == ["Europe/Oslo"]
    assert only_vevent(cal)["DTSTART"].params["TZID"] == cal.timezones[0].tz_name
    lines = unfolded(data)
    assert lines.index("BEGIN:VTIMEZONE") < lines.index("BEGIN:VEVENT")
    assert "TZID:Europe/Oslo" in lines


def test_event_across_dst_change_resolves_through_its_own_vtimezone() -> None:
    """Start and end on either side of Oslo's spring change get +01:00 and +02:00 from the file."""
    ev = event(start=datetime(2027, 3, 27, 10), end=datetime(2027, 3, 29, 10))
    cal = parse(invite(ev))
    tz = cal.timezones[0].to_tz(lookup_tzid=False)  # built from the VTIMEZONE, not zoneinfo
    assert not isinstance(tz, ZoneInfo)
    vevent = only_vevent(cal)
    start = vevent["DTSTART"].dt.replace(tzinfo=tz)
    end = vevent["DTEND"].dt.replace(tzinfo=tz)

    assert start.utcoffset() == timedelta(hours=1)
    assert end.utcoffset() == timedelta(hours=2)
    assert start.astimezone(UTC) == datetime(2027, 3, 27, 9, tzinfo=UTC) == ev.start_utc()
    assert end.astimezone(UTC) == datetime(2027, 3, 29, 8, tzinfo=UTC) == ev.end_utc()
    assert vevent["DTSTART"].dt.astimezone(UTC) == ev.start_utc()  # and through zoneinfo
    assert vevent["DTEND"].dt.astimezone(UTC) == ev.end_utc()


def test_vtimezone_onset_is_local_time_before_the_change() -> None:
    """Oslo's block: one DAYLIGHT, one STANDARD, onsets at 02:00 and 03:00 local, from 2019 on."""
    data = invite()
    lines = unfolded(data)
    zone = "\r\n".join(lines[lines.index("BEGIN:VTIMEZONE") : lines.index("END:VTIMEZONE") + 1])
    assert zone == (
        "BEGIN:VTIMEZONE\r\nTZID:Europe/Oslo\r\n"
        "BEGIN:DAYLIGHT\r\nDTSTART:20190331T020000\r\nRRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=3\r\n"
        "TZNAME:CEST\r\nTZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\nEND:DAYLIGHT\r\n"
        "BEGIN:STANDARD\r\nDTSTART:20191027T030000\r\nRRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=10\r\n"
        "TZNAME:CET\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nEND:STANDARD\r\n"
        "END:VTIMEZONE"
    )


# Zones with yearly rules, odd offsets, rules tzdata changed, and none at all.
ZONES = [
    "Europe/Oslo",
    "Europe/Dublin",  # tzdata calls winter the daylight-saving time
    "America/New_York",
    "America/Santiago",  # southern, and irregular in 2022
    "Australia/Lord_Howe",  # a 30-minute change
    "Pacific/Chatham",  # +12:45
    "Antarctica/Troll",  # a 2-hour change
    "Asia/Jerusalem",  # the Friday before the last Sunday
    "America/Nuuk",  # moved from -03 to -02 in 2023
    "Africa/Casablanca",  # changes around Ramadan
    "Asia/Tehran",  # fixed dates, abolished in 2022
    "America/Whitehorse",  # abolished in 2020
    "Asia/Kolkata",
]


def offset_in(transitions: tuple[list[datetime], list[Any]], moment: datetime) -> timedelta:
    """The UTC offset at ``moment``, from icalendar's reading of a VTIMEZONE's onsets."""
    times, infos = transitions
    naive = moment.astimezone(UTC).replace(tzinfo=None)
    before = [info for when, info in zip(times, infos, strict=True) if when <= naive]
    assert before, f"{moment} is before the first observance"
    offset: timedelta = before[-1][0]
    return offset


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize(
    ("start", "end"),
    [
        (datetime(2022, 3, 20, 12), datetime(2022, 4, 10, 12)),
        (datetime(2023, 3, 20, 12), datetime(2023, 11, 10, 12)),
        (datetime(2027, 9, 20, 9), datetime(2027, 11, 10, 17)),
    ],
)
def test_vtimezone_agrees_with_zoneinfo(zone: str, start: datetime, end: datetime) -> None:
    """The file's VTIMEZONE gives zoneinfo's offsets hourly and either side of each change."""
    ev = event(timezone=zone, start=start, end=end)
    cal = parse(invite(ev))
    (vtimezone,) = cal.timezones
    zi = ZoneInfo(zone)
    first, last = ev.start_utc(), ev.end_utc()
    hours = int((last - first).total_seconds()) // 3600
    moments = [first + timedelta(hours=h) for h in range(hours + 1)] + [last]
    for earlier, later in itertools.pairwise(list(moments)):
        if earlier.astimezone(zi).utcoffset() == later.astimezone(zi).utcoffset():
            continue
        while later - earlier > timedelta(seconds=1):  # find the change to the second
            middle = earlier + (later - earlier) / 2
            if middle.astimezone(zi).utcoffset() == earlier.astimezone(zi).utcoffset():
                earlier = middle
            else:
                later = middle
        moments += [earlier, later]
    transitions = vtimezone.get_transitions()
    for moment in moments:
        assert offset_in(transitions, moment) == moment.astimezone(zi).utcoffset(), moment
    # A client reads DTSTART and DTEND as wall-clock times in that VTIMEZONE.
    tz = vtimezone.to_tz(lookup_tzid=False)
    vevent = only_vevent(cal)
    assert vevent["DTSTART"].dt.replace(tzinfo=tz).astimezone(UTC) == first
    assert vevent["DTEND"].dt.replace(tzinfo=tz).astimezone(UTC) == last


def vtimezone_block(data: bytes) -> bytes:
    """The VTIMEZONE's bytes as written, folded lines and all."""
    begin = data.index(b"BEGIN:VTIMEZONE\r\n")
    end = data.index(b"END:VTIMEZONE\r\n") + len(b"END:VTIMEZONE\r\n")
    assert data.count(b"BEGIN:VTIMEZONE") == 1
    return data[begin:end]


# Starts across the window: its first and last year, Ramadan 2027 (Morocco at +00),
# Europe's spring-forward day, northern summer, and New York's fall-back day.
STARTS = [
    datetime(2020, 1, 2, 9),
    datetime(2027, 2, 10, 10),
    datetime(2027, 3, 28, 12),
    datetime(2027, 7, 1, 18, 45),
    datetime(2031, 11, 2, 8),
    datetime(2049, 12, 30, 9),
]


@pytest.mark.parametrize("zone", ISSUE_ZONES)
def test_vtimezone_is_byte_identical_in_every_invitation_for_the_zone(zone: str) -> None:
    """Invitations for events years apart, to other people, carry the very same VTIMEZONE bytes."""
    blocks = set()
    for number, start in enumerate(STARTS):
        ev = event(
            timezone=zone,
            start=start,
            end=start + timedelta(hours=2),
            summary=f"Session {number}",
            event_id=f"s{number}",
        )
        data = invite(ev, attendee_email=f"p{number}@example.org", sequence=number)
        parse(data)
        blocks.add(vtimezone_block(data))
    (block,) = blocks
    assert block.startswith(f"BEGIN:VTIMEZONE\r\nTZID:{zone}\r\n".encode())
    # The same in a CANCEL.
    cancel = invite(event(timezone=zone), method=CalendarMethod.CANCEL, sequence=9)
    assert vtimezone_block(cancel) == block


def test_vtimezone_is_the_same_in_another_process() -> None:
    """A worker process writes the same blocks: nothing depends on what the process did before."""
    script = (
        "import sys\n"
        "from sender.compose.ical import _vtimezone\n"
        "for zone in sys.argv[1:]:\n"
        "    sys.stdout.buffer.write(_vtimezone(zone, zone).to_ical())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, *reversed(ISSUE_ZONES)],
        capture_output=True,
        timeout=120,
        check=True,
    )
    here = b"".join(vtimezone_block(invite(event(timezone=zone))) for zone in reversed(ISSUE_ZONES))
    assert result.stdout == here


@pytest.mark.parametrize(
    ("zone", "observances"),
    [
        ("Asia/Tokyo", 1),  # no change at all: one STANDARD
        ("America/Sao_Paulo", 1),  # DST abolished in 2019, before the window
        ("America/New_York", 2),  # one yearly rule: one DAYLIGHT and one STANDARD
        ("Europe/Oslo", 2),
        ("Australia/Lord_Howe", 2),  # a 30-minute change, southern: the rule from 2019
    ],
)
def test_zones_with_one_rule_get_one_observance_per_kind(zone: str, observances: int) -> None:
    """A zone that follows one yearly rule is one STANDARD and one DAYLIGHT, no dated onsets."""
    block = vtimezone_block(invite(event(timezone=zone))).decode()
    assert block.count("BEGIN:STANDARD") + block.count("BEGIN:DAYLIGHT") == observances
    assert "RDATE" not in block


def test_a_zone_whose_rules_change_within_the_window_lists_the_old_changes() -> None:
    """Nuuk (-03 to -02 in 2023, DST again from 2024): dated onsets, then the rule from 2024."""
    block = unfolded(vtimezone_block(invite(event(timezone="America/Nuuk"))))
    assert "RDATE:20211030T230000" in block  # an autumn change under the old rule
    assert "DTSTART:20230325T220000" in block  # the move to -02
    rules = [ln for ln in block if ln.startswith("RRULE:")]
    assert len(rules) == 2
    assert "DTSTART:20240330T230000" in block  # the current rule's first onset


def test_morocco_lists_every_ramadan_change_to_the_windows_end() -> None:
    """Casablanca has no yearly rule: each change to +00 and back, 2020 to 2049, is an onset."""
    zi = ZoneInfo("Africa/Casablanca")
    block = unfolded(vtimezone_block(invite(event(timezone="Africa/Casablanca"))))
    assert not [ln for ln in block if ln.startswith("RRULE:")]
    onsets = [ln.split(":")[1] for ln in block if ln.startswith(("RDATE:", "DTSTART:"))]
    years = {int(onset[:4]) for onset in onsets}
    assert years == set(range(2020, 2050))
    # Ramadan 2027 (about 7 February to 8 March): +00 inside, +01 either side.
    assert datetime(2027, 2, 20, 12, tzinfo=zi).utcoffset() == timedelta(0)
    cal = parse(invite(event(timezone="Africa/Casablanca")))
    transitions = cal.timezones[0].get_transitions()
    for day, hours in ((datetime(2027, 1, 20, 12), 1), (datetime(2027, 2, 20, 12), 0)):
        moment = day.replace(tzinfo=zi)
        assert offset_in(transitions, moment) == timedelta(hours=hours) == moment.utcoffset()


@pytest.mark.parametrize(
    ("start", "field"),
    [
        (datetime(2019, 12, 31, 10), "start"),
        (datetime(2050, 1, 2, 10), "start"),
        (datetime(2049, 12, 31, 23, 30), "end"),  # ends in 2050
    ],
)
def test_events_outside_the_covered_years_are_refused(start: datetime, field: str) -> None:
    """Before 2020 or from 2050 on the zone's block would not cover the event: one clear error."""
    with pytest.raises(InputError) as caught:
        event(start=start, end=start + timedelta(hours=2))
    assert caught.value.field == field
    assert "2020 to 2049" in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("zone", ZONES)
def test_vtimezone_agrees_with_zoneinfo_across_the_window(zone: str) -> None:
    """The block gives zoneinfo's offsets at each change, and wall times mean the same instants.

    icalendar expands rules only to 2038, so its reading is checked a second before and
    at each change to then; vobject (dateutil) reads noon on the 1st and 15th of every
    month of 2020-2049 as the instant zoneinfo gives.
    """
    zi = ZoneInfo(zone)
    data = invite(event(timezone=zone))
    (vtimezone,) = parse(data).timezones
    transitions = vtimezone.get_transitions()
    moment, end = datetime(2020, 1, 1, tzinfo=UTC), datetime(2038, 1, 1, tzinfo=UTC)
    checked = [moment]
    while moment < end:
        ahead = moment + timedelta(days=1)
        if ahead.astimezone(zi).utcoffset() != moment.astimezone(zi).utcoffset():
            low, high = moment, ahead
            while high - low > timedelta(seconds=1):
                middle = low + (high - low) // 2
                same = middle.astimezone(zi).utcoffset() == low.astimezone(zi).utcoffset()
                low, high = (middle, high) if same else (low, middle)
            checked += [low.replace(microsecond=0), high.replace(microsecond=0)]
        moment = ahead
    for instant in checked:
        assert offset_in(transitions, instant) == instant.astimezone(zi).utcoffset(), instant
    theirs = vobject.readOne(data.decode()).vtimezone.gettzinfo()  # not vobject's TZID cache
    for year, month, day in itertools.product(range(2020, 2050), range(1, 13), (1, 15)):
        wall = datetime(year, month, day, 12)
        assert wall.replace(tzinfo=theirs).astimezone(UTC) == wall.replace(tzinfo=zi).astimezone(
            UTC
        ), wall


def test_utc_event_has_no_vtimezone() -> None:
    """An event in UTC is written with the Z suffix, which needs no VTIMEZONE."""
    data = invite(event(timezone="UTC"))
    cal = parse(data)
    assert cal.timezones == []
    assert line(data, "DTSTART") == "DTSTART:20270327T100000Z"
    assert only_vevent(cal)["DTEND"].dt == datetime(2027, 3, 29, 10, tzinfo=UTC)


def test_uid_is_stable_across_time_place_and_title_changes() -> None:
    """An updated event keeps its UID, so clients update instead of adding a second event."""
    before = event()
    after = replace(
        before,
        start=datetime(2027, 4, 3, 12),
        end=datetime(2027, 4, 3, 14),
        timezone="Europe/Stockholm",
        location="Room 2",
        summary="Python course: moved",
        description="New room.",
        organizer_name="Another name",
    )
    assert after.event_uid == before.event_uid
    assert re.fullmatch(r"[0-9a-f]{32}@calendar\.example\.com", before.event_uid)
    uids = {str(only_vevent(parse(invite(ev)))["UID"]) for ev in (before, after)}
    assert uids == {before.event_uid}


def test_uid_differs_between_courses_and_event_ids() -> None:
    """Course id and event id each name a different event."""
    uids = {
        event().event_uid,
        event(course_id="py102").event_uid,
        event(event_id="lab").event_uid,
        event(event_id="").event_uid,
        event(course_id="py101intro", event_id="").event_uid,
    }
    assert len(uids) == 5


def test_explicit_uid_wins() -> None:
    """A given uid is used as is, in the property and the file."""
    ev = event(uid="lms-42@lms.example.edu")
    assert ev.event_uid == "lms-42@lms.example.edu"
    assert line(invite(ev), "UID") == "UID:lms-42@lms.example.edu"


def test_cancel_keeps_uid_and_attendee_with_higher_sequence() -> None:
    """A CANCEL names the same event and attendee, says CANCELLED and carries the new sequence."""
    request = parse(invite(sequence=1))
    data = invite(method=CalendarMethod.CANCEL, sequence=2)
    cancel = parse(data)
    assert str(cancel["METHOD"]) == "CANCEL"
    old, new = only_vevent(request), only_vevent(cancel)
    assert str(new["UID"]) == str(old["UID"])
    assert int(new["SEQUENCE"]) == 2
    assert str(new["STATUS"]) == "CANCELLED"
    assert str(new["ATTENDEE"]) == str(old["ATTENDEE"])
    assert dict(new["ATTENDEE"].params) == dict(old["ATTENDEE"].params)
    assert "METHOD:CANCEL" in unfolded(data)
    assert "STATUS:CANCELLED" in unfolded(data)
    assert "SEQUENCE:2" in unfolded(data)


def test_long_lines_are_folded_at_75_octets() -> None:
    """Long Japanese text and a long link fold within 75 octets and unfold exactly."""
    summary = "「Pythonコースへのご招待」来週の月曜日から始まります。" * 4
    description = "山田さん、\nPythonコースへご招待します。" * 6
    link = "https://learning.example.com/l/" + "a1B2c3D4" * 30
    data = invite(event(summary=summary, description=description), link=link)
    vevent = only_vevent(parse(data))  # parse() checks CRLF and the 75-octet limit
    assert str(vevent["SUMMARY"]) == summary
    assert str(vevent["DESCRIPTION"]) == description + "\n\n" + link
    folded = data.split(b"\r\n")
    assert any(ln.startswith(b" ") for ln in folded)
    assert max(len(ln) for ln in folded) > 70


def test_link_ends_the_description_on_its_own_line() -> None:
    """The link follows the description after a blank line, or stands alone."""
    with_text = only_vevent(parse(invite(event(description="Welcome!\n"))))
    assert str(with_text["DESCRIPTION"]) == f"Welcome!\n\n{LINK}"
    alone = only_vevent(parse(invite(event(description=""))))
    assert str(alone["DESCRIPTION"]) == LINK
    none = only_vevent(parse(invite(event(description="", location=""), link=None)))
    assert "DESCRIPTION" not in none
    assert "LOCATION" not in none


def test_names_with_commas_and_quotes_are_quoted() -> None:
    """CN values with commas, colons, quotes and non-ASCII round-trip through parameter quoting."""
    ev = event(organizer_name='Kurs, "Python": høst')
    data = invite(ev, attendee_name="Svensson, Åsa")
    vevent = only_vevent(parse(data))
    assert vevent["ORGANIZER"].params["CN"] == 'Kurs, "Python": høst'
    assert vevent["ATTENDEE"].params["CN"] == "Svensson, Åsa"
    assert line(data, "ORGANIZER").startswith("ORGANIZER;CN=\"Kurs, ^'Python^': høst\":")
    assert line(data, "ATTENDEE").startswith('ATTENDEE;CN="Svensson, Åsa";')


def test_backslash_in_a_name_is_quoted() -> None:
    """A CN with a backslash is quoted, so readers that take it for an escape keep PARTSTAT."""
    data = invite(event(organizer_name="Ann\\"), attendee_name="C:\\")
    assert line(data, "ORGANIZER") == f'ORGANIZER;CN="Ann\\":mailto:{ORGANIZER}'
    assert line(data, "ATTENDEE").startswith('ATTENDEE;CN="C:\\";PARTSTAT=NEEDS-ACTION;')
    attendee = only_vevent(parse(data))["ATTENDEE"]
    assert attendee.params["CN"] == "C:\\"
    assert attendee.params["PARTSTAT"] == "NEEDS-ACTION"
    assert attendee.params["RSVP"] == "TRUE"


def test_text_keeps_a_literal_backslash_n() -> None:
    """A backslash before N stays text; it is not turned into a line break."""
    ev = event(summary=r"Save to C:\Notes", location=r"\\server\N", description=r"a\nb\Nc")
    vevent = only_vevent(parse(invite(ev, link=None)))
    assert str(vevent["SUMMARY"]) == r"Save to C:\Notes"
    assert str(vevent["LOCATION"]) == r"\\server\N"
    assert str(vevent["DESCRIPTION"]) == r"a\nb\Nc"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"method": CalendarMethod.REPLY}, "REPLY"),
        ({"method": "PUBLISH"}, "PUBLISH"),
        ({"sequence": -1}, "sequence"),
        ({"dtstamp": datetime(2026, 11, 22, 9, 30)}, "dtstamp"),
    ],
)
def test_caller_mistakes_raise_value_error(kwargs: dict[str, Any], error: str) -> None:
    """A REPLY, an unknown method, a negative sequence or a naive dtstamp is a ValueError."""
    with pytest.raises(ValueError, match=error):
        invite(**kwargs)


# -- the event record ------------------------------------------------------------------


# (what builds the file, its arguments, the field the refusal names): attendee address, name
# and link that would break the invitation, and each unusable value of the event record.
UNUSABLE = [
    (invite, {"attendee_email": "anna@example.org\r\nATTENDEE:mailto:x@y.z"}, "attendee_email"),
    (invite, {"attendee_email": "not an address"}, "attendee_email"),
    (invite, {"attendee_name": "Anna\r\nX-INJECTED:1"}, "attendee_name"),
    (invite, {"link": "https://x.example/a b"}, "link"),
    (invite, {"link": ""}, "link"),
    (event, {"summary": "Python\r\nATTENDEE:mailto:x@y.z"}, "summary"),
    (event, {"summary": "  "}, "summary"),
    (event, {"location": "Room\n1"}, "location"),
    (event, {"organizer_name": "Kurs\x00"}, "organizer_name"),
    (event, {"organizer_email": "invitation@calendar.example.com\r\n"}, "organizer_email"),
    (event, {"organizer_email": "invitation"}, "organizer_email"),
    (event, {"description": "bell\x07"}, "description"),
    (event, {"course_id": ""}, "course_id"),
    (event, {"uid": ""}, "uid"),
    (event, {"timezone": "Europe/Atlantis"}, "timezone"),
    (event, {"timezone": "../etc/passwd"}, "timezone"),
    (event, {"timezone": "localtime"}, "timezone"),
    (event, {"start": datetime(2027, 3, 27, 10, tzinfo=UTC)}, "start"),
    (event, {"start": datetime(2027, 3, 27, 10, 0, 0, 500)}, "start"),
    (event, {"start": datetime(2027, 3, 28, 2, 30)}, "start"),  # the clocks skip 02:00-03:00
    (event, {"end": datetime(2027, 3, 27, 10)}, "end"),
    (event, {"end": datetime(2027, 3, 27, 9)}, "end"),
]


@pytest.mark.parametrize(("build", "kwargs", "field"), UNUSABLE)
def test_unusable_data_raises_input_error_naming_the_field(
    build: Callable[..., object], kwargs: dict[str, Any], field: str
) -> None:
    """Each unusable value is refused (the event's at construction) and named, in one line."""
    with pytest.raises(InputError) as info:
        build(**kwargs)
    assert info.value.field == field
    assert "\n" not in str(info.value)


def test_bad_organizer_address_is_an_address_error() -> None:
    """An organizer that is not an address raises AddressError, an InputError."""
    with pytest.raises(AddressError):
        event(organizer_email="invitation at example.com")


def test_description_line_breaks_become_lf() -> None:
    """CRLF and lone CR in a description are stored as LF, the only break iCalendar has."""
    assert event(description="a\r\nb\rc\nd").description == "a\nb\nc\nd"


def test_repeated_local_time_with_fold_0_is_its_first_occurrence() -> None:
    """02:30 on Oslo's autumn change day happens twice; fold=0 starts at the first one."""
    ev = event(start=datetime(2027, 10, 31, 2, 30), end=datetime(2027, 10, 31, 4), fold=0)
    assert ev.start_utc() == datetime(2027, 10, 31, 0, 30, tzinfo=UTC)
    (vevent,) = parse(invite(ev)).walk("VEVENT")
    assert vevent["DTSTART"].dt == ev.start_utc()  # written as the UTC instant
    tz = parse(invite(ev)).timezones[0].to_tz(lookup_tzid=False)
    assert ev.end.replace(tzinfo=tz).astimezone(UTC) == ev.end_utc()


def test_start_and_end_in_utc() -> None:
    """start_utc and end_utc resolve wall-clock times through zoneinfo."""
    ev = event(start=datetime(2027, 7, 1, 10), end=datetime(2027, 7, 1, 12))
    assert ev.start_utc() == datetime(2027, 7, 1, 8, tzinfo=UTC)
    assert ev.end_utc() == datetime(2027, 7, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, ()),
        ({"start": datetime(2027, 3, 27, 11)}, ("time",)),
        ({"timezone": "Europe/Stockholm"}, ("time",)),
        ({"location": "Room 2"}, ("place",)),
        ({"summary": "New title"}, ("title",)),
        ({"description": "New text"}, ("description",)),
        ({"organizer_name": "Someone"}, ("organizer",)),
        ({"organizer_email": "other@calendar.example.com"}, ("organizer",)),
        (
            {"summary": "New", "end": datetime(2027, 3, 30, 10), "location": ""},
            ("time", "place", "title"),
        ),
        ({"uid": "x@y.z", "event_id": "other", "course_id": "py102"}, ()),
    ],
)
def test_fingerprint_changes_exactly_when_something_visible_changes(
    changes: dict[str, Any], expected: tuple[str, ...]
) -> None:
    """changes_from names what differs, in order; the fingerprint differs exactly then."""
    before = event()
    after = replace(before, **changes)
    assert after.changes_from(before) == expected
    assert (after.fingerprint() != before.fingerprint()) == bool(expected)
    assert re.fullmatch(r"[0-9a-f]{16}", before.fingerprint())


def test_organizer_address_case_is_not_a_change() -> None:
    """An organizer address differing only in case is the same organizer."""
    before = event()
    after = replace(before, organizer_email=ORGANIZER.upper())
    assert after.changes_from(before) == ()
    assert after.fingerprint() == before.fingerprint()


# -- event files -----------------------------------------------------------------------

EVENT_TOML = """\
course_id = "py101"
summary = "Python course: first session"
description = \"\"\"
Bring a laptop.
Coffee is served.\"\"\"
location = "Room 1, Main building"
start = 2027-03-27T10:00:00
end = "2027-03-29T10:00:00"
timezone = "Europe/Oslo"
organizer_name = "Learning Platform"
organizer_email = "invitation@calendar.example.com"
"""


def mapping(**changes: object) -> dict[str, object]:
    values = tomllib.loads(EVENT_TOML)
    for key, value in changes.items():
        if value is None:
            del values[key]
        else:
            values[key] = value
    return values


def test_from_mapping_reads_an_event_file() -> None:
    """A TOML event file (local datetime or string) becomes the event the code would build."""
    ev = CalendarEvent.from_mapping(mapping(), default_event_id="intro")
    assert ev == event()
    assert ev.event_uid == event().event_uid


def test_from_mapping_prefers_the_file_event_id_and_uid() -> None:
    """event_id in the file beats the default; uid is passed through."""
    ev = CalendarEvent.from_mapping(
        mapping(event_id="lab", uid="u@x.example"), default_event_id="f"
    )
    assert ev.event_id == "lab"
    assert ev.event_uid == "u@x.example"
    assert CalendarEvent.from_mapping(mapping(), default_event_id="f").event_id == "f"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"summary": None}, "summary"),
        ({"start": None}, "start"),
        ({"organizer_email": None}, "organizer_email"),
        ({"starts": "2027-03-27T10:00:00"}, "starts"),
        ({"start": "27.03.2027 10:00"}, "start"),
        ({"start": "2027-02-30T10:00:00"}, "start"),
        ({"start": "2027-03-27"}, "start"),
        ({"start": "2027-03-27T10:00:00+02:00"}, "start"),  # Oslo is at +01:00 then
        ({"start": tomllib.loads("d = 2027-03-27")["d"]}, "start"),
        ({"start": tomllib.loads("d = 2027-03-27T10:00:00Z")["d"]}, "start"),
        ({"start": 1800000000}, "start"),
        ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"end": "2027-03-26T10:00:00"}, "end"),
        ({"summary": 42}, "summary"),
        ({"uid": True}, "uid"),
    ],
)
def test_from_mapping_names_the_bad_key(changes: dict[str, object], field: str) -> None:
    """Missing, unknown and malformed keys raise InputError naming the key, on one line."""
    with pytest.raises(InputError) as info:
        CalendarEvent.from_mapping(mapping(**changes), default_event_id="intro")
    assert info.value.field == field
    assert str(info.value).startswith(f"field {field!r}: ")
    assert "\n" not in str(info.value)


# -- replies ---------------------------------------------------------------------------

UID = "6f1c0f3e8e1a4c0c9a2b7d5e4f3a2b1c@calendar.example.com"

OUTLOOK_REPLY = f"""\
BEGIN:VCALENDAR
METHOD:REPLY
PRODID:Microsoft Exchange Server 2010
VERSION:2.0
BEGIN:VTIMEZONE
TZID:W. Europe Standard Time
BEGIN:STANDARD
DTSTART:16010101T030000
TZOFFSETFROM:+0200
TZOFFSETTO:+0100
RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=10
END:STANDARD
BEGIN:DAYLIGHT
DTSTART:16010101T020000
TZOFFSETFROM:+0100
TZOFFSETTO:+0200
RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=3
END:DAYLIGHT
END:VTIMEZONE
BEGIN:VEVENT
ATTENDEE;PARTSTAT=ACCEPTED;CN=Bjørn Ødegård:MAILTO:Bjorn.Odegard@Example.NO
COMMENT;LANGUAGE=nb-NO:Jeg kommer\\, takk!
SUMMARY;LANGUAGE=nb-NO:Godtatt: Python-kurs
DTSTART;TZID="W. Europe Standard Time":20270327T100000
DTEND;TZID="W. Europe Standard Time":20270329T100000
UID:{UID}
CLASS:PUBLIC
PRIORITY:5
DTSTAMP:20261123T081500Z
TRANSP:OPAQUE
STATUS:CONFIRMED
SEQUENCE:2
LOCATION;LANGUAGE=nb-NO:Rom 1
X-MICROSOFT-CDO-APPT-SEQUENCE:2
X-MICROSOFT-CDO-OWNERAPPTID:2118658134
X-MICROSOFT-CDO-BUSYSTATUS:BUSY
X-MICROSOFT-CDO-INTENDEDSTATUS:BUSY
X-MICROSOFT-CDO-ALLDAYEVENT:FALSE
X-MICROSOFT-CDO-IMPORTANCE:1
X-MICROSOFT-CDO-INSTTYPE:0
X-MICROSOFT-DONOTFORWARDMEETING:FALSE
X-MICROSOFT-DISALLOW-COUNTER:FALSE
END:VEVENT
END:VCALENDAR
""".replace("\n", "\r\n")

GOOGLE_REPLY = f"""\
BEGIN:VCALENDAR
PRODID:-//Google Inc//Google Calendar 70.9054//EN
VERSION:2.0
CALSCALE:GREGORIAN
METHOD:REPLY
BEGIN:VEVENT
DTSTART:20270327T090000Z
DTEND:20270329T080000Z
DTSTAMP:20261123T101112Z
ORGANIZER;CN=Learning Platform:mailto:invitation@calendar.example.com
UID:{UID}
ATTENDEE;CUTYPE=INDIVIDUAL;ROLE=REQ-PARTICIPANT;PARTSTAT=DECLINED;CN=carl@gm
 ail.example;X-NUM-GUESTS=0:mailto:carl@gmail.example
CREATED:20261122T093016Z
DESCRIPTION:Bring a laptop.\\nCoffee is served.
LAST-MODIFIED:20261123T101112Z
LOCATION:Room 1\\, Main building
SEQUENCE:1
STATUS:CONFIRMED
SUMMARY:Python course: first session
TRANSP:OPAQUE
END:VEVENT
END:VCALENDAR
"""  # Google's mail is CRLF; LF-only is what a MIME decoder may leave

APPLE_REPLY = f"""\
\ufeffBEGIN:VCALENDAR
VERSION:2.0
PRODID:-//Apple Inc.//macOS 14.4//EN
METHOD:REPLY
CALSCALE:GREGORIAN
BEGIN:VTIMEZONE
TZID:Europe/Oslo
BEGIN:DAYLIGHT
TZOFFSETFROM:+0100
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU
DTSTART:19810329T020000
TZNAME:CEST
TZOFFSETTO:+0200
END:DAYLIGHT
BEGIN:STANDARD
TZOFFSETFROM:+0200
RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU
DTSTART:19961027T030000
TZNAME:CET
TZOFFSETTO:+0100
END:STANDARD
END:VTIMEZONE
BEGIN:VEVENT
ATTENDEE;CN="Åsa Öberg";CUTYPE=INDIVIDUAL;EMAIL="asa@example.se";PARTSTAT=T
 ENTATIVE:mailto:asa@example.se
DTEND;TZID=Europe/Oslo:20270329T100000
DTSTAMP:20261124T120000Z
DTSTART;TZID=Europe/Oslo:20270327T100000
ORGANIZER;CN="Learning Platform":mailto:invitation@calendar.example.com
REQUEST-STATUS:2.0;Success
SEQUENCE:0
SUMMARY:Python course: first session
UID:{UID}
X-APPLE-TRAVEL-ADVISORY-BEHAVIOR:AUTOMATIC
END:VEVENT
END:VCALENDAR
""".replace("\n", "\r\n").encode()

THUNDERBIRD_REPLY = f"""\
BEGIN:VCALENDAR
PRODID:-//Mozilla.org/NONSGML Mozilla Calendar V1.1//EN
VERSION:2.0
METHOD:REPLY
BEGIN:VTIMEZONE
TZID:/mozilla.org/20050126_1/Europe/Oslo
X-LIC-LOCATION:Europe/Oslo
BEGIN:DAYLIGHT
TZOFFSETFROM:+0100
TZOFFSETTO:+0200
TZNAME:CEST
DTSTART:19700329T020000
RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=3
END:DAYLIGHT
BEGIN:STANDARD
TZOFFSETFROM:+0200
TZOFFSETTO:+0100
TZNAME:CET
DTSTART:19701025T030000
RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=10
END:STANDARD
END:VTIMEZONE
BEGIN:VEVENT
CREATED:20261122T100000Z
LAST-MODIFIED:20261125T080000Z
DTSTAMP:20261125T080000Z
UID:{UID}
SUMMARY:Python course: first session
ORGANIZER;CN=Learning Platform:mailto:invitation@calendar.example.com
ATTENDEE;RSVP=TRUE;CN=Dag;PARTSTAT=ACCEPTED;ROLE=REQ-PARTICIPANT:mailto:dag
 @example.no
DTSTART;TZID=/mozilla.org/20050126_1/Europe/Oslo:20270327T100000
DTEND;TZID=/mozilla.org/20050126_1/Europe/Oslo:20270329T100000
SEQUENCE:3
X-MOZ-RECEIVED-SEQUENCE:3
X-MOZ-RECEIVED-DTSTAMP:20261122T093015Z
X-MOZ-GENERATION:1
END:VEVENT
END:VCALENDAR
""".replace("\n", "\r\n").encode()


def test_outlook_reply() -> None:
    """Outlook's MAILTO in capitals, X-MICROSOFT properties and COMMENT are read."""
    assert parse_replies(OUTLOOK_REPLY) == [
        RsvpAnswer(
            uid=UID,
            attendee="bjorn.odegard@example.no",
            partstat=PartStat.ACCEPTED,
            sequence=2,
            dtstamp=datetime(2026, 11, 23, 8, 15, tzinfo=UTC),
            comment="Jeg kommer, takk!",
        )
    ]


def test_google_reply_with_lf_line_endings() -> None:
    """Google Calendar's DECLINED is read from LF-only text with a folded ATTENDEE."""
    assert parse_replies(GOOGLE_REPLY) == [
        RsvpAnswer(
            UID,
            "carl@gmail.example",
            PartStat.DECLINED,
            1,
            datetime(2026, 11, 23, 10, 11, 12, tzinfo=UTC),
            "",
        )
    ]


def test_apple_reply_with_bom() -> None:
    """Apple Calendar's TENTATIVE is read after a UTF-8 BOM, with a non-ASCII CN."""
    (answer,) = parse_replies(APPLE_REPLY)
    assert (answer.attendee, answer.partstat, answer.sequence) == (
        "asa@example.se",
        PartStat.TENTATIVE,
        0,
    )


def test_thunderbird_reply_with_vendor_tzid() -> None:
    """Thunderbird's "/mozilla.org/..." TZID neither fails nor warns."""
    (answer,) = parse_replies(THUNDERBIRD_REPLY)
    assert (answer.uid, answer.attendee, answer.partstat, answer.sequence) == (
        UID,
        "dag@example.no",
        PartStat.ACCEPTED,
        3,
    )
    assert answer.dtstamp == datetime(2026, 11, 25, 8, tzinfo=UTC)


def reply(*vevents: str, method: str | None = "REPLY") -> str:
    head = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//test//EN"]
    if method is not None:
        head.append(f"METHOD:{method}")
    return "\r\n".join([*head, *vevents, "END:VCALENDAR", ""])


def vevent_text(*lines: str, uid: str = UID) -> str:
    return "\r\n".join(["BEGIN:VEVENT", f"UID:{uid}", *lines, "END:VEVENT"])


def test_reply_in_a_windows_code_page() -> None:
    """Bytes that are not UTF-8 are read as Windows-1252, as older Outlook writes them."""
    text = reply(
        vevent_text(
            "ATTENDEE;PARTSTAT=ACCEPTED;CN=Zoë Müller:MAILTO:zoe.mueller@example.de",
            "COMMENT:Gern – bis dann!",
        )
    )
    (answer,) = parse_replies(text.encode("cp1252"))
    assert (answer.attendee, answer.comment) == ("zoe.mueller@example.de", "Gern – bis dann!")


def test_vendor_tzid_without_vtimezone_does_not_warn() -> None:
    """A "/vendor/Zone" TZID with no VTIMEZONE, which icalendar guesses at, raises no warning."""
    data = reply(
        vevent_text(
            "ATTENDEE;PARTSTAT=ACCEPTED:mailto:a@b.example",
            "DTSTART;TZID=/example.org/20250101_1/Europe/Vienna:20270327T100000",
        )
    )
    assert parse_replies(data)[0].partstat is PartStat.ACCEPTED  # warnings are errors here


def test_missing_sequence_means_zero() -> None:
    """A reply without SEQUENCE or DTSTAMP answers sequence 0 at an unknown time."""
    (answer,) = parse_replies(reply(vevent_text("ATTENDEE;PARTSTAT=DECLINED:mailto:a@b.example")))
    assert (answer.sequence, answer.dtstamp, answer.partstat) == (0, None, PartStat.DECLINED)


def test_one_answer_per_vevent_and_attendee() -> None:
    """Several VEVENTs and ATTENDEEs give one answer each; unknown PARTSTAT is NEEDS-ACTION."""
    data = reply(
        vevent_text(
            "ATTENDEE;PARTSTAT=accepted:mailto:a@b.example",
            "ATTENDEE;PARTSTAT=X-MAYBE:mailto:c@d.example",
            "ATTENDEE;PARTSTAT=ACCEPTED:urn:uuid:00000000-0000-0000-0000-000000000000",
            "SEQUENCE:4",
        ),
        vevent_text("ATTENDEE:mailto:e@f.example", uid="other@x.example"),
    )
    answers = [(a.uid, a.attendee, a.partstat, a.sequence) for a in parse_replies(data)]
    assert answers == [
        (UID, "a@b.example", PartStat.ACCEPTED, 4),
        (UID, "c@d.example", PartStat.NEEDS_ACTION, 4),
        ("other@x.example", "e@f.example", PartStat.NEEDS_ACTION, 0),
    ]


def test_reply_to_our_own_invite() -> None:
    """An invite turned into an ACCEPTED REPLY, as a client does, answers our UID and sequence."""
    text = invite(sequence=3).decode()
    text = text.replace("METHOD:REQUEST", "METHOD:REPLY").replace("NEEDS-ACTION", "ACCEPTED")
    (answer,) = parse_replies(text)
    assert answer == RsvpAnswer(
        event().event_uid, "anna@example.org", PartStat.ACCEPTED, 3, DTSTAMP, ""
    )


def test_missing_method_uses_the_mime_method() -> None:
    """Without METHOD in the object, the MIME part's method=REPLY decides; alone it is refused."""
    data = reply(vevent_text("ATTENDEE;PARTSTAT=ACCEPTED:mailto:a@b.example"), method=None)
    assert parse_replies(data, assume_method="reply")[0].partstat is PartStat.ACCEPTED
    with pytest.raises(InputError, match="missing"):
        parse_replies(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (invite(), "REQUEST, not REPLY"),
        (reply(vevent_text("ATTENDEE:mailto:a@b.example"), method="CANCEL"), "CANCEL"),
        (b"hello world", "not an iCalendar object"),
        (b"", "no complete VCALENDAR"),
        (b"\xff\xfe\x00garbage", "not an iCalendar"),
        ("BEGIN:VCALENDAR\r\nMETHOD:REPLY\r\nBEGIN:VEVENT\r\n", "no complete VCALENDAR"),
        (vevent_text("ATTENDEE:mailto:a@b.example"), "no complete VCALENDAR"),
        (reply(), "no VEVENT"),
        (reply("BEGIN:VEVENT\r\nATTENDEE:mailto:a@b.example\r\nEND:VEVENT"), "no UID"),
        (reply(vevent_text("SEQUENCE:1")), "no mailto: ATTENDEE"),
    ],
)
def test_unusable_replies_raise_input_error(data: bytes | str, message: str) -> None:
    """A non-REPLY, garbage, or a REPLY nobody can be matched with is one clear InputError."""
    with pytest.raises(InputError, match=message) as info:
        parse_replies(data)
    assert info.value.field == "calendar"
    assert "\n" not in str(info.value)


def test_broken_values_are_tolerated() -> None:
    """A SEQUENCE or DTSTAMP that does not parse counts as absent."""
    data = reply(
        vevent_text("ATTENDEE;PARTSTAT=ACCEPTED:mailto:a@b.example", "SEQUENCE:two", "DTSTAMP:soon")
    )
    (answer,) = parse_replies(data)
    assert (answer.sequence, answer.dtstamp) == (0, None)


def test_calendar_method() -> None:
    """calendar_method reads METHOD upper-cased, and None when missing or unreadable."""
    assert calendar_method(OUTLOOK_REPLY) == "REPLY"
    assert calendar_method(invite(method=CalendarMethod.CANCEL, sequence=1)) == "CANCEL"
    assert calendar_method(reply(vevent_text(), method="reply")) == "REPLY"
    assert calendar_method(reply(vevent_text(), method=None)) is None
    assert calendar_method(b"\x00\x01") is None


# -- properties ------------------------------------------------------------------------

# icalendar's reader drops a U+FEFF that starts a value, taking it for a byte order mark.
_PRINTABLE = st.characters(
    codec="utf-8", exclude_categories=("Cc", "Cs"), exclude_characters="\ufeff"
)
_SPECIAL = st.sampled_from([*',;:"^\tN n\u00e9\u65e5\U0001f600', "\\", "\\N", "\\n", "\\,"])
LINE = st.lists(st.one_of(_SPECIAL, _PRINTABLE), max_size=60).map("".join)
TEXT = st.lists(
    st.one_of(_SPECIAL, _PRINTABLE, st.sampled_from(["\n", "\r\n", "\r"])), max_size=100
).map("".join)
# icalendar's parser reads backslash escapes in parameter values, which RFC 5545 has not.
NAME = (
    st.lists(st.one_of(_SPECIAL, _PRINTABLE), max_size=60)
    .map("".join)
    .filter(lambda s: "\\" not in s)
)


@settings(max_examples=150, deadline=None)
@given(summary=LINE.filter(str.strip), description=TEXT, location=LINE)
def test_text_round_trips_exactly(summary: str, description: str, location: str) -> None:
    """Any summary, description and location comes back from icalendar as given (LF breaks)."""
    ev = event(summary=summary, description=description, location=location)
    vevent = only_vevent(parse(invite(ev, link=None)))
    assert str(vevent["SUMMARY"]) == summary
    assert str(vevent.get("DESCRIPTION", "")) == description.replace("\r\n", "\n").replace(
        "\r", "\n"
    )
    assert str(vevent.get("LOCATION", "")) == location


@settings(max_examples=100, deadline=None)
@given(organizer=NAME, attendee=NAME)
def test_names_round_trip_exactly(organizer: str, attendee: str) -> None:
    """Any one-line name without a backslash comes back as the CN given."""
    vevent = only_vevent(parse(invite(event(organizer_name=organizer), attendee_name=attendee)))
    assert vevent["ORGANIZER"].params.get("CN", "") == organizer
    assert vevent["ATTENDEE"].params.get("CN", "") == attendee


_ICS_WORDS = st.sampled_from(
    [
        "BEGIN:VCALENDAR",
        "END:VCALENDAR",
        "BEGIN:VEVENT",
        "END:VEVENT",
        "BEGIN:VTIMEZONE",
        "METHOD:REPLY",
        "UID:x",
        "ATTENDEE;PARTSTAT=",
        "mailto:a@b",
        "SEQUENCE:",
        "DTSTAMP:",
        "TZID=",
        "\r\n",
        "\n",
        "\r\n ",
        ":",
        ";",
        "=",
        '"',
        "\\",
        "\x00",
        "\xff",
        "9",
        "Z",
        "T",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_ICS_WORDS, max_size=40).map("".join))
def test_parse_replies_never_raises_anything_but_input_error(text: str) -> None:
    """Hostile text yields answers or InputError, never another exception."""
    error: InputError | None = None
    try:
        answers = parse_replies(text.encode())
    except InputError as exc:
        error, answers = exc, []
    if error is not None:
        assert error.field == "calendar"
        assert "\n" not in str(error)
    assert all(isinstance(answer, RsvpAnswer) for answer in answers)
