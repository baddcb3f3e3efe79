"""The ``sender`` command: parse, validate, call the library, print.

Commands hold no logic of their own. Every :class:`~sender.errors.SenderError`
becomes one line on stderr and a non-zero exit code; ``--debug`` shows the
traceback for anything unexpected.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.table import Table

from sender.client import Sender, open_sender
from sender.config import CliConfig, load_config, parse_duration
from sender.errors import ConfigurationError, InputError, LinkError, SenderError, TemplateError
from sender.models import DeliveryResult, DeliveryStatus, Participant
from sender.participants import CsvRow, read_csv
from sender.render import Renderer, lint_templates

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

    def config(self, **overrides: object) -> CliConfig:
        config = load_config(config_file=self.config_file, overrides=overrides)
        if config.generated_secret is not None:
            err.print(
                "warning: no secret key configured (SENDER_SECRET_KEYS); using the generated "
                f"key in {config.generated_secret}. Links stop verifying if that file is lost.",
                style="yellow",
            )
        return config

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        with errors_as_lines(self.debug):
            return asyncio.run(coroutine)


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
) -> None:
    """Write a complete message without sending it; sample values fill the gaps."""
    with errors_as_lines(obj.debug):
        config = obj.config(templates=str(template_dir) if template_dir else None)
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
        )
        if out is None:
            sys.stdout.buffer.write(composed.message.data)
            return
        out.write_bytes(composed.message.data)
    err.print(
        f"wrote {out} ({len(composed.message.data)} bytes, {composed.rendered.template}/"
        f"{composed.rendered.locale}): {composed.rendered.subject}"
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


@main.command()
@click.argument("csv_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--template", default="invitation", show_default=True)
@smtp_option
@maildir_option
@click.option("--concurrency", type=click.IntRange(1, 64), help="Connections in the pool.")
@pass_context
def run(
    obj: Context,
    csv_file: Path,
    template: str,
    smtp_url: str | None,
    maildir: Path | None,
    concurrency: int | None,
) -> None:
    """Send one message to each participant in a CSV.

    Columns: email,name,participant_id,course_id[,locale] plus any extra
    columns, which become template variables.
    """
    with errors_as_lines(obj.debug):
        config = obj.config(
            smtp_url=smtp_url, maildir=str(maildir) if maildir else None, pool_size=concurrency
        )
    started = time.monotonic()
    report = obj.run(send_all(config, csv_file, template=template))
    print_report(report, config, elapsed=time.monotonic() - started)
    if report.counts[DeliveryStatus.ACCEPTED] == 0 and report.total:
        sys.exit(EXIT_FAILED)


class RunReport:
    """What a plain run did, row by row, for the summary."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.problems: list[str] = []
        self.total = 0
        self.first: tuple[Participant, str] | None = None

    def note(self, row: int, email: str | None, outcome: str) -> None:
        self.problems.append(f"row {row} ({email or 'no address'}): {outcome}")


async def send_all(config: CliConfig, csv_file: Path, *, template: str) -> RunReport:
    """The plain loop: stream rows, keep the pool busy, record every row's fate."""
    report = RunReport()
    concurrency = config.smtp.pool_size if config.smtp else 4
    seen: dict[str, int] = {}
    async with open_sender(config.sender, smtp=config.smtp, maildir=config.maildir) as sender:
        renderer_names = sender.renderer.names()
        if template not in renderer_names:
            raise InputError(
                f"no template named {template!r} (have: {', '.join(renderer_names)})",
                field="template",
            )
        slots = asyncio.Semaphore(concurrency)
        tasks: set[asyncio.Task[None]] = set()

        aborted: list[BaseException] = []

        async def one(row: CsvRow, participant: Participant) -> None:
            try:
                composed = sender.compose(participant, template=template)
            except (InputError, TemplateError) as exc:
                slots.release()
                report.counts["skipped"] += 1
                report.note(row.row, row.email, f"skipped: {exc}")
                return
            try:
                result = await sender.deliver(composed)
            except SenderError as exc:  # the transport itself is unusable (e.g. bad login)
                aborted.append(exc)
                return
            finally:
                slots.release()
            report.counts[result.status] += 1
            if result.ok and report.first is None:
                report.first = (participant, sender.get_link(participant).url)
            if not result.ok:
                report.note(row.row, row.email, describe(result))

        for row in read_csv(csv_file):
            if aborted:
                break
            report.total += 1
            if row.participant is None:
                report.counts["skipped"] += 1
                report.note(row.row, row.email, f"skipped: {row.error}")
                continue
            key = f"{row.participant.participant_id}\x00{row.participant.course_id}"
            if key in seen:
                report.counts["skipped"] += 1
                report.note(row.row, row.email, f"skipped: duplicate of row {seen[key]}")
                continue
            seen[key] = row.row
            await slots.acquire()
            task = asyncio.create_task(one(row, row.participant))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
        if aborted:
            raise aborted[0]
    return report


def print_report(report: RunReport, config: CliConfig, *, elapsed: float) -> None:
    table = Table(title=f"{report.total} participant(s) in {elapsed:.1f} s", title_justify="left")
    table.add_column("outcome")
    table.add_column("count", justify="right")
    for label in ("accepted", "temporary", "permanent", "skipped"):
        table.add_row(label, str(report.counts[label]))
    out.print(table)
    for line in report.problems[:20]:
        out.print(f"  {line}")
    if len(report.problems) > 20:
        out.print(f"  ... and {len(report.problems) - 20} more")
    if config.smtp is None:
        out.print(
            f"Messages are in {config.maildir}/new (embedded capture server; "
            "use --smtp or SENDER_SMTP_URL to send for real)."
        )
    else:
        out.print(f"Sent through {config.smtp.redacted_url()}.")
    if report.first is not None:
        participant, url = report.first
        out.print(
            f"Get Link for {participant.name} ({participant.participant_id}), "
            "to share by hand if mail does not arrive:"
        )
        out.print(f"  {url}", overflow="ignore", crop=False)
