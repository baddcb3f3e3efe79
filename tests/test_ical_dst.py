"""A wall time the clocks repeat (DST fall-back) is refused unless the caller says which one."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from icalendar import Calendar

from sender.cli import main
from sender.compose.event import CalendarEvent, CalendarMethod, event_json
from sender.compose.ical import build_invite
from sender.errors import InputError
from sender.invites import event_from_record
from sender.store import EventRecord
from tests.helpers import ISSUE_ZONES

ORGANIZER = "invitation@calendar.example.com"
DTSTAMP = datetime(2026, 10, 1, 9, 30, tzinfo=UTC)
REPEATED = datetime(2026, 10, 25, 2, 30)  # Oslo: 02:00-03:00 happens twice that night
FIRST = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST (+02:00)
SECOND = datetime(2026, 10, 25, 1, 30, tzinfo=UTC)  # 02:30 CET (+01:00)


def event(**kwargs: Any) -> CalendarEvent:
    options: dict[str, Any] = {
        "course_id": "py101",
        "summary": "Night session",
        "start": REPEATED,
        "end": datetime(2026, 10, 25, 4, 0),
        "timezone": "Europe/Oslo",
        "organizer_email": ORGANIZER,
        "event_id": "night",
    }
    options.update(kwargs)
    return CalendarEvent(**options)


def invite_bytes(ev: CalendarEvent) -> bytes:
    """The invitation an attendee gets for ``ev``, stamped at DTSTAMP."""
    return build_invite(
        ev,
        method=CalendarMethod.REQUEST,
        attendee_email="anna@example.org",
        attendee_name="Anna",
        sequence=0,
        dtstamp=DTSTAMP,
    )


def vevent_times(ev: CalendarEvent) -> tuple[datetime, datetime, str, str]:
    """DTSTART and DTEND as icalendar reads the built invite back, with their raw lines."""
    data = invite_bytes(ev)
    cal = Calendar.from_ical(data)
    (vevent,) = cal.walk("VEVENT")
    lines = data.decode().replace("\r\n ", "").split("\r\n")
    lines = lines[lines.index("BEGIN:VEVENT") :]
    start_line = next(line for line in lines if line.startswith("DTSTART"))
    end_line = next(line for line in lines if line.startswith("DTEND"))
    start, end = vevent["DTSTART"].dt, vevent["DTEND"].dt
    if start.tzinfo is not None and str(vevent["DTSTART"].params.get("TZID", "")):
        # icalendar maps a TZID to a zone; read it through the calendar's own VTIMEZONE
        tz = cal.walk("VTIMEZONE")[0].to_tz(lookup_tzid=False)
        start = start.replace(tzinfo=None).replace(tzinfo=tz)
    if end.tzinfo is not None and str(vevent["DTEND"].params.get("TZID", "")):
        tz = cal.walk("VTIMEZONE")[0].to_tz(lookup_tzid=False)
        end = end.replace(tzinfo=None).replace(tzinfo=tz)
    return start.astimezone(UTC), end.astimezone(UTC), start_line, end_line


def test_repeated_start_without_fold_is_refused_naming_both_instants() -> None:
    """02:30 on Oslo's fall-back night without fold: one line naming start and both UTC times."""
    with pytest.raises(InputError) as caught:
        event()
    message = str(caught.value)
    assert caught.value.field == "start"
    assert "\n" not in message
    assert "2026-10-25T00:30:00Z" in message
    assert "2026-10-25T01:30:00Z" in message
    assert "fold" in message


def test_repeated_end_without_fold_is_refused() -> None:
    """An end in the repeated hour is refused the same way, naming end."""
    with pytest.raises(InputError) as caught:
        event(start=datetime(2026, 10, 25, 1, 0), end=datetime(2026, 10, 25, 2, 15))
    assert caught.value.field == "end"
    assert "2026-10-25T00:15:00Z" in str(caught.value)
    assert "2026-10-25T01:15:00Z" in str(caught.value)


def test_a_gap_is_still_refused_whatever_the_fold() -> None:
    """A wall time the clocks skip stays refused, fold or not."""
    for fold in (None, 0, 1):
        with pytest.raises(InputError, match="skip"):
            event(start=datetime(2027, 3, 28, 2, 30), end=datetime(2027, 3, 28, 4), fold=fold)


@pytest.mark.parametrize(("fold", "instant"), [(0, FIRST), (1, SECOND)])
def test_fold_picks_the_occurrence_and_the_ics_is_unambiguous(fold: int, instant: datetime) -> None:
    """With fold the start is that instant, and icalendar reads the same instant back."""
    ev = event(fold=fold)
    assert ev.start_utc() == instant
    start, end, start_line, end_line = vevent_times(ev)
    assert start == instant
    assert start_line == f"DTSTART:{instant:%Y%m%dT%H%M%S}Z"  # no wall time left to guess
    assert end == ev.end_utc() == datetime(2026, 10, 25, 3, 0, tzinfo=UTC)
    assert end_line.startswith("DTEND;TZID=Europe/Oslo:")  # an unambiguous end keeps its zone


