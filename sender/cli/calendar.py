"""Calendar invitations: invite, update, cancel, and the answers read back."""

from __future__ import annotations

import json
import sys
import tomllib
from collections.abc import (
    Iterable,
)
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from sender.bulk.runner import (
    RunReport,
    transport_identity,
)
from sender.cli.app import (
    Context,
    ProgressDisplay,
    err,
    errors_as_lines,
    json_mode,
    mail_files,
    main,
    out,
    pass_context,
    sending,
    store_for,
)
from sender.cli.runs import (
    describe_limits,
    finish_runs,
    run_config,
    run_options,
    run_settings,
    sending_options,
    switch_transport_option,
)
from sender.client import CalendarSend, Sender
from sender.compose.composer import CALENDAR_TEMPLATES, calendar_for
from sender.compose.event import CalendarEvent
from sender.config import CliConfig, require_real_identity
from sender.configured import resolver_for
from sender.errors import CheckUnavailable, ConfigurationError, InputError
from sender.feedback.intake import read_mail
from sender.invites import Invitations
from sender.models import Participant
from sender.participants import CsvRow, read_csv
from sender.store import Store

__all__ = [
    "CALENDAR_TEMPLATES",
    "ingest_replies",
    "invite",
    "invite_event",
    "keep_event_transport",
    "list_answers",
    "preview_calendar",
    "read_event",
    "rsvp",
    "rsvp_ingest",
    "rsvp_list",
]


def read_event(path: Path) -> CalendarEvent:
    """An EVENT.toml file; its stem names the event unless it says ``event_id``."""
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}", field="event") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid TOML: {exc}", field="event") from exc
    try:
        return CalendarEvent.from_mapping(values, default_event_id=path.stem)
    except InputError as exc:
        raise InputError(f"{path}: {exc}", field=exc.field) from exc


def preview_calendar(
    template: str, event_file: Path | None, sequence: int | None
) -> CalendarSend | None:
    """The calendar part of a ``sender render`` preview, from ``--event``."""
    kind = CALENDAR_TEMPLATES.get(template)
    if event_file is None:
        if kind is not None:
            raise InputError(f"{template} needs --event EVENT.toml", field="event")
        return None
    if kind is None:
        raise InputError(
            f"--event goes with {', '.join(CALENDAR_TEMPLATES)}, not {template}", field="event"
        )
    return calendar_for(template, read_event(event_file), sequence=sequence)


# --- calendar invitations ---------------------------------------------------------------


