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
import re
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote
from zoneinfo import ZoneInfo

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

from sender.compose.event import (
    WINDOW_YEARS,
    CalendarEvent,
    CalendarMethod,
    PartStat,
    RsvpAnswer,
    is_address,
    one_line,
    repeated,
)
from sender.errors import AddressError, InputError

__all__ = ["build_invite", "calendar_method", "parse_replies"]

_PRODID = "-//sender//sender//EN"

_LINK_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f]")
_WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")

_PARTSTATS = {status.value: status for status in PartStat}


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
    if not is_address(one_line("attendee_email", attendee_email)):
        raise AddressError("is not an e-mail address", field="attendee_email")
    one_line("attendee_name", attendee_name)
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


def _written(value: datetime, zone: ZoneInfo, fold: int | None) -> datetime:
    """A DTSTART/DTEND value: the wall time in ``zone``, or the UTC instant if it repeats."""
    aware = value.replace(tzinfo=zone, fold=fold or 0)
    return aware.astimezone(UTC) if repeated(value, zone) else aware


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
