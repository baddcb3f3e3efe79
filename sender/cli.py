"""The ``sender`` command: parse, validate, call the library, print.

Commands hold no logic of their own. Every :class:`~sender.errors.SenderError`
becomes one line on stderr and a non-zero exit code; ``--debug`` shows the
traceback for anything unexpected.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import logging
import os
import signal
import sys
import time
import tomllib
from collections.abc import (
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn
from rich.progress import Progress as RichProgress
from rich.table import Table

from sender.bounces import parse_bounce
from sender.client import CalendarSend, Sender, open_sender
from sender.config import CliConfig, load_config, parse_duration
from sender.dkim import DkimKey, dns_record, generate_key
from sender.doctor import Fix, diagnose
from sender.errors import ConfigurationError, InputError, LinkError, SenderError
from sender.ical import CalendarEvent, CalendarMethod
from sender.inbound import InboundMail, InboundServer, Route
from sender.intake import read_mail
from sender.invites import Invitations, calendar_of
from sender.loop import fast_loop
from sender.mime import envelope_address
from sender.models import DeliveryResult, Participant
from sender.participants import CsvRow, read_csv
from sender.render import Renderer, lint_templates
from sender.resolve import DnsSettings, Resolver
from sender.runs import (
    BulkRunner,
    DryRun,
    Progress,
    RunReport,
    RunSettings,
    check_rows,
    run_id_for,
    run_status,
)
from sender.schedule import Scheduler
from sender.store import MessageState, RunState, SqliteStore
from sender.suppression import cleanup_report, ingest_bounce
from sender.validate import Validator

__all__ = ["main"]

T = TypeVar("T")
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_FAILED = 1  # the command ran and the answer is "no" (refused, invalid, ...)
EXIT_CONFIG = 2  # the command could not run as given (also click's usage errors)


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", markup=True)
    sys.exit(code)


@contextmanager
def errors_as_lines(debug: bool) -> Iterator[None]:
    """Turn our errors into one clear line; only --debug shows tracebacks."""
    try:
        yield
    except ConfigurationError as exc:
        fail(str(exc), EXIT_CONFIG)
    except SenderError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        fail(f"internal error ({type(exc).__name__}: {exc}); rerun with --debug for details")


class Context:
    """What the group resolved for its subcommands."""

    def __init__(self, *, config_file: Path | None, debug: bool) -> None:
        self.config_file = config_file
        self.debug = debug

    def config(self, *, quiet: bool = False, **overrides: object) -> CliConfig:
        config = load_config(config_file=self.config_file, overrides=overrides)
        if config.generated_secret is not None and not quiet:
            err.print(
                "warning: no secret key configured (SENDER_SECRET_KEYS); using the generated "
                f"key in {config.generated_secret}. Links stop verifying if that file is lost.",
                style="yellow",
            )
        return config

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        with errors_as_lines(self.debug), asyncio.Runner(loop_factory=fast_loop()) as runner:
            return runner.run(coroutine)


pass_context = click.make_pass_decorator(Context)


def duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> timedelta | None:
    if value is None:
        return None
    try:
        return parse_duration(value, setting="--ttl")
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc)) from exc


def variables(
    _ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]
) -> dict[str, str]:
    result = {}
    for item in value:
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not key=value")
        result[key.strip()] = val
    return result


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Settings file (default: ./sender.toml when present).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log each delivery to stderr.")
@click.option("--debug", is_flag=True, help="Show tracebacks for unexpected errors.")
@click.version_option(package_name="sender")
@click.pass_context
def main(ctx: click.Context, config_file: Path | None, verbose: bool, debug: bool) -> None:
    """Reach LMS participants by e-mail, with personal login links."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    ctx.obj = Context(config_file=config_file, debug=debug)


# --- links -----------------------------------------------------------------------------


@main.group()
def link() -> None:
    """Issue and verify personal login links ("Get Link")."""