def test_times_outside_the_repeated_hour_are_written_as_before() -> None:
    """An ordinary event is unchanged: TZID times, and fold changes nothing about it."""
    plain = event(start=datetime(2026, 10, 24, 10), end=datetime(2026, 10, 24, 12))
    with_fold = event(start=datetime(2026, 10, 24, 10), end=datetime(2026, 10, 24, 12), fold=1)
    assert plain.fingerprint() == with_fold.fingerprint()
    _, _, start_line, _ = vevent_times(plain)
    assert start_line == "DTSTART;TZID=Europe/Oslo:20261024T100000"


def test_fold_is_part_of_the_time_when_it_matters() -> None:
    """Changing the occurrence of a repeated start is a change of time (an update is due)."""
    first, second = event(fold=0), event(fold=1)
    assert first.fingerprint() != second.fingerprint()
    assert second.changes_from(first) == ("time",)


@pytest.mark.parametrize("fold", [2, -1, True, "1"])
def test_fold_must_be_zero_or_one(fold: object) -> None:
    """fold is 0, 1 or None; anything else is an InputError naming fold."""
    with pytest.raises(InputError) as caught:
        event(fold=fold)
    assert caught.value.field == "fold"


def mapping(**values: object) -> dict[str, object]:
    base: dict[str, object] = {
        "course_id": "py101",
        "summary": "Night session",
        "start": "2026-10-25T02:30:00",
        "end": "2026-10-25T04:00:00",
        "timezone": "Europe/Oslo",
        "organizer_email": ORGANIZER,
    }
    base.update(values)
    return base


@pytest.mark.parametrize(
    ("start", "instant"),
    [
        ("2026-10-25T02:30:00+02:00", FIRST),
        ("2026-10-25T02:30:00+01:00", SECOND),
        ("2026-10-25T02:30+01:00", SECOND),
    ],
)
def test_an_explicit_utc_offset_says_which_occurrence(start: str, instant: datetime) -> None:
    """An event file's start with a UTC offset picks the occurrence with that offset."""
    ev = CalendarEvent.from_mapping(mapping(start=start), default_event_id="night")
    assert ev.start == REPEATED
    assert ev.start_utc() == instant


def test_toml_offset_datetimes_and_the_fold_key_work() -> None:
    """TOML's own offset datetime, and ``fold = 1``, both pick the second occurrence."""
    values = tomllib.loads('start = 2026-10-25T02:30:00+01:00\nend = "2026-10-25T04:00:00"\n')
    ev = CalendarEvent.from_mapping(mapping(**values), default_event_id="night")
    assert ev.start_utc() == SECOND
    keyed = CalendarEvent.from_mapping(mapping(fold=1), default_event_id="night")
    assert keyed.start_utc() == SECOND


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"start": "2026-10-25T02:30:00+05:00"}, "start"),  # not an Oslo offset at all
        ({"start": "2026-10-24T10:00:00+01:00"}, "start"),  # Oslo is +02:00 that day
        ({"start": "2026-10-25T02:30:00+01:00", "fold": 0}, "fold"),  # they disagree
        ({"fold": "second"}, "fold"),
    ],
)
def test_offsets_that_do_not_fit_the_zone_are_refused(
    values: dict[str, object], field: str
) -> None:
    """An offset the zone does not have then, or one contradicting fold, is named."""
    with pytest.raises(InputError) as caught:
        CalendarEvent.from_mapping(mapping(**values), default_event_id="night")
    assert caught.value.field == field
    assert "\n" not in str(caught.value)


def test_the_stored_event_keeps_its_fold() -> None:
    """The outbox's copy of the event rebuilds with the same occurrence."""
    ev = event(fold=1)
    record = EventRecord(
        uid="u@x",
        course_id="py101",
        sequence=0,
        fingerprint=ev.fingerprint(),
        event=event_json(ev),
        cancelled=False,
        changes=(),
        updated_at=0.0,
    )
    again = event_from_record(record)
    assert again.start_utc() == SECOND
    assert again.fingerprint() == ev.fingerprint()


def render(event_file: Path) -> tuple[int, str]:
    result = CliRunner().invoke(
        main,
        [
            "render",
            "invite",
            *("--event", str(event_file)),
            *("--to", "kari@example.com", "--name", "Kari", "--out", "invite.eml"),
        ],
        env={"SENDER_SECRET_KEYS": "dst-cli-key-0123456789abcdef0123"},
    )
    return result.exit_code, result.stderr


