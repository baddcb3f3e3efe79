"""Calendar invitations (iTIP REQUEST and CANCEL sent over iMIP) and the REPLYs that come back.

This is the only module that imports icalendar; none of its exceptions escape.

An invitation is one ``VCALENDAR`` per attendee::

    VCALENDAR          PRODID, VERSION, CALSCALE, METHOD (REQUEST or CANCEL)
      VTIMEZONE        the event's zone, from zoneinfo, over WINDOW_YEARS: one block per zone
      VEVENT           UID, DTSTAMP, SEQUENCE, DTSTART/DTEND;TZID=..., SUMMARY, DESCRIPTION,
                       LOCATION, ORGANIZER, ATTENDEE (RSVP=TRUE), STATUS, TRANSP

The UID comes from the course and event ids only, so a changed time, place or
title goes out as an update of the same event (same UID, higher SEQUENCE), and
:meth:`CalendarEvent.changes_from` names what changed for the update's subject.

The VTIMEZONE is written here rather than by ``Timezone.from_tzid``: icalendar
7.3.2 writes a DAYLIGHT onset in the local time *after* the change, which RFC 5545
section 3.6.5 reads with TZOFFSETFROM, putting the spring change an hour late; and
Outlook is reported to misread dated observances (RDATE lists, several STANDARDs)
while it reads one STANDARD and one DAYLIGHT with a yearly RRULE. So the rule in
force at the end of :data:`WINDOW_YEARS` is written as that rule, and only changes
before it (a zone whose rules changed within the window, or Morocco's dated ones)
as dated onsets. The block depends on the zone alone, never on the event, so it is
byte for byte the same in every invitation for that zone (computed once per zone).

Text values are escaped here too: icalendar's writer reads a literal ``\\N`` in
text as a line break, so ``C:\\Notes`` would come out as ``C:`` and ``otes``.
"""

from __future__ import annotations

import calendar as _calendar
import functools
import hashlib
import hmac
import json
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from urllib.parse import unquote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from icalendar import (
    Calendar,
    Component,
    Event,
    GloballyUniqueTZIDGuessed,
    Parameters,
    Timezone,
    TimezoneDaylight,
    TimezoneStandard,
    vCalAddress,
    vRecur,
    vText,
)

from sender.addresses import domain_of
from sender.errors import AddressError, InputError

__all__ = [
    "WINDOW_YEARS",
    "CalendarEvent",
    "CalendarMethod",
    "PartStat",
    "RsvpAnswer",
    "build_invite",
    "calendar_method",
    "parse_replies",
]

_PRODID = "-//sender//sender//EN"

# The years every VTIMEZONE covers (the first, and the one after the last), whatever
# the event's date, so that a zone's block is the same in every invitation: clients
# that keep the first VTIMEZONE they see for a TZID (vobject does) read every later
# event with it. Fixed, not around each event: a window that moved with the event would
# write another block for the next event. From 2020: invitations are for sessions to
# come, and from then on most zones (the US since 2007, the EU since 1996, Australia
# since 2008, Brazil without DST since 2019) follow one yearly rule, which is one
# STANDARD and one DAYLIGHT, as Outlook reads best. To 2049: the rule in force at the
# end is written open-ended, so such zones stay right for any later year; zones whose
# changes tzdata lists by date (Morocco's around Ramadan) are listed to 2049. An event
# outside the window is refused rather than sent with a zone that may be wrong.
WINDOW_YEARS = (2020, 2050)

# RFC 5545 TEXT allows no control characters but HTAB; a DESCRIPTION may also break lines.
_LINE_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_TEXT_FORBIDDEN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_NOT_ADDRESS = r"\s\x00-\x1f\x7f@<>\"(),;:\\\[\]"
_ADDRESS = re.compile(rf"[^{_NOT_ADDRESS}]+@(?:[^{_NOT_ADDRESS}.]+\.)*[^{_NOT_ADDRESS}.]+")
_LINK_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f]")
_LOCAL_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2})?(?:Z|[+-]\d{2}:\d{2})?")
_WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
# Names that zoneinfo resolves but that mean nothing on the attendee's machine.
_MACHINE_ZONES = frozenset({"localtime", "Factory", "posixrules"})


class CalendarMethod(StrEnum):
    """The iTIP method (RFC 5546): what the calendar object asks of its reader."""

    REQUEST = "REQUEST"
    CANCEL = "CANCEL"
    REPLY = "REPLY"