@link.command("issue")
@click.option("--participant", required=True, help="The participant's id in the LMS.")
@click.option("--course", required=True, help="The course (or project) id.")
@click.option("--next", "next_path", help="Same-site path to open after login, e.g. /courses/1.")
@click.option("--ttl", callback=duration, help="Lifetime, e.g. 7d or 12h (default 14d).")
@click.option("--stamp", help="Revocation stamp, e.g. a hash of the address plus a version.")
@click.option("--purpose", default="login", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print {url, token, expires_at}.")
@pass_context
def link_issue(
    obj: Context,
    participant: str,
    course: str,
    next_path: str | None,
    ttl: timedelta | None,
    stamp: str | None,
    purpose: str,
    as_json: bool,
) -> None:
    """Print a participant's personal login URL."""
    with errors_as_lines(obj.debug):
        sender = Sender(obj.config().sender)
        issued = sender.links.issue(
            participant, course, purpose=purpose, next=next_path, ttl=ttl, stamp=stamp
        )
    if as_json:
        payload = {
            "url": issued.url,
            "token": issued.token,
            "expires_at": issued.expires_at.isoformat(),
        }
        click.echo(json.dumps(payload))
    else:
        click.echo(issued.url)


@link.command("verify")
@click.argument("url_or_token")
@click.option("--stamp", help="The participant's current revocation stamp.")
@click.option("--purpose", default="login", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the claims, or {error: KIND}.")
@pass_context
def link_verify(
    obj: Context, url_or_token: str, stamp: str | None, purpose: str, as_json: bool
) -> None:
    """Check a link; exit 0 with its claims, or 1 with expired, invalid or revoked."""
    with errors_as_lines(obj.debug):
        sender = Sender(obj.config().sender)
        try:
            claims = sender.verify_link(url_or_token, stamp=stamp, purpose=purpose)
        except LinkError as exc:
            if as_json:
                click.echo(json.dumps({"error": exc.kind, "message": str(exc)}))
            else:
                click.echo(f"{exc.kind}: {exc}")
            sys.exit(EXIT_FAILED)
    data = {
        "participant_id": claims.participant_id,
        "course_id": claims.course_id,
        "purpose": claims.purpose,
        "next": claims.next,
        "issued_at": claims.issued_at.isoformat(),
        "expires_at": claims.expires_at.isoformat(),
    }
    if as_json:
        click.echo(json.dumps(data))
    else:
        for key, value in data.items():
            click.echo(f"{key}: {'' if value is None else value}")


# --- render ----------------------------------------------------------------------------

SAMPLE = {
    "to": "kari.nordmann@example.com",
    "name": "Kari Nordmann",
    "participant": "p-0001",
    "course": "PY101",
}


@main.command()
@click.argument("template")
@click.option("--locale", default="en", show_default=True)
@click.option("--var", "extra", multiple=True, callback=variables, help="key=value (repeatable).")
@click.option("--to", "to", help=f"Recipient (default {SAMPLE['to']}).")
@click.option("--name", help=f"Recipient's name (default {SAMPLE['name']}).")
@click.option("--participant", help="Participant id for the link (default p-0001).")
@click.option("--course", help="Course id for the link (default PY101).")
@click.option("--templates", "template_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the .eml here.")
@click.option(
    "--event",
    "event_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="EVENT.toml: for invite, invite_update and invite_cancel (adds the calendar).",
)
@click.option("--sequence", type=click.IntRange(0), help="The calendar SEQUENCE (default 0/1).")
@pass_context
def render(
    obj: Context,
    template: str,
    locale: str,
    extra: dict[str, str],
    to: str | None,
    name: str | None,
    participant: str | None,
    course: str | None,
    template_dir: Path | None,
    out: Path | None,
    event_file: Path | None,
    sequence: int | None,
) -> None:
    """Write a complete message without sending it; sample values fill the gaps."""
    with errors_as_lines(obj.debug):
        config = obj.config(templates=str(template_dir) if template_dir else None)
        calendar = preview_calendar(template, event_file, sequence)
        composed = Sender(config.sender).compose(
            Participant(
                email=to or SAMPLE["to"],
                name=name or SAMPLE["name"],
                participant_id=participant or SAMPLE["participant"],
                course_id=course or SAMPLE["course"],
                locale=locale,
                vars=extra,
            ),
            template=template,
            calendar=calendar,
        )
        if out is None:
            sys.stdout.buffer.write(composed.message.data)
            return
        out.write_bytes(composed.message.data)
    err.print(
        f"wrote {out} ({len(composed.message.data)} bytes, {composed.rendered.template}/"
        f"{composed.rendered.locale}): {composed.rendered.subject}"
    )


CALENDAR_TEMPLATES = {
    "invite": (CalendarMethod.REQUEST, ()),
    "invite_update": (CalendarMethod.REQUEST, ("time",)),
    "invite_cancel": (CalendarMethod.CANCEL, ()),
}


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
    method, changes = kind
    default = 0 if template == "invite" else 1
    return CalendarSend(
        read_event(event_file), method, default if sequence is None else sequence, changes
    )


@main.group()
def templates() -> None:
    """Work with template sets."""


@templates.command("lint")
@click.option("--templates", "template_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--var", "extra", multiple=True, callback=variables, help="Sample key=value.")
@pass_context
def templates_lint(obj: Context, template_dir: Path | None, extra: dict[str, str]) -> None:
    """Check every template in every locale: variables and the single-link rule."""
    with errors_as_lines(obj.debug):
        renderer = Renderer(template_dirs=[template_dir] if template_dir else [])
        findings = lint_templates(renderer, extra=extra)
        names = renderer.names()
    for finding in findings:
        click.echo(str(finding))
    if findings:
        fail(f"{len(findings)} problem(s) in {len(names)} template set(s)")
    click.echo(f"ok: {len(names)} template set(s) pass")


# --- send and run ----------------------------------------------------------------------

dns_option = click.option(
    "--dns-server", help="HOST:PORT of the nameserver for address checks (default: the system's)."
)

smtp_option = click.option(
    "--smtp", "smtp_url", help="smtp://, smtp+starttls:// or smtps:// URL (default: embedded)."
)
maildir_option = click.option(
    "--maildir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the embedded capture server stores mail (default .sender/maildir).",
)


def describe(result: DeliveryResult) -> str:
    return f"{result.status.value}: {result.describe()}"


@main.command()
@click.option("--to", "to", required=True, help="The participant's address.")
@click.option("--name", required=True)
@click.option("--participant", required=True, help="The participant's id in the LMS.")
@click.option("--course", required=True)
@click.option("--template", default="invitation", show_default=True)
@click.option("--locale", default="en", show_default=True)
@click.option("--next", "next_path", help="Same-site path to open after login.")
@click.option("--var", "extra", multiple=True, callback=variables, help="key=value (repeatable).")
@smtp_option
@maildir_option
@pass_context
def send(
    obj: Context,
    to: str,
    name: str,
    participant: str,
    course: str,
    template: str,
    locale: str,
    next_path: str | None,
    extra: dict[str, str],
    smtp_url: str | None,
    maildir: Path | None,
) -> None:
    """Send one message to one participant now."""
    with errors_as_lines(obj.debug):
        config = obj.config(smtp_url=smtp_url, maildir=str(maildir) if maildir else None)
    person = Participant(to, name, participant, course, locale, extra)

    async def go() -> DeliveryResult:
        async with open_sender(config.sender, smtp=config.smtp, maildir=config.maildir) as s:
            return await s.send(person, template=template, next=next_path)

    result = obj.run(go())
    click.echo(f"{describe(result)} (message {result.message_id})")
    if config.smtp is None:
        click.echo(f"stored in {config.maildir}")
    if not result.ok:
        sys.exit(EXIT_FAILED)


# --- bulk runs -------------------------------------------------------------------------


def run_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """The sending options shared by run, resume and retry."""
    for option in reversed(
        [
            smtp_option,
            maildir_option,
            click.option("--rate", type=float, help="Global messages per second (0: no limit)."),
            click.option(
                "--domain-rate", help="Default limit per recipient domain, e.g. 30/min (0: none)."
            ),
            click.option("--concurrency", type=click.IntRange(1, 64), help="Connections in use."),
            click.option(
                "--workers",
                type=click.IntRange(1, 64),
                help="Processes that compose and send (default 1; at most --concurrency).",
            ),
            click.option(
                "--validate/--no-validate",
                default=None,
                help="Check addresses (syntax, DNS) before queueing (default: on with --smtp).",
            ),
            dns_option,
            click.option(
                "--progress/--no-progress",
                default=None,
                help="Progress bar on a terminal, plain lines otherwise; --no-progress: quiet.",
            ),
        ]
    ):
        function = option(function)
    return function


def run_config(
    obj: Context,
    *,
    smtp_url: str | None,
    maildir: Path | None,
    rate: float | None,
    domain_rate: str | None,
    concurrency: int | None,
    workers: int | None,
    validate: bool | None = None,
    dns_server: str | None = None,
) -> CliConfig:
    return obj.config(
        validate=validate,
        dns_server=dns_server,
        smtp_url=smtp_url,
        maildir=str(maildir) if maildir else None,
        rate=rate,
        domain_rate=domain_rate,
        concurrency=concurrency,
        workers=workers,
    )


@main.command()
@click.argument("csv_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--template", default="invitation", show_default=True)
@click.option("--run-id", help="Name the run (default: from the file's contents and template).")
@click.option("--dry-run", is_flag=True, help="Render and check every row; send nothing.")
@run_options
@pass_context
def run(
    obj: Context,
    /,
    csv_file: Path,
    template: str,
    run_id: str | None,
    dry_run: bool,
    progress: bool | None,
    **options: Any,
) -> None:
    """Send one message to each participant in a CSV, durably.

    Columns: email,name,participant_id,course_id[,locale] plus any extra
    columns, which become template variables. Running the same file again (or
    `sender resume RUN_ID`) continues where it stopped and never sends twice.
    """
    with errors_as_lines(obj.debug):
        config = run_config(obj, **options)
        if not csv_file.is_file():
            raise InputError(f"{csv_file} does not exist", field="csv")
        if dry_run:
            dry = check_rows_of(config, csv_file, template=template)
            print_dry_run(dry, csv_file)
            sys.exit(EXIT_FAILED if dry.skipped and not dry.ok else 0)
        run_id = run_id or run_id_for(csv_file, template)
    report = obj.run(
        bulk(
            config,
            run_id,
            template=template,
            rows=read_csv(csv_file),
            source=str(csv_file.resolve()),
            progress=progress,
        )
    )
    obj.run(print_run_report(config, report))
    if report.counts.get(MessageState.SENT, 0) == 0 and report.total:
        sys.exit(EXIT_FAILED)


@main.command()
@click.argument("run_id")
@click.option(
    "--force", is_flag=True, help="Send even though the bounce budget is spent (after clean-up)."
)
@run_options
@pass_context
def resume(
    obj: Context, /, run_id: str, force: bool, progress: bool | None, **options: Any
) -> None:
    """Continue a run that was interrupted, crashed, paused, or has retries due.

    It sends with the limits the run was started with, unless flags say otherwise. A run
    the bounce budget paused stays paused while the budget is still spent, unless --force.
    """
    with errors_as_lines(obj.debug):
        config = resume_config(obj, run_id, options)
    report = obj.run(resume_run(config, run_id, progress=progress, force=force))
    obj.run(print_run_report(config, report))


@main.command()
@click.argument("run_id")
@run_options
@pass_context
def retry(obj: Context, /, run_id: str, progress: bool | None, **options: Any) -> None:
    """Send again to the run's failed and not-yet-sent recipients; never to those sent."""
    with errors_as_lines(obj.debug):
        config = resume_config(obj, run_id, options)
    report = obj.run(resume_run(config, run_id, progress=progress, reset_failed=True))
    obj.run(print_run_report(config, report))


@main.command()
@click.argument("run_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable status.")
@pass_context
def status(obj: Context, run_id: str | None, as_json: bool) -> None:
    """Counts per state, progress per domain, next retry, and why a run is paused."""
    with errors_as_lines(obj.debug):
        config = obj.config(quiet=True)
    data = obj.run(run_status_of(config, run_id))
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False))
        return
    print_status(data)


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
@pass_context
def invite(
    obj: Context,
    /,
    event_file: Path,
    csv_file: Path | None,
    cancel: bool,
    participant_ids: tuple[str, ...],
    progress: bool | None,
    **options: Any,
) -> None:
    """Invite a CSV's participants to the event in EVENT.toml, as a calendar invitation.

    Run it again after editing EVENT.toml and those already invited get an update (same
    UID, higher SEQUENCE); newcomers in the CSV get an invitation. --cancel cancels the
    event for everyone invited, or only for --participant ids (or the CSV's participants).
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
    reports = obj.run(
        invite_event(
            config,
            event,
            rows=read_csv(csv_file) if csv_file is not None else None,
            cancel=cancel,
            only=participant_ids,
            progress=progress,
        )
    )
    for report in reports:
        obj.run(print_run_report(config, report))
    if not reports:
        out.print("Nothing to send: everyone in the file already has this version of the event.")
    out.print(f"Event {event.event_uid}: `sender rsvp list {event.event_uid}` shows the answers.")


async def invite_event(
    config: CliConfig,
    event: CalendarEvent,
    *,
    rows: Iterable[CsvRow] | None,
    cancel: bool,
    only: tuple[str, ...],
    progress: bool | None,
) -> list[RunReport]:
    store = store_for(config)
    try:
        scheduler = Scheduler(config.limits)
        async with open_sender(
            config.sender, smtp=config.smtp, maildir=config.maildir, scheduler=scheduler
        ) as sender:
            invitations = Invitations(
                sender,
                store,
                RunSettings(
                    concurrency=config.concurrency,
                    retry=config.retry,
                    workers=config.workers,
                    bounces=config.bounces,
                ),
                scheduler=scheduler,
                run_options=sending_options(config),
            )
            err.print(f"event {event.event_uid}: {describe_limits(config)}")
            with ProgressDisplay(enabled=progress) as display:
                if not cancel:
                    return await invitations.invite(
                        event, list(rows or ()), on_progress=display.update
                    )
                chosen: list[Participant] | None = None
                if only or rows is not None:
                    wanted = set(only)
                    wanted.update(r.participant.participant_id for r in rows or () if r.participant)
                    chosen = [
                        answer.participant
                        for answer in await invitations.answers(event.event_uid)
                        if answer.participant.participant_id in wanted
                    ]
                return [await invitations.cancel(event, chosen, on_progress=display.update)]
    finally:
        await store.aclose()


@main.group()
def rsvp() -> None:
    """Calendar replies: read them back, and see who accepted."""


@rsvp.command("ingest")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
@pass_context
def rsvp_ingest(obj: Context, paths: tuple[Path, ...], as_json: bool) -> None:
    """Record the answers in .eml files, mbox files and Maildir folders."""
    with errors_as_lines(obj.debug):
        config = obj.config(quiet=True)
    result = obj.run(ingest_replies(config, paths))
    if as_json:
        click.echo(json.dumps(result, ensure_ascii=False))
        return
    answers = result["answers"]
    assert isinstance(answers, list)
    for answer in answers:
        line = f"{answer['source']}: {answer['attendee']} {answer['partstat']} {answer['uid']}"
        if answer["outcome"] != "recorded":
            line += f" — not counted ({answer['outcome']}: {answer['reason']})"
        out.print(line, overflow="ignore", crop=False)
    out.print(
        f"{result['messages']} message(s) read, {result['recorded']} answer(s) recorded, "
        f"{result['refused']} kept but not counted, {result['repeated']} seen before"
    )


async def ingest_replies(config: CliConfig, paths: tuple[Path, ...]) -> dict[str, object]:
    store = store_for(config)
    try:
        invitations = Invitations(Sender(config.sender), store)
        messages = repeated = 0
        answers: list[dict[str, object]] = []
        for item in read_mail(paths):
            messages += 1
            before = len(answers)
            for record in await invitations.record_reply(item.data, source=item.source):
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
    }


@rsvp.command("list")
@click.argument("event_uid", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable answers.")
@pass_context
def rsvp_list(obj: Context, event_uid: str | None, as_json: bool) -> None:
    """Who accepted, declined, is tentative or has not answered, per event."""
    with errors_as_lines(obj.debug):
        config = obj.config(quiet=True)
    data = obj.run(list_answers(config, event_uid))
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False))
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
            events.append(
                {
                    "uid": record.uid,
                    "course_id": record.course_id,
                    "summary": json.loads(record.event).get("summary", ""),
                    "sequence": record.sequence,
                    "cancelled": record.cancelled,
                    "counts": counts,
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


# --- bounces and the inbound listener ---------------------------------------------------


@main.group()
def bounces() -> None:
    """Bounces: parse them, record them, and report what to clean up."""


@bounces.command("parse")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="{path: [findings]} as JSON.")
@pass_context
def bounces_parse(obj: Context, files: tuple[Path, ...], as_json: bool) -> None:
    """Classify the bounces in FILES without recording anything."""
    result: dict[str, list[dict[str, str | None]]] = {}
    with errors_as_lines(obj.debug):
        for path in files:
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise InputError(f"cannot read {path}: {exc.strerror}", field="path") from exc
            result[str(path)] = [
                {
                    "recipient": finding.recipient,
                    "kind": finding.kind.value,
                    "status": finding.status,
                    "diagnostic": finding.diagnostic,
                }
                for finding in parse_bounce(data)
            ]
    if as_json:
        click.echo(json.dumps(result, ensure_ascii=False))
        return
    for path_text, findings in result.items():
        if not findings:
            out.print(f"{path_text}: no bounce")
        for finding in findings:
            out.print(
                f"{path_text}: {finding['recipient'] or '(no address)'} {finding['kind']}"
                f" {finding['status'] or '-'} {finding['diagnostic']}",
                overflow="ignore",
                crop=False,
            )


@bounces.command("ingest")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
@pass_context
def bounces_ingest(obj: Context, paths: tuple[Path, ...], as_json: bool) -> None:
    """Record the bounces in .eml files, mbox files and Maildir folders; suppress by the rules."""
    with errors_as_lines(obj.debug):
        config = obj.config(quiet=True)
    result = obj.run(ingest_bounce_files(config, paths))
    if as_json:
        click.echo(json.dumps(result, ensure_ascii=False))
        return
    for line in result["suppressed"]:
        out.print(f"suppressed {line['address']}: {line['why']}")
    out.print(
        f"{result['messages']} message(s) read, {result['findings']} finding(s) recorded, "
        f"{result['forged']} forged, {len(result['suppressed'])} address(es) suppressed"
    )


async def ingest_bounce_files(config: CliConfig, paths: tuple[Path, ...]) -> dict[str, Any]:
    store = store_for(config)
    sender = Sender(config.sender)
    messages = findings = forged = 0
    suppressed: list[dict[str, str]] = []
    try:
        for item in read_mail(paths):
            messages += 1
            for outcome in await ingest_bounce(
                store,
                item.data,
                return_paths=sender.return_paths,
                policy=config.bounces,
                now=time.time(),
                source=item.source,
            ):
                findings += 1
                forged += outcome.record.forged
                if outcome.suppressed and outcome.record.address:
                    suppressed.append(
                        {"address": outcome.record.address, "why": outcome.suppressed}
                    )
    finally:
        await store.aclose()
    return {"messages": messages, "findings": findings, "forged": forged, "suppressed": suppressed}


@bounces.command("report")
@click.option("--since", "since_text", default="7d", show_default=True, help="e.g. 24h, 7d, 30d.")
@click.option(
    "--csv", "csv_out", type=click.Path(dir_okay=False, path_type=Path), help="Write CSV."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@pass_context
def bounces_report(obj: Context, since_text: str, csv_out: Path | None, as_json: bool) -> None:
    """One row per affected participant: what bounced, what to do, and a fresh Get Link."""
    with errors_as_lines(obj.debug):
        config = obj.config(quiet=True)
        since = time.time() - parse_duration(since_text, setting="--since").total_seconds()
    rows = obj.run(with_store(config, lambda store: cleanup_report(store, since=since)))
    sender = Sender(config.sender)
    table = [
        {
            "participant_id": row.participant.participant_id if row.participant else "",
            "name": row.participant.name if row.participant else "",
            "email": row.address,
            "kind": row.kind,
            "status": row.status or "",
            "diagnostic": row.diagnostic,
            "count": row.count,
            "last_bounce": datetime.fromtimestamp(row.last_at, UTC).isoformat(),
            "suppressed": row.suppressed,
            "action": row.action,
            "rule": row.rule,
            "get_link": sender.get_link(row.participant).url if row.participant else "",
        }
        for row in rows
    ]
    if csv_out is not None:
        with errors_as_lines(obj.debug):
            write_csv_rows(csv_out, REPORT_FIELDS, table)
        err.print(f"wrote {csv_out} ({len(table)} row(s))")
    if as_json:
        click.echo(json.dumps(table, ensure_ascii=False))
        return
    if csv_out is None:
        for entry in table:
            who = f"{entry['name']} ({entry['participant_id']})" if entry["name"] else "unknown"
            out.print(
                f"{entry['email']}  {who}  {entry['kind']} {entry['status']} x{entry['count']}"
                f"  -> {entry['action']} ({entry['rule']})",
                overflow="ignore",
                crop=False,
            )
        out.print(f"{len(table)} affected address(es)")


REPORT_FIELDS = (
    "participant_id",
    "name",
    "email",
    "kind",
    "status",
    "diagnostic",
    "count",
    "last_bounce",
    "suppressed",
    "action",
    "rule",
    "get_link",
)


def write_csv_rows(path: Path, fields: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """A CSV with a header row; a path that cannot be written is one clear error."""
    try:
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(fields))
            writer.writeheader()
            writer.writerows(rows)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror}", field="csv") from exc


@main.command()
@click.option("--listen", default="127.0.0.1:2525", show_default=True, help="HOST:PORT.")
@click.option("--reply-address", "reply_addresses", multiple=True, help="Calendar-reply address.")
@pass_context
def inbound(obj: Context, listen: str, reply_addresses: tuple[str, ...]) -> None:
    """Receive bounces (the bounce domain) and calendar replies by SMTP, until Ctrl-C.

    Mail for any other domain is refused as relaying. Replies go to the RSVP reader;
    what cannot be handled is kept raw in .sender/inbound/unprocessed.
    """
    with errors_as_lines(obj.debug):
        config = obj.config(quiet=True)
        host, _, port_text = listen.rpartition(":")
        if not host or not port_text.isdigit():
            raise InputError(f"--listen wants HOST:PORT, not {listen!r}", field="listen")
    obj.run(serve_inbound(config, host, int(port_text), reply_addresses))


async def serve_inbound(
    config: CliConfig, host: str, port: int, reply_addresses: tuple[str, ...]
) -> None:
    store = store_for(config)
    sender = Sender(config.sender)
    invitations = Invitations(sender, store)
    organizers = {
        json.loads(event.event).get("organizer_email", "") for event in await store.events()
    }
    replies = sorted({a.lower() for a in (*reply_addresses, *organizers) if a})

    async def on_mail(mail: InboundMail) -> None:
        if mail.route is Route.BOUNCE:
            outcomes = await ingest_bounce(
                store,
                mail.data,
                return_paths=sender.return_paths,
                policy=config.bounces,
                now=time.time(),
                envelope_to=mail.recipient,
                source="inbound",
            )
            if not outcomes:
                raise InputError("no bounce found in a message to the bounce domain")
            return
        if not await invitations.record_reply(mail.data, source="inbound"):
            raise InputError("no calendar reply found in a message to the reply address")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        async with InboundServer(
            bounce_domain=config.sender.bounce_domain,
            reply_addresses=replies,
            on_mail=on_mail,
            keep_dir=config.state_dir / "inbound",
            host=host,
            port=port,
        ) as server:
            err.print(
                f"listening on {server.host}:{server.port} for "
                f"{config.sender.bounce_domain or 'no bounce domain'}"
                f" and {', '.join(replies) or 'no reply address'}; Ctrl-C stops"
            )
            await stop.wait()
    finally:
        await store.aclose()


# --- checks before sending: addresses, the sender domain, DKIM keys -----------------------


def resolver_for(dns_server: str | None) -> Resolver:
    return Resolver(DnsSettings.from_text(dns_server) if dns_server else DnsSettings())


def preflight(config: CliConfig) -> bool:
    """Check addresses before queueing: on when mail really leaves (an SMTP URL), unless told.

    The embedded capture server delivers nothing, so there are no bounces to avoid.
    """
    return config.validate if config.validate is not None else config.smtp is not None


def validator_for(config: CliConfig) -> Validator:
    """Pre-flight checks for a run: syntax and DNS; suppression stays the engine's."""
    return Validator(resolver_for(config.dns_server))