def test_cli_refuses_a_repeated_start_and_takes_an_offset(workdir: Path) -> None:
    """`sender render invite` refuses 02:30 on fall-back night; with +01:00 the .ics says 01:30Z."""
    text = (
        'course_id = "PY101"\nsummary = "Night"\norganizer_email = "' + ORGANIZER + '"\n'
        'timezone = "Europe/Oslo"\nend = "2026-10-25T04:00:00"\n'
    )
    event_file = workdir / "night.toml"
    event_file.write_text(text + 'start = "2026-10-25T02:30:00"\n', encoding="utf-8")
    code, stderr = render(event_file)
    assert code == 1
    (line,) = [line for line in stderr.splitlines() if line.strip()]
    assert "start" in line
    assert "2026-10-25T00:30:00Z" in line
    assert "2026-10-25T01:30:00Z" in line
    event_file.write_text(text + 'start = "2026-10-25T02:30:00+01:00"\n', encoding="utf-8")
    code, stderr = render(event_file)
    assert code == 0, stderr
    message = message_from_bytes((workdir / "invite.eml").read_bytes(), policy=policy.default)
    assert isinstance(message, EmailMessage)
    (part,) = [p for p in message.walk() if p.get_content_type() == "text/calendar"]
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    (vevent,) = Calendar.from_ical(payload).walk("VEVENT")
    assert vevent["DTSTART"].dt == SECOND


def test_an_event_stored_before_fold_existed_keeps_its_first_occurrence() -> None:
    """A stored event without a fold key meant the first occurrence, and rebuilds so."""
    stored = json.loads(event_json(event(fold=0)))
    del stored["fold"]
    record = EventRecord(
        uid="u@x",
        course_id="py101",
        sequence=0,
        fingerprint="",
        event=json.dumps(stored),
        cancelled=False,
        changes=(),
        updated_at=0.0,
    )
    assert event_from_record(record).start_utc() == FIRST


def fall_backs(zone: ZoneInfo, year: int) -> list[datetime]:
    """Wall times just inside each repeated hour of ``zone`` in ``year`` (naive)."""
    found = []
    moment = datetime(year, 1, 1, tzinfo=UTC)
    step = timedelta(minutes=15)
    while moment.year == year:
        before, after = moment.astimezone(zone), (moment + step).astimezone(zone)
        if after.utcoffset() < before.utcoffset():  # type: ignore[operator]
            found.append(after.replace(tzinfo=None, fold=0) + timedelta(minutes=5))
        moment += step
    return found


@pytest.mark.parametrize(
    "name",
    [
        "Europe/Oslo",
        "America/New_York",
        "Australia/Sydney",
        "Australia/Lord_Howe",
        "America/Santiago",
    ],
)
def test_every_zones_repeated_times_round_trip_through_icalendar(name: str) -> None:
    """In several zones (and hemispheres, and a 30-minute shift) each fold is read back exactly."""
    zone = ZoneInfo(name)
    (wall,) = fall_backs(zone, 2027)
    instants = set()
    for fold in (0, 1):
        ev = event(timezone=name, start=wall, end=wall + timedelta(hours=3), fold=fold)
        start, end, start_line, _ = vevent_times(ev)
        assert start == ev.start_utc() == wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        assert end == ev.end_utc()
        assert start_line.endswith("Z")
        instants.add(start)
    assert len(instants) == 2
    with pytest.raises(InputError, match="happens twice"):
        event(timezone=name, start=wall, end=wall + timedelta(hours=3))


# -- a second reader: vobject, in a process of its own --------------------------------

# vobject keeps the first VTIMEZONE it reads for a TZID for the rest of the process, and
# reads every later event of that TZID with it: the reader's script gets every file in
# one process, in order, as a client's calendar store would.
VOBJECT_READER = """
import json, sys
from datetime import timezone
import vobject
for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as handle:
        cal = vobject.readOne(handle.read())
    times = [getattr(cal.vevent, name).value for name in ("dtstart", "dtend")]
    print(json.dumps([path] + [t.astimezone(timezone.utc).isoformat() for t in times]))
"""