class PartStat(StrEnum):
    """An attendee's participation status in a VEVENT (RFC 5545 section 3.2.12)."""

    NEEDS_ACTION = "NEEDS-ACTION"
    ACCEPTED = "ACCEPTED"
    DECLINED = "DECLINED"
    TENTATIVE = "TENTATIVE"
    DELEGATED = "DELEGATED"


_PARTSTATS = {status.value: status for status in PartStat}

_REQUIRED_KEYS = ("course_id", "summary", "start", "end", "timezone", "organizer_email")
_OPTIONAL_KEYS = ("description", "location", "organizer_name", "uid", "event_id")


@dataclass(frozen=True, slots=True)
class CalendarEvent:
    """One course event as attendees see it. Validated on construction.

    ``start`` and ``end`` are naive wall-clock times in ``timezone``. A time the
    clocks skip is refused; so is a time they repeat (the hour after a DST fall-back)
    unless ``fold`` says which occurrence: 0 the first (before the clocks go back),
    1 the second, as :attr:`datetime.fold` counts them. Readers disagree about such
    a wall time in a ``TZID`` (RFC 5545 says the first, ical.js takes the second), so
    :func:`build_invite` writes it as the UTC instant. Both must fall in
    :data:`WINDOW_YEARS` (in UTC), the years the invitation's VTIMEZONE covers.
    ``description`` is stored with LF line breaks, the only
    kind iCalendar carries. An empty ``event_id`` names the course's only event.
    """

    course_id: str
    summary: str
    start: datetime
    end: datetime
    timezone: str
    organizer_email: str
    organizer_name: str = ""
    description: str = ""
    location: str = ""
    event_id: str = ""
    uid: str | None = None
    fold: int | None = None  # which occurrence a repeated start or end means: 0 or 1

    def __post_init__(self) -> None:
        for name in ("course_id", "summary", "timezone", "organizer_email"):
            if not _line(name, getattr(self, name)).strip():
                raise InputError("must not be empty", field=name)
        for name in ("organizer_name", "location", "event_id"):
            _line(name, getattr(self, name))
        object.__setattr__(self, "description", _text("description", self.description))
        if self.uid is not None and not _line("uid", self.uid).strip():
            raise InputError("must not be empty when given", field="uid")
        if _ADDRESS.fullmatch(self.organizer_email) is None:
            raise AddressError("is not an e-mail address", field="organizer_email")
        if self.fold is not None and (isinstance(self.fold, bool) or self.fold not in (0, 1)):
            raise InputError(
                f"must be 0 (the first occurrence) or 1 (the second), not {self.fold!r}",
                field="fold",
            )
        zone = _zone(self.timezone)
        _check_local("start", self.start, zone, self.fold)
        _check_local("end", self.end, zone, self.fold)
        if self.end_utc() <= self.start_utc():
            raise InputError("must be after start", field="end")
        for name, moment in (("start", self.start_utc()), ("end", self.end_utc())):
            if not WINDOW_YEARS[0] <= moment.year < WINDOW_YEARS[1]:
                raise InputError(
                    f"{getattr(self, name):%Y-%m-%dT%H:%M:%S} ({moment:%Y-%m-%dT%H:%M:%SZ}) is "
                    f"outside the years calendar invitations cover, {WINDOW_YEARS[0]} to "
                    f"{WINDOW_YEARS[1] - 1} (UTC)",
                    field=name,
                )

    @property
    def event_uid(self) -> str:
        """``uid`` if given, else the *unkeyed* form derived from course and event id.

        Anyone who knows the course can compute that form, so sender never sends it
        for a new event: :class:`~sender.invites.Invitations` and
        :meth:`~sender.Sender.compose` fill in ``uid`` first (:meth:`keyed_uid`, or
        the UID an event was first sent with). It remains for events sent before.
        """
        if self.uid is not None:
            return self.uid
        key = json.dumps(["sender.ical.uid", self.course_id, self.event_id], ensure_ascii=False)
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        return f"{digest}@{domain_of(self.organizer_email).lower()}"

    def keyed_uid(self, key: str, /) -> str:
        """``uid`` if given, else an HMAC-SHA256 of course and event id under ``key``.

        Without the key nobody can compute it; with the same key, an update keeps it.
        """
        if self.uid is not None:
            return self.uid
        facts = json.dumps(["sender.ical.uid", self.course_id, self.event_id], ensure_ascii=False)
        digest = hmac.new(key.encode(), facts.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{digest}@{domain_of(self.organizer_email).lower()}"

    def fingerprint(self) -> str:
        """A short hash of what attendees see; it changes exactly when an update is due."""
        facets = json.dumps([value for _, value in self._facets()], ensure_ascii=False)
        return hashlib.sha256(facets.encode()).hexdigest()[:16]

    def changes_from(self, other: CalendarEvent) -> tuple[str, ...]:
        """Which of time, place, title, description and organizer differ from ``other``."""
        return tuple(
            name
            for (name, mine), (_, theirs) in zip(self._facets(), other._facets(), strict=True)
            if mine != theirs
        )

    def start_utc(self) -> datetime:
        """The start as an aware UTC datetime."""
        return self.start.replace(tzinfo=ZoneInfo(self.timezone), fold=self.fold or 0).astimezone(
            UTC
        )

    def end_utc(self) -> datetime:
        """The end as an aware UTC datetime."""
        return self.end.replace(tzinfo=ZoneInfo(self.timezone), fold=self.fold or 0).astimezone(UTC)

    def _facets(self) -> tuple[tuple[str, object], ...]:
        """What attendees see, grouped as :meth:`changes_from` names it."""
        time: list[object] = [self.start.isoformat(), self.end.isoformat(), self.timezone]
        zone = ZoneInfo(self.timezone)
        if _repeated(self.start, zone) or _repeated(self.end, zone):
            time.append(self.fold)  # only then: other events keep the fingerprint they had
        return (
            ("time", time),
            ("place", self.location),
            ("title", self.summary),
            ("description", self.description),
            ("organizer", [self.organizer_email.lower(), self.organizer_name]),
        )

    @classmethod
    def from_mapping(
        cls, values: Mapping[str, object], /, *, default_event_id: str
    ) -> CalendarEvent:
        """Build an event from a parsed event file; each problem is an InputError naming its key."""
        known = (*_REQUIRED_KEYS, *_OPTIONAL_KEYS, "fold")
        for key in values:
            if key not in known:
                raise InputError(f"unknown key; known keys are {', '.join(known)}", field=key)
        for key in _REQUIRED_KEYS:
            if key not in values:
                raise InputError("is required", field=key)
        strings: dict[str, str] = {}
        for key in known:
            if key in ("start", "end", "fold") or key not in values:
                continue
            value = values[key]
            if not isinstance(value, str):
                raise InputError(f"must be a string, not {type(value).__name__}", field=key)
            strings[key] = value
        zone = _zone(strings["timezone"])
        start, start_fold = _local_datetime("start", values["start"], zone)
        end, end_fold = _local_datetime("end", values["end"], zone)
        fold = values.get("fold")
        if fold is not None and (isinstance(fold, bool) or fold not in (0, 1)):
            raise InputError(
                f"must be 0 (the first occurrence) or 1 (the second), not {fold!r}", field="fold"
            )
        implied = {f for f in (start_fold, end_fold) if f is not None}
        if fold is not None and implied and implied != {fold}:
            raise InputError(
                f"fold = {fold} contradicts the UTC offset given with start or end", field="fold"
            )
        if len(implied) > 1:
            raise InputError(
                "start and end in the repeated hour must be the same occurrence "
                "(give both the same UTC offset)",
                field="end",
            )
        return cls(
            course_id=strings["course_id"],
            summary=strings["summary"],
            start=start,
            end=end,
            timezone=strings["timezone"],
            organizer_email=strings["organizer_email"],
            organizer_name=strings.get("organizer_name", ""),
            description=strings.get("description", ""),
            location=strings.get("location", ""),
            event_id=strings.get("event_id", default_event_id),
            uid=strings.get("uid"),
            fold=implied.pop() if implied else (fold if isinstance(fold, int) else None),
        )


@dataclass(frozen=True, slots=True)
class RsvpAnswer:
    """One attendee's answer to one event, from a REPLY."""

    uid: str
    attendee: str  # the address, lower-cased, without "mailto:"
    partstat: PartStat
    sequence: int  # the SEQUENCE answered; 0 when the reply has none
    dtstamp: datetime | None  # aware UTC
    comment: str


def build_invite(
    event: CalendarEvent,
    /,
    *,
    method: CalendarMethod,
    attendee_email: str,
    attendee_name: str,
    sequence: int,
    dtstamp: datetime,
    link: str | None = None,
) -> bytes:
    """One VCALENDAR for one attendee: UTF-8, CRLF, folded at 75 octets.

    ``link`` (the attendee's personal link) ends the DESCRIPTION on a line of its
    own. A REQUEST for an event already sent is an update and needs a higher
    ``sequence``; so does a CANCEL. Raises :class:`~sender.errors.InputError` for
    unusable attendee data and ``ValueError`` for a REPLY, a negative sequence or
    a naive ``dtstamp``.
    """
    method = CalendarMethod(method)
    if method is CalendarMethod.REPLY:
        raise ValueError("build_invite writes REQUEST or CANCEL; a REPLY comes from attendees")
    if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 0:
        raise ValueError(f"sequence must be a non-negative int, not {sequence!r}")
    if dtstamp.tzinfo is None or dtstamp.utcoffset() is None:
        raise ValueError("dtstamp must be timezone-aware")
    if _ADDRESS.fullmatch(_line("attendee_email", attendee_email)) is None:
        raise AddressError("is not an e-mail address", field="attendee_email")
    _line("attendee_name", attendee_name)
    if link is not None and (not link or _LINK_FORBIDDEN.search(link) is not None):
        raise InputError("must be a URL without spaces or control characters", field="link")

    zone = ZoneInfo(event.timezone)
    vevent = Event()
    vevent.add("UID", event.event_uid)
    vevent.add("DTSTAMP", dtstamp.astimezone(UTC).replace(microsecond=0))
    vevent.add("SEQUENCE", sequence)
    vevent.add("DTSTART", _written(event.start, zone, event.fold))
    vevent.add("DTEND", _written(event.end, zone, event.fold))
    vevent.add("SUMMARY", _Text(event.summary))
    description = event.description
    if link is not None:
        description = "\n\n".join(part for part in (description.rstrip("\n"), link) if part)
    if description:
        vevent.add("DESCRIPTION", _Text(description))
    if event.location:
        vevent.add("LOCATION", _Text(event.location))
    vevent.add("ORGANIZER", _cal_address(event.organizer_email, event.organizer_name))
    vevent.add(
        "ATTENDEE",
        _cal_address(
            attendee_email,
            attendee_name,
            ROLE="REQ-PARTICIPANT",
            PARTSTAT=PartStat.NEEDS_ACTION.value,
            RSVP="TRUE",
        ),
    )
    vevent.add("STATUS", "CONFIRMED" if method is CalendarMethod.REQUEST else "CANCELLED")
    vevent.add("TRANSP", "OPAQUE")

    cal = Calendar()
    cal.add("PRODID", _PRODID)
    cal.add("VERSION", "2.0")
    cal.add("CALSCALE", "GREGORIAN")
    cal.add("METHOD", method.value)
    tzid = vevent["DTSTART"].params.get("TZID") or vevent["DTEND"].params.get("TZID")
    if tzid is not None:  # UTC and its aliases are written as ...Z and need no VTIMEZONE
        cal.add_component(_vtimezone(str(tzid), event.timezone))
    cal.add_component(vevent)
    data: bytes = cal.to_ical()
    return data


def calendar_method(data: bytes | str, /) -> str | None:
    """The METHOD of the (first) VCALENDAR, upper-cased; None when missing or unreadable."""
    try:
        calendars = _parse(data)
    except InputError:
        return None
    return _method(calendars[0])


def parse_replies(data: bytes | str, /, *, assume_method: str | None = None) -> list[RsvpAnswer]:
    """One answer per VEVENT and mailto: ATTENDEE of a METHOD:REPLY calendar.

    ``assume_method`` is the MIME part's ``method=`` parameter; it counts only when
    the calendar itself names no METHOD, as some clients send. Unknown PARTSTAT
    values count as NEEDS-ACTION (RFC 5545 section 3.2.12). Raises
    :class:`~sender.errors.InputError` (``field="calendar"``) for anything that is
    not a readable REPLY.
    """
    answers: list[RsvpAnswer] = []
    for cal in _parse(data):
        method = _method(cal) or (assume_method.strip().upper() if assume_method else None)
        if method != CalendarMethod.REPLY:
            raise InputError(
                f"calendar method is {method or 'missing'}, not REPLY", field="calendar"
            )
        vevents = [c for c in cal.subcomponents if c.name == "VEVENT"]
        if not vevents:
            raise InputError("REPLY has no VEVENT", field="calendar")
        for vevent in vevents:
            answers.extend(_answers(vevent))
    if not answers:
        raise InputError("REPLY names no mailto: ATTENDEE", field="calendar")
    return answers


# -- validation --------------------------------------------------------------------------


def _line(field: str, value: object) -> str:
    """A one-line text value: a str without control characters other than TAB."""
    return _text(field, value, multiline=False)


def _text(field: str, value: object, *, multiline: bool = True) -> str:
    """A text value iCalendar can carry; CRLF and CR become LF when ``multiline``."""
    if not isinstance(value, str):
        raise InputError(f"must be a string, not {type(value).__name__}", field=field)
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        raise InputError("is not encodable as UTF-8", field=field) from exc
    if multiline:
        value = value.replace("\r\n", "\n").replace("\r", "\n")
        if _TEXT_FORBIDDEN.search(value) is not None:
            raise InputError("must not contain NUL or other control characters", field=field)
    elif _LINE_FORBIDDEN.search(value) is not None:
        raise InputError("must not contain CR, LF, NUL or other control characters", field=field)
    return value


@functools.cache
def _known_zones() -> frozenset[str]:
    return frozenset(available_timezones()) - _MACHINE_ZONES


def _zone(name: str) -> ZoneInfo:
    if name not in _known_zones():
        raise InputError(f"{name!r} is not an IANA time zone known to zoneinfo", field="timezone")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise InputError(f"{name!r} cannot be loaded by zoneinfo", field="timezone") from exc


def _repeated(value: datetime, zone: ZoneInfo) -> bool:
    """Whether the wall time ``value`` happens twice in ``zone`` (or is skipped)."""
    first = value.replace(tzinfo=zone, fold=0).utcoffset()
    return first != value.replace(tzinfo=zone, fold=1).utcoffset()


def _offset(delta: timedelta | None) -> str:
    minutes = int((delta or timedelta()).total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _written(value: datetime, zone: ZoneInfo, fold: int | None) -> datetime:
    """A DTSTART/DTEND value: the wall time in ``zone``, or the UTC instant if it repeats."""
    aware = value.replace(tzinfo=zone, fold=fold or 0)
    return aware.astimezone(UTC) if _repeated(value, zone) else aware


def _check_local(field: str, value: object, zone: ZoneInfo, fold: int | None = None) -> None:
    if not isinstance(value, datetime):
        raise InputError(f"must be a date and time, not {type(value).__name__}", field=field)
    if value.tzinfo is not None:
        raise InputError(
            "must be a local time without UTC offset; timezone names the zone", field=field
        )
    if value.microsecond:
        raise InputError("must be whole seconds", field=field)
    aware = value.replace(tzinfo=zone, fold=0)
    if aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != value.replace(fold=0):
        raise InputError(
            f"{value:%Y-%m-%dT%H:%M:%S} does not exist in {zone.key}: the clocks skip it",
            field=field,
        )
    if fold is None and _repeated(value, zone):
        first, second = (value.replace(tzinfo=zone, fold=f) for f in (0, 1))
        raise InputError(
            f"{value:%Y-%m-%dT%H:%M:%S} happens twice in {zone.key} (the clocks go back): "
            f"{first.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ} or "
            f"{second.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}; say which with fold = 0 or 1, "
            f"or a UTC offset ({value:%Y-%m-%dT%H:%M:%S}{_offset(first.utcoffset())} or "
            f"{_offset(second.utcoffset())})",
            field=field,
        )


def _local_datetime(field: str, value: object, zone: ZoneInfo) -> tuple[datetime, int | None]:
    """A TOML datetime, or a string like ``2027-03-27T10:00:00``, as a wall time in ``zone``.

    With a UTC offset (``2026-10-25T02:30:00+01:00``) it must be ``zone``'s offset at
    that instant; the second item is then the fold it implies for a repeated wall
    time (None otherwise, and for times without an offset).
    """
    if isinstance(value, str) and _LOCAL_DATETIME.fullmatch(value) is not None:
        try:
            value = datetime.fromisoformat(value)
        except ValueError as exc:
            raise InputError(f"{value!r} is not a valid date and time", field=field) from exc
    elif isinstance(value, date) and not isinstance(value, datetime):
        raise InputError("is a date; give a date and time like 2027-03-27T10:00:00", field=field)
    if not isinstance(value, datetime):
        raise InputError(
            "must be a date and time like 2027-03-27T10:00:00, local to timezone", field=field
        )
    if value.tzinfo is None or value.utcoffset() is None:
        return value, None
    local = value.astimezone(zone)
    if local.utcoffset() != value.utcoffset():
        raise InputError(
            f"{value.isoformat()} has UTC offset {_offset(value.utcoffset())}, but {zone.key} "
            f"is at {_offset(local.utcoffset())} then; give the local time in {zone.key}",
            field=field,
        )
    wall = local.replace(tzinfo=None, fold=0)
    return wall, (local.fold if _repeated(wall, zone) else None)


# -- writing -----------------------------------------------------------------------------


class _Text(vText):
    """TEXT escaped as RFC 5545 section 3.3.11 says, keeping a literal backslash-N."""

    __slots__ = ()

    def to_ical(self) -> bytes:
        escaped = (
            self.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\n", "\\n")
        )
        return escaped.encode()


class _Params(Parameters):
    """Parameters that also quote a CN holding a backslash or a tab.

    RFC 5545 gives parameter values no backslash escapes, but icalendar (and other
    readers) treat ``\\;`` as one, so an unquoted ``CN=Ann\\`` would swallow the
    PARTSTAT after it; quoted, a backslash can at worst change how a name looks.
    Readers also strip tabs around unquoted values.
    """

    # Shadows icalendar's attribute of the same name, which it declares per instance.
    quote_also = {  # noqa: RUF012
        **Parameters.quote_also,
        "CN": Parameters.quote_also.get("CN", "") + "\\\t",
    }


def _cal_address(email: str, name: str, **params: str) -> vCalAddress:
    """``mailto:email`` with CN (when there is a name) and ``params``."""
    address = vCalAddress(f"mailto:{email}")
    address.params = _Params({"CN": name, **params} if name else params)
    return address


@dataclass(frozen=True, slots=True)
class _Observance:
    """A STANDARD or DAYLIGHT part of a VTIMEZONE."""

    daylight: bool
    onset: datetime  # naive, local time before the change (read with offset_from)
    offset_from: timedelta
    offset_to: timedelta
    name: str
    rule: str | None = None  # a yearly RRULE, or None for dated onsets
    rdates: tuple[datetime, ...] = ()  # further onsets of the same change (RDATE)


def _vtimezone(tzid: str, zone_name: str) -> Timezone:
    """The VTIMEZONE ``tzid``: the same observances for every event in the zone."""
    vtimezone = Timezone()
    vtimezone.add("TZID", tzid)
    for observance in _observances(zone_name):
        part = TimezoneDaylight() if observance.daylight else TimezoneStandard()
        part.add("DTSTART", observance.onset)
        part.add("TZOFFSETFROM", observance.offset_from)
        part.add("TZOFFSETTO", observance.offset_to)
        part.add("TZNAME", observance.name)
        if observance.rule is not None:
            part.add("RRULE", vRecur.from_ical(observance.rule))
        for rdate in observance.rdates:
            # One RDATE each: vobject keeps only the first value of an RDATE list.
            part.add("RDATE", rdate)
        vtimezone.add_component(part)
    return vtimezone


def _window() -> tuple[int, int]:
    """The window every VTIMEZONE covers, as UTC timestamps [first second, end)."""
    first, after = WINDOW_YEARS
    return (
        int(datetime(first, 1, 1, tzinfo=UTC).timestamp()),
        int(datetime(after, 1, 1, tzinfo=UTC).timestamp()),
    )


# Years past the window in which the rule in force at its end must still hold: a rule
# is written open-ended, so it must be the zone's rule and not a coincidence of the
# window's last years (Morocco's Ramadan changes fit a weekday rule for a year or two).
_RULE_CHECK_YEARS = 8


@functools.cache
def _observances(zone_name: str) -> tuple[_Observance, ...]:
    """The zone over :data:`WINDOW_YEARS`: dated changes, then the yearly rule in force.

    Computed once per zone (one process, one tzdata), so every invitation for the
    zone carries the same block. The changes that the rule in force at the window's
    end explains (back to the first year it fails, at most the year before the
    window, and on for eight years after it) become one STANDARD and one DAYLIGHT
    with an open yearly RRULE; each change in the window before them is a dated
    onset, grouped by kind into one observance with RDATEs. Unless the rule already
    started before the window, the offset in force at its start comes first, so that
    every instant of the window follows an onset (RFC 5545 leaves earlier ones open).
    """
    zone = ZoneInfo(zone_name)
    lo, hi = _window()
    before = int(datetime(WINDOW_YEARS[0] - 1, 1, 1, tzinfo=UTC).timestamp())
    beyond = int(datetime(WINDOW_YEARS[1] + _RULE_CHECK_YEARS, 1, 1, tzinfo=UTC).timestamp())
    changes = _changes(zone, before, beyond)
    if not any(lo <= when < hi for when, _, _ in changes):
        return (_steady(zone, lo),)
    yearly: tuple[_Observance, ...] = ()
    rule_from = hi
    for index, (when, _, _) in enumerate(changes):
        if when >= hi:
            break
        found = _yearly(zone, changes[index:])
        if found is not None:
            yearly, rule_from = found, when
            break
    groups: dict[tuple[bool, timedelta, timedelta, str], list[datetime]] = {}
    for when, old, new in changes:
        if lo <= when < rule_from:
            single = _single(zone, when, old, new)
            key = (single.daylight, old, new, single.name)
            groups.setdefault(key, []).append(single.onset)
    observances = [
        _Observance(daylight, onsets[0], old, new, name, None, tuple(onsets[1:]))
        for (daylight, old, new, name), onsets in groups.items()
    ]
    observances.extend(yearly)
    if rule_from > lo:
        observances.append(_steady(zone, lo))
    observances.sort(key=lambda observance: observance.onset)
    return tuple(observances)


def _changes(zone: ZoneInfo, lo: int, hi: int) -> list[tuple[int, timedelta, timedelta]]:
    """UTC offset changes in [lo, hi): (first second of the new offset, old, new).

    Scans a day at a time and bisects to the second; two changes within one day
    that cancel each other out would be missed (no zone has had one).
    """

    def offset(ts: int) -> timedelta:
        return datetime.fromtimestamp(ts, zone).utcoffset() or timedelta()

    changes = []
    now, current = lo, offset(lo)
    while now < hi:
        ahead = min(now + 86400, hi)
        if offset(ahead) == current:
            now = ahead
            continue
        same, other = now, ahead
        while other - same > 1:
            middle = (same + other) // 2
            if offset(middle) == current:
                same = middle
            else:
                other = middle
        new = offset(other)
        changes.append((other, current, new))
        now, current = other, new
    return changes


def _steady(zone: ZoneInfo, when: int) -> _Observance:
    """The offset in force at ``when``, as an observance that starts there."""
    moment = datetime.fromtimestamp(when, zone)
    offset = moment.utcoffset() or timedelta()
    daylight = (moment.dst() or timedelta()) > timedelta()
    return _Observance(daylight, moment.replace(tzinfo=None), offset, offset, moment.tzname() or "")


def _single(zone: ZoneInfo, when: int, old: timedelta, new: timedelta) -> _Observance:
    """One change as an observance without a rule."""
    after = datetime.fromtimestamp(when, zone)
    onset = datetime.fromtimestamp(when, UTC).replace(tzinfo=None) + old
    daylight = (after.dst() or timedelta()) > timedelta()
    return _Observance(daylight, onset, old, new, after.tzname() or "")


def _yearly(
    zone: ZoneInfo, changes: list[tuple[int, timedelta, timedelta]]
) -> tuple[_Observance, ...] | None:
    """Two yearly rules (into and out of daylight time) that explain every change, or None.

    Each rule must fire once a year in consecutive years through the checked years
    after the window, at the same month and local time: it is the rule in force when
    the window ends, so a reader may apply it to any later year as tzdata does.
    """
    groups: dict[tuple[timedelta, timedelta], list[int]] = {}
    for when, old, new in changes:
        groups.setdefault((old, new), []).append(when)
    if len(groups) != 2:
        return None
    (first_key, _), (second_key, _) = groups.items()
    if first_key != (second_key[1], second_key[0]):
        return None
    last_year = WINDOW_YEARS[1] + _RULE_CHECK_YEARS - 1
    observances = []
    for (old, new), moments in groups.items():
        onsets = [datetime.fromtimestamp(w, UTC).replace(tzinfo=None) + old for w in moments]
        years = [onset.year for onset in onsets]
        if years != list(range(years[0], last_year + 1)):
            return None
        if len({(o.month, o.weekday(), o.time()) for o in onsets}) != 1:
            return None
        rule = _weekday_rule(onsets)
        if rule is None:
            return None
        name = datetime.fromtimestamp(moments[0], zone).tzname() or ""
        observances.append(_Observance(new > old, onsets[0], old, new, name, rule))
    return tuple(observances)


def _weekday_rule(onsets: list[datetime]) -> str | None:
    """A yearly RRULE that picks exactly ``onsets`` (same month, weekday and time), or None.

    ``BYDAY=-1SU`` or ``2SU`` where one fits every year, as tzdata writes most rules;
    else a weekday within seven days of the month (``BYDAY=FR;BYMONTHDAY=23,...,29``,
    Israel's "Friday before the last Sunday" is tzdata's ``Fri>=23``).
    """
    month = onsets[0].month
    common = set.intersection(*(_weekday_rules(onset) for onset in onsets))
    if common:
        byday = min(common)  # "-1SU" sorts before "4SU": prefer "last", as tzdata says it
        return f"FREQ=YEARLY;BYMONTH={month};BYDAY={byday}"
    first = min(onset.day for onset in onsets)
    shortest = _calendar.monthrange(2001, month)[1]  # a common year: February's 28 days
    if max(onset.day for onset in onsets) - first > 6 or first + 6 > shortest:
        return None  # no seven days of the month that every year has
    days = ",".join(str(day) for day in range(first, first + 7))
    weekday = _WEEKDAYS[onsets[0].weekday()]
    return f"FREQ=YEARLY;BYMONTH={month};BYDAY={weekday};BYMONTHDAY={days}"


def _weekday_rules(day: datetime) -> set[str]:
    """The BYDAY values that pick ``day`` in its month: ``2SU``, and ``-1SU`` if it is the last."""
    weekday = _WEEKDAYS[day.weekday()]
    rules = {f"{(day.day - 1) // 7 + 1}{weekday}"}
    if day.day + 7 > _calendar.monthrange(day.year, day.month)[1]:
        rules.add(f"-1{weekday}")
    return rules


# -- reading -----------------------------------------------------------------------------


def _parse(data: bytes | str) -> list[Component]:
    """The VCALENDARs in ``data`` (UTF-8, else Windows-1252); InputError if none parses."""
    if isinstance(data, bytes):
        try:
            text = data.decode()
        except UnicodeDecodeError:  # older Outlook writes its Windows code page
            text = data.decode("cp1252", errors="replace")
    else:
        text = data
    text = text.removeprefix("\ufeff")
    try:
        with warnings.catch_warnings():
            # Evolution and old Lightning send TZIDs like "/vendor/Europe/Oslo"; icalendar
            # warns while guessing the zone, but a reply's times are never read here.
            warnings.simplefilter("ignore", GloballyUniqueTZIDGuessed)
            components = Calendar.from_ical(text, multiple=True)
    # The bytes come from strangers' mail: whatever the parser trips over is a bad
    # calendar, not a crash of the inbound worker.
    except Exception as exc:
        reason = " ".join(str(exc).split())[:160]
        raise InputError(f"not an iCalendar object: {reason}", field="calendar") from exc
    calendars: list[Component] = [c for c in components if c.name == "VCALENDAR"]
    if not calendars:
        raise InputError("no complete VCALENDAR object found", field="calendar")
    return calendars


def _values(component: Component, name: str) -> list[object]:
    value = component.get(name)
    if value is None:
        return []
    if isinstance(value, list):
        return list(value)
    return [value]


def _method(cal: Component) -> str | None:
    values = _values(cal, "METHOD")
    method = str(values[0]).strip().upper() if values else ""
    return method or None


def _answers(vevent: Component) -> list[RsvpAnswer]:
    uids = _values(vevent, "UID")
    uid = str(uids[0]).strip() if uids else ""
    if not uid:
        raise InputError("a VEVENT of the REPLY has no UID", field="calendar")
    sequence = _sequence(_values(vevent, "SEQUENCE"))
    dtstamp = _utc(_values(vevent, "DTSTAMP"))
    comment = "\n".join(str(value) for value in _values(vevent, "COMMENT"))
    answers = []
    for attendee in _values(vevent, "ATTENDEE"):
        address = str(attendee).strip()
        if address[:7].lower() != "mailto:" or "@" not in address:
            continue  # not an address we could have invited
        params = getattr(attendee, "params", {})
        partstat = str(params.get("PARTSTAT", "")).strip().upper()
        answers.append(
            RsvpAnswer(
                uid=uid,
                attendee=unquote(address[7:]).strip().lower(),
                partstat=_PARTSTATS.get(partstat, PartStat.NEEDS_ACTION),
                sequence=sequence,
                dtstamp=dtstamp,
                comment=comment,
            )
        )
    return answers


def _sequence(values: list[object]) -> int:
    if not values:
        return 0
    try:
        number = int(str(values[0]).strip())
    except ValueError:
        return 0
    return max(number, 0)


def _utc(values: list[object]) -> datetime | None:
    if not values:
        return None
    try:
        moment = getattr(values[0], "dt", None)
    except ValueError:  # icalendar's BrokenCalendarProperty: the value did not parse
        return None
    if not isinstance(moment, datetime):
        return None
    if moment.tzinfo is None or moment.utcoffset() is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