@main.command()
@click.argument("csv_file", type=click.Path(dir_okay=False, path_type=Path))
@dns_option
@click.option("--json", "as_json", is_flag=True, help="{summary, rows} as JSON.")
@click.option(
    "--csv", "csv_out", type=click.Path(dir_okay=False, path_type=Path), help="Write a CSV."
)
@pass_context
def validate(
    obj: Context, csv_file: Path, dns_server: str | None, as_json: bool, csv_out: Path | None
) -> None:
    """A verdict per row: ok, invalid, risky or unknown, with the reason and a suggestion.

    Exits 1 when any row is invalid. Addresses on the suppression list, or with hard
    bounces on record, are flagged too.
    """
    with errors_as_lines(obj.debug):
        config = obj.config(quiet=True, dns_server=dns_server)
        if not csv_file.is_file():
            raise InputError(f"{csv_file} does not exist", field="csv")
        rows = list(read_csv(csv_file))
    summary = obj.run(validate_rows(config, rows, progress=not as_json))
    listed = [
        {
            "row": row,
            "email": check.email,
            "verdict": check.verdict.value,
            "reason": check.reason,
            "suggestion": check.suggestion,
        }
        for row, check in summary.checks
    ]
    unreadable = [
        {
            "row": r.row,
            "email": "",
            "verdict": "invalid",
            "reason": str(r.error),
            "suggestion": None,
        }
        for r in rows
        if r.email is None
    ]
    listed = sorted(listed + unreadable, key=lambda item: int(str(item["row"])))
    counts = {verdict.value: n for verdict, n in summary.counts.items()}
    counts["invalid"] = counts.get("invalid", 0) + len(unreadable)
    if csv_out is not None:
        with errors_as_lines(obj.debug):
            write_csv_rows(csv_out, ["row", "email", "verdict", "reason", "suggestion"], listed)
    if as_json:
        click.echo(json.dumps({"summary": counts, "rows": listed}, ensure_ascii=False))
    else:
        for item in listed:
            if item["verdict"] != "ok":
                hint = f" — did you mean {item['suggestion']}?" if item["suggestion"] else ""
                out.print(
                    f"row {item['row']} ({item['email'] or 'no address'}): {item['verdict']}: "
                    f"{item['reason']}{hint}",
                    overflow="ignore",
                    crop=False,
                )
        out.print(", ".join(f"{n} {verdict}" for verdict, n in counts.items()))
    if counts.get("invalid"):
        sys.exit(EXIT_FAILED)


