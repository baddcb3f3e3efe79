"""What the admin pages' Preview shows: one template in one locale, as a participant gets it.

Built from the same pieces a send uses: the personal link, the template context and
render (:mod:`sender.compose.render`), the single-link rule's verdict
(:func:`~sender.compose.render.find_link_problems`, reported rather than raised, so a
breaking template is still shown), the composed message's headers, and for calendar
templates the ``.ics`` part with the event's times in its own zone. Sample values fill
whatever the form leaves out (:func:`~sender.compose.render.sample_context`).
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage

from sender.client import Sender
from sender.compose.composer import (
    CALENDAR_TEMPLATES,
    RESERVED_VARIABLES,
    calendar_for,
    link_purpose,
)
from sender.compose.event import CalendarEvent
from sender.compose.render import (
    SAMPLE_UNSUBSCRIBE,
    find_link_problems,
    lint_templates,
    sample_context,
)
from sender.errors import ConfigurationError, InputError, SenderError
from sender.models import Participant
from sender.vocabulary import UNSUBSCRIBE_STREAMS

__all__ = ["Preview", "TemplateListing", "listing", "preview", "sample_event", "sample_person"]

EVENT_DEFAULTS = {"start": "2027-03-27T10:00", "end": "2027-03-27T12:00", "zone": "Europe/Oslo"}


@dataclass(frozen=True, slots=True)
class TemplateListing:
    """One template set: its locales, each with what lint finds in it (empty: it passes).

    A finding is ``(message, warning)``: a warning (a link host spam filters score) does
    not stop the set from sending.
    """

    name: str
    calendar: bool
    locales: dict[str, list[tuple[str, bool]]]

    def failing(self, locale: str, /) -> bool:
        """Whether ``locale`` has a finding that is more than a warning."""
        return any(not warning for _message, warning in self.locales[locale])


@dataclass(frozen=True, slots=True)
class Preview:
    """One template in one locale, rendered for one participant."""

    template: str
    locale: str
    subject: str
    text: str
    html: str | None
    link: str
    problems: list[str]  # the single-link rule's verdict: empty when it passes
    headers: list[tuple[str, str]] = field(default_factory=list)  # when it could be composed
    ics: str | None = None
    event: CalendarEvent | None = None


def listing(sender: Sender, /) -> list[TemplateListing]:
    """Every template set in the search path (the user's first, then the built-in ones),
    each locale with what ``sender templates lint`` finds in it."""
    renderer = sender.renderer
    found: list[TemplateListing] = []
    for name in renderer.names():
        locales: dict[str, list[tuple[str, bool]]] = {
            locale: [] for locale in renderer.locales(name)
        }
        for finding in lint_templates(renderer, names=[name]):
            where = finding.template.split("/")
            locale = where[1] if len(where) > 1 and where[1] in locales else None
            for key in [locale] if locale else list(locales):
                locales[key].append((finding.message, finding.warning))
        found.append(TemplateListing(name, name in CALENDAR_TEMPLATES, locales))
    return found


def sample_person(form: Mapping[str, str], /, *, locale: str) -> Participant:
    """The participant the form describes, sample values for what it leaves out.

    ``vars`` holds ``key=value`` lines; the sample's extra values (``course_name``) come
    first, so a user template's own columns can be filled in the form.
    """
    sample = sample_context(locale, base_url="")
    extra = {
        key: str(value)
        for key, value in sample.items()
        if key not in RESERVED_VARIABLES and not key.startswith("event_")
    }
    for number, line in enumerate(form.get("vars", "").splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise InputError(f"line {number}: write key=value", field="vars")
        if key.strip() in RESERVED_VARIABLES:
            raise InputError(f"line {number}: {key.strip()!r} is filled in by sender", field="vars")
        extra[key.strip()] = value.strip()
    return Participant(
        email=form.get("email", "").strip() or str(sample["email"]),
        name=form.get("name", "").strip() or str(sample["name"]),
        participant_id=form.get("participant_id", "").strip() or str(sample["participant_id"]),
        course_id=form.get("course_id", "").strip() or str(sample["course_id"]),
        locale=locale,
        vars=extra,
    )


def _when(form: Mapping[str, str], key: str) -> datetime:
    text = form.get(f"event_{key}", "").strip() or EVENT_DEFAULTS[key]
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M")
    except ValueError as exc:
        raise InputError(f"write the {key} as YYYY-MM-DDTHH:MM", field=f"event_{key}") from exc


def sample_event(sender: Sender, form: Mapping[str, str], /, *, course_id: str) -> CalendarEvent:
    """The event a calendar template is previewed with: the sample's, with the form's
    start, end and time zone."""
    sample = sample_context("en", base_url="")
    organizer = sender.settings.from_address
    return CalendarEvent(
        course_id=course_id,
        summary=str(sample["event_summary"]),
        start=_when(form, "start"),
        end=_when(form, "end"),
        timezone=form.get("event_zone", "").strip() or EVENT_DEFAULTS["zone"],
        organizer_email=organizer.email,
        organizer_name=organizer.name,
        description=str(sample["event_description"]),
        location=str(sample["event_location"]),
        event_id="preview",
    )


def _parsed(data: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)  # what policy.default makes
    return parsed


def _unsubscribe_url(
    sender: Sender, template: str, person: Participant, /
) -> tuple[str | None, str | None]:
    """Subscription mail's unsubscribe URL as a single send would carry it, and why it
    cannot be sent when ``public_url`` is missing (then a sample URL stands in, so the
    page still shows the template)."""
    stream = sender.renderer.stream(template)
    if stream not in UNSUBSCRIBE_STREAMS:
        return None, None
    token = sender.composer.unsubscribes.for_address(stream, person.email, person.participant_id)
    try:
        return sender.composer.unsubscribe_url(token), None
    except ConfigurationError as exc:
        return SAMPLE_UNSUBSCRIBE, str(exc)


def preview(
    sender: Sender, template: str, /, *, person: Participant, event: CalendarEvent | None
) -> Preview:
    """``template`` for ``person`` in the locale that best fits theirs.

    The single-link verdict is given, not raised; a message that breaks it is rendered
    but not composed, so it has no headers. Other problems (an undefined variable, bad
    participant data) raise as a send would.
    """
    renderer = sender.renderer
    locale = renderer.resolve_locale(template, person.locale)
    link = sender.get_link(person, purpose=link_purpose(template))  # as the mail's
    calendar = calendar_for(template, event) if template in CALENDAR_TEMPLATES and event else None
    context = sender.context(person, link, locale)
    if calendar is not None:
        context.update(calendar.context())
    unsubscribe, unconfigured = _unsubscribe_url(sender, template, person)
    if unsubscribe is not None:
        context["unsubscribe_url"] = unsubscribe
    rendered = renderer.render(template, locale=locale, context=context)
    problems = [
        message
        for message, _site in find_link_problems(
            rendered, link=link.url, allowed_sites=renderer.allowed_sites, unsubscribe=unsubscribe
        )
    ]
    if unconfigured is not None:
        problems.append(unconfigured)
    headers: list[tuple[str, str]] = []
    ics = None
    if not problems:
        try:
            composed = sender.compose(person, template=template, calendar=calendar)
        except SenderError as exc:
            problems.append(str(exc))
        else:
            message = _parsed(composed.message.data)
            headers = [(name, str(value)) for name, value in message.items()]
            for part in message.walk():
                if part.get_content_type() == "text/calendar":
                    ics = str(part.get_content())
                    break
    return Preview(
        template=template,
        locale=locale,
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        link=link.url,
        problems=problems,
        headers=headers,
        ics=ics,
        event=calendar.event if calendar is not None else None,
    )