def read_with_vobject(paths: list[Path]) -> dict[str, tuple[datetime, datetime]]:
    """DTSTART and DTEND of each file as UTC instants, as one vobject process reads them."""
    result = subprocess.run(
        [sys.executable, "-c", VOBJECT_READER, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    read = {}
    for line in result.stdout.splitlines():
        path, start, end = json.loads(line)
        read[path] = (datetime.fromisoformat(start), datetime.fromisoformat(end))
    assert len(read) == len(paths), result.stderr
    return read


def offset_changes(zone: ZoneInfo, year: int) -> list[datetime]:
    """The UTC instants in ``year`` at which ``zone``'s offset changes (to the second)."""

    def offset(ts: int) -> timedelta | None:
        return datetime.fromtimestamp(ts, zone).utcoffset()

    found = []
    now = int(datetime(year, 1, 1, tzinfo=UTC).timestamp())
    end = int(datetime(year + 1, 1, 1, tzinfo=UTC).timestamp())
    while now < end:
        ahead = now + 86400
        if offset(ahead) != offset(now):
            low, high = now, ahead
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (middle, high) if offset(middle) == offset(low) else (low, middle)
            found.append(datetime.fromtimestamp(high, UTC))
        now = ahead
    return found


def edge_events(name: str, year: int) -> list[CalendarEvent]:
    """Events on each day ``name`` changes its clocks in ``year``, near the gap or overlap.

    An hour and a minute either side of the change (20-minute events, which may end in
    a repeated hour), the change day's noon, and each occurrence of a repeated wall
    time (fold 0 and 1).
    """
    zone = ZoneInfo(name)
    starts: list[tuple[datetime, int | None]] = []
    for change in offset_changes(zone, year):
        # fold says which side an end in a repeated hour is on: before, then after the change
        for fold, instant in enumerate(
            (change - timedelta(minutes=61), change + timedelta(minutes=61))
        ):
            starts.append((instant.astimezone(zone).replace(tzinfo=None), fold))
        starts.append((change.astimezone(zone).replace(tzinfo=None, hour=12, minute=0), None))
    for wall in fall_backs(zone, year):
        starts += [(wall, 0), (wall, 1)]
    if not starts:
        starts.append((datetime(year, 3, 29, 12), None))
    return [
        event(
            timezone=name,
            start=start,
            end=start + timedelta(minutes=20),
            fold=fold,
            event_id=f"edge{number}",
        )
        for number, (start, fold) in enumerate(starts)
    ]


def write_invite(directory: Path, number: int, ev: CalendarEvent) -> Path:
    data = invite_bytes(ev)
    path = directory / f"{number:03d}.ics"
    path.write_bytes(data)
    return path


def test_vobject_reads_dst_edge_events_as_zoneinfo_does(tmp_path: Path) -> None:
    """Around every 2027 and 2049 clock change in six zones, vobject reads zoneinfo's UTC instants.

    All invitations go through one vobject process, several per zone, so each zone's
    later events are read with the first VTIMEZONE vobject kept for it.
    """
    expected: dict[str, tuple[datetime, datetime]] = {}
    paths = []
    for name in ISSUE_ZONES:
        zone = ZoneInfo(name)
        for ev in edge_events(name, 2027) + edge_events(name, 2049):
            path = write_invite(tmp_path, len(paths), ev)
            paths.append(path)
            fold = ev.fold or 0
            expected[str(path)] = (
                ev.start.replace(tzinfo=zone, fold=fold).astimezone(UTC),
                ev.end.replace(tzinfo=zone, fold=fold).astimezone(UTC),
            )
    assert len(paths) > 60  # two changes a year in four zones, Morocco's two, and the folds
    assert read_with_vobject(paths) == expected


def test_vobject_misreads_an_event_after_a_different_block_for_its_zone(tmp_path: Path) -> None:
    """The failure stable blocks prevent: vobject reads a Ramadan event with an earlier block.

    A first file for Africa/Casablanca whose VTIMEZONE knows only +01 (what a block
    written around a date outside Ramadan can say) makes vobject read sender's
    invitation for 10:00 during Ramadan 2027 (+00) an hour early; read alone, it is right.
    """
    other = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//other//EN\r\nMETHOD:REQUEST\r\n"
        "BEGIN:VTIMEZONE\r\nTZID:Africa/Casablanca\r\nBEGIN:STANDARD\r\n"
        "DTSTART:20261101T000000\r\nTZOFFSETFROM:+0100\r\nTZOFFSETTO:+0100\r\n"
        "TZNAME:+01\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n"
        "BEGIN:VEVENT\r\nUID:other@example.org\r\nDTSTAMP:20261001T093000Z\r\n"
        "DTSTART;TZID=Africa/Casablanca:20261110T100000\r\n"
        "DTEND;TZID=Africa/Casablanca:20261110T110000\r\nSUMMARY:Earlier\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    first = tmp_path / "other.ics"
    first.write_text(other, encoding="utf-8")
    ramadan = event(
        timezone="Africa/Casablanca",
        start=datetime(2027, 2, 10, 10),
        end=datetime(2027, 2, 10, 11),
    )
    ours = write_invite(tmp_path, 1, ramadan)
    assert ramadan.start_utc() == datetime(2027, 2, 10, 10, tzinfo=UTC)
    alone = read_with_vobject([ours])
    assert alone[str(ours)][0] == ramadan.start_utc()
    after_other = read_with_vobject([first, ours])
    assert after_other[str(first)][0] == datetime(2026, 11, 10, 9, tzinfo=UTC)
    assert after_other[str(ours)][0] == datetime(2027, 2, 10, 9, tzinfo=UTC)  # an hour off