async def validate_rows(config: CliConfig, rows: list[CsvRow], *, progress: bool) -> Any:
    store = store_for(config)
    try:
        validator = Validator(resolver_for(config.dns_server), store=store)
        total = sum(1 for row in rows if row.email is not None)
        with count_bar("checking addresses", total, enabled=progress) as advance:
            return await validator.check_rows(rows, on_progress=advance)
    finally:
        await store.aclose()


@main.command()
@click.argument("domain")
@dns_option
@click.option("--spf-include", default="amazonses.com", show_default=True)
@click.option("--dkim-selector", help="Check the DKIM key published under this selector.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@pass_context
def doctor(
    obj: Context,
    domain: str,
    dns_server: str | None,
    spf_include: str,
    dkim_selector: str | None,
    as_json: bool,
) -> None:
    """Check a sender domain's SPF, DKIM, DMARC and MX, and print the records to fix it.

    Exits 1 when anything fails (or DNS did not answer).
    """
    with errors_as_lines(obj.debug):
        config = obj.config(quiet=True, dns_server=dns_server)
        settings = config.sender
        own_key = settings.dkim_private_key if settings.dkim_selector == dkim_selector else None
        report = obj.run(
            diagnose(
                domain,
                resolver=resolver_for(config.dns_server),
                spf_include=spf_include,
                dkim_selector=dkim_selector or settings.dkim_selector,
                dkim_private_key=own_key or settings.dkim_private_key,
                bounce_domain=settings.bounce_domain,
                reply_domain=settings.reply_to.domain if settings.reply_to else None,
            )
        )
    if as_json:
        click.echo(json.dumps(report.to_json(), ensure_ascii=False))
    else:
        for check in report.checks:
            mark = "ok  " if check.ok else ("??  " if check.unknown else "FAIL")
            out.print(f"{mark} {check.name}: {check.message}", overflow="ignore", crop=False)
            print_fixes(check.fixes)
    if not report.ok:
        sys.exit(EXIT_FAILED)


def print_fixes(fixes: Iterable[Fix]) -> None:
    for fix in fixes:
        out.print(f"       BIND:    {fix.bind()}", overflow="ignore", crop=False)
        console = fix.console()
        out.print(
            f"       console: host {console['host']}  type {console['type']}  "
            f"value {console['value']}",
            overflow="ignore",
            crop=False,
        )


@main.group()
def dkim() -> None:
    """DKIM keys for signing outgoing mail."""


@dkim.command("keygen")
@click.option("--domain", required=True, help="The signing domain (d=), e.g. learning.example.com.")
@click.option("--selector", required=True, help="The selector (s=), e.g. s2027.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--bits", type=click.IntRange(1024, 4096), default=2048, show_default=True)
@pass_context
def dkim_keygen(obj: Context, domain: str, selector: str, out_file: Path | None, bits: int) -> None:
    """Write a new private key (mode 0600) and print its DNS record in BIND and console forms."""
    with errors_as_lines(obj.debug):
        path = out_file or Path(f"dkim-{selector}.pem")
        pem = generate_key(bits=bits)
        name, value = dns_record(DkimKey(domain, selector, pem))
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError as exc:
            raise InputError(f"{path} exists; keys are never overwritten", field="out") from exc
        except OSError as exc:
            raise InputError(f"cannot write {path}: {exc.strerror}", field="out") from exc
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(pem)
    err.print(f"wrote {path} (keep it secret); publish this record, then set in sender.toml:")
    err.print(f'  dkim_domain = "{domain}"  dkim_selector = "{selector}"  dkim_key = "{path}"')
    print_fixes([Fix(name, "TXT", value, origin=domain.rstrip(".").lower() + ".")])


# --- suppression ---------------------------------------------------------------------


@main.group()
def suppress() -> None:
    """The suppression list: addresses sender never writes to."""


@suppress.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable list.")
@pass_context
def suppress_list(obj: Context, as_json: bool) -> None:
    """Every suppressed address, with why and since when."""
    with errors_as_lines(obj.debug):
        config = obj.config(quiet=True)
    entries = obj.run(with_store(config, lambda store: store.suppressions()))
    if as_json:
        rows = [
            {"address": e.address, "kind": e.kind, "reason": e.reason, "since": e.since}
            for e in entries
        ]
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    for entry in entries:
        out.print(f"{entry.address}  {entry.kind}  since {when(entry.since)}  {entry.reason}")
    out.print(f"{len(entries)} suppressed address(es)")


@suppress.command("add")
@click.argument("address")
@click.option("--reason", default="added by hand", show_default=True)
@pass_context
def suppress_add(obj: Context, address: str, reason: str) -> None:
    """Never write to ADDRESS again (until it is removed)."""
    with errors_as_lines(obj.debug):
        config = obj.config(quiet=True)
        check_address(address)
    added = obj.run(
        with_store(
            config,
            lambda store: store.suppress(address, kind="manual", reason=reason, now=time.time()),
        )
    )
    out.print(f"{address}: {'suppressed' if added else 'was suppressed already'}")


@suppress.command("remove")
@click.argument("address")
@click.option("--reason", required=True, help="Why it may be written to again (logged).")
@pass_context
def suppress_remove(obj: Context, address: str, reason: str) -> None:
    """Take ADDRESS off the list; the reason is logged with the time."""
    with errors_as_lines(obj.debug):
        config = obj.config(quiet=True)
        if not reason.strip():
            raise InputError("removing an address needs a reason", field="reason")
    removed = obj.run(
        with_store(config, lambda store: store.unsuppress(address, reason=reason, now=time.time()))
    )
    if not removed:
        fail(f"{address} is not on the suppression list")
    out.print(f"{address}: removed from the suppression list ({reason})")


def check_address(address: str) -> None:
    envelope_address(address, field="address")


async def with_store(config: CliConfig, action: Callable[[SqliteStore], Awaitable[T]]) -> T:
    store = store_for(config)
    try:
        return await action(store)
    finally:
        await store.aclose()


# --- bulk glue: open the store and sender, run, print ---------------------------------


def store_for(config: CliConfig) -> SqliteStore:
    return SqliteStore(config.state_dir / "outbox.sqlite3")


async def bulk(
    config: CliConfig,
    run_id: str,
    *,
    template: str,
    rows: Iterable[CsvRow] | None,
    source: str,
    progress: bool | None,
    reset_failed: bool = False,
    calendar: CalendarSend | None = None,
    force: bool = False,
) -> RunReport:
    err.print(f"{run_id}: {describe_limits(config)}")
    store = store_for(config)
    try:
        if reset_failed:
            count = await store.reset_failed(run_id, now=time.time())
            err.print(f"{count} failed or deferred message(s) queued again")
        scheduler = Scheduler(config.limits)
        async with open_sender(
            config.sender, smtp=config.smtp, maildir=config.maildir, scheduler=scheduler
        ) as sender:
            runner = BulkRunner(
                sender,
                store,
                RunSettings(
                    template=template,
                    concurrency=config.concurrency,
                    retry=config.retry,
                    workers=config.workers,
                    calendar=calendar,
                    force=force,
                    bounces=config.bounces,
                ),
                validator=validator_for(config) if preflight(config) else None,
            )
            loop = asyncio.get_running_loop()
            with contextlib.suppress(
                NotImplementedError, RuntimeError, ValueError
            ):  # not main thread
                loop.add_signal_handler(signal.SIGINT, runner.stop)
                loop.add_signal_handler(signal.SIGTERM, runner.stop)
            with ProgressDisplay(enabled=progress) as display:
                return await runner.run(
                    run_id,
                    rows,
                    source=source,
                    options=sending_options(config),
                    on_progress=display.update,
                )
    finally:
        await store.aclose()


def describe_limits(config: CliConfig) -> str:
    per_second = config.limits.global_per_second
    per_minute = config.limits.domain_per_minute
    overall = f"at most {per_second:g} msgs/s" if per_second else "no overall rate limit"
    domain = f"{per_minute:g}/min per domain" if per_minute else "no per-domain limit"
    processes = f" in {config.workers} worker processes" if config.workers > 1 else ""
    return f"sending {overall}, {domain}, {config.concurrency} at a time{processes}"


def sending_options(config: CliConfig) -> dict[str, str | float | int | None]:
    """The limits a run was started with, stored with it so a resume sends the same way."""
    per_second = config.limits.global_per_second
    per_minute = config.limits.domain_per_minute
    return {
        "rate": per_second if per_second is not None else 0,
        "domain_rate": f"{per_minute}/min" if per_minute is not None else "0",
        "concurrency": config.concurrency,
        "workers": config.workers,
    }


def resume_config(obj: Context, run_id: str, flags: dict[str, Any]) -> CliConfig:
    """Flags given now win; otherwise the run's own stored limits; then sender.toml."""
    base = run_config(obj, **flags)
    store = store_for(base)
    try:
        info = obj.run(store.get_run(run_id))
    finally:
        store.close()
    if info is None:
        raise InputError(f"no run named {run_id!r}; see `sender status`", field="run_id")
    keys = ("rate", "domain_rate", "concurrency", "workers")
    stored = {key: info.options.get(key) for key in keys}
    merged = {key: flags.get(key) if flags.get(key) is not None else stored[key] for key in stored}
    return run_config(obj, **(flags | merged))


async def resume_run(
    config: CliConfig,
    run_id: str,
    *,
    progress: bool | None,
    reset_failed: bool = False,
    force: bool = False,
) -> RunReport:
    store = store_for(config)
    try:
        run_info = await store.get_run(run_id)
    finally:
        await store.aclose()
    if run_info is None:
        raise InputError(f"no run named {run_id!r}; see `sender status`", field="run_id")
    rows: Iterable[CsvRow] | None = None
    if not run_info.ingest_complete and run_info.event_uid is None:
        source = Path(run_info.source)
        if not await asyncio.to_thread(source.is_file):
            raise InputError(
                f"run {run_id} was not fully read from {source}, which is gone", field="csv"
            )
        rows = read_csv(source)
    return await bulk(
        config,
        run_id,
        template=run_info.template,
        rows=rows,
        source=run_info.source,
        progress=progress,
        reset_failed=reset_failed,
        calendar=calendar_of(run_info),
        force=force,
    )


async def run_status_of(config: CliConfig, run_id: str | None) -> dict[str, object]:
    store = store_for(config)
    try:
        return await run_status(store, run_id, now=time.time())
    finally:
        await store.aclose()


class ProgressDisplay:
    """A rich progress bar on a terminal; plain lines every few seconds otherwise."""

    def __init__(self, *, enabled: bool | None) -> None:
        """``None``: a bar on a terminal, plain lines otherwise; ``False``: silent."""
        self._tty = err.is_terminal if enabled is None else enabled
        self._silent = enabled is False
        self._bar: RichProgress | None = None
        self._task: TaskID | None = None
        self._last_line = 0.0

    def __enter__(self) -> ProgressDisplay:
        if self._tty:
            self._bar = RichProgress(
                TextColumn("[bold]{task.fields[run]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[states]}"),
                TextColumn("{task.fields[rate]}"),
                TextColumn("ETA {task.fields[eta]}"),
                console=err,
                transient=False,
            )
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)

    def update(self, progress: Progress) -> None:
        if self._silent:
            return
        counts = progress.counts
        states = " ".join(
            f"{state.value} {counts.get(state, 0)}"
            for state in (
                MessageState.SENT,
                MessageState.DEFERRED,
                MessageState.FAILED,
                MessageState.SKIPPED,
                MessageState.SUPPRESSED,
            )
            if counts.get(state, 0) or state is MessageState.SENT
        )
        eta = "-" if progress.eta is None else f"{progress.eta:.0f}s"
        rate = f"{progress.rate:.0f}/s"
        if self._bar is not None:
            if self._task is None:
                self._task = self._bar.add_task(
                    "send",
                    total=progress.total,
                    run=progress.run_id,
                    states="",
                    rate="",
                    eta="",
                )
            self._bar.update(
                self._task,
                completed=progress.done,
                total=progress.total,
                states=states,
                rate=rate,
                eta=eta,
            )
            return
        moment = time.monotonic()
        if moment - self._last_line >= 2.0 or progress.done == progress.total:
            self._last_line = moment
            err.print(
                f"{progress.run_id}: {progress.done}/{progress.total} {states} {rate} ETA {eta}"
            )