@main.command()
@click.argument("event_file", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("csv_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--cancel", is_flag=True, help="Send cancellations instead of invitations.")
@click.option(
    "--participant",
    "participant_ids",
    multiple=True,
    help="With --cancel: only this participant (repeatable), e.g. one who left the course.",
)
@run_options
@switch_transport_option
@pass_context
def invite(
    obj: Context,
    /,
    event_file: Path,
    csv_file: Path | None,
    cancel: bool,
    participant_ids: tuple[str, ...],
    progress: bool | None,
    switch_transport: bool,
    **options: Any,
) -> None:
    """Invite a CSV's participants to the event in EVENT.toml, as a calendar invitation.

    Run it again after editing EVENT.toml and those already invited get an update (same
    UID, higher SEQUENCE); newcomers in the CSV get an invitation. --cancel cancels the
    event for everyone invited, or only for --participant ids (or the CSV's participants).
    An event's mail goes through the transport it was last sent through; another server
    needs --switch-transport.
    """
    with errors_as_lines(obj.debug):
        config = run_config(obj, **options)
        event = read_event(event_file)
        if csv_file is not None and not csv_file.is_file():
            raise InputError(f"{csv_file} does not exist", field="csv")
        if not cancel and csv_file is None:
            raise InputError("invite needs a CSV of participants (or --cancel)", field="csv")
        if participant_ids and not cancel:
            raise InputError("--participant goes with --cancel", field="participant")
    uid, reports = obj.run(
        invite_event(
            config,
            event,
            rows=read_csv(csv_file) if csv_file is not None else None,
            cancel=cancel,
            only=participant_ids,
            progress=progress,
            switch_transport=switch_transport,
        )
    )
    code = finish_runs(obj, config, reports, extra={"event_uid": uid})
    if not json_mode():
        if not reports:
            out.print("Nothing to send: everyone in the file already has this version of it.")
        out.print(f"Event {uid}: `sender rsvp list {uid}` shows the answers.")
    sys.exit(code)


async def invite_event(
    config: CliConfig,
    event: CalendarEvent,
    *,
    rows: Iterable[CsvRow] | None,
    cancel: bool,
    only: tuple[str, ...],
    progress: bool | None,
    switch_transport: bool = False,
) -> tuple[str, list[RunReport]]:
    """(the event's UID, the runs' reports)."""
    require_real_identity(config)
    async with sending(config) as (store, sender, scheduler):
        invitations = Invitations(
            sender,
            store,
            run_settings(config, switch_transport=switch_transport),
            scheduler=scheduler,
            run_options=sending_options(config),
        )
        event = await invitations.resolve(event)
        if not switch_transport:
            await keep_event_transport(store, event.event_uid, config)
        err.print(f"event {event.event_uid}: {describe_limits(config)}")
        with ProgressDisplay(enabled=progress) as display:
            if not cancel:
                return event.event_uid, await invitations.invite(
                    event, list(rows or ()), on_progress=display.update
                )
            chosen: list[Participant | str] | None = None
            if only or rows is not None:  # ids never invited are refused, naming them
                chosen = list(only)
                chosen += [r.participant for r in rows or () if r.participant]
            cancelled = await invitations.cancel(event, chosen, on_progress=display.update)
            return event.event_uid, [cancelled]


async def keep_event_transport(store: Store, uid: str, config: CliConfig) -> None:
    """Refuse to send an event's mail through another transport than its newest run used.

    Checked before anything is stored (no SEQUENCE moves), for updates, newcomers and
    cancellations alike; ``sender invite --switch-transport`` moves the event on purpose.
    A run from before transports were kept is left to the runner's own check.
    """
    given = transport_identity(config.smtp)
    for run in await store.runs(limit=1000):  # newest first
        if run.event_uid != uid:
            continue
        stored = run.options.get("transport")
        if isinstance(stored, str) and stored != given:
            raise ConfigurationError(
                f"event {uid} was sent through {stored}, not {given}: give it that "
                "transport again, or move it on purpose with `sender invite ... "
                "--switch-transport`",
                setting="smtp_url",
            )
        return


@main.group()
def rsvp() -> None:
    """Calendar replies: read them back, and see who accepted."""


@rsvp.command("ingest")
@mail_files
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
@pass_context
def rsvp_ingest(obj: Context, paths: tuple[Path, ...], as_json: bool) -> None:
    """Record the answers in .eml files, mbox files and Maildir folders."""
    config = obj.quiet_config()
    result = obj.answer(ingest_replies(config, paths), as_json=as_json)
    if result is None:
        return
    answers = result["answers"]
    assert isinstance(answers, list)
    for answer in answers:
        line = f"{answer['source']}: {answer['attendee']} {answer['partstat']} {answer['uid']}"
        if answer["outcome"] != "recorded":
            line += f" — not counted ({answer['outcome']}: {answer['reason']})"
        out.print(line, overflow="ignore", crop=False)
    unchecked = result["unchecked"]
    assert isinstance(unchecked, list)
    for entry in unchecked:
        out.print(f"{entry['source']}: not read now: {entry['reason']}", overflow="ignore")
    out.print(
        f"{result['messages']} message(s) read, {result['recorded']} answer(s) recorded, "
        f"{result['refused']} kept but not counted, {result['repeated']} seen before"
        + (f", {len(unchecked)} to read again later" if unchecked else "")
    )


async def ingest_replies(config: CliConfig, paths: tuple[Path, ...]) -> dict[str, object]:
    store = store_for(config)
    try:
        invitations = Invitations(
            Sender(config.sender), store, resolver=resolver_for(config.dns_server)
        )
        messages = repeated = 0
        answers: list[dict[str, object]] = []
        unchecked: list[dict[str, str]] = []  # to read again: DNS did not answer
        for item in read_mail(paths):
            messages += 1
            before = len(answers)
            try:
                records = await invitations.record_reply(item.data, source=item.source)
            except CheckUnavailable as exc:
                unchecked.append({"source": item.source, "reason": str(exc)})
                continue
            for record in records:
                answers.append(
                    {
                        "source": record.source,
                        "uid": record.uid,
                        "attendee": record.attendee,
                        "partstat": record.partstat,
                        "sequence": record.sequence,
                        "comment": record.comment,
                        "outcome": record.outcome,
                        "reason": record.reason,
                        "participant_id": record.participant_id,
                    }
                )
            if len(answers) == before and await invitations.is_reply(item.data):
                repeated += 1
    finally:
        await store.aclose()
    recorded = sum(1 for answer in answers if answer["outcome"] == "recorded")
    return {
        "messages": messages,
        "recorded": recorded,
        "refused": len(answers) - recorded,
        "repeated": repeated,
        "answers": answers,
        "unchecked": unchecked,
    }


@rsvp.command("list")
@click.argument("event_uid", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable answers.")
@pass_context
def rsvp_list(obj: Context, event_uid: str | None, as_json: bool) -> None:
    """Who accepted, declined, is tentative or has not answered, per event."""
    config = obj.quiet_config()
    data = obj.answer(list_answers(config, event_uid), as_json=as_json)
    if data is None:
        return
    for event in data["events"]:
        table = Table(
            title=f"{event['summary']} ({event['uid']}), SEQUENCE {event['sequence']}"
            + (" — cancelled" if event["cancelled"] else ""),
            title_justify="left",
        )
        for column in ("participant", "name", "email", "answer", "comment"):
            table.add_column(column)
        for attendee in event["attendees"]:
            table.add_row(
                attendee["participant_id"],
                attendee["name"],
                attendee["email"],
                attendee["status"],
                attendee["comment"],
            )
        out.print(table)
        counts = ", ".join(f"{n} {status.lower()}" for status, n in event["counts"].items())
        out.print(counts or "nobody invited yet")
        if event["not_counted"]:
            refused = ", ".join(f"{n} {outcome}" for outcome, n in event["not_counted"].items())
            out.print(f"answers kept but not counted: {refused}")


async def list_answers(config: CliConfig, event_uid: str | None) -> dict[str, Any]:
    store = store_for(config)
    try:
        invitations = Invitations(Sender(config.sender), store)
        if event_uid is not None:
            record = await store.get_event(event_uid)
            if record is None:
                raise InputError(f"no event with UID {event_uid!r} was sent", field="event_uid")
            records = [record]
        else:
            records = await store.events()
        events = []
        for record in records:
            answers = await invitations.answers(record.uid)
            counts: dict[str, int] = {}
            for answer in answers:
                counts[answer.status] = counts.get(answer.status, 0) + 1
            not_counted: dict[str, int] = {}  # answers kept but counted for nobody, by outcome
            for rsvp in await store.rsvps(record.uid):
                if rsvp.outcome != "recorded":
                    not_counted[rsvp.outcome] = not_counted.get(rsvp.outcome, 0) + 1
            events.append(
                {
                    "uid": record.uid,
                    "course_id": record.course_id,
                    "summary": json.loads(record.event).get("summary", ""),
                    "sequence": record.sequence,
                    "cancelled": record.cancelled,
                    "counts": counts,
                    "not_counted": not_counted,
                    "attendees": [
                        {
                            "participant_id": answer.participant.participant_id,
                            "name": answer.participant.name,
                            "email": answer.participant.email,
                            "status": answer.status,
                            "sequence": answer.sequence,
                            "answered_sequence": answer.answered_sequence,
                            "answered_at": answer.answered_at,
                            "comment": answer.comment,
                        }
                        for answer in answers
                    ],
                }
            )
    finally:
        await store.aclose()
    return {"events": events}
