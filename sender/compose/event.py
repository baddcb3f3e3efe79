"""A calendar event and the words of iTIP (RFC 5546): the records invitations are made of.

:class:`CalendarEvent` is checked on construction, so every event that reaches
:mod:`sender.compose.ical` (the one module that imports icalendar: it writes and reads
the calendar objects) can be written. These records need no icalendar, so a message
without a calendar, and every worker process, never imports it.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from sender.addresses import domain_of
from sender.errors import AddressError, InputError

__all__ = [
    "WINDOW_YEARS",
    "CalendarEvent",
    "CalendarMethod",
    "PartStat",
    "RsvpAnswer",
    "event_json",
    "is_address",
    "one_line",
    "repeated",
    "stored_event",
]

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
_LOCAL_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2})?(?:Z|[+-]\d{2}:\d{2})?")
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
    :func:`~sender.compose.ical.build_invite` writes it as the UTC instant. Both must fall in
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
            if not one_line(name, getattr(self, name)).strip():
                raise InputError("must not be empty", field=name)
        for name in ("organizer_name", "location", "event_id"):
            one_line(name, getattr(self, name))
        object.__setattr__(self, "description", _text("description", self.description))
        if self.uid is not None and not one_line("uid", self.uid).strip():
            raise InputError("must not be empty when given", field="uid")
        if not is_address(self.organizer_email):
            raise AddressError("is not an e-mail address", field="organizer_email")
        if self.fold is not None and (isinstance(self.fold, bool) or self.fold not in (0, 1)):
            raise InputError(
                f"must be 0 (the first occurrence) or 1 (the second), not {self.fold!r}",
                field="fold",
            )
        zone = _zone(self.timezone)
        _check_local("start", self.start, zone, self.fold)
        _check_local("end", self.end, zone, self.fold)
        start, end = self.start_utc(), self.end_utc()
        if end <= start:
            raise InputError("must be after start", field="end")
        for name, moment in (("start", start), ("end", end)):
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
        if repeated(self.start, zone) or repeated(self.end, zone):
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


def event_json(event: CalendarEvent, /) -> str:
    """The event as the store keeps it (naive local times as ISO strings)."""
    data = asdict(event)
    data["start"] = event.start.isoformat()
    data["end"] = event.end.isoformat()
    return json.dumps(data, ensure_ascii=False, sort_keys=True)


def stored_event(stored: str, /, *, uid: str) -> CalendarEvent:
    """The event :func:`event_json` kept, with ``uid``, the UID it was sent with, if it has none."""
    data = json.loads(stored)
    if data.get("uid") is None:  # stored before UIDs were filled in: the one it was sent with
        data["uid"] = uid
    data["start"] = datetime.fromisoformat(data["start"])
    data["end"] = datetime.fromisoformat(data["end"])
    data.setdefault("fold", 0)  # stored before fold existed: a repeated time meant the first
    return CalendarEvent(**data)


# -- validation --------------------------------------------------------------------------


def one_line(field: str, value: object) -> str:
    """A one-line text value: a str without control characters other than TAB."""
    return _text(field, value, multiline=False)


def is_address(text: str, /) -> bool:
    """Whether ``text`` reads as one e-mail address, as an ORGANIZER or ATTENDEE needs."""
    return _ADDRESS.fullmatch(text) is not None


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


def repeated(value: datetime, zone: ZoneInfo) -> bool:
    """Whether the wall time ``value`` happens twice in ``zone`` (or is skipped)."""
    first = value.replace(tzinfo=zone, fold=0).utcoffset()
    return first != value.replace(tzinfo=zone, fold=1).utcoffset()


def _offset(delta: timedelta | None) -> str:
    minutes = int((delta or timedelta()).total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


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
    if fold is None and repeated(value, zone):
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
    return wall, (local.fold if repeated(wall, zone) else None)