@contextmanager
def count_bar(label: str, total: int, *, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A bar counting up to ``total`` on a terminal; nothing when output is redirected."""
    if not enabled or not err.is_terminal:
        yield lambda _done: None
        return
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn())
    with RichProgress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda done: bar.update(task, completed=done)


def when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


async def print_run_report(config: CliConfig, report: RunReport) -> None:
    store = store_for(config)
    try:
        problems = await store.problems(report.run.run_id, limit=20)
        skipped = await store.skipped(report.run.run_id, limit=20)
    finally:
        await store.aclose()
    table = Table(
        title=f"run {report.run.run_id}: {report.total} participant(s), "
        f"{report.sent_now} sent now in {report.elapsed:.1f} s",
        title_justify="left",
    )
    table.add_column("state")
    table.add_column("count", justify="right")
    for state in MessageState:
        table.add_row(state.value, str(report.counts.get(state, 0)))
    out.print(table)
    if report.requeued:
        out.print(
            f"{report.requeued} message(s) were in flight when the last worker stopped; "
            "they were sent again (same Message-ID)."
        )
    for row, email_address, reason in skipped:
        out.print(f"  row {row} ({email_address or 'no address'}): skipped: {reason}")
    for row, email_address, state, reason in problems:
        out.print(f"  row {row} ({email_address}): {state.value}: {reason}")
    if report.next_attempt_at is not None:
        out.print(
            f"Deferred messages retry from {when(report.next_attempt_at)}: "
            f"run `sender resume {report.run.run_id}` then."
        )
    if report.run.state is RunState.PAUSED:
        out.print(
            f"Paused ({report.run.paused_reason}); continue with "
            f"`sender resume {report.run.run_id}`."
        )
    if config.smtp is None:
        out.print(
            f"Messages are in {config.maildir}/new (embedded capture server; "
            "use --smtp or SENDER_SMTP_URL to send for real)."
        )
    else:
        out.print(f"Sent through {config.smtp.redacted_url()}.")
    if report.first_sent is not None:
        participant = report.first_sent
        url = Sender(config.sender).get_link(participant).url
        out.print(
            f"Get Link for {participant.name} ({participant.participant_id}), "
            "to share by hand if mail does not arrive:"
        )
        out.print(f"  {url}", overflow="ignore", crop=False)


def check_rows_of(config: CliConfig, csv_file: Path, *, template: str) -> DryRun:
    sender = Sender(config.sender)
    if template not in sender.renderer.names():
        raise InputError(f"no template named {template!r}", field="template")
    return check_rows(sender, read_csv(csv_file), template=template)


def print_dry_run(dry: DryRun, csv_file: Path) -> None:
    out.print(f"{csv_file}: {dry.ok} message(s) would be sent, {len(dry.skipped)} skipped")
    for row, email_address, reason in dry.skipped[:50]:
        out.print(f"  row {row} ({email_address or 'no address'}): {reason}")
    if len(dry.skipped) > 50:
        out.print(f"  ... and {len(dry.skipped) - 50} more")
    for locale, count in sorted(dry.fallbacks.items()):
        out.print(f"  {count} row(s) asked for locale {locale!r}; they get the closest one")


def print_status(data: Mapping[str, Any]) -> None:
    state = data["state"]
    if data["running"]:
        state = f"{state}, being sent by {data['owner']}"
    out.print(f"run {data['run_id']} ({data['template']}, from {data['source']}): {state}")
    if data["paused_reason"]:
        out.print(f"paused since {when(data['paused_since'])}: {data['paused_reason']}")
    counts = data["counts"]
    out.print("  ".join(f"{name} {count}" for name, count in counts.items()))
    if data["next_attempt_at"] is not None:
        out.print(f"next retry: {when(data['next_attempt_at'])}")
    domains = sorted(
        data["domains"], key=lambda d: -sum(d["counts"].get(s, 0) for s in ("queued", "deferred"))
    )
    if domains:
        table = Table(title="per domain", title_justify="left")
        table.add_column("domain")
        for name in ("sent", "queued", "deferred", "failed", "skipped"):
            table.add_column(name, justify="right")
        table.add_column("next retry")
        for item in domains[:20]:
            table.add_row(
                item["domain"],
                *(
                    str(item["counts"].get(name, 0))
                    for name in ("sent", "queued", "deferred", "failed", "skipped")
                ),
                when(item["next_attempt_at"]),
            )
        out.print(table)
        if len(domains) > 20:
            out.print(f"... and {len(domains) - 20} more domains (see --json)")
